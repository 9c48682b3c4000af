#include "core/engine/overlay_host.h"

#include "core/engine/overlay_status.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <new>

#include "core/engine/bridge_util.h"

namespace gs::engine {

namespace {

constexpr size_t kMaxMessage = 65536;   // request header + payload, at most
constexpr unsigned kTurn = 256;         // requests per wake-up before the engine's other work

char* scratch() noexcept {   // engine thread only
    static thread_local std::unique_ptr<char[]> buf(new (std::nothrow) char[kMaxMessage]);
    return buf.get();
}

OverlayHost* g_hosts = nullptr;   // every live host (engine thread only)

}  // namespace

// At exit: a host whose program end hung up (a group member the datagram
// bridge let go of, an API member closed) has not left yet until the
// engine has seen that; members still open stay as they are.
bool OverlayHost::drained() noexcept {
    for (OverlayHost* h = g_hosts; h; h = h->next_) {
        if (h->closing_) continue;
        pollfd p{h->end_, POLLIN | POLLRDHUP, 0};
        if (sys::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP))) return false;
    }
    return true;
}

OverlayHost* OverlayHost::start(Engine& e, std::unique_ptr<overlay::Node> node, int udp_fd, int engine_end,
                                OverlayShared& shared, int* err) noexcept {
    return start(e, std::move(node), udp_fd, engine_end, shared, OverlayCompanion{}, err);
}

OverlayHost* OverlayHost::start(Engine& e, std::unique_ptr<overlay::Node> node, int udp_fd, int engine_end,
                                OverlayShared& shared, OverlayCompanion companion, int* err) noexcept {
    // On failure udp_fd and engine_end stay the caller's; the companion's fd
    // (the host's from the call on) is closed.
    auto fail = [&](int code) -> OverlayHost* {
        if (companion.fd >= 0) close_internal_fd(companion.fd);
        if (err) *err = -code;
        return nullptr;
    };
    if (!node || scratch() == nullptr) return fail(node ? ENOMEM : EINVAL);
    int fl = fcntl(engine_end, F_GETFL);
    if (fl < 0 || fcntl(engine_end, F_SETFL, fl | O_NONBLOCK) != 0) return fail(errno);
    auto* h = new (std::nothrow) OverlayHost(std::move(node), engine_end, shared);
    if (h == nullptr) return fail(ENOMEM);
    int uerr = 0;
    h->udp_ = UdpHost::start(e, udp_fd, *h->node_, UdpHostOptions{}, &OverlayHost::activity, h, &uerr);
    if (h->udp_ == nullptr) {
        delete h;
        return fail(-uerr);
    }
    if (companion.ep && companion.fd >= 0) {
        h->companion_ = std::move(companion);
        int cerr = 0;
        h->companion_udp_ = UdpHost::start(e, h->companion_.fd, *h->companion_.ep, UdpHostOptions{},
                                            &OverlayHost::companion_activity, h, &cerr);
        if (h->companion_udp_ == nullptr) close_internal_fd(h->companion_.fd);   // the member goes on without it
    } else if (companion.fd >= 0) {
        close_internal_fd(companion.fd);
    }
    static std::atomic<bool> hooks{false};
    if (!hooks.exchange(true)) set_drain_hooks(nullptr, &OverlayHost::drained);
    h->next_ = g_hosts;
    if (h->next_) h->next_->prev_ = h;
    g_hosts = h;
    h->in_.h = h->cancel_.h = h;
    io_uring_sqe* q = e.sqe();
    io_uring_prep_poll_multishot(q, engine_end, POLLIN | POLLRDHUP);
    io_uring_sqe_set_data(q, static_cast<Completion*>(&h->in_));
    h->in_.armed = true;
    ++h->inflight_;
    h->publish();
    if (err) *err = 0;
    return h;
}

void OverlayHost::In::complete(Engine& e, const io_uring_cqe& cqe) noexcept {
    if (!(cqe.flags & IORING_CQE_F_MORE)) {
        armed = false;
        --h->inflight_;
    }
    if (h->closing_) return h->maybe_free();
    if (!armed && cqe.res >= 0 && !(cqe.res & (POLLHUP | POLLRDHUP))) {   // ended (overflow): again
        io_uring_sqe* q = e.sqe();
        io_uring_prep_poll_multishot(q, h->end_, POLLIN | POLLRDHUP);
        io_uring_sqe_set_data(q, static_cast<Completion*>(this));
        armed = true;
        ++h->inflight_;
    }
    h->requests(e);
    if (!h->closing_ && cqe.res >= 0 && (cqe.res & (POLLHUP | POLLRDHUP))) {
        // The program closed (or shut) its end, after what it wrote: leave.
        h->close(e);
    }
}

void OverlayHost::Cancel::complete(Engine& e, const io_uring_cqe& cqe) noexcept {
    --h->inflight_;
    if (cqe.res == -EALREADY && h->in_.armed) return h->cancel_in(e);
    h->maybe_free();
}

void OverlayHost::cancel_in(Engine& e) noexcept {
    io_uring_sqe* q = e.sqe();
    io_uring_prep_poll_remove(q, reinterpret_cast<uintptr_t>(static_cast<Completion*>(&in_)));
    io_uring_sqe_set_data(q, static_cast<Completion*>(&cancel_));
    ++inflight_;
}

void OverlayHost::requests(Engine& e) noexcept {
    char* buf = scratch();
    bool any = false;
    for (unsigned i = 0; i < kTurn; ++i) {
        ssize_t n = sys::recv(end_, buf, kMaxMessage, MSG_DONTWAIT);
        if (n <= 0) break;   // EAGAIN, or 0: EOF (handled by the caller) or an empty write (ignored)
        OverlayRequest r;
        if (static_cast<size_t>(n) < sizeof r) {
            shared_.refused.fetch_add(1, std::memory_order_relaxed);
            shared_.last_refusal.store(EINVAL, std::memory_order_relaxed);
            continue;   // not the API's: a raw write on the member's fd
        }
        memcpy(&r, buf, sizeof r);
        const int64_t now = now_ns();
        any = true;
        int rc = 0;
        switch (r.op) {
            case OverlayRequest::join: node_->join(now); break;
            case OverlayRequest::leave: node_->leave(now); break;
            case OverlayRequest::send:
                if (r.to > static_cast<uint8_t>(overlay::SendTo::node)) {
                    rc = -EINVAL;
                    break;
                }
                rc = node_->send(static_cast<overlay::SendTo>(r.to),
                                 {reinterpret_cast<const uint8_t*>(buf) + sizeof r, static_cast<size_t>(n) - sizeof r},
                                 now, r.root, r.node);
                if (rc == 0) shared_.sent.fetch_add(1, std::memory_order_relaxed);
                break;
            default: rc = -EINVAL;
        }
        if (rc < 0) {
            shared_.refused.fetch_add(1, std::memory_order_relaxed);
            shared_.last_refusal.store(-rc, std::memory_order_relaxed);
        }
    }
    if (!any) return;
    udp_->poke(e);
    deliver();
    publish();
}

// The companion may have driven the node (the lease keeper hints members
// to a partition's leader): what the node wants sent goes now.
void OverlayHost::companion_activity(Engine& e, void* self) noexcept {
    auto* h = static_cast<OverlayHost*>(self);
    if (h->closing_ || h->udp_ == nullptr) return;
    h->udp_->poke(e);
}

void OverlayHost::activity(Engine&, void* self) noexcept {
    auto* h = static_cast<OverlayHost*>(self);
    if (h->closing_) return;
    h->deliver();
    h->publish();
}

void OverlayHost::deliver() noexcept {
    overlay::Delivery d;
    while (node_->poll_deliver(d)) {
        OverlayDelivery hdr{d.source};
        iovec iov[2] = {{&hdr, sizeof hdr}, {d.payload.data(), d.payload.size()}};
        msghdr m{};
        m.msg_iov = iov;
        m.msg_iovlen = 2;
        if (sys::sendmsg(end_, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
            shared_.dropped_unread.fetch_add(1, std::memory_order_relaxed);   // the program is not reading
        else
            shared_.delivered.fetch_add(1, std::memory_order_relaxed);
    }
}

void OverlayHost::publish() noexcept {
    shared_.address.store(node_->joined() ? node_->address() : overlay::kNoAddress, std::memory_order_relaxed);
    uint32_t j = node_->joined() ? 1 : 0;
    if (j == 0) {
        member_since_ = 0;
    } else if (shared_.await_neighbour && shared_.joined.load(std::memory_order_relaxed) == 0) {
        // Wired in: a message this node sends to all would reach someone,
        // i.e. some neighbour's view (its last Hello) makes it a child in
        // this node's tree. A confirmed neighbour is not enough: right after
        // the join its known neighbour list can predate this node (measured:
        // a one-shot sender in mcast_netns sent its datagram to nobody). The
        // node's activity, Hellos included, brings us back here.
        const int64_t now = now_ns();
        if (member_since_ == 0) member_since_ = now;
        if (node_->children(overlay::kNoAddress).empty() && now - member_since_ < kWireWait) j = 0;
    }
    if (shared_.joined.exchange(j, std::memory_order_release) != j)
        syscall(SYS_futex, reinterpret_cast<uint32_t*>(&shared_.joined), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
}

void OverlayHost::close(Engine& e) noexcept {
    if (closing_) return;
    closing_ = true;
    node_->leave(now_ns());
    udp_->poke(e);   // the leave goes out now
    udp_->close(e);
    udp_ = nullptr;
    if (companion_udp_ != nullptr) {
        if (companion_.farewell) companion_.farewell(*companion_.ep, now_ns());
        companion_udp_->poke(e);
        companion_udp_->close(e);
        companion_udp_ = nullptr;
    }
    if (in_.armed) cancel_in(e);
    maybe_free();
}

void OverlayHost::maybe_free() noexcept {
    if (!closing_ || inflight_ > 0) return;
    overlay_unlisted(this);
    close_internal_fd(end_);
    if (prev_) prev_->next_ = next_;
    else g_hosts = next_;
    if (next_) next_->prev_ = prev_;
    OverlayShared& s = shared_;
    auto on_closed = s.on_closed;   // read first: an owner waiting on `closed` may free s
    s.joined.store(0, std::memory_order_release);
    delete this;
    s.closed.store(1, std::memory_order_release);
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&s.joined), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
    if (on_closed) on_closed(&s);
}

}  // namespace gs::engine
