#include "core/engine/bridge.h"

#include "core/qos/token_bucket.h"

#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <memory>
#include <new>

namespace gs::engine {
namespace {

constexpr size_t kChunk = 256 * 1024;   // per direction; one recv and one send in flight

long futex(std::atomic<uint32_t>* w, int op, uint32_t v) noexcept {
    return syscall(SYS_futex, reinterpret_cast<uint32_t*>(w), op, v, nullptr, nullptr, 0);
}

}  // namespace

// The engine's side of one bridged flow. Lives on the engine thread; frees
// itself when both directions are over and nothing is in flight.
class Bridge;
Bridge* g_bridges = nullptr;   // every live bridge (engine thread only)

class Bridge {
public:
    explicit Bridge(BridgeState& s) noexcept : s_(s) {
        next_ = g_bridges;
        if (next_) next_->prev_ = this;
        g_bridges = this;
    }
    ~Bridge() {
        if (prev_) prev_->next_ = next_;
        else g_bridges = next_;
        if (next_) next_->prev_ = prev_;
    }

    // At exit: the program writes no more. Half-close its end (if that fd is
    // still this bridge's socket) so the up direction ends with everything
    // it wrote relayed, then a FIN.
    static void drain_all(Engine&) noexcept {
        for (Bridge* b = g_bridges; b; b = b->next_) {
            if (b->up_.over || b->ending_ || b->s_.program_fd < 0) continue;
            struct stat st;
            if (fstat(b->s_.program_fd, &st) == 0 && st.st_ino == b->s_.program_ino)
                ::shutdown(b->s_.program_fd, SHUT_WR);
        }
    }
    // Every bridge has sent what the program wrote (or is gone).
    static bool drained() noexcept {
        for (Bridge* b = g_bridges; b; b = b->next_)
            if (!b->up_.over && !b->ending_) return false;
        return true;
    }

    void begin(Engine& e) noexcept {
        if (s_.accepted) return connected(e, 0);
        io_uring_sqe* q = e.sqe();
        io_uring_prep_connect(q, s_.transport, reinterpret_cast<const sockaddr*>(&s_.peer), s_.peer_len);
        io_uring_sqe_set_data(q, static_cast<Completion*>(&connect_));
        ++inflight_;
    }

private:
    // One direction: recv from `from`, send all of it to `to`, again. With a
    // bucket chain (the flow's limit, the process's aggregate), the sending
    // side goes in slices no bigger than the chain lets pass smoothly, each
    // when its tokens are there (a Timer waits for them); the receiving side
    // (transport -> program, a receive limit) reads no more than the chain
    // allows, so the peer's TCP is slowed by the window it sees.
    struct Pump final : Completion, Timer {
        Bridge* b = nullptr;
        int from = -1, to = -1;
        bool up = false;   // app -> transport
        bool sending = false, over = false, waiting = false;
        std::unique_ptr<char[]> buf;
        size_t len = 0, off = 0;
        qos::TokenBucket* bucket = nullptr;   // chain head, nullptr = unlimited

        // The largest piece sent or read at once under a limit: what the
        // slowest level earns in 2 ms, at least one full-size segment.
        size_t slice() const noexcept {
            uint64_t rate = 0;
            for (const qos::TokenBucket* t = bucket; t; t = t->parent())
                if (!t->unlimited() && (rate == 0 || t->rate() < rate)) rate = t->rate();
            if (rate == 0) return kChunk;
            uint64_t s = rate / 500;
            return s < 1448 ? 1448 : s > kChunk ? kChunk : static_cast<size_t>(s);
        }

        void wait(Engine& e, int64_t delay) noexcept {
            waiting = true;
            e.arm(*this, now_ns() + delay);
        }
        void fire(Engine& e, int64_t) noexcept override {
            waiting = false;
            if (b->ending_ || over) return b->maybe_free();
            if (sending) send(e);
            else recv(e);
        }

        void recv(Engine& e) noexcept {
            sending = false;
            size_t want = kChunk;
            if (bucket != nullptr && !up) {   // a receive limit
                int64_t now = now_ns();
                int64_t avail = qos::chain_available(bucket, now);
                if (avail <= 0) return wait(e, qos::chain_time_until(bucket, 1, now));
                want = slice();
            }
            io_uring_sqe* q = e.sqe();
            io_uring_prep_recv(q, from, buf.get(), want, 0);
            io_uring_sqe_set_data(q, static_cast<Completion*>(this));
            ++b->inflight_;
        }
        void send(Engine& e) noexcept {
            sending = true;
            size_t n = len - off;
            if (bucket != nullptr && up) {   // a send limit: paced slices
                if (n > slice()) n = slice();
                int64_t now = now_ns();
                int64_t t = qos::chain_time_until(bucket, n, now);
                if (t > 0) return wait(e, t);
                qos::chain_consume(bucket, n, now);
            }
            io_uring_sqe* q = e.sqe();
            io_uring_prep_send(q, to, buf.get() + off, n, MSG_NOSIGNAL);
            io_uring_sqe_set_data(q, static_cast<Completion*>(this));
            ++b->inflight_;
        }
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override {
            --b->inflight_;
            if (b->ending_ || over) return b->maybe_free();
            if (!sending) {
                if (cqe.res > 0) {
                    len = static_cast<size_t>(cqe.res);
                    off = 0;
                    if (bucket != nullptr && !up) qos::chain_consume(bucket, len, now_ns());
                    return send(e);
                }
                if (cqe.res == 0) {
                    // EOF: the program half-closed (or closed) its end, or the
                    // peer sent FIN. Pass the half-close on, unless the
                    // program closed with SO_LINGER {1, 0}: that is a reset.
                    over = true;
                    if (up && b->abortive_close()) return b->reset(e);
                    ::shutdown(to, SHUT_WR);
                    return b->direction_over(e);
                }
                return b->fail(e, up ? 0 : -cqe.res);   // a transport error is the program's business
            }
            if (cqe.res < 0) return b->fail(e, up ? -cqe.res : 0);
            off += static_cast<size_t>(cqe.res);
            std::atomic<uint64_t>* counter = up ? b->s_.bytes_out : b->s_.bytes_in;
            if (counter) counter->fetch_add(static_cast<uint64_t>(cqe.res), std::memory_order_relaxed);
            if (off < len) return send(e);
            recv(e);
        }
    };

    struct Connect final : Completion {
        Bridge* b = nullptr;
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override {
            --b->inflight_;
            b->connected(e, cqe.res);
        }
    };

    // Take back the bytes that kept the program's end from looking
    // writable: from now on it is, as a socket whose connect has an answer
    // (POLLOUT, with POLLHUP when that answer was a failure).
    void drain_filler() noexcept {
        static char sink[64 * 1024];   // engine thread only
        for (uint32_t left = s_.filler; left > 0;) {
            ssize_t n = ::recv(s_.app_end, sink, left < sizeof sink ? left : sizeof sink, MSG_DONTWAIT);
            if (n <= 0) break;
            left -= static_cast<uint32_t>(n);
        }
        s_.filler = 0;
    }

    void connected(Engine& e, int res) noexcept {
        if (res < 0) {
            s_.error.store(-res, std::memory_order_relaxed);
            s_.phase.store(BridgeState::failed, std::memory_order_release);
            announce();
            drain_filler();
            return end(e);
        }
        try {
            up_.buf.reset(new char[kChunk]);
            down_.buf.reset(new char[kChunk]);
        } catch (...) {
            s_.error.store(ENOBUFS, std::memory_order_relaxed);
            s_.phase.store(BridgeState::failed, std::memory_order_release);
            announce();
            return end(e);
        }
        // Connected from here on: say so before the program's end turns
        // writable (a program polling for POLLOUT may ask at once).
        s_.phase.store(BridgeState::connected, std::memory_order_release);
        announce();
        drain_filler();
        // Limits: the flow's own, under the process's aggregate (the engine
        // thread owns both; aggregates are shared by every bridge).
        int64_t now = now_ns();
        qos::TokenBucket* agg_up = aggregate(0, s_.aggregate_up, now);
        qos::TokenBucket* agg_down = aggregate(1, s_.aggregate_down, now);
        up_.bucket = chain(up_bucket_, s_.rate_up, agg_up, now);
        down_.bucket = chain(down_bucket_, s_.rate_down, agg_down, now);
        if (up_.bucket != nullptr) {
            // The pacer decides when a slice goes: Nagle holding a small
            // slice for the peer's delayed ACK made a 400 ms beat of stalls
            // and catch-ups (CoV 0.18 of 100 ms bins at 1 MB/s).
            int one = 1;
            ::setsockopt(s_.transport, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        up_.b = down_.b = this;
        up_.from = s_.app_end;
        up_.to = s_.transport;
        up_.up = true;
        down_.from = s_.transport;
        down_.to = s_.app_end;
        up_.recv(e);
        down_.recv(e);
    }

    // The program closed its end (not just SHUT_WR: the pair's far end is
    // gone, POLLHUP) and had set SO_LINGER {1, 0} on the flow (applied to
    // the transport): it asked for an abortive close.
    bool abortive_close() const noexcept {
        linger l{};
        socklen_t len = sizeof l;
        if (::getsockopt(s_.transport, SOL_SOCKET, SO_LINGER, &l, &len) != 0 || !l.l_onoff || l.l_linger != 0)
            return false;
        pollfd p{s_.app_end, 0, 0};
        return ::poll(&p, 1, 0) == 1 && (p.revents & POLLHUP);
    }
    // Abort the transport: connect(AF_UNSPEC) disconnects a TCP socket with
    // a RST (closing the fd would not: our own pending receive still holds
    // the socket open).
    void reset(Engine& e) noexcept {
        sockaddr unspec{};
        unspec.sa_family = AF_UNSPEC;
        ::connect(s_.transport, &unspec, sizeof unspec);
        end(e);
    }

    void announce() noexcept {
        s_.connect_done.store(1, std::memory_order_release);
        futex(&s_.connect_done, FUTEX_WAKE_PRIVATE, INT32_MAX);
    }

    void direction_over(Engine& e) noexcept {
        if (up_.over && down_.over) end(e);
    }

    // `transport_err`: an errno the program must see (the peer reset, timed
    // out...); 0 when the program's own end went away.
    void fail(Engine& e, int transport_err) noexcept {
        if (transport_err != 0) s_.error.store(transport_err, std::memory_order_relaxed);
        end(e);
    }

    // Stop both directions: shutting the sockets down completes any receive
    // still posted, then the last completion frees the bridge.
    void end(Engine& e) noexcept {
        if (ending_) return;
        ending_ = true;
        for (Pump* p : {&up_, &down_})
            if (p->waiting) {
                e.cancel(*p);
                p->waiting = false;
            }
        ::shutdown(s_.app_end, SHUT_RDWR);
        ::shutdown(s_.transport, SHUT_RDWR);
        maybe_free();
    }

    // The transport stays open (shut down) until the program closes its fd
    // too: getsockname, getsockopt... must keep answering for it, and its
    // number must not go to another bridge meanwhile. The owner closes it.
    void maybe_free() noexcept {
        if (!ending_ || inflight_ > 0) return;
        close_internal_fd(s_.app_end);
        s_.app_end = -1;
        if (s_.phase.load(std::memory_order_relaxed) == BridgeState::connected)
            s_.phase.store(BridgeState::closed, std::memory_order_release);
        BridgeState* s = &s_;
        delete this;
        if (s->on_done) s->on_done(s);
    }

    // The relay sends in 2 ms slices, but the engine may come back late (a
    // timer's wake-up, other flows' work): a bucket holding 10 ms of tokens
    // keeps such lateness from costing rate, and 10 ms is still a tenth of
    // the 100 ms bins smoothness is judged on.
    static uint64_t relay_burst(uint64_t rate) noexcept {
        uint64_t b = rate / 100;
        return b < 3000 ? 3000 : b;
    }

    // The head of a direction's bucket chain: the flow's own bucket under
    // the aggregate when the flow has a rate, else the aggregate (or none).
    static qos::TokenBucket* chain(qos::TokenBucket& own, uint64_t rate, qos::TokenBucket* aggregate,
                                   int64_t now) noexcept {
        if (rate == 0) return aggregate;
        own.set_rate(rate, relay_burst(rate), now);
        own.set_parent(aggregate);
        return &own;
    }

    // The process's aggregate limit for a direction ([general] rate_up /
    // rate_down), or nullptr. Engine thread only; set by the first bridge.
    static qos::TokenBucket* aggregate(int dir, uint64_t rate, int64_t now) noexcept {
        static qos::TokenBucket buckets[2];
        if (rate == 0) return nullptr;
        if (buckets[dir].unlimited()) buckets[dir].set_rate(rate, relay_burst(rate), now);
        return &buckets[dir];
    }

    Bridge* next_ = nullptr;
    Bridge* prev_ = nullptr;
    BridgeState& s_;
    Connect connect_{};
    Pump up_, down_;
    qos::TokenBucket up_bucket_, down_bucket_;
    int inflight_ = 0;
    bool ending_ = false;

    friend struct BridgeState;
};

void BridgeState::Start::run(Engine& e) noexcept {
    auto* b = new (std::nothrow) Bridge(*state);
    if (b == nullptr) {
        state->error.store(ENOBUFS, std::memory_order_relaxed);
        state->phase.store(failed, std::memory_order_release);
        state->connect_done.store(1, std::memory_order_release);
        futex(&state->connect_done, FUTEX_WAKE_PRIVATE, INT32_MAX);
        close_internal_fd(state->app_end);
        state->app_end = -1;
        if (state->on_done) state->on_done(state);
        return;
    }
    b->connect_.b = b;
    b->begin(e);
}

int BridgeState::wait_connected(int64_t timeout_ns) noexcept {
    const int64_t deadline = timeout_ns > 0 ? now_ns() + timeout_ns : 0;
    while (connect_done.load(std::memory_order_acquire) == 0) {
        timespec ts{}, *tsp = nullptr;
        if (deadline != 0) {
            int64_t left = deadline - now_ns();
            if (left <= 0) return EINPROGRESS;   // as connect() with SO_SNDTIMEO
            ts.tv_sec = left / 1'000'000'000;
            ts.tv_nsec = left % 1'000'000'000;
            tsp = &ts;
        }
        long rc = syscall(SYS_futex, reinterpret_cast<uint32_t*>(&connect_done), FUTEX_WAIT_PRIVATE, 0, tsp,
                          nullptr, 0);
        // A signal handler ran: connect() says EINTR and the connection goes on.
        if (rc != 0 && errno == EINTR) return EINTR;
    }
    return phase.load(std::memory_order_acquire) == failed ? error.load(std::memory_order_relaxed) : 0;
}

void start_bridge(Engine& e, BridgeState& s) noexcept {
    // At exit, the engine relays what programs wrote before it stops.
    static std::atomic<bool> hooks{false};
    if (!hooks.exchange(true)) set_drain_hooks(&Bridge::drain_all, &Bridge::drained);
    s.start.state = &s;
    e.submit(s.start);
}

}  // namespace gs::engine
