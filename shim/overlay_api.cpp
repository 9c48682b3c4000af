// The overlay socket API (api/gsocket.h, "Overlay sockets"): gs_overlay_*
// entry points of libgsocket-preload.so. A member is a protocol node (from
// the attribute file, core/overlay/config) run by the engine's OverlayHost
// (core/engine/overlay_host.h); the program holds one end of its
// SOCK_SEQPACKET pair. C entry points: nothing below them throws across.
// Opening a member (open_overlay_member, shim/group_member.h) is shared
// with the shim's legacy multicast groups (shim/group.cpp).
#include "api/gsocket.h"

#include <algorithm>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <new>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "core/engine/engine.h"
#include "core/engine/overlay_host.h"
#include "core/engine/overlay_status.h"
#include "core/engine/udp_host.h"
#include "core/overlay/config/config.h"
#include "core/overlay/config/factory.h"
#include "core/overlay/config/server_wire.h"
#include "shim/group_member.h"
#include "shim/log.h"
#include "shim/real.h"
#include "shim/shim.h"

#define GS_EXPORT extern "C" __attribute__((visibility("default")))

using namespace gs::shim;
namespace engine = gs::engine;
namespace ov = gs::overlay;

// The program's member: fd is the program's end of the pair.
struct gs_overlay : gs::shim::OverlayMember {};

namespace {

int fail(int err) noexcept {
    errno = err;
    return -1;
}

bool read_file(const char* path, std::string& out, int& err) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        err = errno ? errno : ENOENT;
        return false;
    }
    std::ostringstream ss;
    ss << f.rdbuf();
    out = ss.str();
    return true;
}

uint64_t seed() noexcept {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != sizeof s) {
        timespec t{};
        clock_gettime(CLOCK_MONOTONIC, &t);
        s = static_cast<uint64_t>(t.tv_nsec) ^ (static_cast<uint64_t>(getpid()) << 32);
    }
    return s;
}

namespace srv = gs::overlay::server;

struct OverlayLease {
    gs::sansio::Addr server;
    uint32_t ms = 0;   // 0: no lease kept
};
using gs::sansio::Time;

// One request to gsoverlayd and its answer: resent after 300 ms, three
// times. The socket is the shim's own (real calls: not a flow of the
// program). 0, -ETIMEDOUT, or -errno.
int ask_server(const gs::sansio::Addr& server, srv::Request q, srv::Response& a) {
    const int family = server.is_v4() ? AF_INET : AF_INET6;
    int fd = real::socket()(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    sockaddr_storage ss{};
    socklen_t sl = engine::from_addr(server, ss, family);
    if (real::connect()(fd, reinterpret_cast<sockaddr*>(&ss), sl) != 0) {
        int err = errno;
        real::close()(fd);
        return -err;
    }
    uint32_t txid = 0;
    getrandom(&txid, sizeof txid, GRND_NONBLOCK);
    q.txid = txid;
    std::vector<uint8_t> bytes = srv::encode_request(q);
    int rc = -ETIMEDOUT;
    for (int attempt = 0; attempt < 3 && rc == -ETIMEDOUT; ++attempt) {
        if (real::send()(fd, bytes.data(), bytes.size(), 0) < 0) {
            rc = -errno;
            break;
        }
        pollfd p{fd, POLLIN, 0};
        while (poll(&p, 1, 300) == 1) {
            uint8_t buf[2048];
            ssize_t n = real::recv()(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n < 0) {
                if (errno == ECONNREFUSED) rc = -ECONNREFUSED;   // nobody at that port
                break;
            }
            if (srv::decode_response({buf, static_cast<size_t>(n)}, a) == 0 && a.txid == txid) {
                rc = 0;
                break;
            }
        }
    }
    real::close()(fd);
    return rc;
}

// Keeps the member's lease at gsoverlayd (docs/overlay.md, "How a member
// joins"): RENEW every lease / 3, LEAVE at the end. Run by the engine
// beside the node (OverlayCompanion); sans-IO, engine thread, as the node.
//
// Partitions: while the node leads its partition (Node::leader(): one
// member per partition), the renewal is a JOIN instead, which also
// renews, and whose answer names up to kHintMembers members; each is
// hinted to the node (Node::hint), which makes contact if that member is
// in another partition, so that two halves of an overlay split by the
// network merge again once it heals (overlay-dt.md, overlay-hc.md).
class LeaseKeeper final : public gs::sansio::Endpoint {
public:
    static constexpr uint8_t kHintMembers = 4;
    LeaseKeeper(const gs::sansio::Addr& server, uint64_t overlay, const gs::sansio::Addr& member, Time lease,
                ov::Node* node)
        : server_(server), overlay_(overlay), member_(member), lease_(lease), node_(node) {}
    void on_datagram(const gs::sansio::Addr& from, const gs::sansio::Addr&, std::span<const uint8_t> b, Time now) override {
        srv::Response a;
        if (from != server_ || srv::decode_response(b, a) != 0 || a.txid != txid_ ||
            (a.op != srv::Op::renew && a.op != srv::Op::join))
            return;
        if (a.status != srv::Status::ok) return;
        if (a.lease_ms > 0) lease_ = Time{a.lease_ms} * gs::sansio::kMillisecond;
        if (a.op == srv::Op::join && node_ != nullptr)
            for (const srv::MemberEntry& m : a.members) node_->hint(m.addr, now);
    }
    void on_timeout(Time now) override {
        if (next_ == 0) {   // the first call: JOIN was just answered
            next_ = now + lease_ / 3;
            return;
        }
        queue(node_ != nullptr && node_->joined() && node_->leader() ? srv::Op::join : srv::Op::renew);
        next_ = now + lease_ / 3;
    }
    Time next_timeout() const override { return left_ ? gs::sansio::kNever : next_ == 0 ? 0 : next_; }
    bool poll_transmit(gs::sansio::Datagram& d) override {
        if (out_.empty()) return false;
        d.to = server_;
        d.bytes = std::move(out_);
        out_.clear();
        return true;
    }
    static void farewell(gs::sansio::Endpoint& ep, Time) noexcept {
        auto& k = static_cast<LeaseKeeper&>(ep);
        k.queue(srv::Op::leave);
        k.left_ = true;
    }

private:
    void queue(srv::Op op) {
        srv::Request q;
        q.op = op;
        q.txid = ++txid_;
        q.overlay = overlay_;
        q.member = member_;
        q.lease_ms = static_cast<uint32_t>(lease_ / gs::sansio::kMillisecond);
        if (op == srv::Op::join) q.want = kHintMembers;
        out_ = srv::encode_request(q);
    }
    gs::sansio::Addr server_;
    uint64_t overlay_;
    gs::sansio::Addr member_;
    Time lease_;
    ov::Node* node_;   // the member's node (the host owns it and outlives us)
    Time next_ = 0;
    bool left_ = false;
    uint32_t txid_ = 0;
    std::vector<uint8_t> out_;
};

// "printf" into a std::string, for the messages open_overlay_member gives
// back.
template <class... A>
std::string text_of(const char* fmt, A... a) {
    char buf[768];
    snprintf(buf, sizeof buf, fmt, a...);
    return buf;
}

// With a Server: the overlay's attributes from gsoverlayd (CREATE from the
// file when it does not know the overlay yet), merged with the file's. 0,
// or -errno with messages in `msgs`: EACCES (a key attribute differs),
// EINVAL, the server unreachable (ETIMEDOUT, ECONNREFUSED).
int server_config(const char* path, std::string_view text, ov::Config& cfg, gs::sansio::Addr& server,
                  std::vector<std::string>& msgs) {
    if (!ov::parse_addr(cfg.server, server)) {
        msgs.push_back(text_of("%s: Server = %s: give the overlay server as IP:PORT (EINVAL)", path, cfg.server.c_str()));
        return -EINVAL;
    }
    ov::Attributes local;
    std::vector<std::string> errors;
    ov::parse_attributes(text, path, local, errors);
    srv::Request q;
    q.op = srv::Op::get;
    q.overlay = cfg.overlay_id;
    srv::Response a;
    int rc = ask_server(server, q, a);
    if (rc == 0 && a.status == srv::Status::unknown_overlay) {
        q.op = srv::Op::create;
        q.attrs = cfg.overlay_attributes();
        rc = ask_server(server, q, a);
    }
    if (rc != 0) {
        msgs.push_back(text_of("%s: overlay server %s: %s", path, cfg.server.c_str(), strerror(-rc)));
        return rc;
    }
    if (a.status != srv::Status::ok) {
        msgs.push_back(text_of("%s: overlay server %s refused %s of overlay %llu: %s (%s)", path, cfg.server.c_str(),
                               srv::name(q.op), static_cast<unsigned long long>(cfg.overlay_id), srv::name(a.status),
                               a.message.c_str()));
        return a.status == srv::Status::conflict ? -EACCES : -EINVAL;
    }
    ov::Config merged;
    if (ov::merge_config(a.attrs, local, merged, errors) != 0) {
        msgs.insert(msgs.end(), errors.begin(), errors.end());
        return -EACCES;
    }
    cfg = std::move(merged);
    return 0;
}

}  // namespace

int gs::shim::open_overlay_member(std::string_view text, const char* path, OverlayMember& m,
                                  std::vector<std::string>& msgs) {
    ov::Config cfg;
    std::vector<std::string> errors;
    if (ov::parse_config(text, path, cfg, errors) != 0) {
        msgs.insert(msgs.end(), errors.begin(), errors.end());
        return -EINVAL;
    }
    gs::sansio::Addr server;
    const bool with_server = !cfg.server.empty();
    if (with_server) {
        if (int rc = server_config(path, text, cfg, server, msgs); rc != 0) return rc;
    }
    engine::Engine* e = engine::Engine::get();
    if (e == nullptr) {
        msgs.push_back("the gsocket engine cannot start (EAGAIN)");
        return -EAGAIN;
    }
    // The node's UDP socket, at NodeAddress.
    const int family = cfg.node_address.is_v4() ? AF_INET : AF_INET6;
    int udp = real::socket()(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (udp < 0) return -errno;
    sockaddr_storage ss{};
    socklen_t sl = engine::from_addr(cfg.node_address, ss, family);
    if (real::bind()(udp, reinterpret_cast<sockaddr*>(&ss), sl) != 0) {
        int err = errno;
        msgs.push_back(text_of("%s: NodeAddress = %s: %s", path, cfg.node_address.str().c_str(), strerror(err)));
        real::close()(udp);
        return -err;
    }
    sl = sizeof ss;
    real::getsockname()(udp, reinterpret_cast<sockaddr*>(&ss), &sl);
    gs::sansio::Addr self = engine::to_addr(reinterpret_cast<sockaddr*>(&ss), sl);
    // With a server: register, and join through the members it knows.
    std::vector<gs::sansio::Addr> members;
    OverlayLease lease;
    if (with_server) {
        srv::Request q;
        q.op = srv::Op::join;
        q.overlay = cfg.overlay_id;
        q.member = self;
        q.lease_ms = static_cast<uint32_t>(cfg.lease / gs::sansio::kMillisecond);
        q.want = 8;
        srv::Response a;
        int rc = ask_server(server, q, a);
        if (rc == 0 && a.status == srv::Status::ok) {
            for (const srv::MemberEntry& me : a.members) members.push_back(me.addr);
            lease.server = server;
            lease.ms = a.lease_ms ? a.lease_ms : q.lease_ms;
        } else {
            msgs.push_back(text_of("%s: JOIN at %s: %s; joining through Bootstrap only", path, cfg.server.c_str(),
                                   rc != 0 ? strerror(-rc) : srv::name(a.status)));
        }
    }
    std::string why;
    std::unique_ptr<ov::Node> node = ov::make_node(cfg, self, seed(), members, why);
    if (!node) {
        msgs.push_back(text_of("%s: %s (EINVAL)", path, why.c_str()));
        real::close()(udp);
        return -EINVAL;
    }
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) {
        int err = errno;
        real::close()(udp);
        return -err;
    }
    int eng_udp = adopt_internal_fd(udp);
    int eng_end = adopt_internal_fd(sp[1]);
    if (eng_udp < 0 || eng_end < 0) {
        if (eng_udp >= 0) engine::close_internal_fd(eng_udp);
        if (eng_end >= 0) engine::close_internal_fd(eng_end);
        real::close()(sp[0]);
        return -EMFILE;
    }
    engine::OverlayCompanion companion;
    if (lease.ms > 0) {   // the lease, kept by the engine
        int lfd = real::socket()(lease.server.is_v4() ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (lfd >= 0) {
            sockaddr_storage any{};
            any.ss_family = static_cast<sa_family_t>(lease.server.is_v4() ? AF_INET : AF_INET6);
            real::bind()(lfd, reinterpret_cast<sockaddr*>(&any),
                         lease.server.is_v4() ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
            companion.fd = adopt_internal_fd(lfd);
            companion.ep = std::make_unique<LeaseKeeper>(lease.server, cfg.overlay_id, self,
                                                          Time{lease.ms} * gs::sansio::kMillisecond, node.get());
            companion.farewell = &LeaseKeeper::farewell;
        }
    }
    // Through others: `joined` once a neighbour has taken this member in
    // (core/engine/overlay_host.h), so the first sends reach someone.
    m.shared.await_neighbour = !members.empty() || std::any_of(cfg.bootstrap.begin(), cfg.bootstrap.end(),
                                                               [&](const gs::sansio::Addr& b) { return b != self; });
    int err = 0;
    const char* proto = cfg.protocol == ov::Protocol::dt ? "DT" : "HC";
    run_on_engine(*e, [&](engine::Engine& en) {
        m.host = engine::OverlayHost::start(en, std::move(node), eng_udp, eng_end, m.shared, std::move(companion), &err);
        if (m.host != nullptr) engine::overlay_listed(m.host, cfg.overlay_id, proto);   // gsctl overlay members
    });
    if (m.host == nullptr) {
        msgs.push_back(text_of("the overlay member cannot start: %s", strerror(-err)));
        engine::close_internal_fd(eng_udp);
        engine::close_internal_fd(eng_end);
        real::close()(sp[0]);
        return err;
    }
    m.fd = sp[0];
    m.e = e;
    m.max_payload = cfg.max_payload;
    m.self = self;
    m.overlay_id = cfg.overlay_id;
    answer_gsctl();   // the member's view, for gsctl overlay members
    return 0;
}

namespace {

gs_overlay* open_member(const char* path) {
    if (path == nullptr) {
        GS_LOG(warn, "gs_overlay_open: config_file is NULL: give the overlay's attribute file (docs/overlay.md) (EINVAL)");
        errno = EINVAL;
        return nullptr;
    }
    std::string text;
    int err = 0;
    if (!read_file(path, text, err)) {
        GS_LOG(warn, "gs_overlay_open: cannot read %s: %s", path, strerror(err));
        errno = err;
        return nullptr;
    }
    auto* o = new (std::nothrow) gs_overlay;
    if (o == nullptr) {
        errno = ENOMEM;
        return nullptr;
    }
    std::vector<std::string> msgs;
    int rc = open_overlay_member(text, path, *o, msgs);
    for (const std::string& m : msgs) GS_LOG(warn, "gs_overlay_open: %s", m.c_str());
    if (rc != 0) {
        delete o;
        errno = -rc;
        return nullptr;
    }
    GS_LOG(info, "overlay %llu: member at %s opened from %s", static_cast<unsigned long long>(o->overlay_id),
           o->self.str().c_str(), path);
    return o;
}

int request(gs_overlay* o, const engine::OverlayRequest& r, const void* msg, size_t len, int flags) noexcept {
    iovec iov[2] = {{const_cast<engine::OverlayRequest*>(&r), sizeof r}, {const_cast<void*>(msg), len}};
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = len ? 2 : 1;
    ssize_t n = real::sendmsg()(o->fd, &m, flags | MSG_NOSIGNAL);
    if (n < 0) return errno == EPIPE ? fail(ECONNRESET) : -1;
    return 0;
}

bool member_open(const gs_overlay* o) noexcept {
    return o != nullptr && o->shared.closed.load(std::memory_order_acquire) == 0;
}

}  // namespace

GS_EXPORT gs_overlay* gs_overlay_open(const char* config_file) {
    try {
        return open_member(config_file);
    } catch (...) {   // std::bad_alloc from the config reader: nothing crosses into C
        errno = ENOMEM;
        return nullptr;
    }
}

GS_EXPORT int gs_overlay_join(gs_overlay* o, int timeout_ms) {
    if (!member_open(o)) return fail(o ? ECONNRESET : EINVAL);
    if (o->shared.joined.load(std::memory_order_acquire) == 1) return 0;
    if (request(o, engine::OverlayRequest{engine::OverlayRequest::join}, nullptr, 0, 0) != 0) return -1;
    timespec deadline{};
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    int64_t end = deadline.tv_sec * 1'000'000'000LL + deadline.tv_nsec + int64_t{timeout_ms} * 1'000'000;
    while (o->shared.joined.load(std::memory_order_acquire) == 0) {
        if (o->shared.closed.load(std::memory_order_acquire)) return fail(ECONNRESET);
        timespec ts{}, *tsp = nullptr;
        if (timeout_ms >= 0) {
            timespec now{};
            clock_gettime(CLOCK_MONOTONIC, &now);
            int64_t left = end - (now.tv_sec * 1'000'000'000LL + now.tv_nsec);
            if (left <= 0) return fail(ETIMEDOUT);
            ts.tv_sec = left / 1'000'000'000;
            ts.tv_nsec = left % 1'000'000'000;
            tsp = &ts;
        }
        long rc = syscall(SYS_futex, reinterpret_cast<uint32_t*>(&o->shared.joined), FUTEX_WAIT_PRIVATE, 0, tsp, nullptr, 0);
        if (rc != 0 && errno == EINTR) return fail(EINTR);
    }
    return 0;
}

GS_EXPORT int gs_overlay_send(gs_overlay* o, int to, const void* msg, size_t len, uint64_t root, uint64_t node) {
    if (o == nullptr || (msg == nullptr && len > 0) || to < GS_TO_ALL || to > GS_TO_NODE) {
        GS_LOG(warn, "gs_overlay_send: to = %d, msg %s: give a member, GS_TO_ALL..GS_TO_NODE and a message (EINVAL)",
               to, msg ? "set" : "NULL");
        return fail(EINVAL);
    }
    if (len > o->max_payload) {
        GS_LOG(warn, "gs_overlay_send: %zu bytes is more than this overlay's MaxPayload = %zu (EINVAL)", len, o->max_payload);
        return fail(EINVAL);
    }
    if (!member_open(o)) return fail(ECONNRESET);
    if (o->shared.joined.load(std::memory_order_acquire) == 0) return fail(ENOTCONN);
    engine::OverlayRequest r{engine::OverlayRequest::send, static_cast<uint8_t>(to)};
    r.root = root;
    r.node = node;
    return request(o, r, msg, len, 0);
}

GS_EXPORT ssize_t gs_overlay_recv(gs_overlay* o, void* buf, size_t len, uint64_t* source, int flags) {
    if (o == nullptr || (buf == nullptr && len > 0)) return fail(EINVAL);
    engine::OverlayDelivery d;
    iovec iov[2] = {{&d, sizeof d}, {buf, len}};
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    ssize_t n = real::recvmsg()(o->fd, &m, flags & MSG_DONTWAIT);
    if (n < 0) return -1;
    if (n == 0) return fail(ECONNRESET);   // the member was closed
    if (static_cast<size_t>(n) < sizeof d) return fail(EPROTO);
    if (source) *source = d.source;
    size_t payload = static_cast<size_t>(n) - sizeof d;
    return static_cast<ssize_t>(payload < len ? payload : len);
}

GS_EXPORT int gs_overlay_fd(const gs_overlay* o) { return o ? o->fd : fail(EINVAL); }

GS_EXPORT uint64_t gs_overlay_address(const gs_overlay* o) {
    return o ? o->shared.address.load(std::memory_order_relaxed) : GS_NO_ADDRESS;
}

namespace {

// Runs a topology question on the engine thread. -1 ENOTCONN when not a member.
template <class F>
int topology(gs_overlay* o, F fn) noexcept {
    if (o == nullptr) return fail(EINVAL);
    if (!member_open(o)) return fail(ECONNRESET);
    int rc = 0;
    run_on_engine(*o->e, [&](engine::Engine&) {
        if (o->host == nullptr || !o->host->node().joined()) {
            rc = -ENOTCONN;
            return;
        }
        try {
            rc = fn(o->host->node());
        } catch (...) {
            rc = -ENOMEM;
        }
    });
    return rc < 0 ? fail(-rc) : rc;
}

int copy_out(const std::vector<ov::LogicalAddress>& v, uint64_t* out, size_t max) noexcept {
    for (size_t i = 0; i < v.size() && i < max && out; ++i) out[i] = v[i];
    return static_cast<int>(v.size());
}

}  // namespace

GS_EXPORT int gs_overlay_neighbors(gs_overlay* o, uint64_t* out, size_t max) {
    return topology(o, [&](ov::Node& n) { return copy_out(n.neighbors(), out, max); });
}

GS_EXPORT int gs_overlay_children(gs_overlay* o, uint64_t root, uint64_t* out, size_t max) {
    return topology(o, [&](ov::Node& n) { return copy_out(n.children(root), out, max); });
}

GS_EXPORT int gs_overlay_parent(gs_overlay* o, uint64_t root, uint64_t* parent) {
    if (parent == nullptr) return fail(EINVAL);
    return topology(o, [&](ov::Node& n) {
        auto p = n.parent(root);
        if (!p) return -ENOENT;
        *parent = *p;
        return 0;
    });
}

GS_EXPORT int gs_overlay_stats(const gs_overlay* o, struct gs_overlay_counters* out) {
    if (o == nullptr || out == nullptr) return fail(EINVAL);
    out->sent = o->shared.sent.load(std::memory_order_relaxed);
    out->delivered = o->shared.delivered.load(std::memory_order_relaxed);
    out->dropped_unread = o->shared.dropped_unread.load(std::memory_order_relaxed);
    out->refused = o->shared.refused.load(std::memory_order_relaxed);
    return 0;
}

GS_EXPORT int gs_overlay_close(gs_overlay* o) {
    if (o == nullptr) return fail(EINVAL);
    // The engine sees its end hang up, leaves the overlay and frees the host.
    real::close()(o->fd);
    for (int i = 0; i < 2000 && o->shared.closed.load(std::memory_order_acquire) == 0; ++i) usleep(1000);
    if (o->shared.closed.load(std::memory_order_acquire) == 0) {
        GS_LOG(warn, "gs_overlay_close: the engine did not let go of the member within 2 s; its memory is kept");
        return 0;   // leaked rather than freed under the engine
    }
    delete o;
    return 0;
}
