#include "core/engine/udp_host.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include <new>

#include "core/engine/bridge_util.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace gs::engine {

namespace {

constexpr unsigned kBatch = 16;            // datagrams (or GRO batches) per recvmmsg / sendmmsg
constexpr size_t kSlot = 65536;            // a GRO batch is at most 64 KiB
constexpr unsigned kMaxSegments = 64;      // UDP_MAX_SEGMENTS in the kernel
constexpr unsigned kTurn = 256;            // receive calls per wake-up before the engine's other work
constexpr size_t kCmsg = CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(uint16_t));

// Scratch per engine thread, on the heap, made by the thread's first
// UdpHost (start): only a pointer is thread_local, because thread_local
// objects of this library are static TLS, set up in every thread of the
// host program (the send scratch alone is 65 KiB: a program with 100
// threads would carry 6.5 MB of it).
struct RxBatch {
    std::unique_ptr<char[]> buf{new (std::nothrow) char[kBatch * kSlot]};
    mmsghdr msg[kBatch];
    iovec iov[kBatch];
    sockaddr_storage from[kBatch];
    alignas(cmsghdr) char ctl[kBatch][kCmsg];
};
// Send scratch: a run of segments is one mmsghdr with one iovec per piece.
struct TxBatch {
    mmsghdr msg[kBatch];
    iovec iov[kBatch * kMaxSegments * 4];   // a held datagram is up to four pieces
    sockaddr_storage to[kBatch];
    alignas(cmsghdr) char ctl[kBatch][CMSG_SPACE(sizeof(uint16_t))];
    unsigned count[kBatch];   // datagrams in each message
};
struct Scratch {
    std::unique_ptr<RxBatch> rx;
    std::unique_ptr<TxBatch> tx;
};
Scratch& scratch() noexcept {
    static thread_local Scratch s;
    return s;
}
bool scratch_ready() noexcept {
    Scratch& s = scratch();
    if (!s.rx) s.rx.reset(new (std::nothrow) RxBatch);
    if (s.rx && !s.rx->buf) s.rx.reset();
    if (!s.tx) s.tx.reset(new (std::nothrow) TxBatch);
    return s.rx && s.tx;
}
// Engine thread, after a successful start() on it.
RxBatch& rx_batch() noexcept { return *scratch().rx; }
TxBatch& tx_batch() noexcept { return *scratch().tx; }

// A datagram as iovecs: its bytes, with any held payload in between. Returns how many (1 to 4).
unsigned pieces(sansio::Datagram& d, iovec* v) noexcept {
    if (!d.holds()) {
        v[0] = {d.bytes.data(), d.bytes.size()};
        return 1;
    }
    unsigned n = 0;
    if (d.split > 0) v[n++] = {d.bytes.data(), d.split};
    for (auto h : d.held)
        if (!h.empty()) v[n++] = {const_cast<uint8_t*>(h.data()), h.size()};
    if (d.split < d.bytes.size()) v[n++] = {d.bytes.data() + d.split, d.bytes.size() - d.split};
    return n;
}

}  // namespace

sansio::Addr to_addr(const sockaddr* sa, socklen_t len) noexcept {
    sansio::Addr a;
    if (sa->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        a = sansio::Addr::v4(ntohl(in->sin_addr.s_addr), ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
        memcpy(a.ip.data(), &in6->sin6_addr, 16);
        a.port = ntohs(in6->sin6_port);
    }
    return a;
}

socklen_t from_addr(const sansio::Addr& a, sockaddr_storage& ss, int family) noexcept {
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET && a.is_v4()) {
        auto* in = reinterpret_cast<sockaddr_in*>(&ss);
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, a.ip.data() + 12, 4);
        in->sin_port = htons(a.port);
        return sizeof *in;
    }
    if (family != AF_INET6) return 0;   // an IPv6 peer on an IPv4 socket: unreachable
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    in6->sin6_family = AF_INET6;
    memcpy(&in6->sin6_addr, a.ip.data(), 16);
    in6->sin6_port = htons(a.port);
    return sizeof *in6;
}

UdpHost* UdpHost::start(Engine& e, int fd, sansio::Endpoint& ep, const UdpHostOptions& o, Activity on_activity,
                        void* owner, int* err) noexcept {
    auto fail = [&](int code) -> UdpHost* {
        if (err) *err = -code;
        return nullptr;
    };
    if (!scratch_ready()) return fail(ENOMEM);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return fail(errno);
    if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) return fail(EAFNOSUPPORT);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) return fail(errno);
    auto* h = new (std::nothrow) UdpHost(fd, ep, o, on_activity, owner);
    if (h == nullptr) return fail(ENOMEM);
    h->family_ = ss.ss_family;
    try {
        h->spare_.reserve(kMaxSpare);
    } catch (...) {
        delete h;
        return fail(ENOMEM);
    }
    h->local_ = to_addr(reinterpret_cast<sockaddr*>(&ss), len);
    if (o.gro) {
        int one = 1;
        if (setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) != 0) h->opt_.gro = false;
    }
    h->in_.h = h->out_.h = h->cancel_in_.h = h->cancel_out_.h = h;
    h->cancel_in_.target = &h->in_;
    h->cancel_in_.armed = &h->in_.armed;
    h->cancel_out_.target = &h->out_;
    h->cancel_out_.armed = &h->out_.armed;
    io_uring_sqe* q = e.sqe();
    io_uring_prep_poll_multishot(q, fd, POLLIN);
    io_uring_sqe_set_data(q, static_cast<Completion*>(&h->in_));
    h->in_.armed = true;
    ++h->inflight_;
    h->poke(e);   // what the endpoint wants sent already (a client's first packet), its timer
    if (err) *err = 0;
    return h;
}

void UdpHost::In::complete(Engine& e, const io_uring_cqe& cqe) noexcept {
    if (!(cqe.flags & IORING_CQE_F_MORE)) {
        armed = false;
        --h->inflight_;
    }
    if (h->closing_) return h->maybe_free();
    if (!armed && cqe.res >= 0) {   // the kernel ended the multishot (overflow): again
        io_uring_sqe* q = e.sqe();
        io_uring_prep_poll_multishot(q, h->fd_, POLLIN);
        io_uring_sqe_set_data(q, static_cast<Completion*>(this));
        armed = true;
        ++h->inflight_;
    }
    h->receive(e);
}

void UdpHost::Out::complete(Engine& e, const io_uring_cqe&) noexcept {
    armed = false;
    --h->inflight_;
    if (h->closing_) return h->maybe_free();
    h->flush(e);
    if (h->activity_) h->activity_(e, h->owner_);
}

void UdpHost::Cancel::complete(Engine& e, const io_uring_cqe& cqe) noexcept {
    --h->inflight_;
    if (cqe.res == -EALREADY && *armed) return h->cancel(e, *this);   // an event was being delivered: again
    h->maybe_free();
}

// Remove a poll; its last completion (-ECANCELED) drops the count.
void UdpHost::cancel(Engine& e, Cancel& c) noexcept {
    io_uring_sqe* q = e.sqe();
    io_uring_prep_poll_remove(q, reinterpret_cast<uintptr_t>(c.target));
    io_uring_sqe_set_data(q, static_cast<Completion*>(&c));
    ++inflight_;
}

// Read what is there (bounded per wake-up), feed it to the endpoint, send
// its answers, tell the owner. Each recvmmsg's datagrams stay in the
// scratch until the endpoint's on_batch_end: an endpoint may keep views of
// them (mces borrow_receive) that the owner reads in its Activity callback,
// so every batch ends with flush, Activity, on_batch_end before the scratch
// is read into again. (One Activity per batch also lets the owner take the
// bytes, and the endpoint send its ACKs and credit, while the sender is
// still busy: not only after kTurn batches.)
void UdpHost::receive(Engine& e) noexcept {
    RxBatch& b = rx_batch();
    for (unsigned turn = 0; turn < kTurn && !closing_; ++turn) {
        for (unsigned i = 0; i < kBatch; ++i) {
            b.iov[i] = {b.buf.get() + size_t{i} * kSlot, kSlot};
            msghdr& m = b.msg[i].msg_hdr;
            m = msghdr{};
            m.msg_name = &b.from[i];
            m.msg_namelen = sizeof b.from[i];
            m.msg_iov = &b.iov[i];
            m.msg_iovlen = 1;
            m.msg_control = b.ctl[i];
            m.msg_controllen = kCmsg;
        }
        int n = sys::recvmmsg(fd_, b.msg, kBatch, MSG_DONTWAIT);
        if (n <= 0) {
            // EAGAIN (the poll says when there is more), or an ICMP error
            // already reported. An earlier batch told the owner already.
            if (turn == 0) {
                flush(e);
                if (activity_) activity_(e, owner_);
            }
            return;
        }
        ++stats_.rx_calls;
        const int64_t now = now_ns();
        for (int i = 0; i < n; ++i) {
            const msghdr& m = b.msg[i].msg_hdr;
            size_t len = b.msg[i].msg_len;
            size_t seg = len;
            for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&m), c)) {
                if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                    int g = 0;
                    memcpy(&g, CMSG_DATA(c), sizeof g);
                    if (g > 0) seg = static_cast<size_t>(g);
                }
            }
            if (seg < len) ++stats_.rx_gro_batches;
            const sansio::Addr from = to_addr(reinterpret_cast<const sockaddr*>(&b.from[i]), m.msg_namelen);
            const auto* p = reinterpret_cast<const uint8_t*>(b.iov[i].iov_base);
            for (size_t off = 0; off < len && !closing_; off += seg) {
                size_t l = len - off < seg ? len - off : seg;
                ++stats_.rx_datagrams;
                stats_.rx_bytes += l;
                batch_open_ = true;
                ep_.on_datagram(from, local_, {p + off, l}, now);
            }
        }
        if (closing_) return;
        flush(e);
        if (activity_) activity_(e, owner_);
        if (closing_) return;   // close() ended the batch: the endpoint may be gone
        end_batch();
        if (static_cast<unsigned>(n) < kBatch) return;
    }
}

void UdpHost::end_batch() noexcept {
    if (!batch_open_) return;
    batch_open_ = false;
    ep_.on_batch_end();
}

void UdpHost::fire(Engine& e, int64_t now) noexcept {
    timer_at_ = 0;
    if (closing_) return;
    ++stats_.timeouts;
    ep_.on_timeout(now);
    flush(e);
    if (activity_) activity_(e, owner_);
}

void UdpHost::poke(Engine& e) noexcept {
    if (!closing_) flush(e);
}

// Take everything the endpoint wants sent, send it in batches; then re-arm
// its timer.
void UdpHost::flush(Engine& e) noexcept {
    if (in_flush_) return;
    in_flush_ = true;
    ep_.advance(now_ns());   // a poke after a quiet spell: packets carry the time they leave
    for (;;) {
        bool full = !send_backlog();
        if (full) {
            if (!out_.armed) {
                io_uring_sqe* q = e.sqe();
                io_uring_prep_poll_add(q, fd_, POLLOUT);
                io_uring_sqe_set_data(q, static_cast<Completion*>(&out_));
                out_.armed = true;
                ++inflight_;
            }
        }
        // Refill the backlog from the endpoint (even when full: what does
        // not fit beyond max_backlog is dropped, the protocol's loss).
        // Each datagram is built into a buffer sent earlier (spare_): no
        // allocation, and no page faults, per packet.
        // Payload may stay in the endpoint's buffers (may_hold) while this
        // flush runs: nothing else calls the endpoint meanwhile.
        size_t took = 0;
        sansio::Datagram d;
        d.bytes = take_spare();
        d.may_hold = true;
        while (took < kBatch * kMaxSegments && ep_.poll_transmit(d)) {
            ++took;
            if (backlog_.size() >= opt_.max_backlog) {
                ++stats_.tx_queue_full;
                d.held[0] = d.held[1] = {};
                continue;
            }
            held_ += d.holds();
            backlog_.push_back(std::move(d));
            d = sansio::Datagram{};
            d.bytes = take_spare();
            d.may_hold = true;
        }
        give_spare(std::move(d.bytes));
        if (took == 0 || full) break;
    }
    // What waits for POLLOUT must not point into the endpoint any more.
    if (held_ > 0) {
        for (sansio::Datagram& b : backlog_)
            if (b.holds()) {
                b.flatten();
                ++stats_.tx_held_copied;
            }
        held_ = 0;
    }
    in_flush_ = false;
    rearm_timer(e);
}

// Send the backlog: runs of datagrams to one peer and of one size (the last
// may be shorter) as GSO super-datagrams, up to kBatch messages per call.
bool UdpHost::send_backlog() noexcept {
    TxBatch& t = tx_batch();
    while (!backlog_.empty()) {
        unsigned msgs = 0, iovs = 0;
        auto it = backlog_.begin();
        while (msgs < kBatch && it != backlog_.end()) {
            const sansio::Addr& to = it->to;
            const size_t seg = it->size();
            unsigned count = 0;
            size_t total = 0;
            const unsigned first = iovs;
            // A run: same peer, same size; a shorter one may end it.
            while (it != backlog_.end() && count < kMaxSegments && it->to == to &&
                   (count == 0 || (opt_.gso && seg <= gso_seg_max_ && it->size() <= seg &&
                                   total + it->size() <= 65000))) {
                iovs += pieces(*it, &t.iov[iovs]);
                total += it->size();
                ++count;
                bool shorter = it->size() < seg;
                ++it;
                if (shorter || seg == 0) break;
            }
            msghdr& m = t.msg[msgs].msg_hdr;
            m = msghdr{};
            socklen_t nl = from_addr(to, t.to[msgs], family_);
            m.msg_name = nl ? &t.to[msgs] : nullptr;
            m.msg_namelen = nl;
            m.msg_iov = &t.iov[first];
            m.msg_iovlen = iovs - first;
            if (count > 1) {
                m.msg_control = t.ctl[msgs];
                m.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
                cmsghdr* c = CMSG_FIRSTHDR(&m);
                c->cmsg_level = SOL_UDP;
                c->cmsg_type = UDP_SEGMENT;
                c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                uint16_t s = static_cast<uint16_t>(seg);
                memcpy(CMSG_DATA(c), &s, sizeof s);
            }
            t.count[msgs++] = count;
        }
        int sent = sys::sendmmsg(fd_, t.msg, msgs, MSG_DONTWAIT | MSG_NOSIGNAL);
        ++stats_.tx_calls;
        if (sent < 0) {
            int err = errno;
            if (err == EAGAIN || err == ENOBUFS) return false;   // full: POLLOUT says when
            if (err == EINTR) continue;
            if (err == EIO && t.count[0] > 1) {   // the path cannot segment: send them one by one
                opt_.gso = false;
                continue;
            }
            if ((err == EINVAL || err == EMSGSIZE) && t.count[0] > 1) {
                // Segments larger than the route's MTU: this size and larger
                // go alone from now on (IP fragments them), nothing is lost.
                ++stats_.tx_gso_refused;
                gso_seg_max_ = backlog_.front().size() - 1;
                continue;
            }
            // The first message was refused (EMSGSIZE, no route, an ICMP
            // error pending): lose it, as the network would have.
            ++stats_.tx_errors;
            for (unsigned k = 0; k < t.count[0]; ++k) pop_sent();
            continue;
        }
        // (A refusal after the first message is reported by the next call.)
        for (int i = 0; i < sent; ++i) {
            stats_.tx_datagrams += t.count[i];
            if (t.count[i] > 1) ++stats_.tx_gso_batches;
            for (unsigned k = 0; k < t.count[i]; ++k) {
                stats_.tx_bytes += backlog_.front().size();
                pop_sent();
            }
        }
    }
    return true;
}

std::vector<uint8_t> UdpHost::take_spare() noexcept {
    if (spare_.empty()) return {};
    std::vector<uint8_t> v = std::move(spare_.back());
    spare_.pop_back();
    spare_bytes_ -= v.capacity();
    return v;
}

// Kept with its size: the endpoint resizes it to what it builds, and a
// buffer that already has that size is not zeroed again.
void UdpHost::give_spare(std::vector<uint8_t>&& v) noexcept {
    if (v.capacity() == 0 || spare_.size() >= kMaxSpare || spare_bytes_ + v.capacity() > kMaxSpareBytes) return;
    spare_bytes_ += v.capacity();
    spare_.push_back(std::move(v));   // reserved in start(): no allocation
}

void UdpHost::pop_sent() noexcept {
    held_ -= backlog_.front().holds();
    give_spare(std::move(backlog_.front().bytes));
    backlog_.pop_front();
}

void UdpHost::rearm_timer(Engine& e) noexcept {
    if (closing_) return;
    sansio::Time t = ep_.next_timeout();
    if (t == sansio::kNever) {
        if (timer_at_ != 0) e.cancel(*this);
        timer_at_ = 0;
        return;
    }
    if (t <= 0) t = 1;
    if (timer_at_ == t) return;
    if (timer_at_ != 0) e.cancel(*this);
    timer_at_ = t;
    e.arm(*this, t);
}

void UdpHost::close(Engine& e) noexcept {
    if (closing_) return;
    // Called from the Activity callback in the middle of receive(): the
    // endpoint is still there now, maybe not after this returns.
    end_batch();
    closing_ = true;
    if (timer_at_ != 0) e.cancel(*this);
    timer_at_ = 0;
    if (in_.armed) cancel(e, cancel_in_);
    if (out_.armed) cancel(e, cancel_out_);
    maybe_free();
}

void UdpHost::maybe_free() noexcept {
    if (!closing_ || inflight_ > 0) return;
    close_internal_fd(fd_);
    delete this;
}

}  // namespace gs::engine
