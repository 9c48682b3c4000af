#include "core/engine/mces_bridge.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <linux/futex.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <memory>
#include <new>
#include <span>
#include <vector>

#include "core/engine/bridge_util.h"
#include "core/engine/mces_admit.h"
#include "core/engine/mces_peers.h"
#include "core/engine/mces_util.h"
#include "core/engine/relay_qos.h"
#include "core/engine/send_queue.h"
#include "core/engine/udp_host.h"
#include "core/mces/conn/endpoint.h"

namespace gs::engine {
namespace {

McesTotals g_totals;
std::atomic<int> g_listening{0};
std::atomic<int> g_sites{0};
std::atomic<McesWarnFn> g_warn{nullptr};

constexpr size_t kScratch = 256 * 1024;
// Datagram size: loopback carries large ones (fewer packets, the bench's
// best size on this VM); elsewhere QUIC's 1200, which every path carries.
constexpr size_t kLoopbackDatagram = 9000;
constexpr int64_t kListenCheck = 1'000'000'000;   // how often a listener looks at the program's socket

uint8_t* scratch() noexcept {
    static thread_local std::unique_ptr<uint8_t[]> buf;
    if (!buf) buf.reset(new (std::nothrow) uint8_t[kScratch]);
    return buf.get();
}

void add(std::atomic<uint64_t>& c, uint64_t n) noexcept { c.fetch_add(n, std::memory_order_relaxed); }
void add(std::atomic<uint64_t>* c, uint64_t n) noexcept {
    if (c != nullptr && n > 0) c->fetch_add(n, std::memory_order_relaxed);
}

// The engine's own sockets, without the shim's hooks (this file is linked
// into the preload library): moved to kInternalFdBase and above, guarded.
int internal_socket(int family) noexcept {
    int fd = static_cast<int>(syscall(SYS_socket, family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd < 0) return -1;
    int h = static_cast<int>(syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, kInternalFdBase));
    if (h >= 0) {
        raw_close(fd);
        fd = h;
    }
    guard_fd(fd);
    return fd;
}

// ---- accepted connections the shim's accept hook claims ---------------------

// One per loopback connection the engine opened, from before the program
// can accept it until the program's flow record is tied to it (or the
// connection ends). `word` = generation << 3 | state; every step is one
// compare-exchange on it, so the engine and the accept hook (any thread, a
// signal handler too) never wait for each other:
//
//   free --engine--> writing --engine--> ready --hook: claim--> claimed
//   claimed --hook--> attaching --hook--> attached --engine: adopt--> free
//   ready, claimed --engine: the link ends--> free
//   attaching --engine: the link ends--> abandoned --hook--> free
//
// `from` and `peer` are written in `writing` and read from `ready` on;
// `flow` is written by the hook in `attaching` (the only state in which it
// owns the entry) and read by the engine in `attached`. Leaving an entry
// always bumps the generation, so a stale handle (a link's, a hook's) never
// matches a reused entry.
enum : uint64_t { kFree = 0, kWriting = 1, kReady = 2, kClaimed = 3, kAttaching = 4, kAttached = 5, kAbandoned = 6 };
struct AcceptEntry {
    std::atomic<uint64_t> word{0};
    sansio::Addr from;   // the engine socket's local address: what accept() sees as the peer
    sansio::Addr peer;   // the MCES peer
    std::atomic<McesFlow*> flow{nullptr};   // attached: the program's flow record
};
constexpr unsigned kAccepts = 1024;
AcceptEntry g_accepts[kAccepts];

constexpr uint64_t entry_word(uint64_t gen, uint64_t state) noexcept { return gen << 3 | state; }

// Returns the entry index and its generation, or -1 when the table is full.
int accept_put(const sansio::Addr& from, const sansio::Addr& peer, uint64_t& gen) noexcept {
    unsigned start = from.port % kAccepts;
    for (unsigned i = 0; i < kAccepts; ++i) {
        AcceptEntry& a = g_accepts[(start + i) % kAccepts];
        uint64_t w = a.word.load(std::memory_order_acquire);
        if ((w & 7) != kFree || !a.word.compare_exchange_strong(w, w | kWriting, std::memory_order_acq_rel)) continue;
        a.from = from;
        a.peer = peer;
        gen = w >> 3;
        a.word.store(entry_word(gen, kReady), std::memory_order_release);
        return static_cast<int>((start + i) % kAccepts);
    }
    return -1;
}

// The link that owns entry (idx, gen) lets go of it. Returns the flow the
// accept hook attached, if it had: the caller then holds it (releases it
// with f->release). Engine thread.
McesFlow* accept_drop(int idx, uint64_t gen) noexcept {
    if (idx < 0) return nullptr;
    AcceptEntry& a = g_accepts[idx];
    for (;;) {
        uint64_t w = a.word.load(std::memory_order_acquire);
        if ((w >> 3) != gen) return nullptr;
        switch (w & 7) {
        case kReady:
        case kClaimed:
            if (a.word.compare_exchange_strong(w, entry_word(gen + 1, kFree), std::memory_order_acq_rel)) return nullptr;
            break;
        case kAttaching:   // the hook finishes, sees this and frees the entry
            if (a.word.compare_exchange_strong(w, entry_word(gen, kAbandoned), std::memory_order_acq_rel)) return nullptr;
            break;
        case kAttached: {   // only the engine leaves this state
            McesFlow* f = a.flow.load(std::memory_order_relaxed);
            a.word.store(entry_word(gen + 1, kFree), std::memory_order_release);
            return f;
        }
        default:
            return nullptr;
        }
    }
}

// The engine's part of attaching: the flow, once the hook has attached it
// (the entry is freed then: nothing else needs it). Engine thread.
McesFlow* accept_adopt(int idx, uint64_t gen) noexcept {
    if (idx < 0 || g_accepts[idx].word.load(std::memory_order_acquire) != entry_word(gen, kAttached)) return nullptr;
    return accept_drop(idx, gen);
}

class Site;

// One MCES connection relayed to a stream socket (`fd`): the program's end
// of a bridge (client), or the engine's end of a loopback TCP connection to
// the program (server). Engine thread only.
//
// Under the process's send aggregate ([general] rate_up), a client link is
// one of the engine's send queue's flows (send_queue.h), as a TCP bridge
// is: what the program writes waits in its end until the queue grants it
// (by class: realtime > guaranteed > reliable, each within its own rate),
// then goes into the connection, which paces and carries it.
class Link final : public SendQueue::Client {
public:
    Link(Site& s, std::shared_ptr<mces::Connection> c) noexcept : site_(s), conn_(std::move(c)) {
        in_.l = out_.l = cancel_.l = connect_.l = this;
        down_wait_.l = this;
    }
    ~Link() {
        if (queue_ != nullptr) queue_->detach(*this);
        let_go();
    }
    // Before the site deletes the link: its receive limit's timer goes.
    void stop_timers(Engine& e) noexcept {
        if (down_wait_.heap_index_ >= 0) e.cancel(down_wait_);
    }
    // The queue's turn: `bytes` of the program's are granted (charged).
    void go(Engine& e, uint64_t bytes) noexcept override;

    // Client: the bridge this link serves (its app_end is `fd`).
    void attach_bridge(BridgeState& b, McesFlow& f) noexcept {
        bridge_ = &b;
        flow_ = &f;
        fd_ = b.app_end;
        store_auth();
    }
    // Server: open the loopback connection to the program's listener.
    bool open_loopback(Engine& e, const sockaddr_storage& target, socklen_t len) noexcept;

    // Move what can move; notice ends. Returns whether the endpoint has
    // something new to send (the caller pokes the host).
    bool pump(Engine& e) noexcept;
    // The program's side and the MCES connection are both done.
    bool finished() const noexcept {
        return app_closed_ && inflight_ == 0 && (conn_->state() == mces::Connection::State::closed && conn_->drained());
    }
    // The connection's figures into the flow record (gsctl flows, --stats):
    // every kPublishNs while data flows (pump runs per UDP batch; gsctl top
    // refreshes at most every 50 ms), and at every step once either side
    // ends, so the record keeps the last figures. A server's link first
    // looks whether the accept hook has attached the program's record.
    static constexpr int64_t kPublishNs = 10'000'000;
    void publish(Engine& e) noexcept {
        if (flow_ == nullptr && accept_idx_ >= 0) take_accepted();
        if (!flow_) return;
        const bool ending = app_ending_ || up_over_ || down_over_ ||
                            conn_->state() != mces::Connection::State::established;
        if (!ending && e.now() < next_publish_) return;
        next_publish_ = e.now() + kPublishNs;
        store_figures();
    }
    void add_counters() noexcept {
        mces::ConnCounters c = conn_->counters();
        add(g_totals.retransmits, c.retransmits);
        add(g_totals.lost, c.lost);
    }
    // The site goes away (the engine stops, the listener failed): abort.
    void abort_all(Engine& e) noexcept {
        if (conn_->state() != mces::Connection::State::closed) conn_->abort();
        if (!app_ending_) end_app(e, ECONNABORTED);
    }

private:
    struct In final : Completion {   // fd readable (multishot)
        Link* l = nullptr;
        bool armed = false;
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override;
    };
    struct Out final : Completion {   // fd has room (one shot)
        Link* l = nullptr;
        bool armed = false;
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override;
    };
    struct Cancel final : Completion {
        Link* l = nullptr;
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override;
    };
    struct Connect final : Completion {   // server: the loopback connect
        Link* l = nullptr;
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override;
    };
    struct DownWait final : Timer {   // the receive limit's tokens are there again
        Link* l = nullptr;
        void fire(Engine& e, int64_t) noexcept override;
    };

    void store_figures() noexcept;
    void say_shortfall(const mces::ConnCounters& c) noexcept;
    void store_auth() noexcept;
    void take_accepted() noexcept;
    void let_go() noexcept;
    void start_relay(Engine& e) noexcept;
    void arm_in(Engine& e) noexcept;
    void arm_out(Engine& e) noexcept;
    void handshake(Engine& e) noexcept;
    void failed(Engine& e, bool icmp) noexcept;
    bool icmp_unreachable() noexcept;
    bool pump_up(Engine& e) noexcept;
    bool pump_down(Engine& e) noexcept;
    void shape(Engine& e) noexcept;
    bool offer_waiting() noexcept;
    bool up_eof(ssize_t r) noexcept;
    void end_app(Engine& e, int err) noexcept;
    void close_app() noexcept;
    void announce(int phase, int err) noexcept;
    void drain_filler() noexcept;
    bool abortive_close() const noexcept;
    void after(Engine& e) noexcept;   // completion bookkeeping

    Site& site_;
    std::shared_ptr<mces::Connection> conn_;
    BridgeState* bridge_ = nullptr;   // client
    // Client: the bridge's flow (the bridge's reference keeps its record).
    // Server: the accepted flow once adopted from the accept table; held_
    // then says the link holds the reference the shim took for it.
    McesFlow* flow_ = nullptr;
    bool held_ = false;
    int fd_ = -1;
    bool relaying_ = false;           // fd polls armed, bytes move
    // The program's socket may have bytes: set by its POLLIN (multishot: one
    // event per arrival), cleared when recv() finds it empty. pump() runs on
    // every MCES event; without this each ran a recv() that failed with EAGAIN
    // (nine in ten of the sender's system calls across a veth).
    bool up_ready_ = true;
    int64_t next_publish_ = 0;        // publish(): engine time of the next snapshot
    bool in_shortfall_ = false;       // guaranteed: the last shortfall said and not over
    bool up_over_ = false, down_over_ = false, discard_ = false;
    bool app_ending_ = false, app_closed_ = false, handed_over_ = false;
    int inflight_ = 0;
    // Under the send aggregate (shape): the queue, the flow's own
    // bucket (its policy rate) under the aggregate, and the bytes granted
    // and not yet read from the program's end.
    SendQueue* queue_ = nullptr;
    qos::TokenBucket up_own_;
    uint64_t granted_ = 0;
    // Client: the receive limit (the rule's rate_down under [general]
    // rate_down), or null. Bytes stay in the connection until its tokens
    // are there: its window closes and the peer slows, as TCP's would.
    qos::TokenBucket down_own_;
    qos::TokenBucket* down_bucket_ = nullptr;
    DownWait down_wait_;
    int accept_idx_ = -1;
    uint64_t accept_gen_ = 0;
    sockaddr_storage target_{};
    In in_;
    Out out_;
    Cancel cancel_;
    Connect connect_;

    friend class Site;
};

// An MCES endpoint on a UdpHost with its links: one client connection, or
// a listener's connections. Frees itself (a Timer at `now`) once closed.
class Site final : Timer {
public:
    static Site* client(Engine& e, BridgeState& b, McesFlow& f) noexcept;
    static Site* listener(Engine& e, int udp_fd, int listen_fd, unsigned long ino, int family,
                          const sockaddr* target, socklen_t tlen, const McesParams& p) noexcept;

    mces::Endpoint& endpoint() noexcept { return *ep_; }
    UdpHost* host() noexcept { return host_; }
    uint64_t rx_datagrams() const noexcept { return host_ ? host_->stats().rx_datagrams : 0; }
    int udp_fd() const noexcept { return host_ ? host_->fd() : -1; }
    const McesParams& params() const noexcept { return params_; }
    void poke(Engine& e) noexcept {
        if (host_ != nullptr) host_->poke(e);
    }
    void activity(Engine& e) noexcept;

    // At exit: every client link has given the peer what the program wrote.
    static void drain_all(Engine& e) noexcept;
    static bool drained() noexcept;
    static uint64_t drain_progress() noexcept;   // packets back from peers: the drain is getting somewhere

private:
    Site() noexcept = default;
    ~Site() {
        if (!linked_) return;
        g_sites.fetch_sub(1, std::memory_order_relaxed);
        if (prev_) prev_->next_ = next_;
        else sites_ = next_;
        if (next_) next_->prev_ = prev_;
    }
    bool start_host(Engine& e, int udp_fd, const mces::EndpointConfig& cfg) noexcept;
    void fire(Engine& e, int64_t now) noexcept override;
    void accept_new(Engine& e) noexcept;
    void reap(Engine& e) noexcept;
    void shut(Engine& e) noexcept;
    void count_udp() noexcept;

    static inline Site* sites_ = nullptr;
    Site* next_ = nullptr;
    Site* prev_ = nullptr;
    std::unique_ptr<mces::Endpoint> ep_;
    UdpHost* host_ = nullptr;
    std::vector<Link*> links_;
    McesParams params_;
    bool listening_ = false, closing_ = false, linked_ = false;
    int listen_fd_ = -1;
    unsigned long listen_ino_ = 0;
    int family_ = AF_INET;
    sockaddr_storage target_{};
    socklen_t target_len_ = 0;
    UdpHostStats counted_{};

    friend class Link;
};

// ---- Link ------------------------------------------------------------------

void Link::In::complete(Engine& e, const io_uring_cqe& cqe) noexcept {
    if (!(cqe.flags & IORING_CQE_F_MORE)) {
        armed = false;
        --l->inflight_;
    }
    if (l->app_ending_) return l->after(e);
    l->up_ready_ = true;
    if (!armed && cqe.res >= 0) l->arm_in(e);   // the kernel ended the multishot: again
    if (l->pump(e)) l->site_.poke(e);
    l->after(e);
}

void Link::Out::complete(Engine& e, const io_uring_cqe&) noexcept {
    armed = false;
    --l->inflight_;
    if (!l->app_ending_ && l->pump(e)) l->site_.poke(e);
    l->after(e);
}

void Link::Cancel::complete(Engine& e, const io_uring_cqe& cqe) noexcept {
    --l->inflight_;
    if (cqe.res == -EALREADY && l->in_.armed) {   // an event was being delivered: again
        io_uring_sqe* q = e.sqe();
        io_uring_prep_poll_remove(q, reinterpret_cast<uintptr_t>(static_cast<Completion*>(&l->in_)));
        io_uring_sqe_set_data(q, static_cast<Completion*>(this));
        ++l->inflight_;
        return;
    }
    l->after(e);
}

void Link::DownWait::fire(Engine& e, int64_t) noexcept {
    if (!l->app_ending_ && l->pump(e)) l->site_.poke(e);
}

void Link::Connect::complete(Engine& e, const io_uring_cqe& cqe) noexcept {
    --l->inflight_;
    if (l->app_ending_) return l->after(e);
    if (cqe.res < 0) {
        // The program's listener is gone (or full): the MCES peer is reset.
        if (l->conn_->state() != mces::Connection::State::closed) l->conn_->abort();
        l->end_app(e, -cqe.res);
        l->site_.poke(e);
        return l->after(e);
    }
    l->start_relay(e);
    if (l->pump(e)) l->site_.poke(e);
    l->after(e);
}

// Completions may be what the site waits for before it frees a link.
void Link::after(Engine& e) noexcept {
    if (app_ending_ && inflight_ == 0 && !app_closed_) close_app();
    site_.reap(e);
}

bool Link::open_loopback(Engine& e, const sockaddr_storage& target, socklen_t len) noexcept {
    target_ = target;
    fd_ = internal_socket(target.ss_family);
    if (fd_ < 0) return false;
    // Bound first, so its address is in the table before the program can
    // accept the connection.
    sockaddr_storage me = target;
    if (me.ss_family == AF_INET) reinterpret_cast<sockaddr_in&>(me).sin_port = 0;
    else reinterpret_cast<sockaddr_in6&>(me).sin6_port = 0;
    socklen_t ml = len;
    if (syscall(SYS_bind, fd_, &me, len) != 0 ||
        syscall(SYS_getsockname, fd_, &me, &ml) != 0 ||
        (accept_idx_ = accept_put(to_addr(reinterpret_cast<sockaddr*>(&me), ml), conn_->peer(), accept_gen_)) < 0) {
        close_internal_fd(fd_);
        fd_ = -1;
        return false;
    }
    io_uring_sqe* q = e.sqe();
    io_uring_prep_connect(q, fd_, reinterpret_cast<const sockaddr*>(&target_), len);
    io_uring_sqe_set_data(q, static_cast<Completion*>(&connect_));
    ++inflight_;
    return true;
}

void Link::arm_in(Engine& e) noexcept {
    if (in_.armed) return;
    io_uring_sqe* q = e.sqe();
    io_uring_prep_poll_multishot(q, fd_, POLLIN | POLLRDHUP);
    io_uring_sqe_set_data(q, static_cast<Completion*>(&in_));
    in_.armed = true;
    ++inflight_;
}

void Link::arm_out(Engine& e) noexcept {
    if (out_.armed) return;
    io_uring_sqe* q = e.sqe();
    io_uring_prep_poll_add(q, fd_, POLLOUT);
    io_uring_sqe_set_data(q, static_cast<Completion*>(&out_));
    out_.armed = true;
    ++inflight_;
}

void Link::start_relay(Engine& e) noexcept {
    relaying_ = true;
    shape(e);
    arm_in(e);
}

// A client link's limits (relay_qos.h's chains, as a TCP bridge's): down,
// the rule's rate_down under [general] rate_down; up, with [general]
// rate_up, the engine's send queue. Without memory for the queue the flow
// goes unshaped up (fails open), as a TCP bridge's would be paced alone.
void Link::shape(Engine& e) noexcept {
    if (bridge_ == nullptr) return;
    const int64_t now = now_ns();
    down_bucket_ = chain(down_own_, bridge_->rate_down, aggregate(1, bridge_->aggregate_down, now), now);
    if (bridge_->aggregate_up == 0) return;
    qos::TokenBucket* agg = aggregate(0, bridge_->aggregate_up, now);
    SendQueue* q = SendQueue::get(e, agg);
    if (q != nullptr && q->attach(*this, bridge_->service, chain(up_own_, bridge_->rate_up, agg, now), true) == 0)
        queue_ = q;
}

// Under the queue: tell it what waits in the program's end that it does
// not know of yet (SIOCINQ). Nothing at all: EOF or an error ends the up
// direction (returns true: the connection has news to send); EAGAIN waits
// for the next POLLIN.
bool Link::offer_waiting() noexcept {
    int in = 0;
    if (::ioctl(fd_, SIOCINQ, &in) != 0 || in < 0) in = 0;
    const uint64_t known = queued_bytes() + granted_;
    if (static_cast<uint64_t>(in) > known) {
        queue_->offer(*this, static_cast<uint64_t>(in) - known);
        return false;
    }
    if (in > 0 || known > 0) return false;
    char c;
    ssize_t r = sys::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        up_ready_ = false;   // the next POLLIN says when
        return false;
    }
    if (r > 0) return false;   // bytes after all: SIOCINQ lagged; offered at the next pump
    return up_eof(r);
}

void Link::go(Engine& e, uint64_t bytes) noexcept {
    granted_ += bytes;
    if (app_ending_ || !relaying_) return;
    if (pump_up(e)) site_.poke(e);
}

void Link::announce(int phase, int err) noexcept {
    BridgeState& b = *bridge_;
    if (err != 0) b.error.store(err, std::memory_order_relaxed);
    b.phase.store(phase, std::memory_order_release);
    b.connect_done.store(1, std::memory_order_release);
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&b.connect_done), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr,
            nullptr, 0);
}

// The zeros the shim wrote to keep a non-blocking connect's end from
// looking writable (as Bridge::drain_filler).
void Link::drain_filler() noexcept {
    uint8_t* sink = scratch();
    for (uint32_t left = bridge_->filler; left > 0 && sink != nullptr;) {
        ssize_t n = sys::recv(fd_, sink, left < kScratch ? left : kScratch, MSG_DONTWAIT);
        if (n <= 0) break;
        left -= static_cast<uint32_t>(n);
    }
    bridge_->filler = 0;
}

// A connected UDP socket with IP_RECVERR queues the ICMP errors (the
// UdpHost's receive takes sk_err, but not the queue): port or host
// unreachable means no MCES there, at once.
bool Link::icmp_unreachable() noexcept {
    int fd = site_.udp_fd();
    if (fd < 0) return false;
    bool hit = false;
    for (int i = 0; i < 8; ++i) {
        char ctl[512];
        char data[64];
        sockaddr_storage from;
        iovec iov{data, sizeof data};
        msghdr m{};
        m.msg_name = &from;
        m.msg_namelen = sizeof from;
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = ctl;
        m.msg_controllen = sizeof ctl;
        if (sys::recvmsg(fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) break;
        for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (!((c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
                  (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR)))
                continue;
            sock_extended_err ee;
            memcpy(&ee, CMSG_DATA(c), sizeof ee);
            if ((ee.ee_origin == SO_EE_ORIGIN_ICMP || ee.ee_origin == SO_EE_ORIGIN_ICMP6) &&
                (ee.ee_errno == ECONNREFUSED || ee.ee_errno == EHOSTUNREACH || ee.ee_errno == ENETUNREACH))
                hit = true;
        }
    }
    return hit;
}

void Link::handshake(Engine& e) noexcept {
    using St = mces::Connection::State;
    const St st = conn_->state();
    const bool icmp = icmp_unreachable();
    const sansio::Addr peer = conn_->peer();
    // Established (a short connection may already be closing, or closed
    // gracefully with its bytes still to read).
    if (st == St::established || st == St::closing || (st == St::closed && conn_->error() == 0)) {
        add(g_totals.established, 1);
        PeerTable::process().record(peer, PeerVerdict::mces, e.now());
        flow_->carried.store(McesFlow::mces, std::memory_order_relaxed);
        announce(BridgeState::connected, 0);
        drain_filler();
        start_relay(e);
        return;
    }
    if (st == St::connecting && !icmp) return;
    failed(e, icmp);
}

// The handshake did not succeed. No MCES there (nothing answered, or an
// ICMP unreachable) with fallback: hand the flow to a TCP bridge. Otherwise
// the program's connect fails: ECONNREFUSED (refused, unreachable) or
// ETIMEDOUT (silence), as TCP's.
void Link::failed(Engine& e, bool icmp) noexcept {
    const bool answered = site_.rx_datagrams() > 0;
    const int err = icmp || answered ? ECONNREFUSED : ETIMEDOUT;
    if (conn_->state() != mces::Connection::State::closed) conn_->abort();
    if (!answered) PeerTable::process().record(conn_->peer(), PeerVerdict::native, e.now());
    if (site_.params().fallback && !answered) {
        add(g_totals.fallbacks, 1);
        flow_->carried.store(McesFlow::fell_back, std::memory_order_relaxed);
        bridge_->allow_direct = true;
        handed_over_ = true;
        app_ending_ = app_closed_ = true;   // the program's end is the TCP bridge's now
        BridgeState& b = *bridge_;
        bridge_ = nullptr;
        start_bridge(e, b);
        return;
    }
    add(g_totals.refused, 1);
    announce(BridgeState::failed, err);
    drain_filler();
    end_app(e, 0);
}

// The program's side ends: stop watching its socket, shut it down (a
// client's end reads EOF, and the errno the bridge holds; a server's
// loopback connection is reset when `err` says the MCES side failed), and
// close it once the polls are gone.
void Link::end_app(Engine& e, int err) noexcept {
    if (app_ending_) return;
    app_ending_ = true;
    if (bridge_ != nullptr && err != 0 && err != ECONNABORTED)
        bridge_->error.store(err, std::memory_order_relaxed);
    if (fd_ >= 0) {
        if (bridge_ == nullptr && err != 0) {
            linger l{1, 0};   // a reset, as the peer's RESET was
            setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
        sys::shutdown(fd_, SHUT_RDWR);
    }
    if (in_.armed) {
        io_uring_sqe* q = e.sqe();
        io_uring_prep_poll_remove(q, reinterpret_cast<uintptr_t>(static_cast<Completion*>(&in_)));
        io_uring_sqe_set_data(q, static_cast<Completion*>(&cancel_));
        ++inflight_;
    }
    if (inflight_ == 0) close_app();   // nothing of ours in the kernel's hands: close now
}

void Link::close_app() noexcept {
    app_closed_ = true;
    if (bridge_ != nullptr) {
        BridgeState& b = *bridge_;
        bridge_ = nullptr;
        retire(b);
        if (b.on_done) b.on_done(&b);
    } else if (fd_ >= 0) {
        close_internal_fd(fd_);
    }
    fd_ = -1;
    let_go();
}

void Link::store_figures() noexcept {
    const mces::ConnCounters c = conn_->counters();
    McesFlow::Live& l = flow_->live;
    auto put = [](std::atomic<uint64_t>& a, uint64_t v) { a.store(v, std::memory_order_relaxed); };
    put(l.srtt_us, static_cast<uint64_t>(c.srtt / 1000));
    put(l.cwnd, c.cwnd);
    put(l.packets_sent, c.packets_sent);
    put(l.packets_received, c.packets_received);
    put(l.lost, c.lost);
    put(l.retransmitted_bytes, c.retransmitted_bytes);
    put(l.ptos, c.ptos);
    put(l.dropped, c.drops.total());
    put(l.auth_failed, c.drops.auth_failed);
    put(l.replay, c.drops.replay);
    put(l.checksum, conn_->checksum() == mces::wire::Checksum::crc32c ? 1 : 0);
    put(l.reserved_rate, c.reserved_rate);
    put(l.delivered_rate, c.delivered_rate);
    put(l.rate_shortfalls, c.rate_shortfalls);
    put(l.rate_floor, c.rate_floor ? 1 : 0);
    if (c.reserved_rate > 0) say_shortfall(c);
}

// A guaranteed flow's path stopped delivering its reserved rate, or
// delivers it again: said once per change, by the engine, while it is true.
void Link::say_shortfall(const mces::ConnCounters& c) noexcept {
    const McesWarnFn say = g_warn.load(std::memory_order_relaxed);
    const bool short_now = !c.rate_floor && c.rate_shortfalls > 0;
    if (short_now == in_shortfall_) return;
    in_shortfall_ = short_now;
    if (!say) return;
    char line[480];
    const std::string peer = conn_->peer().str();
    const double mbit = 8.0 / 1e6;
    if (short_now)
        snprintf(line, sizeof line,
                 "guaranteed flow to %s: the path delivered %.2f Mbit/s of the %.2f Mbit/s reserved "
                 "(shortfall %llu); it now sends under congestion control like any flow, until the path "
                 "delivers the rate again. Check the path's capacity, the reservations along it (gsctl "
                 "reservations on both hosts) and that the receiving program reads at the rate",
                 peer.c_str(), static_cast<double>(c.delivered_rate) * mbit,
                 static_cast<double>(c.reserved_rate) * mbit, static_cast<unsigned long long>(c.rate_shortfalls));
    else
        snprintf(line, sizeof line, "guaranteed flow to %s: the path delivers its %.2f Mbit/s again", peer.c_str(),
                 static_cast<double>(c.reserved_rate) * mbit);
    say(short_now ? 0 : 1, line);
}

// How the connection is protected, for the flow record: the site's key and mode.
void Link::store_auth() noexcept {
    const McesParams& p = site_.params();
    flow_->live.auth.store(p.psk ? static_cast<uint64_t>(p.auth_mode) : 0, std::memory_order_relaxed);
}

// The accept hook attached the program's flow record: publish into it
// from now on (the entry is free again).
void Link::take_accepted() noexcept {
    if (McesFlow* f = accept_adopt(accept_idx_, accept_gen_)) {
        flow_ = f;
        held_ = true;
        accept_idx_ = -1;
        store_auth();
    }
}

// The program's side is closed (or the link goes): leave the accept table,
// and give an accepted flow's record back, its last figures first. After
// this the engine never touches the record.
void Link::let_go() noexcept {
    if (accept_idx_ >= 0) {
        if (McesFlow* f = accept_drop(accept_idx_, accept_gen_)) {
            flow_ = f;
            held_ = true;
        }
        accept_idx_ = -1;
    }
    if (!held_) return;
    store_figures();
    McesFlow* f = flow_;
    flow_ = nullptr;
    held_ = false;
    if (f->release != nullptr) f->release(*f);
}

bool Link::abortive_close() const noexcept {
    if (bridge_ == nullptr) return false;
    linger l{};
    socklen_t len = sizeof l;
    if (::getsockopt(bridge_->transport, SOL_SOCKET, SO_LINGER, &l, &len) != 0 || !l.l_onoff || l.l_linger != 0)
        return false;
    pollfd p{fd_, 0, 0};
    return sys::poll(&p, 1, 0) == 1 && (p.revents & POLLHUP);
}

// Program -> MCES: recv() straight into the free tail of the connection's
// send buffer, then commit what came; nothing is read while it is full
// (backpressure: the program's socket fills).
bool Link::pump_up(Engine&) noexcept {
    bool sent = false;
    while (!up_over_ && up_ready_) {
        if (queue_ != nullptr && granted_ == 0) return offer_waiting() || sent;
        std::span<uint8_t> room;
        std::ptrdiff_t avail = conn_->write_reserve(room);
        if (avail == -EAGAIN) {   // full: the peer's ACKs make room (pump runs again)
            if (queue_ != nullptr) queue_->pause(*this);
            return sent;
        }
        if (avail < 0) {                     // closed under us: the program's writes fail from now on
            up_over_ = true;
            return sent;
        }
        size_t want = room.size();
        if (queue_ != nullptr && granted_ < want) want = static_cast<size_t>(granted_);
        ssize_t r = sys::recv(fd_, room.data(), want, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR) return sent;
        if (r < 0 && errno == EAGAIN) {
            up_ready_ = false;   // the next POLLIN says when
            return sent;
        }
        if (r <= 0) return up_eof(r);
        if (queue_ != nullptr) granted_ -= static_cast<uint64_t>(r);
        conn_->write_commit(static_cast<size_t>(r));
        add(g_totals.stream_out, static_cast<uint64_t>(r));
        if (bridge_) add(bridge_->bytes_out, static_cast<uint64_t>(r));
        sent = true;
    }
    return sent;
}

// EOF (r == 0): FIN after the bytes, unless the program closed with
// SO_LINGER {1, 0}, or its socket was reset (r < 0): an abort, as TCP.
bool Link::up_eof(ssize_t r) noexcept {
    up_over_ = true;
    if (r == 0 && !abortive_close()) conn_->shutdown_write();
    else conn_->abort();
    return true;
}

// MCES -> program: send() straight from the connection's receive buffer,
// then consume what the socket took; when it takes less, POLLOUT brings us
// back. Consuming returns credit to the peer.
bool Link::pump_down(Engine& e) noexcept {
    bool credit = false;
    while (!down_over_) {
        std::span<const uint8_t> data;
        std::ptrdiff_t r = conn_->read_peek(data);
        if (r == -EAGAIN) return credit;
        if (r == 0) {   // the peer's FIN: EOF to the program
            down_over_ = true;
            if (!discard_) sys::shutdown(fd_, SHUT_WR);
            return credit;
        }
        if (r < 0) {   // RESET, idle timeout...: the program gets the errno
            down_over_ = true;
            end_app(e, static_cast<int>(-r));
            return credit;
        }
        if (discard_) {   // the program closed its socket: take the rest, drop it
            conn_->read_consume(static_cast<size_t>(r));
            credit = true;
            continue;
        }
        size_t len = data.size();
        int64_t now = 0;
        if (down_bucket_ != nullptr) {
            // Read when there are tokens (the window closes meanwhile), as
            // the TCP bridge's receive limit does.
            now = now_ns();
            const int64_t have = qos::chain_available(down_bucket_, now);
            if (have <= 0) {
                if (down_wait_.heap_index_ < 0) e.arm(down_wait_, now + qos::chain_time_until(down_bucket_, 1, now));
                return credit;
            }
            if (static_cast<uint64_t>(have) < len) len = static_cast<size_t>(have);
        }
        ssize_t n = sys::send(fd_, data.data(), len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            arm_out(e);
            return credit;
        }
        if (n < 0) {
            discard_ = true;
            continue;
        }
        if (down_bucket_ != nullptr) qos::chain_consume(down_bucket_, static_cast<uint64_t>(n), now);
        conn_->read_consume(static_cast<size_t>(n));
        credit = true;
        add(g_totals.stream_in, static_cast<uint64_t>(n));
        if (bridge_) {
            add(bridge_->bytes_in, static_cast<uint64_t>(n));
            bridge_->down_relayed.fetch_add(static_cast<uint64_t>(n), std::memory_order_release);
        }
        if (static_cast<size_t>(n) < len) {
            arm_out(e);
            return credit;
        }
    }
    return credit;
}

bool Link::pump(Engine& e) noexcept {
    if (app_ending_) return false;
    if (bridge_ != nullptr && !relaying_) {
        handshake(e);
        if (!relaying_) return false;
    }
    if (!relaying_) return false;
    if (queue_ != nullptr && paused()) {
        std::span<uint8_t> room;
        if (conn_->write_reserve(room) > 0) queue_->resume(*this);   // the peer's ACKs made room
    }
    bool any = pump_up(e);
    any |= pump_down(e);
    if (queue_ != nullptr && !app_ending_) queue_->run(e);   // go() may send: it pokes the host itself
    publish(e);
    using St = mces::Connection::State;
    if (app_ending_) return any;
    if (conn_->state() == St::closed && conn_->error() != 0) {
        end_app(e, conn_->error());   // RESET, idle timeout: buffered bytes are gone, as after a TCP RST
    } else if (up_over_ && (down_over_ || discard_)) {
        // Both ways done (or the program closed its socket and is not
        // reading): the connection finishes its close by itself.
        if (discard_ && conn_->state() != St::closed) conn_->close();
        end_app(e, 0);
        any = true;
    }
    return any;
}

// ---- Site -------------------------------------------------------------------

bool Site::start_host(Engine& e, int udp_fd, const mces::EndpointConfig& cfg) noexcept {
    try {   // copies cfg's accept_elements: bad_alloc stays here (the flow fails open)
        ep_.reset(new mces::Endpoint(cfg));
    } catch (...) {
        return false;
    }
    int err = 0;
    host_ = UdpHost::start(e, udp_fd, *ep_, UdpHostOptions{},
                           [](Engine& en, void* self) noexcept { static_cast<Site*>(self)->activity(en); }, this, &err);
    if (host_ == nullptr) return false;
    next_ = sites_;
    if (next_) next_->prev_ = this;
    sites_ = this;
    linked_ = true;
    g_sites.fetch_add(1, std::memory_order_relaxed);
    return true;
}

mces::EndpointConfig endpoint_config(const sansio::Addr& local, bool loopback, const McesParams& p) noexcept {
    mces::EndpointConfig cfg;
    cfg.local = local;
    cfg.psk = p.psk;   // keyed: every connection of the endpoint (docs/mces.md, "Authenticated connections")
    cfg.auth_mode = p.auth_mode;
    cfg.seed = mces_seed();
    cfg.conn.max_datagram_size = loopback ? kLoopbackDatagram : 1200;
    cfg.conn.send_buffer = 4 << 20;
    // The relay recv()s into the send ring ahead of the packets: one flight
    // ahead keeps those bytes in cache until the kernel copies them out
    // (docs/mces.md, "Performance": 0.80 -> 0.87x on loopback in the bench).
    cfg.conn.max_unsent = 1 << 20;
    cfg.conn.recv_window = 1 << 20;
    cfg.conn.borrow_receive = true;   // UdpHost settles at on_batch_end, after the activity callback that relays (udp_host.h)
    return cfg;
}

Site* Site::client(Engine& e, BridgeState& b, McesFlow& f) noexcept {
    const int fd = f.udp_fd;
    f.udp_fd = -1;
    int one = 1;
    setsockopt(fd, f.peer.ss_family == AF_INET6 ? SOL_IPV6 : SOL_IP,
               f.peer.ss_family == AF_INET6 ? IPV6_RECVERR : IP_RECVERR, &one, sizeof one);
    int big = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    auto* s = new (std::nothrow) Site();
    if (s == nullptr) {
        close_internal_fd(fd);
        return nullptr;
    }
    s->params_ = f.params;
    sockaddr_storage me{};
    socklen_t ml = sizeof me;
    getsockname(fd, reinterpret_cast<sockaddr*>(&me), &ml);
    const sansio::Addr peer = to_addr(reinterpret_cast<const sockaddr*>(&f.peer), f.peer_len);
    mces::EndpointConfig cfg =
        endpoint_config(to_addr(reinterpret_cast<sockaddr*>(&me), ml), peer.is_loopback(), f.params);
    cfg.conn.handshake_timeout = f.params.handshake_timeout_ns > 0 ? f.params.handshake_timeout_ns : kMcesWait;
    cfg.max_connections = 1;
    if (!s->start_host(e, fd, cfg)) {
        if (s->host_ == nullptr) close_internal_fd(fd);
        delete s;
        return nullptr;
    }
    std::shared_ptr<mces::Connection> c;
    std::vector<std::string> none;
    const std::vector<std::string>& el = f.params.elements ? *f.params.elements : none;
    std::string why;
    if (s->ep_->connect(peer, f.params.service_class, mces_offer(f.params), now_ns(), c, el, &why) != 0 || !c) {
        s->shut(e);
        return nullptr;
    }
    auto* l = new (std::nothrow) Link(*s, std::move(c));
    if (l == nullptr) {
        s->shut(e);
        return nullptr;
    }
    l->attach_bridge(b, f);
    s->links_.push_back(l);
    add(g_totals.connects, 1);
    s->host_->poke(e);
    return s;
}

Site* Site::listener(Engine& e, int udp_fd, int listen_fd, unsigned long ino, int family, const sockaddr* target,
                     socklen_t tlen, const McesParams& p) noexcept {
    auto* s = new (std::nothrow) Site();
    if (s == nullptr) {
        close_internal_fd(udp_fd);
        return nullptr;
    }
    int big = 8 << 20;
    setsockopt(udp_fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(udp_fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    s->params_ = p;
    s->listen_fd_ = listen_fd;
    s->listen_ino_ = ino;
    s->family_ = family;
    memcpy(&s->target_, target, tlen);
    s->target_len_ = tlen;
    sockaddr_storage me{};
    socklen_t ml = sizeof me;
    getsockname(udp_fd, reinterpret_cast<sockaddr*>(&me), &ml);
    const sansio::Addr local = to_addr(reinterpret_cast<sockaddr*>(&me), ml);
    mces::EndpointConfig cfg = endpoint_config(local, local.is_loopback(), p);
    try {   // the policy's chain for every connection accepted here (empty: the class's default)
        if (p.elements != nullptr) cfg.accept_elements = *p.elements;
    } catch (...) {
        close_internal_fd(udp_fd);
        delete s;
        return nullptr;
    }
    if (!s->start_host(e, udp_fd, cfg)) {
        if (s->host_ == nullptr) close_internal_fd(udp_fd);
        delete s;
        return nullptr;
    }
    McesAdmission::listen(*s->ep_, p.admission, local);   // reserves for classes 2 and 3 (mces_admit.h)
    s->listening_ = true;
    g_listening.fetch_add(1, std::memory_order_relaxed);
    add(g_totals.listeners, 1);
    e.arm(*s, now_ns() + kListenCheck);
    return s;
}

void Site::count_udp() noexcept {
    if (host_ == nullptr) return;
    const UdpHostStats& st = host_->stats();
    add(g_totals.udp_datagrams_out, st.tx_datagrams - counted_.tx_datagrams);
    add(g_totals.udp_bytes_out, st.tx_bytes - counted_.tx_bytes);
    add(g_totals.udp_datagrams_in, st.rx_datagrams - counted_.rx_datagrams);
    add(g_totals.udp_bytes_in, st.rx_bytes - counted_.rx_bytes);
    counted_ = st;
}

void Site::accept_new(Engine& e) noexcept {
    while (auto c = ep_->accept()) {
        auto* l = new (std::nothrow) Link(*this, c);
        if (l == nullptr || !listening_ || !l->open_loopback(e, target_, target_len_)) {
            c->abort();
            if (l != nullptr) {
                l->app_ending_ = l->app_closed_ = true;
                links_.push_back(l);   // freed once the connection drained
            }
            continue;
        }
        links_.push_back(l);
    }
}

void Site::activity(Engine& e) noexcept {
    if (closing_) return;
    if (listening_ || ep_->accept_queue_size() > 0) accept_new(e);
    bool any = false;
    for (size_t i = 0; i < links_.size(); ++i) any |= links_[i]->pump(e);
    if (any) host_->poke(e);
    count_udp();
    reap(e);
}

// Free the links that are done; the site itself once a client's link or a
// closed listener's last link is.
void Site::reap(Engine& e) noexcept {
    if (closing_) return;
    for (size_t i = 0; i < links_.size();) {
        Link* l = links_[i];
        if (l->finished() || (l->handed_over_ && l->inflight_ == 0)) {
            l->add_counters();
            links_[i] = links_.back();
            links_.pop_back();
            l->stop_timers(e);
            delete l;
            continue;
        }
        ++i;
    }
    if (links_.empty() && !listening_) shut(e);
}

void Site::shut(Engine& e) noexcept {
    if (closing_) return;
    closing_ = true;
    count_udp();
    for (Link* l : links_) l->abort_all(e);
    if (host_ != nullptr) host_->close(e);
    host_ = nullptr;
    if (heap_index_ >= 0) e.cancel(*this);
    e.arm(*this, now_ns());   // freed from the timer: not inside the host's callback
}

void Site::fire(Engine& e, int64_t) noexcept {
    if (closing_) {
        // Links still waiting for their polls' cancellation keep the site.
        for (size_t i = 0; i < links_.size();) {
            if (links_[i]->inflight_ == 0) {
                if (links_[i]->app_ending_ && !links_[i]->app_closed_) links_[i]->close_app();
                links_[i]->stop_timers(e);
                delete links_[i];
                links_[i] = links_.back();
                links_.pop_back();
                continue;
            }
            ++i;
        }
        if (!links_.empty()) return e.arm(*this, now_ns() + 10'000'000);
        delete this;
        return;
    }
    // A listener: is the program's listening socket still there?
    struct stat st;
    int acc = 0;
    socklen_t al = sizeof acc;
    bool alive = fstat(listen_fd_, &st) == 0 && st.st_ino == listen_ino_ &&
                 syscall(SYS_getsockopt, listen_fd_, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) == 0 && acc != 0;
    if (!alive && listening_) {
        listening_ = false;
        // Release: whoever sees the count drop may close the fd (this check
        // never looks at it again).
        g_listening.fetch_sub(1, std::memory_order_release);
        g_totals.listeners.fetch_sub(1, std::memory_order_relaxed);
        reap(e);
        return;   // the last link's end frees the site (reap)
    }
    e.arm(*this, now_ns() + kListenCheck);
}

// Exit: half-close every client's program end still open, so its last
// bytes go and then a FIN; done when every connection has closed (what the
// program wrote lives in the engine, not in the kernel as TCP's would: a
// server that exits right after writing must wait for its delivery).
void Site::drain_all(Engine&) noexcept {
    for (Site* s = sites_; s; s = s->next_)
        for (Link* l : s->links_)
            if (l->bridge_ != nullptr && !l->up_over_) half_close_program_end(*l->bridge_);
}

uint64_t Site::drain_progress() noexcept {
    uint64_t n = 0;
    for (Site* s = sites_; s; s = s->next_)
        for (Link* l : s->links_)
            if (l->conn_ && !l->handed_over_) n += l->conn_->counters().packets_received;
    return n;
}

bool Site::drained() noexcept {
    for (Site* s = sites_; s; s = s->next_)
        for (Link* l : s->links_)
            if (!l->handed_over_ && l->conn_->state() != mces::Connection::State::closed)
                return false;
    return true;
}

// ---- listener slots ---------------------------------------------------------

struct ListenStart final : Command {
    std::atomic<int> used{0};
    int udp_fd = -1, listen_fd = -1, family = 0;
    unsigned long ino = 0;
    sockaddr_storage target{};
    socklen_t tlen = 0;
    McesParams params;
    void run(Engine& e) noexcept override {
        Site::listener(e, udp_fd, listen_fd, ino, family, reinterpret_cast<sockaddr*>(&target), tlen, params);
        used.store(0, std::memory_order_release);
    }
};
ListenStart g_listen_slots[kMaxListeners];

void drain_hooks() noexcept {
    static std::atomic<bool> hooks{false};
    if (!hooks.exchange(true)) set_drain_hooks(&Site::drain_all, &Site::drained, &Site::drain_progress);
}

}  // namespace

void McesFlow::Start::run(Engine& e) noexcept {
    if (Site::client(e, *b, *f) != nullptr) return;
    // No endpoint (memory, the UDP socket refused): the flow goes to kernel
    // TCP rather than fail (fail open).
    f->carried.store(fell_back, std::memory_order_relaxed);
    b->allow_direct = true;
    start_bridge(e, *b);
}

void set_mces_warn(McesWarnFn fn) noexcept { g_warn.store(fn, std::memory_order_relaxed); }

void start_mces_bridge(Engine& e, BridgeState& s, McesFlow& f) noexcept {
    drain_hooks();
    reset_relay(e, s);
    s.impl = nullptr;
    s.allow_direct = false;   // no kernel transport to move bytes on
    f.carried.store(McesFlow::trying, std::memory_order_relaxed);
    f.start.b = &s;
    f.start.f = &f;
    e.submit(f.start);
}

int mces_listen(Engine& e, int udp_fd, int listen_fd, unsigned long listen_ino, int family, const sockaddr* target,
                socklen_t target_len, const McesParams& p) noexcept {
    drain_hooks();
    if (target_len > sizeof(sockaddr_storage)) {
        close_internal_fd(udp_fd);
        return -EINVAL;
    }
    for (ListenStart& s : g_listen_slots) {
        int expected = 0;
        if (!s.used.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) continue;
        s.udp_fd = udp_fd;
        s.listen_fd = listen_fd;
        s.ino = listen_ino;
        s.family = family;
        memcpy(&s.target, target, target_len);
        s.tlen = target_len;
        s.params = p;
        e.submit(s);
        return 0;
    }
    close_internal_fd(udp_fd);
    return -EMFILE;
}

bool mces_listening() noexcept { return g_listening.load(std::memory_order_acquire) > 0; }

bool mces_claim_accepted(const sockaddr* from, socklen_t len, int family, sockaddr_storage& peer,
                         socklen_t& peer_len) noexcept {
    if (from == nullptr || !mces_listening()) return false;
    const sansio::Addr key = to_addr(from, len);
    if (key.port == 0) return false;
    for (unsigned i = 0; i < kAccepts; ++i) {
        AcceptEntry& a = g_accepts[(key.port + i) % kAccepts];
        uint64_t w = a.word.load(std::memory_order_acquire);
        if ((w & 7) != kReady || !(a.from == key)) continue;
        const sansio::Addr p = a.peer;
        if (!a.word.compare_exchange_strong(w, entry_word(w >> 3, kClaimed), std::memory_order_acq_rel)) continue;
        peer_len = from_addr(p, peer, family);
        if (peer_len == 0) return false;
        add(g_totals.accepted, 1);
        return true;
    }
    return false;
}

bool mces_attach_accepted(const sockaddr* from, socklen_t len, McesFlow& f) noexcept {
    if (from == nullptr) return false;
    const sansio::Addr key = to_addr(from, len);
    if (key.port == 0) return false;
    for (unsigned i = 0; i < kAccepts; ++i) {
        AcceptEntry& a = g_accepts[(key.port + i) % kAccepts];
        uint64_t w = a.word.load(std::memory_order_acquire);
        if ((w & 7) != kClaimed || !(a.from == key)) continue;
        const uint64_t gen = w >> 3;
        if (!a.word.compare_exchange_strong(w, entry_word(gen, kAttaching), std::memory_order_acq_rel)) continue;
        a.flow.store(&f, std::memory_order_relaxed);
        uint64_t expect = entry_word(gen, kAttaching);
        if (a.word.compare_exchange_strong(expect, entry_word(gen, kAttached), std::memory_order_acq_rel)) return true;
        // The link ended while we wrote (abandoned): the entry is ours to free.
        a.word.store(entry_word(gen + 1, kFree), std::memory_order_release);
        return false;
    }
    return false;
}

McesTotals& mces_totals() noexcept { return g_totals; }
int mces_sites() noexcept { return g_sites.load(std::memory_order_relaxed); }

std::string mces_totals_json() {
    const McesTotals& t = g_totals;
    auto v = [](const std::atomic<uint64_t>& a) { return static_cast<unsigned long long>(a.load(std::memory_order_relaxed)); };
    char b[640];
    snprintf(b, sizeof b,
             "{\"connects\":%llu,\"established\":%llu,\"refused\":%llu,\"fallbacks\":%llu,\"accepted\":%llu,"
             "\"listeners\":%llu,\"stream_out\":%llu,\"stream_in\":%llu,\"udp_datagrams_out\":%llu,"
             "\"udp_bytes_out\":%llu,\"udp_datagrams_in\":%llu,\"udp_bytes_in\":%llu,\"retransmits\":%llu,"
             "\"lost\":%llu}",
             v(t.connects), v(t.established), v(t.refused), v(t.fallbacks), v(t.accepted), v(t.listeners),
             v(t.stream_out), v(t.stream_in), v(t.udp_datagrams_out), v(t.udp_bytes_out), v(t.udp_datagrams_in),
             v(t.udp_bytes_in), v(t.retransmits), v(t.lost));
    return b;
}

bool mces_peer_says_native(const sockaddr* peer, socklen_t len) noexcept {
    return PeerTable::process().lookup(to_addr(peer, len), now_ns()) == PeerVerdict::native;
}

}  // namespace gs::engine
