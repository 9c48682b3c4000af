#include "core/engine/bridge.h"
#include "core/engine/send_queue.h"
#include "core/engine/bridge_util.h"

#include "core/engine/relay_qos.h"
#include "core/qos/token_bucket.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/sockios.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <memory>
#include <new>

namespace gs::engine {
namespace {

// The engine moves bytes with plain system calls on its own thread (the ring
// tells it when a socket is ready): a program thread may take a direction
// over at any moment, which needs the bytes to stay in the kernel until
// whoever holds the direction's lock takes them; an asynchronous receive
// would take them at a time nobody can see.
constexpr size_t kScratch = 256 * 1024;     // the engine thread's one relay buffer
constexpr size_t kFairShare = 1024 * 1024;  // bytes per direction per turn, then other flows' turn

long futex(std::atomic<uint32_t>* w, int op, uint32_t v) noexcept {
    return syscall(SYS_futex, reinterpret_cast<uint32_t*>(w), op, v, nullptr, nullptr, 0);
}

bool try_lock(BridgeDir& d) noexcept {
    return (d.lock.fetch_or(BridgeDir::kLocked, std::memory_order_acquire) & BridgeDir::kLocked) == 0;
}

// The engine's way in: take the lock, or leave word that it wants it (the
// holder then kicks the engine when it lets go).
bool engine_lock(BridgeDir& d) noexcept {
    for (;;) {
        if (try_lock(d)) return true;
        uint32_t old = d.lock.fetch_or(BridgeDir::kWanted, std::memory_order_acq_rel);
        if (old & BridgeDir::kLocked) return false;
        // The holder let go in between: it did not see kWanted. Try again.
        d.lock.fetch_and(~BridgeDir::kWanted, std::memory_order_relaxed);
    }
}

void kick(BridgeState& b) noexcept {
    if (b.engine == nullptr || b.kick_queued.exchange(1, std::memory_order_acq_rel) != 0) return;
    b.engine->submit(b.kick);
}

// A program thread lets go; wakes the engine if it wanted the lock meanwhile.
void unlock(BridgeState& b, BridgeDir& d) noexcept {
    if (d.lock.exchange(0, std::memory_order_acq_rel) & BridgeDir::kWanted) kick(b);
}

void add(std::atomic<uint64_t>* counter, ssize_t n) noexcept {
    if (counter != nullptr && n > 0) counter->fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
}

}  // namespace

// How the engine thread moves bytes from one socket to another: through a
// pipe with splice(2) (the pages go by reference: TCP's receive pages into
// the unix socket and back, no copy in user space), or, where splice is
// refused, through a buffer. One per engine thread, shared by its bridges:
// the pipe is empty between moves. take() brings up to `want` bytes in,
// give() sends what came in to `to`; what `to` did not take is handed over
// with keep() (into the caller's buffer) or thrown away with drop().
class Relay {
public:
    ~Relay() {
        close_internal_fd(pipe_[0]);
        close_internal_fd(pipe_[1]);
    }
    // `from` is the transport (down): spliced, but no more than it holds
    // (SIOCINQ): the transport stays a blocking socket, for the program's
    // threads' sends (the kernel's own wait), and splice(2) from TCP heeds
    // only the file's flag. An empty transport is asked with a plain
    // receive (EAGAIN, EOF or an error). The program's end (up) is copied:
    // splicing into the blocking transport could block the engine.
    ssize_t take(int from, size_t want, bool down) noexcept {
        int avail = 0;
        if (splice_ && down && ioctl(from, SIOCINQ, &avail) == 0 && avail > 0) {
            if (want > static_cast<size_t>(avail)) want = static_cast<size_t>(avail);
            ssize_t n = splice(from, nullptr, pipe_[1], nullptr, want, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
            if (n >= 0 || errno != EINVAL) {
                via_pipe_ = true;
                return n;
            }
            splice_ = false;   // this kind of socket does not splice: copy from now on
        }
        via_pipe_ = false;
        if (!buf_) {
            buf_.reset(new (std::nothrow) char[kScratch]);
            if (!buf_) {
                errno = ENOBUFS;
                return -1;
            }
        }
        return sys::recv(from, buf_.get(), want < kScratch ? want : kScratch, MSG_DONTWAIT);
    }
    ssize_t give(int to, size_t n) noexcept {
        off_ = 0;
        ssize_t m = via_pipe_ ? splice(pipe_[0], nullptr, to, nullptr, n, SPLICE_F_NONBLOCK | SPLICE_F_MOVE)
                              : sys::send(to, buf_.get(), n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (m > 0) off_ = static_cast<size_t>(m);
        return m;
    }
    void keep(char* out, size_t n) noexcept {
        if (!via_pipe_) {
            memcpy(out, buf_.get() + off_, n);
            return;
        }
        for (size_t got = 0; got < n;) {
            ssize_t r = ::read(pipe_[0], out + got, n - got);
            if (r <= 0) break;
            got += static_cast<size_t>(r);
        }
    }
    void drop(size_t n) noexcept {
        if (!via_pipe_) return;
        char sink[4096];
        for (size_t left = n; left > 0;) {
            ssize_t r = ::read(pipe_[0], sink, left < sizeof sink ? left : sizeof sink);
            if (r <= 0) break;
            left -= static_cast<size_t>(r);
        }
    }
    bool init() noexcept {
        int p[2];
        if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return splice_ = false, true;
        for (int i = 0; i < 2; ++i) {
            int h = fcntl(p[i], F_DUPFD_CLOEXEC, kInternalFdBase);
            if (h >= 0) {
                raw_close(p[i]);
                p[i] = h;
            }
            guard_fd(p[i]);
            pipe_[i] = p[i];
        }
        // Room for a whole turn's worth of pages (the default is 16).
        fcntl(pipe_[1], F_SETPIPE_SZ, static_cast<int>(kScratch));
        return true;
    }

private:
    int pipe_[2] = {-1, -1};
    bool splice_ = true, via_pipe_ = false;
    std::unique_ptr<char[]> buf_;
    size_t off_ = 0;
};

Relay& relay() noexcept {
    static thread_local Relay r;
    static thread_local bool ready = r.init();
    (void)ready;
    return r;
}

// Which transports have data, for the engine thread: an epoll set the ring
// watches (one multishot poll on it). Not the ring itself, because program
// threads must switch a transport's interest off and on without the engine
// (a ring takes requests from the engine thread only): a thread blocked on
// the transport in bridge_recv switches it off, so the data it is about to
// take does not wake the engine too (measured: that wake-up was the whole
// of a bridged round trip's cost unpinned), and on again when it leaves
// (epoll reports data already there at once). Edge-triggered: a pump reads
// until EAGAIN, or knows why it stopped (held bytes, tokens).
class Readiness final : public Completion {
public:
    static constexpr uint32_t kOn = EPOLLIN | EPOLLRDHUP | EPOLLET;
    ~Readiness() { close_internal_fd(epfd_); }
    int fd() const noexcept { return epfd_; }
    // The set, watched by `e`'s ring; -1 if it cannot be had.
    int ready(Engine& e) noexcept {
        if (epfd_ < 0) {
            int fd = epoll_create1(EPOLL_CLOEXEC);
            if (fd < 0) return -1;
            if (int h = fcntl(fd, F_DUPFD_CLOEXEC, kInternalFdBase); h >= 0) {
                raw_close(fd);
                fd = h;
            }
            guard_fd(fd);
            epfd_ = fd;
        }
        if (!armed_) {
            io_uring_sqe* q = e.sqe();
            io_uring_prep_poll_multishot(q, epfd_, POLLIN);
            io_uring_sqe_set_data(q, static_cast<Completion*>(this));
            armed_ = true;
        }
        return epfd_;
    }
    void complete(Engine& e, const io_uring_cqe& cqe) noexcept override;

private:
    int epfd_ = -1;
    bool armed_ = false;
};

Readiness& readiness() noexcept {
    static thread_local Readiness r;
    return r;
}

// The engine's side of one bridged flow. Lives on the engine thread; frees
// itself when both directions are over and nothing is in flight.
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
            if (!b->up_.over && !b->ending_) half_close_program_end(b->s_);
        }
    }
    // Every bridge has sent what the program wrote (or is gone).
    static bool drained() noexcept {
        for (Bridge* b = g_bridges; b; b = b->next_)
            if (!b->up_.over && !b->ending_) return false;
        return true;
    }

    void begin(Engine& e) noexcept {
        s_.impl = this;
        // The engine's end of the pair is non-blocking (only the engine
        // uses it). The transport stays as the program made it: its
        // threads' blocking sends wait in the kernel (Relay::take).
        if (int fl = fcntl(s_.app_end, F_GETFL); fl >= 0 && !(fl & O_NONBLOCK))
            fcntl(s_.app_end, F_SETFL, fl | O_NONBLOCK);
        if (s_.accepted) return connected(e, 0);
        io_uring_sqe* q = e.sqe();
        io_uring_prep_connect(q, s_.transport, reinterpret_cast<const sockaddr*>(&s_.peer), s_.peer_len);
        io_uring_sqe_set_data(q, static_cast<Completion*>(&connect_));
        ++inflight_;
    }

    // A transport has data (readiness()): its down pump's turn.
    static void transport_ready(Engine& e, void* pump) noexcept { static_cast<Pump*>(pump)->work(e); }

    // A program thread asked: look at both directions again.
    void kicked(Engine& e) noexcept {
        if (ending_) return maybe_free();
        up_.work(e);
        down_.work(e);
    }

private:
    // One direction: from `from` to `to`. The ring watches `from` for data
    // (a multishot poll) and, while `to` is full, `to` for room; the bytes
    // move with plain calls, under the direction's lock. What `to` cannot
    // take yet is held (`held`), and nothing more is read until it went.
    // With a bucket chain (the flow's limit, the process's aggregate), no
    // more is read than the chain lets pass smoothly: slices of what the
    // slowest level earns in 2 ms, each when its tokens are there (a Timer
    // waits for them); on the receive side the peer's TCP then sees a
    // closing window rather than drops.
    struct Pump final : Timer, SendQueue::Client {
        Bridge* b = nullptr;
        BridgeDir* d = nullptr;
        int from = -1, to = -1;
        bool up = false;   // app -> transport
        bool over = false, waiting = false, in_armed = false, out_armed = false;
        std::unique_ptr<char[]> held;
        size_t held_len = 0, held_off = 0;
        qos::TokenBucket* bucket = nullptr;   // chain head, nullptr = unlimited
        // Up, under the process's send aggregate: the queue says who sends
        // how much when (priority between flows); nullptr: this pump paces
        // itself against its bucket chain.
        SendQueue* queue = nullptr;

        struct In final : Completion {   // `from` is readable (multishot)
            Pump* p = nullptr;
            void complete(Engine& e, const io_uring_cqe& cqe) noexcept override {
                if (!(cqe.flags & IORING_CQE_F_MORE)) {
                    p->in_armed = false;
                    --p->b->inflight_;
                }
                if (p->b->ending_) return p->b->maybe_free();
                if (!p->in_armed && !p->over) p->arm_in(e);   // the kernel ended it (overflow): again
                p->work(e);
            }
        } in;
        struct Out final : Completion {   // `to` has room again (one shot)
            Pump* p = nullptr;
            void complete(Engine& e, const io_uring_cqe&) noexcept override {
                p->out_armed = false;
                --p->b->inflight_;
                if (p->b->ending_) return p->b->maybe_free();
                p->work(e);
            }
        } out;

        bool in_epoll = false;   // `from` is watched through readiness() (down), not the ring
        void arm_in(Engine& e) noexcept {
            if (!up) {
                int ep = readiness().ready(e);
                epoll_event ev{};
                ev.events = Readiness::kOn;
                ev.data.ptr = this;
                if (ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, from, &ev) == 0) {
                    in_epoll = true;
                    b->s_.rx_epfd = ep;
                    b->s_.rx_token = this;
                    return;
                }
            }
            io_uring_sqe* q = e.sqe();
            io_uring_prep_poll_multishot(q, from, POLLIN | POLLRDHUP);
            io_uring_sqe_set_data(q, static_cast<Completion*>(&in));
            in_armed = true;
            ++b->inflight_;
        }
        void arm_out(Engine& e) noexcept {
            if (out_armed) return;
            io_uring_sqe* q = e.sqe();
            io_uring_prep_poll_add(q, to, POLLOUT);
            io_uring_sqe_set_data(q, static_cast<Completion*>(&out));
            out_armed = true;
            ++b->inflight_;
        }
        void disarm(Engine& e) noexcept {
            if (queue != nullptr) {
                queue->detach(*this);
                queue = nullptr;
            }
            if (waiting) {
                e.cancel(*this);
                waiting = false;
            }
            if (in_armed) cancel_in(e);
            if (in_epoll) {
                epoll_ctl(readiness().fd(), EPOLL_CTL_DEL, from, nullptr);
                in_epoll = false;
            }
        }
        // Its last completion (-ECANCELED) drops the count. The kernel
        // refuses (EALREADY) while an event of the poll is being delivered:
        // then again, once it has been.
        void cancel_in(Engine& e) noexcept {
            io_uring_sqe* q = e.sqe();
            io_uring_prep_poll_remove(q, reinterpret_cast<uintptr_t>(static_cast<Completion*>(&in)));
            io_uring_sqe_set_data(q, static_cast<Completion*>(&cancel));
            ++b->inflight_;
        }
        struct Cancel final : Completion {
            Pump* p = nullptr;
            void complete(Engine& e, const io_uring_cqe& cqe) noexcept override {
                --p->b->inflight_;
                if (cqe.res == -EALREADY && p->in_armed) return p->cancel_in(e);
                p->b->maybe_free();
            }
        } cancel;

        // The largest piece read at once under a limit: what the slowest
        // level earns in 2 ms, at least one full-size segment.
        size_t slice() const noexcept {
            uint64_t rate = 0;
            for (const qos::TokenBucket* t = bucket; t; t = t->parent())
                if (!t->unlimited() && (rate == 0 || t->rate() < rate)) rate = t->rate();
            if (rate == 0) return kScratch;
            uint64_t s = rate / 500;
            return s < 1448 ? 1448 : s > kScratch ? kScratch : static_cast<size_t>(s);
        }

        void wait(Engine& e, int64_t delay) noexcept {
            waiting = true;
            e.arm(*this, now_ns() + delay);
        }
        void fire(Engine& e, int64_t) noexcept override {
            waiting = false;
            if (b->ending_) return b->maybe_free();
            work(e);
        }

        void work(Engine& e) noexcept {
            if (over || b->ending_ || leave_to_reader()) return;
            if (!engine_lock(*d)) return;
            step(e);
            d->lock.store(0, std::memory_order_release);
            // Without the lock: the queue may call go() on this pump too.
            if (queue != nullptr && !over && !b->ending_) queue->run(e);
        }

        // The queue's turn for this pump: `bytes` are granted (charged).
        void go(Engine& e, uint64_t bytes) noexcept override {
            if (over || b->ending_ || !engine_lock(*d)) return;   // up under a queue is never direct
            while (bytes > 0 && held_off == held_len && !over && !b->ending_) {
                ssize_t n = pass(e, bytes < kScratch ? static_cast<size_t>(bytes) : kScratch);
                if (n <= 0) break;
                bytes -= static_cast<uint64_t>(n);
            }
            // Taken to the last byte: a close of the program's end would
            // wake no one (its poll fired when the data came).
            if (!over && !b->ending_ && held_off == held_len && queue != nullptr && queued_bytes() == 0)
                offer_waiting(e);
            d->lock.store(0, std::memory_order_release);
        }

        // Tell the queue what waits in the program's end that it does not
        // know of yet; nothing at all and EOF: pass the half-close on. Lock held.
        void offer_waiting(Engine& e) noexcept {
            int in = 0;
            if (::ioctl(from, SIOCINQ, &in) != 0 || in < 0) in = 0;
            uint64_t known = queued_bytes();
            if (static_cast<uint64_t>(in) > known) {
                queue->offer(*this, static_cast<uint64_t>(in) - known);
                return;
            }
            if (in > 0 || known > 0) return;
            char c;
            ssize_t n = sys::recv(from, &c, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n == 0) return eof(e);
            if (n < 0 && errno != EAGAIN && errno != EINTR) return b->fail(e, 0);
        }

        // Move what there is, until `from` is empty, `to` is full, the
        // tokens run out or this turn's share is used. Lock held.
        void step(Engine& e) noexcept {
            size_t budget = kFairShare;
            for (;;) {
                if (held_off < held_len) {
                    ssize_t n = sys::send(to, held.get() + held_off, held_len - held_off, MSG_DONTWAIT | MSG_NOSIGNAL);
                    if (n < 0 && errno != EAGAIN) return send_failed(e, errno);
                    if (n > 0) {
                        held_off += static_cast<size_t>(n);
                        moved(n);
                    }
                    d->held.store(static_cast<uint32_t>(held_len - held_off), std::memory_order_relaxed);
                    if (held_off < held_len) return arm_out(e);
                    held.reset();
                    held_len = held_off = 0;
                    if (queue != nullptr) queue->resume(*this);
                }
                if (leave_to_reader()) return;
                if (queue != nullptr) return offer_waiting(e);   // work() runs the queue next
                if (budget == 0) return wait(e, 0);   // the other flows' turn; back in this loop's next round
                size_t want = budget < kScratch ? budget : kScratch;
                int64_t now = 0;
                if (bucket != nullptr) {
                    now = now_ns();
                    if (want > slice()) want = slice();
                    // Sending: wait for a whole slice's tokens (even pacing);
                    // receiving: read when there are any (the window closes).
                    int64_t t = up ? qos::chain_time_until(bucket, want, now)
                                   : qos::chain_available(bucket, now) > 0 ? 0 : qos::chain_time_until(bucket, 1, now);
                    if (t > 0) return wait(e, t);
                }
                ssize_t n = pass(e, want);
                if (n <= 0) return;
                if (bucket != nullptr) qos::chain_consume(bucket, static_cast<uint64_t>(n), now);
                budget -= static_cast<size_t>(n);
                if (held_off < held_len) return;
            }
        }

        // Take up to `want` bytes from `from` and give them to `to`; what
        // `to` cannot take is held (and waited for). Returns the bytes
        // taken; 0 on EOF, on EAGAIN (the poll says when there is more) or
        // once the bridge failed. Lock held.
        ssize_t pass(Engine& e, size_t want) noexcept {
            Relay& r = relay();
            ssize_t n = r.take(from, want, !up);
            if (n < 0) {
                if (errno == EAGAIN) return 0;
                if (errno == ENOBUFS) return b->fail(e, up ? 0 : ENOBUFS), 0;
                return b->fail(e, up ? 0 : errno), 0;   // a transport error is the program's business
            }
            if (n == 0) return eof(e), 0;
            ssize_t m = r.give(to, static_cast<size_t>(n));
            if (m < 0 && errno != EAGAIN) {
                int err = errno;
                r.drop(static_cast<size_t>(n));
                return send_failed(e, err), 0;
            }
            if (m < 0) m = 0;
            moved(m);
            if (m < n) {
                held_len = static_cast<size_t>(n - m);
                held.reset(new (std::nothrow) char[held_len]);
                if (!held) {
                    held_len = 0;
                    r.drop(static_cast<size_t>(n - m));
                    return b->fail(e, up ? ENOBUFS : 0), 0;
                }
                r.keep(held.get(), held_len);
                held_off = 0;
                d->held.store(static_cast<uint32_t>(held_len), std::memory_order_relaxed);
                if (queue != nullptr) queue->pause(*this);
                arm_out(e);
            }
            return n;
        }

        void moved(ssize_t n) noexcept {
            add(up ? b->s_.bytes_out : b->s_.bytes_in, n);
            if (!up && n > 0) b->s_.down_relayed.fetch_add(static_cast<uint64_t>(n), std::memory_order_release);
        }

        // A program thread in a blocking receive takes the transport's data
        // itself (bridge_recv). Say so first, then look (seq_cst, paired
        // with its leaving): either it sees the note, or we see it gone.
        bool leave_to_reader() noexcept {
            if (up || !d->direct || held_off < held_len) return false;
            b->s_.rx_skipped.store(1, std::memory_order_seq_cst);
            if (b->s_.rx_waiters.load(std::memory_order_seq_cst) > 0) return true;
            b->s_.rx_skipped.store(0, std::memory_order_relaxed);
            return false;
        }

        void send_failed(Engine& e, int err) noexcept {
            return b->fail(e, up ? err : 0);   // down: the program's end went away
        }

        // EOF: the program half-closed (or closed) its end, or the peer sent
        // FIN. Pass the half-close on, unless the program closed with
        // SO_LINGER {1, 0}: that is a reset.
        void eof(Engine& e) noexcept {
            over = true;
            if (up && b->abortive_close()) return b->reset(e);
            sys::shutdown(to, SHUT_WR);
            b->direction_over(e);
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
            ssize_t n = sys::recv(s_.app_end, sink, left < sizeof sink ? left : sizeof sink, MSG_DONTWAIT);
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
        // Sharing the process's send aggregate: the queue orders the flows.
        if (agg_up != nullptr) {
            SendQueue* q = SendQueue::get(e, agg_up);
            if (q != nullptr && q->attach(up_, s_.service, up_.bucket, true) == 0) up_.queue = q;
        }
        // A direction with a limit is the engine's alone.
        s_.up.direct = s_.allow_direct && up_.bucket == nullptr;
        s_.down.direct = s_.allow_direct && down_.bucket == nullptr;
        up_.b = down_.b = this;
        up_.in.p = up_.out.p = up_.cancel.p = &up_;
        down_.in.p = down_.out.p = down_.cancel.p = &down_;
        up_.d = &s_.up;
        down_.d = &s_.down;
        up_.from = s_.app_end;
        up_.to = s_.transport;
        up_.up = true;
        down_.from = s_.transport;
        down_.to = s_.app_end;
        down_.arm_in(e);   // before `phase` says connected: it publishes rx_epfd
        // Connected from here on: say so before the program's end turns
        // writable (a program polling for POLLOUT may ask at once).
        s_.phase.store(BridgeState::connected, std::memory_order_release);
        announce();
        drain_filler();
        up_.arm_in(e);   // after the filler is gone: it is not the program's data
        up_.work(e);
        down_.work(e);
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
        return sys::poll(&p, 1, 0) == 1 && (p.revents & POLLHUP);
    }
    // Abort the transport: connect(AF_UNSPEC) disconnects a TCP socket with
    // a RST (closing the fd would not: the owner still holds it open).
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

    // Stop both directions: cancel the polls and timers, shut both sockets
    // down (which completes a poll still waiting for room); the last
    // completion frees the bridge.
    void end(Engine& e) noexcept {
        if (ending_) return;
        ending_ = true;
        up_.disarm(e);
        down_.disarm(e);
        sys::shutdown(s_.app_end, SHUT_RDWR);
        sys::shutdown(s_.transport, SHUT_RDWR);
        maybe_free();
    }

    // The transport stays open (shut down) until the program closes its fd
    // too: getsockname, getsockopt... must keep answering for it, and its
    // number must not go to another bridge meanwhile. The owner closes it.
    // A kick still queued keeps the bridge (and so its owner's storage) until
    // it has run.
    void maybe_free() noexcept {
        if (!ending_ || inflight_ > 0 || s_.kick_queued.load(std::memory_order_acquire) != 0) return;
        s_.impl = nullptr;
        retire(s_);
        BridgeState* s = &s_;
        delete this;
        if (s->on_done) s->on_done(s);
    }

    // relay_burst, chain and aggregate: core/engine/relay_qos.h (shared with
    // the datagram bridges, so the process aggregate holds over both).

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

void Readiness::complete(Engine& e, const io_uring_cqe& cqe) noexcept {
    if (!(cqe.flags & IORING_CQE_F_MORE)) {
        armed_ = false;
        ready(e);
    }
    epoll_event ev[64];
    int n = epoll_wait(epfd_, ev, 64, 0);
    for (int i = 0; i < n; ++i) Bridge::transport_ready(e, ev[i].data.ptr);
}

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

void BridgeState::Kick::run(Engine& e) noexcept {
    state->kick_queued.store(0, std::memory_order_release);
    if (Bridge* b = state->impl) b->kicked(e);
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
    reset_relay(e, s);   // the engine decides about direct I/O at connect
    s.start.state = &s;
    e.submit(s.start);
}

void reset_relay(Engine& e, BridgeState& s) noexcept {
    s.up.direct = s.down.direct = false;
    s.up.held.store(0, std::memory_order_relaxed);
    s.down.held.store(0, std::memory_order_relaxed);
    s.down_relayed.store(0, std::memory_order_relaxed);
    s.down_taken.store(0, std::memory_order_relaxed);
    s.rx_epfd = -1;
    s.rx_token = nullptr;
    s.rx_skipped.store(0, std::memory_order_relaxed);
    s.kick.state = &s;
    s.engine = &e;
}

// ---- the program's threads ------------------------------------------------------

namespace {

// A send failed on the transport (reset, shut down): as the kernel's send,
// which raises SIGPIPE for EPIPE unless told not to.
ssize_t send_error(int err, int flags) noexcept {
    if (err == EPIPE && !(flags & MSG_NOSIGNAL)) syscall(SYS_tgkill, getpid(), gettid(), SIGPIPE);
    errno = err;
    return -1;
}

}  // namespace

ssize_t bridge_send(BridgeState& b, int pfd, IoOp op, void* call, size_t len, int flags) noexcept {
    if (len == 0 || b.phase.load(std::memory_order_acquire) != BridgeState::connected || !b.up.direct ||
        !try_lock(b.up))
        return op(call, pfd, 0, flags);
    // Nothing the program wrote earlier may still be in the bridge: not in
    // its end (SIOCOUTQ: bytes the engine has not read; also what went in by
    // calls we do not see, sendfile, splice), not held by the engine.
    int queued = 0;
    if (b.up.held.load(std::memory_order_relaxed) != 0 || syscall(SYS_ioctl, pfd, SIOCOUTQ, &queued) != 0 ||
        queued != 0) {
        unlock(b, b.up);
        return op(call, pfd, 0, flags);
    }
    const int direct = flags | MSG_DONTWAIT | MSG_NOSIGNAL;
    ssize_t r = op(call, b.transport, 0, direct);
    if (r == static_cast<ssize_t>(len) || (r < 0 && errno != EAGAIN)) {
        int err = errno;
        unlock(b, b.up);
        add(b.bytes_out, r);
        return r >= 0 ? r : send_error(err, flags);
    }
    size_t done = r > 0 ? static_cast<size_t>(r) : 0;
    if (nonblocking(pfd, flags)) {
        unlock(b, b.up);
        if (done > 0) {   // a short write, as the kernel's
            add(b.bytes_out, r);
            return r;
        }
        // Nothing fit: the bridge takes it (the engine sends it when there
        // is room), so that POLLOUT on the program's end keeps meaning
        // "a write will take something".
        return op(call, pfd, 0, flags);
    }
    // Blocking: wait for room on the transport, as the kernel's send does
    // (SO_SNDTIMEO, a signal: what went so far, or the error). The lock
    // stays ours: the engine finds it taken and waits its turn. Without a
    // timeout, the kernel's own wait, on the (blocking) transport.
    const int t = timeout_ms(pfd, SO_SNDTIMEO);
    if (t < 0 && !(syscall(SYS_fcntl, b.transport, F_GETFL) & O_NONBLOCK)) {
        r = op(call, b.transport, done, flags | MSG_NOSIGNAL);
        int err = errno;
        unlock(b, b.up);
        if (r > 0) done += static_cast<size_t>(r);
        add(b.bytes_out, static_cast<ssize_t>(done));
        if (done > 0) return static_cast<ssize_t>(done);
        return err == EINTR ? (errno = err, -1) : send_error(err, flags);
    }
    const int64_t deadline = t >= 0 ? now_ns() + int64_t{t} * 1'000'000 : 0;
    int err = 0;
    while (done < len) {
        int timeout = -1;
        if (deadline != 0) {
            int64_t left = deadline - now_ns();
            if (left <= 0) {
                err = EAGAIN;
                break;
            }
            timeout = static_cast<int>((left + 999'999) / 1'000'000);
        }
        pollfd p{b.transport, POLLOUT, 0};
        if (sys::poll(&p, 1, timeout) < 0 && errno == EINTR) {
            err = EINTR;
            break;
        }
        r = op(call, b.transport, done, direct);
        if (r < 0 && errno != EAGAIN) {
            err = errno;
            break;
        }
        if (r > 0) done += static_cast<size_t>(r);
    }
    unlock(b, b.up);
    add(b.bytes_out, static_cast<ssize_t>(done));
    if (done > 0) return static_cast<ssize_t>(done);
    return err == EAGAIN || err == EINTR ? (errno = err, -1) : send_error(err, flags);
}

namespace {

// A blocking receive registers in rx_waiters while it may wait on the
// transport itself, so the engine does not race it for the transport's
// data. It leaves before blocking on its own end alone (the engine must
// then relay), and when it returns.
struct Waiter {
    BridgeState* b = nullptr;
    void enter(BridgeState& s) noexcept {
        b = &s;
        if (b->rx_waiters.fetch_add(1, std::memory_order_seq_cst) == 0) interest(0);
    }
    // The engine's interest in the transport: off while a program thread
    // waits on it, on again (reporting data already there) when none does.
    void interest(uint32_t events) noexcept {
        if (b->phase.load(std::memory_order_acquire) != BridgeState::connected) return;
        int ep = b->rx_epfd;   // published by the store of `phase`
        if (ep < 0) return;
        epoll_event ev{};
        ev.events = events;
        ev.data.ptr = b->rx_token;
        epoll_ctl(ep, EPOLL_CTL_MOD, b->transport, &ev);
    }
    // If the engine left data to us meanwhile that we may not have taken
    // (it arrived after our last look), it must look again.
    void leave() noexcept {
        if (b == nullptr) return;
        if (b->rx_waiters.fetch_sub(1, std::memory_order_seq_cst) == 1) interest(Readiness::kOn);
        if (b->rx_skipped.load(std::memory_order_seq_cst) != 0 && b->rx_skipped.exchange(0) != 0) kick(*b);
        b = nullptr;
    }
    ~Waiter() { leave(); }
};

// A read from the program's end, counted in down_taken.
ssize_t from_end(BridgeState& b, int pfd, IoOp op, void* call, int flags) noexcept {
    ssize_t r = op(call, pfd, 0, flags);
    if (r > 0 && !(flags & MSG_PEEK)) b.down_taken.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
    return r;
}

// `w`: registered (a blocking call), or null (non-blocking).
ssize_t receive(BridgeState& b, int pfd, IoOp op, void* call, int flags, Waiter* w) noexcept {
    int64_t deadline = 0;   // 0: none
    bool timeout_read = false;
    int busy = 0;
    for (;;) {
        // A direction the engine has (a limit): its way.
        if (b.phase.load(std::memory_order_acquire) != BridgeState::connected || !b.down.direct) {
            if (w) w->leave();
            return from_end(b, pfd, op, call, flags);
        }
        if (!try_lock(b.down)) {
            // The engine is moving data to our end right now (and stops
            // soon: it sees us waiting).
            if (!w) return from_end(b, pfd, op, call, flags);
            if (++busy < 64) {
                sched_yield();   // it holds the lock for microseconds
                continue;
            }
            busy = 0;
            pollfd p{pfd, POLLIN, 0};
            if (sys::poll(&p, 1, 1) < 0 && errno == EINTR) return -1;
            continue;
        }
        // What the engine relayed comes first (if it left any there; the
        // end's other news, EOF or SHUT_RD, is looked at before waiting).
        ssize_t r;
        bool looked = b.down_relayed.load(std::memory_order_acquire) != b.down_taken.load(std::memory_order_relaxed);
        if (looked) {
            r = from_end(b, pfd, op, call, flags | MSG_DONTWAIT);
            if (r >= 0 || errno != EAGAIN) {
                int err = errno;
                unlock(b, b.down);
                errno = err;
                return r;
            }
        }
        if (b.down.held.load(std::memory_order_relaxed) != 0) {   // it holds more for our end
            unlock(b, b.down);
            if (w) w->leave();
            return from_end(b, pfd, op, call, flags);
        }
        r = op(call, b.transport, 0, flags | MSG_DONTWAIT);
        if (r < 0 && errno == EAGAIN && !looked) {
            ssize_t e = from_end(b, pfd, op, call, flags | MSG_DONTWAIT);
            if (e >= 0 || errno != EAGAIN) {
                int err = errno;
                unlock(b, b.down);
                errno = err;
                return e;
            }
        }
        int err = errno;
        unlock(b, b.down);
        if (r > 0) {
            if (!(flags & MSG_PEEK)) add(b.bytes_in, r);
            return r;
        }
        if (r == 0 || err != EAGAIN) {
            // EOF or an error, now, as from the kernel; the engine passes
            // it on to the program's end.
            kick(b);
            errno = err;
            return r;
        }
        if (!w) {
            errno = EAGAIN;
            return -1;
        }
        // Read once, at the first wait (not at the first pass: one that
        // found the engine holding the lock never got here, and the
        // timeout was then never set).
        if (!timeout_read) {
            timeout_read = true;
            int t = timeout_ms(pfd, SO_RCVTIMEO);
            if (t >= 0) deadline = now_ns() + int64_t{t} * 1'000'000;
        }
        int timeout = -1;
        if (deadline != 0) {
            int64_t left = deadline - now_ns();
            if (left <= 0) {
                errno = EAGAIN;   // SO_RCVTIMEO passed
                return -1;
            }
            timeout = static_cast<int>((left + 999'999) / 1'000'000);
        }
        // Wait for either: the engine relaying to our end, or the transport.
        pollfd p[2] = {{pfd, POLLIN, 0}, {b.transport, POLLIN, 0}};
        if (sys::poll(p, 2, timeout) < 0 && errno == EINTR) return -1;   // a signal handler ran, as for the kernel's receive
    }
}

}  // namespace

ssize_t bridge_recv(BridgeState& b, int pfd, IoOp op, void* call, size_t len, int flags) noexcept {
    if ((flags & MSG_WAITALL) || len == 0) return from_end(b, pfd, op, call, flags);
    if (nonblocking(pfd, flags)) return receive(b, pfd, op, call, flags, nullptr);
    Waiter w;
    w.enter(b);
    return receive(b, pfd, op, call, flags, &w);
}

}  // namespace gs::engine
