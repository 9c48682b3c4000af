#include "core/engine/dgram_bridge.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <deque>
#include <memory>
#include <new>

#include "core/engine/bridge_util.h"
#include "core/engine/group_origin.h"
#include "core/engine/overlay_host.h"
#include "core/engine/relay_qos.h"
#include "core/engine/send_queue.h"
#include "core/engine/udp_host.h"
#include "core/qos/token_bucket.h"

namespace gs::engine {
namespace {

void add(std::atomic<uint64_t>* counter, uint64_t n) noexcept {
    if (counter != nullptr && n > 0) counter->fetch_add(n, std::memory_order_relaxed);
}

constexpr unsigned kBatch = 32;     // datagrams per recvmmsg/sendmmsg
constexpr unsigned kTurn = 256;     // datagrams per direction per turn, then the other flows' turn
constexpr size_t kPayload = 65536;  // more than any UDP payload
constexpr size_t kSlot = sizeof(DgramHeader) + kMaxDgramCtl + kPayload;
static_assert(kSlot % alignof(DgramHeader) == 0, "headers are read in place");

// The engine thread's batch: kBatch slots, one datagram each, shared by its
// bridges (a step is over before another bridge's begins). 2 MiB, allocated
// by the first datagram bridge.
struct Batch {
    std::unique_ptr<char[]> buf;
    mmsghdr in[kBatch];
    mmsghdr out[kBatch];
    iovec iov[kBatch][2];
    DgramHeader hdr[kBatch];   // down: the header sent in front of each datagram
    bool ready() noexcept {
        if (!buf) buf.reset(new (std::nothrow) char[kBatch * kSlot]);
        return buf != nullptr;
    }
    char* slot(unsigned i) noexcept { return buf.get() + size_t{i} * kSlot; }
};
// On the heap: a thread_local object of this library is static TLS, set up
// in every thread of the host program; only the pointer is.
std::unique_ptr<Batch>& batch_slot() noexcept {
    static thread_local std::unique_ptr<Batch> p;
    return p;
}
// Made by the thread's first datagram bridge (batch_ready()); used after.
Batch& batch() noexcept { return *batch_slot(); }
bool batch_ready() noexcept {
    std::unique_ptr<Batch>& p = batch_slot();
    if (!p) p.reset(new (std::nothrow) Batch);
    return p && p->ready();
}

// The engine saw this error on the transport; the program's next call
// reports it, and a receive blocked on its end wakes for it.
void report_error(BridgeState& b, int err) noexcept {
    b.error.store(err, std::memory_order_relaxed);
    DgramHeader h;
    h.kind = DgramHeader::kError;
    sys::send(b.app_end, &h, sizeof h, MSG_DONTWAIT | MSG_NOSIGNAL);
}

}  // namespace

// Every live datagram bridge of this engine thread (a pointer: the one piece
// of static TLS; tests run several engines in one process).
thread_local DgramBridge* g_dgram_bridges = nullptr;

// The engine's side of one bridged UDP flow. Lives on the engine thread;
// frees itself when the program has closed its end (every copy of it: the
// pair says POLLHUP), what it sent is relayed, and nothing is in flight.
class DgramBridge final : public SendQueue::Client {
public:
    DgramBridge(BridgeState& b, DgramState& d) noexcept : b_(b), d_(d) {
        next_ = g_dgram_bridges;
        if (next_) next_->prev_ = this;
        g_dgram_bridges = this;
        for (Event* ev : {&app_in_, &tr_in_, &app_out_, &tr_out_, &grp_in_}) ev->b = this;
        app_in_.on = &DgramBridge::on_app_in;
        tr_in_.on = &DgramBridge::on_tr_in;
        app_out_.on = &DgramBridge::on_app_out;
        tr_out_.on = &DgramBridge::on_tr_out;
        grp_in_.on = &DgramBridge::on_grp_in;
        up_wait_.b = down_wait_.b = this;
        up_wait_.up = true;
        for (Cancel& c : cancel_) c.b = this;
    }
    ~DgramBridge() {
        if (prev_) prev_->next_ = next_;
        else g_dgram_bridges = next_;
        if (next_) next_->prev_ = prev_;
    }

    // At exit: the program sends no more. Half-close its end (if that fd is
    // still this bridge's socket) so the engine relays what is queued, then
    // sees the end of it.
    // A group member leaves once what the program sent is relayed (eof):
    // its overlay member then sends what it was given, says goodbye to its
    // neighbours and LEAVE to the server (overlay_host.h's drain waits).
    static void drain_all(Engine&) noexcept {
        for (DgramBridge* d = g_dgram_bridges; d; d = d->next_) {
            d->exiting_ = true;
            if (!d->up_over_ && !d->ending_) half_close_program_end(d->b_);
            else d->detach_group();
        }
    }
    static bool drained() noexcept {
        for (DgramBridge* d = g_dgram_bridges; d; d = d->next_)
            if ((!d->up_over_ && !d->ending_) || d->grp_cancelling_) return false;
        return true;
    }

    void begin(Engine& e) noexcept {
        e_ = &e;
        d_.impl = this;
        int64_t now = now_ns();
        up_bucket_ = chain(up_own_, b_.rate_up, aggregate(0, b_.aggregate_up, now), now);
        down_bucket_ = chain(down_own_, b_.rate_down, aggregate(1, b_.aggregate_down, now), now);
        // Sharing the process's send aggregate: the queue orders the flows.
        if (qos::TokenBucket* agg = aggregate(0, b_.aggregate_up, now)) {
            SendQueue* q = SendQueue::get(e, agg);
            if (q != nullptr && q->attach(*this, b_.service, up_bucket_, false) == 0) queue_ = q;
        }
        if (d_.mces != nullptr) start_mces(e);
        arm(e, app_in_, b_.app_end, POLLIN | POLLRDHUP, true);
        if (mces_ == nullptr) arm(e, tr_in_, b_.transport, POLLIN, true);   // else MCES's host receives
        up_work(e);
        down_work(e);
    }

private:
    struct Event final : Completion {
        DgramBridge* b = nullptr;
        void (DgramBridge::*on)(Engine&, int res) noexcept = nullptr;
        bool armed = false;
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override {
            if (!(cqe.flags & IORING_CQE_F_MORE)) {
                armed = false;
                --b->inflight_;
            }
            (b->*on)(e, cqe.res);
        }
    };
    // Removing a poll: its last completion (-ECANCELED) drops the count. The
    // kernel refuses (EALREADY) while an event of the poll is being
    // delivered: then again.
    struct Cancel final : Completion {
        DgramBridge* b = nullptr;
        Event* target = nullptr;
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override {
            --b->inflight_;
            if (cqe.res == -EALREADY && target->armed) return b->cancel(e, *target, *this);
            if (target == &b->grp_in_) b->grp_cancelling_ = false;
            b->maybe_free();
        }
    };
    // Pacing (up: the next datagram's tokens) and turns (both: the other
    // flows' turn, back in the loop's next round).
    struct Wait final : Timer {
        DgramBridge* b = nullptr;
        bool up = false, armed = false;
        void fire(Engine& e, int64_t) noexcept override {
            armed = false;
            if (b->ending_) return b->maybe_free();
            up ? b->up_work(e) : b->down_work(e);
        }
    };

    void arm(Engine& e, Event& ev, int fd, unsigned events, bool multishot) noexcept {
        if (ev.armed) return;
        io_uring_sqe* q = e.sqe();
        if (multishot) io_uring_prep_poll_multishot(q, fd, events);
        else io_uring_prep_poll_add(q, fd, events);
        io_uring_sqe_set_data(q, static_cast<Completion*>(&ev));
        ev.armed = true;
        ++inflight_;
    }
    void cancel(Engine& e, Event& ev, Cancel& c) noexcept {
        c.target = &ev;
        io_uring_sqe* q = e.sqe();
        io_uring_prep_poll_remove(q, reinterpret_cast<uintptr_t>(static_cast<Completion*>(&ev)));
        io_uring_sqe_set_data(q, static_cast<Completion*>(&c));
        ++inflight_;
    }
    void wait(Engine& e, Wait& w, int64_t delay) noexcept {
        w.armed = true;
        e.arm(w, now_ns() + delay);
    }

    // ---- events ----
    void on_app_in(Engine& e, int) noexcept {
        if (ending_) return maybe_free();
        if (!app_in_.armed) arm(e, app_in_, b_.app_end, POLLIN | POLLRDHUP, true);   // the kernel ended it: again
        up_work(e);
        if (up_over_ && program_gone()) end(e);
    }
    void on_tr_in(Engine& e, int) noexcept {
        if (ending_) return maybe_free();
        if (!tr_in_.armed && !down_over_) arm(e, tr_in_, b_.transport, POLLIN, true);
        down_work(e);
    }
    void on_app_out(Engine& e, int) noexcept {
        if (ending_) return maybe_free();
        if (mces_ != nullptr) return give_held(e);
        down_work(e);
    }
    void on_tr_out(Engine& e, int) noexcept {
        if (ending_) return maybe_free();
        up_work(e);
    }
    void on_grp_in(Engine& e, int res) noexcept {
        if (ending_) return maybe_free();
        if (grp_ == nullptr) return;   // the last word of a poll cancelled at a detach
        if (res >= 0 && (res & (POLLHUP | POLLERR))) return detach_group();   // the member is gone
        if (!grp_in_.armed && !grp_cancelling_) arm(e, grp_in_, grp_->member_fd, POLLIN, true);
        group_down();
    }

    // The program closed every copy of its end (not just SHUT_WR).
    bool program_gone() const noexcept {
        pollfd p{b_.app_end, 0, 0};
        return sys::poll(&p, 1, 0) == 1 && (p.revents & POLLHUP);
    }

    // ---- up: the program's end -> the transport ----

    // Datagram `i` of the batch, `len` bytes read, as out[k] for sendmmsg.
    // Returns 1, or 0 for what is not ours (a raw write on the program's
    // fd): nothing to send.
    static unsigned prepare(Batch& bt, unsigned i, size_t len, unsigned k) noexcept {
        auto* h = reinterpret_cast<DgramHeader*>(bt.slot(i));
        if (len < sizeof *h || h->kind != DgramHeader::kData || h->ctl_len > kMaxDgramCtl ||
            sizeof *h + h->ctl_len > len || h->name_len > sizeof h->name)
            return 0;
        char* ctl = bt.slot(i) + sizeof *h;
        size_t payload = len - sizeof *h - h->ctl_len;
        msghdr& m = bt.out[k].msg_hdr;
        m = msghdr{};
        m.msg_name = h->name_len ? &h->name : nullptr;
        m.msg_namelen = h->name_len;
        m.msg_control = h->ctl_len ? ctl : nullptr;
        m.msg_controllen = h->ctl_len;
        bt.iov[k][1] = {ctl + h->ctl_len, payload};
        m.msg_iov = &bt.iov[k][1];
        m.msg_iovlen = 1;
        return 1;
    }

    // The largest batch under a limit: what the slowest level earns in 2 ms.
    size_t slice() const noexcept {
        uint64_t rate = 0;
        for (const qos::TokenBucket* t = up_bucket_; t; t = t->parent())
            if (!t->unlimited() && (rate == 0 || t->rate() < rate)) rate = t->rate();
        return rate == 0 ? SIZE_MAX : static_cast<size_t>(rate / 500);
    }

    void up_work(Engine& e) noexcept {
        if (up_over_ || ending_ || tr_out_.armed || up_wait_.armed) return;
        if (held_off_ < held_len_ && !flush_held(e)) return;
        if (queue_ != nullptr) {
            queue_->resume(*this);
            offer_head(e);
            if (!up_over_ && !ending_) queue_->run(e);
            return;
        }
        Batch& bt = batch();
        for (unsigned budget = kTurn; budget > 0;) {
            unsigned want = kBatch;
            int64_t now = 0;
            if (up_bucket_ != nullptr) {
                // The next datagram's size (MSG_TRUNC: its whole length,
                // nothing copied): it goes when its tokens are there.
                now = now_ns();
                ssize_t head = sys::recv(b_.app_end, nullptr, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
                if (head < 0) {
                    if (errno == EAGAIN || errno == EINTR) return;
                    return end(e);
                }
                if (head == 0) return eof(e);
                size_t payload = static_cast<size_t>(head) > sizeof(DgramHeader)
                                     ? static_cast<size_t>(head) - sizeof(DgramHeader) : 1;
                int64_t t = qos::chain_time_until(up_bucket_, payload, now);
                if (t > 0) return wait(e, up_wait_, t);
                size_t n = slice() / payload;
                want = n < 1 ? 1 : n > kBatch ? kBatch : static_cast<unsigned>(n);
            }
            for (unsigned i = 0; i < want; ++i) {
                bt.iov[i][0] = {bt.slot(i), kSlot};
                bt.in[i].msg_hdr = msghdr{};
                bt.in[i].msg_hdr.msg_iov = &bt.iov[i][0];
                bt.in[i].msg_hdr.msg_iovlen = 1;
            }
            int n = sys::recvmmsg(b_.app_end, bt.in, want, MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) return;
                return end(e);
            }
            if (n == 0) return eof(e);
            unsigned k = 0;
            bool at_eof = false;
            uint64_t bytes = 0;
            for (int i = 0; i < n; ++i) {
                size_t len = bt.in[i].msg_len;
                if (len == 0) {   // seqpacket EOF: the program shut its end (or closed it)
                    at_eof = true;
                    break;
                }
                if (grp_ != nullptr && group_up(bt.slot(static_cast<unsigned>(i)), len)) continue;
                if (prepare(bt, static_cast<unsigned>(i), len, k) == 1) {
                    bytes += bt.out[k].msg_hdr.msg_iov[0].iov_len;
                    ++k;
                }
            }
            if (up_bucket_ != nullptr && bytes > 0) qos::chain_consume(up_bucket_, bytes, now);
            if (!send_up(e, bt.out, k)) return;
            if (at_eof) return eof(e);
            if (static_cast<unsigned>(n) < want) return;   // drained: the poll says when there is more
            budget -= budget < static_cast<unsigned>(n) ? budget : static_cast<unsigned>(n);
        }
        wait(e, up_wait_, 0);
    }

    // Under the send queue: the datagram at the head of the program's end
    // is offered (its size, MSG_TRUNC: nothing copied); when its turn comes
    // (go) it is sent and the next one offered. One at a time: the queue
    // decides between flows per datagram.
    void offer_head(Engine& e) noexcept {
        if (queued_packets() != 0) return;
        ssize_t head = sys::recv(b_.app_end, nullptr, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
        if (head < 0) {
            if (errno != EAGAIN && errno != EINTR) end(e);
            return;
        }
        if (head == 0) return eof(e);
        size_t payload = static_cast<size_t>(head) > sizeof(DgramHeader) ? static_cast<size_t>(head) - sizeof(DgramHeader) : 1;
        queue_->offer(*this, payload);
    }
    void go(Engine& e, uint64_t) noexcept override {
        if (up_over_ || ending_) return;
        Batch& bt = batch();
        bt.iov[0][0] = {bt.slot(0), kSlot};
        bt.in[0].msg_hdr = msghdr{};
        bt.in[0].msg_hdr.msg_iov = &bt.iov[0][0];
        bt.in[0].msg_hdr.msg_iovlen = 1;
        ssize_t len = sys::recvmsg(b_.app_end, &bt.in[0].msg_hdr, MSG_DONTWAIT);
        if (len < 0) {
            if (errno != EAGAIN && errno != EINTR) end(e);
            return;
        }
        if (len == 0) return eof(e);
        if (grp_ != nullptr && group_up(bt.slot(0), static_cast<size_t>(len))) return offer_head(e);
        unsigned k = prepare(bt, 0, static_cast<size_t>(len), 0);
        if (k == 1 && !send_up(e, bt.out, 1)) return;   // held: paused until there is room
        offer_head(e);
    }

    // Send `k` prepared datagrams on the transport. A datagram the kernel
    // refuses (EMSGSIZE, ENETUNREACH, a pending ECONNREFUSED...) is lost, as
    // it would have been, and its error goes to the program's next call; on
    // a full send buffer the rest is held until there is room. False: held.
    bool send_up(Engine& e, mmsghdr* v, unsigned k) noexcept {
        if (mces_ != nullptr) return send_mces(e, v, k);
        for (unsigned i = 0; i < k;) {
            int m = sys::sendmmsg(b_.transport, v + i, k - i, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (m > 0) {
                for (unsigned j = i; j < i + static_cast<unsigned>(m); ++j) add(b_.bytes_out, v[j].msg_hdr.msg_iov[0].iov_len);
                i += static_cast<unsigned>(m);
                continue;
            }
            int err = errno;
            if (err == EINTR) continue;
            if (err == EAGAIN) {
                hold(v + i, k - i);
                if (queue_ != nullptr) queue_->pause(*this);
                arm(e, tr_out_, b_.transport, POLLOUT, false);
                return false;
            }
            report_error(b_, err);
            ++i;
        }
        return true;
    }

    // Keep datagrams the transport could not take yet: [uint32 length]
    // [header][ctl][payload] records, in order.
    void hold(const mmsghdr* v, unsigned k) noexcept {
        size_t need = 0;
        for (unsigned i = 0; i < k; ++i)
            need += sizeof(uint32_t) + sizeof(DgramHeader) + v[i].msg_hdr.msg_controllen + v[i].msg_hdr.msg_iov[0].iov_len;
        held_.reset(new (std::nothrow) char[need]);
        held_off_ = held_len_ = 0;
        if (!held_) {
            d_.drops.fetch_add(k, std::memory_order_relaxed);   // no memory: lost, as on a congested link
            return;
        }
        for (unsigned i = 0; i < k; ++i) {
            const msghdr& m = v[i].msg_hdr;
            DgramHeader h;
            h.name_len = static_cast<uint16_t>(m.msg_namelen);
            if (m.msg_namelen) memcpy(&h.name, m.msg_name, m.msg_namelen);
            h.ctl_len = static_cast<uint32_t>(m.msg_controllen);
            uint32_t len = static_cast<uint32_t>(sizeof h + m.msg_controllen + m.msg_iov[0].iov_len);
            char* p = held_.get() + held_len_;
            memcpy(p, &len, sizeof len);
            memcpy(p + sizeof len, &h, sizeof h);
            if (m.msg_controllen) memcpy(p + sizeof len + sizeof h, m.msg_control, m.msg_controllen);
            memcpy(p + sizeof len + sizeof h + m.msg_controllen, m.msg_iov[0].iov_base, m.msg_iov[0].iov_len);
            held_len_ += sizeof len + len;
        }
    }
    // Send what is held; false while some is still held (POLLOUT armed).
    bool flush_held(Engine& e) noexcept {
        while (held_off_ < held_len_) {
            char* p = held_.get() + held_off_;
            uint32_t len;
            memcpy(&len, p, sizeof len);
            auto* h = reinterpret_cast<DgramHeader*>(p + sizeof len);
            DgramHeader hc;
            memcpy(&hc, h, sizeof hc);   // records are not aligned
            char* ctl = p + sizeof len + sizeof hc;
            iovec iov{ctl + hc.ctl_len, len - sizeof hc - hc.ctl_len};
            msghdr m{};
            m.msg_name = hc.name_len ? &hc.name : nullptr;
            m.msg_namelen = hc.name_len;
            m.msg_control = hc.ctl_len ? ctl : nullptr;
            m.msg_controllen = hc.ctl_len;
            m.msg_iov = &iov;
            m.msg_iovlen = 1;
            ssize_t r = sys::sendmsg(b_.transport, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0 && errno == EAGAIN) {
                arm(e, tr_out_, b_.transport, POLLOUT, false);
                return false;
            }
            if (r < 0) report_error(b_, errno);
            else add(b_.bytes_out, iov.iov_len);
            held_off_ += sizeof len + len;
        }
        held_.reset();
        held_off_ = held_len_ = 0;
        return true;
    }

    // The program shut its end for writing (shutdown, or the exit drain) or
    // closed it: nothing more to send. The bridge lives on while the program
    // can still receive.
    void eof(Engine& e) noexcept {
        up_over_ = true;
        // Everything is relayed: now the transport refuses more, as the
        // program's shutdown(SHUT_WR) asked (dgram_shutdown). Over MCES its
        // connections go on carrying what comes in.
        if (mces_ == nullptr) syscall(SYS_shutdown, b_.transport, SHUT_WR);
        if (exiting_) detach_group();
        if (program_gone()) end(e);
    }

    // ---- down: the transport -> the program's end ----

    void down_work(Engine& e) noexcept {
        if (mces_ != nullptr) return;   // MCES's host receives: mces_deliver
        if (down_over_ || ending_ || app_out_.armed || down_wait_.armed) return;
        Batch& bt = batch();
        for (unsigned budget = kTurn; budget > 0;) {
            for (unsigned i = 0; i < kBatch; ++i) {
                bt.iov[i][0] = {bt.slot(i), kPayload};
                bt.in[i].msg_hdr = msghdr{};
                bt.in[i].msg_hdr.msg_name = &bt.hdr[i].name;
                bt.in[i].msg_hdr.msg_namelen = sizeof bt.hdr[i].name;
                bt.in[i].msg_hdr.msg_iov = &bt.iov[i][0];
                bt.in[i].msg_hdr.msg_iovlen = 1;
            }
            int n = sys::recvmmsg(b_.transport, bt.in, kBatch, MSG_DONTWAIT);
            if (n < 0) {
                int err = errno;
                if (err == EAGAIN) return;
                --budget;
                if (err == EINTR) continue;
                // An error the kernel queued on the socket (an ICMP error on
                // a connected one): taken by this receive, the program's now.
                report_error(b_, err);
                continue;
            }
            int64_t now = down_bucket_ != nullptr ? now_ns() : 0;
            unsigned k = 0;
            uint64_t dropped = 0;
            for (int i = 0; i < n; ++i) {
                size_t len = bt.in[i].msg_len;
                if (down_bucket_ != nullptr) {
                    // Policed, not queued: a datagram beyond the limit is
                    // dropped now, as an overloaded UDP path would, rather
                    // than held (which would add delay and then drop anyway).
                    if (qos::chain_time_until(down_bucket_, len, now) > 0) {
                        ++dropped;
                        continue;
                    }
                    qos::chain_consume(down_bucket_, len, now);
                }
                DgramHeader& h = bt.hdr[i];
                h.kind = DgramHeader::kData;
                h.ctl_len = 0;
                h.name_len = static_cast<uint16_t>(bt.in[i].msg_hdr.msg_namelen);
                bt.iov[i][0] = {&h, sizeof h};
                bt.iov[i][1] = {bt.slot(static_cast<unsigned>(i)), len};
                bt.out[k].msg_hdr = msghdr{};
                bt.out[k].msg_hdr.msg_iov = bt.iov[i];
                bt.out[k].msg_hdr.msg_iovlen = 2;
                ++k;
            }
            for (unsigned i = 0; i < k;) {
                int m = sys::sendmmsg(b_.app_end, bt.out + i, k - i, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (m > 0) {
                    for (unsigned j = i; j < i + static_cast<unsigned>(m); ++j)
                        add(b_.bytes_in, bt.out[j].msg_hdr.msg_iov[1].iov_len);
                    i += static_cast<unsigned>(m);
                    continue;
                }
                if (errno == EINTR) continue;
                // The program's end is full (it is not reading), or shut: the
                // rest is lost, as a full UDP receive buffer loses it; the
                // transport's own buffer queues what comes next.
                dropped += k - i;
                if (errno == EAGAIN) arm(e, app_out_, b_.app_end, POLLOUT, false);
                else down_over_ = true;
                break;
            }
            if (dropped) d_.drops.fetch_add(dropped, std::memory_order_relaxed);
            if (down_over_ && program_gone() && up_over_) return end(e);
            if (app_out_.armed || down_over_) return;
            if (static_cast<unsigned>(n) < kBatch) return;
            budget -= budget < static_cast<unsigned>(n) ? budget : static_cast<unsigned>(n);
        }
        wait(e, down_wait_, 0);
    }

    // ---- a multicast group carried over an overlay (DgramGroup) ----
public:
    int attach(DgramGroup& g) noexcept {
        if (ending_) return -ENOTCONN;
        if (grp_ != nullptr) return -EBUSY;
        grp_ = &g;
        d_.group.store(&g, std::memory_order_release);
        // A poll cancelled at an earlier detach may still be on its way out:
        // its last completion arms this one (on_grp_in).
        if (!grp_in_.armed) arm(*e_, grp_in_, g.member_fd, POLLIN, true);
        return 0;
    }
    // The engine lets go of the group: the member's end is closed (the
    // overlay member sees it and leaves), the owner is told.
    void detach_group() noexcept {
        DgramGroup* g = grp_;
        if (g == nullptr) return;
        grp_ = nullptr;
        d_.group.store(nullptr, std::memory_order_release);
        if (grp_in_.armed && !grp_cancelling_) {
            grp_cancelling_ = true;
            cancel(*e_, grp_in_, cancel_[4]);
        }
        // The poll holds its own reference to the file: closing the number
        // now is safe, and the member sees the hang-up once the poll is gone.
        close_internal_fd(g->member_fd);
        g->member_fd = -1;
        if (g->on_detached) g->on_detached(g);
    }

private:
    // The transport's bound port; a socket that sends to the group unbound
    // is bound to the wildcard address now (the kernel's autobind at the
    // first send: the origin must name a port replies can reach).
    uint16_t local_port() noexcept {
        if (port_ != 0) return port_;
        sockaddr_storage ss{};
        socklen_t l = sizeof ss;
        if (syscall(SYS_getsockname, b_.transport, &ss, &l) == 0) port_ = to_addr(reinterpret_cast<sockaddr*>(&ss), l).port;
        return port_;
    }
    uint16_t bound_port() noexcept {
        if (local_port() != 0) return port_;
        sockaddr_storage any{};
        any.ss_family = static_cast<sa_family_t>(d_.family);
        syscall(SYS_bind, b_.transport, &any, d_.family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
        return local_port();
    }
    // The kernel would deliver the group's datagrams to this socket: bound
    // to the group's port, not connected (to the group: no member's address
    // is the group's).
    bool receives_group() noexcept {
        return grp_ != nullptr && local_port() == grp_->group.port && !grp_->connected.load(std::memory_order_relaxed);
    }
    // IP_MULTICAST_LOOP (IPV6_MULTICAST_LOOP for an IPv6 group) as the
    // program left it on its socket; the kernel's default is on.
    bool loop_on() const noexcept {
        int v = 1;
        socklen_t l = sizeof v;
        const bool v4 = grp_->group.is_v4();
        if (syscall(SYS_getsockopt, b_.transport, v4 ? IPPROTO_IP : IPPROTO_IPV6,
                    v4 ? IP_MULTICAST_LOOP : IPV6_MULTICAST_LOOP, &v, &l) != 0)
            return true;
        return v != 0;
    }

    // One datagram to the program's end, from `from`. False: dropped (no
    // room, or an IPv6 origin on an IPv4 socket).
    bool give(const sansio::Addr& from, const void* payload, size_t len) noexcept {
        DgramHeader h;
        sockaddr_storage ss{};
        socklen_t sl = from_addr(from, ss, d_.family);
        if (sl == 0) {
            errno = EAFNOSUPPORT;
            return false;
        }
        h.name_len = static_cast<uint16_t>(sl);
        memcpy(&h.name, &ss, sl);
        iovec iov[2] = {{&h, sizeof h}, {const_cast<void*>(payload), len}};
        msghdr m{};
        m.msg_iov = iov;
        m.msg_iovlen = 2;
        if (sys::sendmsg(b_.app_end, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) return false;
        add(b_.bytes_in, len);
        return true;
    }

    // Up: a datagram the program sent (`len` bytes of header and payload at
    // `p`, in the batch). True when it was the group's (carried by the
    // overlay, or lost as a full UDP buffer would lose it); false: for the
    // transport (prepare() looks at it).
    bool group_up(char* p, size_t len) noexcept {
        auto* h = reinterpret_cast<DgramHeader*>(p);
        if (len < sizeof *h || h->kind != DgramHeader::kData || h->ctl_len > kMaxDgramCtl ||
            sizeof *h + h->ctl_len > len || h->name_len > sizeof h->name)
            return false;
        DgramGroup& g = *grp_;
        const bool to_group = h->name_len ? to_addr(reinterpret_cast<sockaddr*>(&h->name), h->name_len) == g.group
                                          : g.connected.load(std::memory_order_relaxed);
        if (!to_group) return false;
        const char* payload = p + sizeof *h + h->ctl_len;   // ancillary data has no meaning over the overlay
        const size_t plen = len - sizeof *h - h->ctl_len;
        sansio::Addr origin = g.node;
        origin.port = bound_port();
        uint8_t hdr[kOriginLen];
        encode_origin(origin, hdr);
        OverlayRequest r;
        r.op = OverlayRequest::send;
        r.to = static_cast<uint8_t>(overlay::SendTo::all);
        iovec iov[3] = {{&r, sizeof r}, {hdr, sizeof hdr}, {const_cast<char*>(payload), plen}};
        msghdr m{};
        m.msg_iov = iov;
        m.msg_iovlen = 3;
        if (origin.port == 0 || sys::sendmsg(g.member_fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
            g.refused.fetch_add(1, std::memory_order_relaxed);
            return true;
        }
        g.sent.fetch_add(1, std::memory_order_relaxed);
        add(b_.bytes_out, plen);
        if (receives_group() && loop_on() && give(origin, payload, plen)) g.looped.fetch_add(1, std::memory_order_relaxed);
        return true;
    }

    // Down: what the overlay delivered, to the program.
    void group_down() noexcept {
        Batch& bt = batch();
        char* buf = bt.slot(0);
        for (unsigned i = 0; i < kTurn && grp_ != nullptr; ++i) {
            OverlayDelivery od;
            uint8_t hdr[kOriginLen];
            iovec iov[3] = {{&od, sizeof od}, {hdr, sizeof hdr}, {buf, kPayload}};
            msghdr m{};
            m.msg_iov = iov;
            m.msg_iovlen = 3;
            ssize_t n = sys::recvmsg(grp_->member_fd, &m, MSG_DONTWAIT);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return;   // EAGAIN; or 0: the member's end hung up (its poll says so)
            sansio::Addr from;
            if (static_cast<size_t>(n) < sizeof od + kOriginLen || (m.msg_flags & MSG_TRUNC) ||
                !decode_origin(hdr, sizeof hdr, &from) || !receives_group() ||
                !give(from, buf, static_cast<size_t>(n) - sizeof od - kOriginLen)) {
                grp_->dropped.fetch_add(1, std::memory_order_relaxed);
                continue;
            }
            grp_->delivered.fetch_add(1, std::memory_order_relaxed);
        }
    }

    // ---- MCES class 0 on the transport (mces_dgram.h) ----

    // The engine runs MCES on a guarded duplicate of the transport (the
    // transport itself stays the program's: getsockname, bind, connect and
    // its options go there). Fails open: the bridge relays plain UDP.
    void start_mces(Engine& e) noexcept {
        int fd = static_cast<int>(syscall(SYS_fcntl, b_.transport, F_DUPFD_CLOEXEC, kInternalFdBase));
        if (fd < 0) return;
        guard_fd(fd);
        int err = 0;
        mces_ = mces_dgram_start(e, fd, *d_.mces, d_.mces_stats, &DgramBridge::mces_deliver, &DgramBridge::mces_error, this, &err);
        d_.mces_impl = mces_;
        d_.mces_running.store(mces_ != nullptr, std::memory_order_release);
    }

    // Up: each prepared datagram to its peer's connection (or as plain UDP,
    // mces_dgram decides). A datagram MCES cannot take is lost, as one the
    // kernel refuses: EMSGSIZE goes to the program's next call, the others
    // are counted as drops. Never holds.
    bool send_mces(Engine& e, mmsghdr* v, unsigned k) noexcept {
        for (unsigned i = 0; i < k; ++i) {
            const msghdr& m = v[i].msg_hdr;
            sansio::Addr to;
            if (m.msg_namelen != 0) to = to_addr(static_cast<const sockaddr*>(m.msg_name), m.msg_namelen);
            else if (!connected_peer(to)) {
                report_error(b_, EDESTADDRREQ);
                continue;
            }
            const size_t len = m.msg_iov[0].iov_len;
            int rc = mces_dgram_send(e, *mces_, to, static_cast<const uint8_t*>(m.msg_iov[0].iov_base), len);
            if (rc == -EMSGSIZE) report_error(b_, EMSGSIZE);
            else if (rc < 0) d_.drops.fetch_add(1, std::memory_order_relaxed);
            else add(b_.bytes_out, len);
        }
        mces_dgram_flush(e, *mces_);
        return true;
    }

    // The transport's peer, asked again after each connect(2).
    bool connected_peer(sansio::Addr& out) noexcept {
        const uint32_t gen = d_.connect_gen.load(std::memory_order_acquire);
        if (!peer_asked_ || gen != peer_gen_) {
            sockaddr_storage ss{};
            socklen_t l = sizeof ss;
            peer_known_ = syscall(SYS_getpeername, b_.transport, &ss, &l) == 0;
            if (peer_known_) peer_ = to_addr(reinterpret_cast<sockaddr*>(&ss), l);
            peer_gen_ = gen;
            peer_asked_ = true;
        }
        out = peer_;
        return peer_known_;
    }

    // Down: a message from a connection, or a plain datagram, for the
    // program; policed as the transport's datagrams are.
    static bool mces_deliver(void* self, const sansio::Addr& from, const uint8_t* p, size_t n) noexcept {
        auto* d = static_cast<DgramBridge*>(self);
        if (d->down_over_ || d->ending_) return false;
        if (d->down_bucket_ != nullptr) {
            const int64_t now = now_ns();
            if (qos::chain_time_until(d->down_bucket_, n, now) > 0) {
                d->d_.drops.fetch_add(1, std::memory_order_relaxed);
                return false;
            }
            qos::chain_consume(d->down_bucket_, n, now);
        }
        if (d->waiting_.empty() && d->give(from, p, n)) return true;
        if ((d->waiting_.empty() && errno != EAGAIN) || !d->hold(from, p, n)) {
            d->d_.drops.fetch_add(1, std::memory_order_relaxed);
            return false;
        }
        return true;
    }

    // Down over MCES, a slow reader: MCES reads the transport whatever the
    // program does (its ACKs and resends depend on it), so the pair's buffer
    // alone would be all a program that falls behind has, where the plain
    // path has the pair's and the transport's own (the engine stops reading
    // it). What the pair has no room for waits here, in order, up to as much
    // again as the pair holds (its send buffer follows the program's
    // SO_RCVBUF: follow_rcvbuf), and goes as the program reads (POLLOUT).
    // Past that it is lost, as a full receive buffer loses it.
    struct Waiting {
        sansio::Addr from;
        std::unique_ptr<uint8_t[]> bytes;
        size_t len = 0;
    };
    static constexpr size_t kWaitingCost = 256;   // per message, beyond its bytes (as the kernel's truesize)
    bool hold(const sansio::Addr& from, const uint8_t* p, size_t n) noexcept {
        if (waiting_.empty()) {
            int v = 0;
            socklen_t l = sizeof v;
            waiting_cap_ = syscall(SYS_getsockopt, b_.app_end, SOL_SOCKET, SO_SNDBUF, &v, &l) == 0 && v > 0
                            ? static_cast<size_t>(v) : size_t{212992};
        }
        if (waiting_bytes_ + n + kWaitingCost > waiting_cap_) return false;
        try {
            Waiting h{from, std::unique_ptr<uint8_t[]>(new uint8_t[n > 0 ? n : 1]), n};
            memcpy(h.bytes.get(), p, n);
            waiting_.push_back(std::move(h));
        } catch (...) {   // bad_alloc: lost, as on a congested link
            return false;
        }
        waiting_bytes_ += n + kWaitingCost;
        if (waiting_.size() == 1 && e_ != nullptr) arm(*e_, app_out_, b_.app_end, POLLOUT, false);
        return true;
    }
    void give_held(Engine& e) noexcept {
        while (!waiting_.empty()) {
            Waiting& h = waiting_.front();
            if (!give(h.from, h.bytes.get(), h.len)) {
                if (errno == EAGAIN) return arm(e, app_out_, b_.app_end, POLLOUT, false);
                // The program's end is shut or gone: what waits is lost.
                d_.drops.fetch_add(waiting_.size(), std::memory_order_relaxed);
                waiting_.clear();
                waiting_bytes_ = 0;
                return;
            }
            waiting_bytes_ -= h.len + kWaitingCost;
            waiting_.pop_front();
        }
    }
    // No MCES with a peer (transport = mces): a connected socket hears of
    // it as of an ICMP error; an unconnected one does not (as the kernel's).
    static void mces_error(void* self, const sansio::Addr& peer, int err) noexcept {
        auto* d = static_cast<DgramBridge*>(self);
        sansio::Addr p;
        if (d->d_.peer_connected.load(std::memory_order_relaxed) && d->connected_peer(p) && p == peer)
            report_error(d->b_, err);
    }

    // ---- the end ----

    void end(Engine& e) noexcept {
        if (ending_) return;
        ending_ = true;
        if (queue_ != nullptr) {
            queue_->detach(*this);
            queue_ = nullptr;
        }
        for (Wait* w : {&up_wait_, &down_wait_})
            if (w->armed) {
                e.cancel(*w);
                w->armed = false;
            }
        detach_group();
        if (mces_ != nullptr) {
            mces_dgram_close(e, *mces_);
            mces_ = nullptr;
            d_.mces_impl = nullptr;   // mces_running stays: the flow was carried over MCES
        }
        Event* evs[] = {&app_in_, &tr_in_, &app_out_, &tr_out_};
        for (int i = 0; i < 4; ++i)
            if (evs[i]->armed) cancel(e, *evs[i], cancel_[i]);
        maybe_free();
    }

    // The transport stays open until the owner closes it (flow_release),
    // so getsockname and friends answer for it while any fd refers to it.
    void maybe_free() noexcept {
        if (!ending_ || inflight_ > 0) return;
        d_.impl = nullptr;
        retire(b_);
        BridgeState* b = &b_;
        delete this;
        if (b->on_done) b->on_done(b);
    }

    DgramBridge* next_ = nullptr;
    DgramBridge* prev_ = nullptr;
    BridgeState& b_;
    DgramState& d_;
    Event app_in_, tr_in_, app_out_, tr_out_;
    Event grp_in_;                 // deliveries on the group member's end
    Cancel cancel_[5];             // one per event, in that order
    Engine* e_ = nullptr;
    DgramGroup* grp_ = nullptr;    // the group carried, if any
    bool grp_cancelling_ = false;  // grp_in_'s removal is on its way
    bool exiting_ = false;         // the process is exiting (drain_all)
    uint16_t port_ = 0;            // the transport's bound port, once known
    Wait up_wait_, down_wait_;
    qos::TokenBucket up_own_, down_own_;
    qos::TokenBucket* up_bucket_ = nullptr;
    qos::TokenBucket* down_bucket_ = nullptr;
    SendQueue* queue_ = nullptr;   // up, under the process's send aggregate (send_queue.h)
    std::unique_ptr<char[]> held_;
    size_t held_off_ = 0, held_len_ = 0;
    int inflight_ = 0;
    bool up_over_ = false, down_over_ = false, ending_ = false;
    McesDgram* mces_ = nullptr;    // MCES runs the transport (d_.mces), if it could start
    std::deque<Waiting> waiting_;     // down over MCES: for room in the program's end (hold)
    size_t waiting_bytes_ = 0, waiting_cap_ = 0;
    sansio::Addr peer_;            // the transport's peer (connected_peer)
    uint32_t peer_gen_ = 0;
    bool peer_asked_ = false, peer_known_ = false;

    friend struct DgramState;
};

void DgramState::Start::run(Engine& e) noexcept {
    BridgeState& b = *state->base;
    DgramBridge* d = batch_ready() ? new (std::nothrow) DgramBridge(b, *state) : nullptr;
    if (d == nullptr) {
        // Fail open: the program's calls see the bridge failed and use the
        // transport themselves (dgram_send/dgram_recv).
        b.phase.store(BridgeState::failed, std::memory_order_release);
        close_internal_fd(b.app_end);
        b.app_end = -1;
        if (b.on_done) b.on_done(&b);
        return;
    }
    d->begin(e);
}

void start_dgram_bridge(Engine& e, BridgeState& b, DgramState& d) noexcept {
    // At exit, the engine relays what programs sent before it stops.
    static std::atomic<bool> hooks{false};
    if (!hooks.exchange(true)) set_drain_hooks(&DgramBridge::drain_all, &DgramBridge::drained);
    d.base = &b;
    d.start.state = &d;
    b.engine = &e;
    b.error.store(0, std::memory_order_relaxed);
    b.phase.store(BridgeState::connected, std::memory_order_release);
    e.submit(d.start);
}

// ---- the program's threads ------------------------------------------------------

namespace {

// An error the engine saw and the program has not been told: once.
int take_error(BridgeState& b) noexcept {
    if (b.error.load(std::memory_order_relaxed) == 0) return 0;
    return b.error.exchange(0, std::memory_order_relaxed);
}

bool bridge_up(const BridgeState& b) noexcept {
    return b.phase.load(std::memory_order_acquire) == BridgeState::connected;
}


// A blocking call that found the transport not ready waits for it, as the
// kernel's would: SO_SNDTIMEO/SO_RCVTIMEO (of the program's end), EINTR
// when a signal handler runs. 0: try again; -1, errno set: return that.
int wait_transport(const BridgeState& b, int pfd, short events, int opt, int64_t& deadline) noexcept {
    if (deadline == 0) {
        int t = timeout_ms(pfd, opt);
        deadline = t < 0 ? -1 : now_ns() + int64_t{t} * 1'000'000;
    }
    int timeout = -1;
    if (deadline > 0) {
        int64_t left = deadline - now_ns();
        if (left <= 0) {
            errno = EAGAIN;
            return -1;
        }
        timeout = static_cast<int>((left + 999'999) / 1'000'000);
    }
    pollfd p{b.transport, events, 0};
    if (sys::poll(&p, 1, timeout) < 0 && errno == EINTR) return -1;
    return 0;
}

// Sends with no limit to honour go on the transport from the caller's thread.
ssize_t direct_send(BridgeState& b, int pfd, const msghdr* msg, int flags) noexcept {
    for (int64_t deadline = 0;;) {
        ssize_t r = sys::sendmsg(b.transport, msg, flags | MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r >= 0) {
            add(b.bytes_out, static_cast<uint64_t>(r));
            return r;
        }
        if (errno != EAGAIN || nonblocking(pfd, flags)) return -1;
        if (wait_transport(b, pfd, POLLOUT, SO_SNDTIMEO, deadline) != 0) return -1;
    }
}

// The bridge is gone (the engine could not start it) or the call cannot be
// carried (more buffers than we take): the transport, as a native socket.
ssize_t direct_recv(BridgeState& b, int pfd, msghdr* msg, int flags) noexcept {
    for (int64_t deadline = 0;;) {
        ssize_t r = sys::recvmsg(b.transport, msg, flags | MSG_DONTWAIT);
        if (r >= 0) {
            if (!(flags & MSG_PEEK)) add(b.bytes_in, static_cast<uint64_t>(r));
            return r;
        }
        if (errno != EAGAIN || nonblocking(pfd, flags)) return -1;
        if (wait_transport(b, pfd, POLLIN, SO_RCVTIMEO, deadline) != 0) return -1;
    }
}

// The kernel's own checks of a destination (udp_sendmsg, udpv6_sendmsg), so
// that a send through the engine fails at once where the kernel's would:
// 0 or the errno. `*name_len`: what to carry (0: no address, AF_UNSPEC on
// a v6 socket); `*max`: the largest payload to that destination.
int check_dest(int family, const sockaddr* to, socklen_t len, uint16_t* name_len, size_t* max) noexcept {
    if (len > sizeof(sockaddr_storage)) return EINVAL;
    sa_family_t f = len >= sizeof(sa_family_t) ? to->sa_family : AF_UNSPEC;
    if (family == AF_INET6) {
        if (len < sizeof(sa_family_t)) return EINVAL;
        if (f == AF_UNSPEC) {
            *name_len = 0;
            return 0;
        }
        if (f == AF_INET6) {
            if (len < 24) return EINVAL;   // SIN6_LEN_RFC2133
            sockaddr_in6 a{};
            memcpy(&a, to, len < sizeof a ? len : sizeof a);
            if (a.sin6_port == 0) return EINVAL;
            *name_len = static_cast<uint16_t>(len < sizeof a ? len : sizeof a);
            *max = IN6_IS_ADDR_V4MAPPED(&a.sin6_addr) ? kMaxUdp4 : kMaxUdp6;
            return 0;
        }
        if (f != AF_INET) return EINVAL;
    }
    if (len < sizeof(sockaddr_in)) return EINVAL;
    if (f != AF_INET && f != AF_UNSPEC) return EAFNOSUPPORT;
    sockaddr_in a{};
    memcpy(&a, to, sizeof a);
    if (a.sin_port == 0) return EINVAL;
    *name_len = static_cast<uint16_t>(len < sizeof(sockaddr_in6) ? len : sizeof(sockaddr_in6));
    *max = kMaxUdp4;
    return 0;
}

// One receive on the program's end. `first`: the call's first datagram
// (recvmmsg's later ones leave a pending error for the next call, as the
// kernel does).
ssize_t recv_one(BridgeState& b, int pfd, msghdr* msg, int flags, bool first) noexcept {
    if (flags & MSG_ERRQUEUE) return sys::recvmsg(b.transport, msg, flags);
    flags &= ~MSG_OOB;   // UDP ignores it
    if (!first && b.error.load(std::memory_order_relaxed) != 0) {
        errno = EAGAIN;
        return -1;
    }
    if (int e = first ? take_error(b) : 0) {
        errno = e;
        return -1;
    }
    if (!bridge_up(b) || msg->msg_iovlen > static_cast<size_t>(kMaxDgramIov - 1)) return direct_recv(b, pfd, msg, flags);
    for (;;) {
        DgramHeader h;
        iovec iov[kMaxDgramIov];
        iov[0] = {&h, sizeof h};
        for (size_t i = 0; i < msg->msg_iovlen; ++i) iov[i + 1] = msg->msg_iov[i];
        msghdr m{};
        m.msg_iov = iov;
        m.msg_iovlen = msg->msg_iovlen + 1;
        ssize_t r = sys::recvmsg(pfd, &m, flags & (MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC | MSG_WAITALL));
        if (r < 0) return -1;
        if (r == 0) return direct_recv(b, pfd, msg, flags);   // the engine's end is gone
        if (static_cast<size_t>(r) < sizeof h || h.kind == DgramHeader::kError) {
            if (flags & MSG_PEEK) sys::recv(pfd, &h, sizeof h, MSG_DONTWAIT);   // take it
            if (static_cast<size_t>(r) < sizeof h) continue;                  // not ours
            if (!first) {
                errno = EAGAIN;   // the error is the next call's
                return -1;
            }
            if (int e = take_error(b)) {
                errno = e;
                return -1;
            }
            continue;   // a send already reported it
        }
        if (msg->msg_name != nullptr) {
            socklen_t n = h.name_len > sizeof h.name ? sizeof h.name : h.name_len;
            memcpy(msg->msg_name, &h.name, msg->msg_namelen < n ? msg->msg_namelen : n);
            msg->msg_namelen = n;
        } else {
            msg->msg_namelen = 0;
        }
        msg->msg_controllen = 0;   // receive ancillary data is not carried (docs/limitations.md)
        msg->msg_flags = m.msg_flags & MSG_TRUNC;
        return r - static_cast<ssize_t>(sizeof h);
    }
}

// A send the group's member carries: to the group's ADDR:PORT, or with no
// address on a socket connected to the group. It goes through the engine
// even when other sends need not (DgramGroup).
bool to_group(const DgramState& d, const msghdr* msg) noexcept {
    const DgramGroup* g = d.group.load(std::memory_order_acquire);
    if (g == nullptr) return false;
    if (msg->msg_name == nullptr || msg->msg_namelen == 0) return g->connected.load(std::memory_order_relaxed);
    const auto* sa = static_cast<const sockaddr*>(msg->msg_name);
    if (msg->msg_namelen < sizeof(sa_family_t) || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)) return false;
    return to_addr(sa, msg->msg_namelen) == g->group;
}

}  // namespace

ssize_t dgram_send(BridgeState& b, DgramState& d, int pfd, const msghdr* msg, int flags) noexcept {
    if (flags & MSG_OOB) {
        errno = EOPNOTSUPP;
        return -1;
    }
    if (int e = take_error(b)) {
        errno = e;
        return -1;
    }
    if (!bridge_up(b) || (b.up.direct && !to_group(d, msg))) return direct_send(b, pfd, msg, flags);
    // Through the engine: what the kernel would refuse at once is refused
    // here, before the datagram is queued.
    const sockaddr* to = msg->msg_namelen ? static_cast<const sockaddr*>(msg->msg_name) : nullptr;
    uint16_t name_len = 0;
    size_t max = d.family == AF_INET6 ? kMaxUdp6 : kMaxUdp4;
    if (to != nullptr) {
        if (int e = check_dest(d.family, to, msg->msg_namelen, &name_len, &max)) {
            errno = e;
            return -1;
        }
    }
    if (name_len == 0 && !d.peer_connected.load(std::memory_order_relaxed)) {
        errno = EDESTADDRREQ;
        return -1;
    }
    if (iov_total(msg->msg_iov, msg->msg_iovlen) > max) {
        errno = EMSGSIZE;
        return -1;
    }
    size_t ctl = msg->msg_control != nullptr ? msg->msg_controllen : 0;
    if (msg->msg_iovlen > static_cast<size_t>(kMaxDgramIov - 2) || ctl > kMaxDgramCtl)
        return direct_send(b, pfd, msg, flags);
    DgramHeader h;
    h.name_len = name_len;
    if (name_len) memcpy(&h.name, to, name_len);
    h.ctl_len = static_cast<uint32_t>(ctl);
    iovec iov[kMaxDgramIov];
    size_t k = 0;
    iov[k++] = {&h, sizeof h};
    if (ctl) iov[k++] = {msg->msg_control, ctl};
    for (size_t i = 0; i < msg->msg_iovlen; ++i) iov[k++] = msg->msg_iov[i];
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = k;
    ssize_t r = sys::sendmsg(pfd, &m, (flags & MSG_DONTWAIT) | MSG_NOSIGNAL);
    if (r < 0) return -1;   // EAGAIN (its end is full: the pacer is behind), EPIPE after SHUT_WR, EINTR
    return r - static_cast<ssize_t>(sizeof h + ctl);
}

ssize_t dgram_recv(BridgeState& b, DgramState&, int pfd, msghdr* msg, int flags) noexcept {
    return recv_one(b, pfd, msg, flags, true);
}

int dgram_sendmmsg(BridgeState& b, DgramState& d, int pfd, mmsghdr* v, unsigned n, int flags) noexcept {
    if (n == 0) return 0;
    if (bridge_up(b) && b.up.direct && !(flags & MSG_OOB) && d.group.load(std::memory_order_acquire) == nullptr) {
        if (int e = take_error(b)) {
            errno = e;
            return -1;
        }
        for (int64_t deadline = 0;;) {
            int r = sys::sendmmsg(b.transport, v, n, flags | MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r >= 0) {
                for (int i = 0; i < r; ++i) add(b.bytes_out, v[i].msg_len);
                return r;
            }
            if (errno != EAGAIN || nonblocking(pfd, flags)) return -1;
            if (wait_transport(b, pfd, POLLOUT, SO_SNDTIMEO, deadline) != 0) return -1;
        }
    }
    for (unsigned i = 0; i < n; ++i) {
        ssize_t r = dgram_send(b, d, pfd, &v[i].msg_hdr, flags);
        if (r < 0) return i > 0 ? static_cast<int>(i) : -1;
        v[i].msg_len = static_cast<unsigned>(r);
    }
    return static_cast<int>(n);
}

int dgram_recvmmsg(BridgeState& b, DgramState&, int pfd, mmsghdr* v, unsigned n, int flags,
                   timespec* timeout) noexcept {
    if (timeout != nullptr && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1'000'000'000)) {
        errno = EINVAL;
        return -1;
    }
    const int64_t deadline =
        timeout ? now_ns() + int64_t{timeout->tv_sec} * 1'000'000'000 + timeout->tv_nsec : 0;
    unsigned i = 0;
    for (; i < n; ++i) {
        int f = flags & ~MSG_WAITFORONE;
        if (i > 0 && (flags & MSG_WAITFORONE)) f |= MSG_DONTWAIT;
        ssize_t r = recv_one(b, pfd, &v[i].msg_hdr, f, i == 0);
        if (r < 0) {
            if (i == 0) return -1;
            break;
        }
        v[i].msg_len = static_cast<unsigned>(r);
        // As the kernel's: the timeout is looked at after each datagram.
        if (timeout != nullptr && now_ns() >= deadline) {
            ++i;
            break;
        }
    }
    return static_cast<int>(i);
}

int dgram_shutdown(BridgeState& b, DgramState& d, int pfd, int how) noexcept {
    if ((how != SHUT_WR && how != SHUT_RDWR) || (b.up.direct && d.mces == nullptr)) {
        // The program's thread sends on the transport itself: shut it now.
        int rc = static_cast<int>(syscall(SYS_shutdown, b.transport, how));
        int err = errno;
        // The kernel shuts an unconnected UDP socket down all the same (and
        // says ENOTCONN): so do we. SHUT_RD changes nothing a UDP receive sees.
        if ((rc == 0 || err == ENOTCONN) && (how == SHUT_WR || how == SHUT_RDWR)) syscall(SYS_shutdown, pfd, SHUT_WR);
        errno = err;
        return rc;
    }
    // Sends go through the engine: the write side is the engine's to shut,
    // once it has relayed what the program sent before (eof()); shut now,
    // the transport would refuse (EPIPE) datagrams still on their way. Over
    // MCES it stays open: its connections still carry what comes in. The
    // program's end refuses more sends (EPIPE) at once. The answer is the
    // kernel's: ENOTCONN on an unconnected socket, shut down all the same.
    const bool connected = d.peer_connected.load(std::memory_order_relaxed);
    if (how == SHUT_RDWR && d.mces == nullptr) syscall(SYS_shutdown, b.transport, SHUT_RD);
    syscall(SYS_shutdown, pfd, SHUT_WR);
    if (connected) return 0;
    errno = ENOTCONN;
    return -1;
}

int dgram_connect(BridgeState& b, DgramState& d, const sockaddr* addr, socklen_t len) noexcept {
    if (DgramGroup* g = d.group.load(std::memory_order_acquire)) {
        const bool group = addr != nullptr && len >= sizeof(sockaddr_in) &&
                           (addr->sa_family == AF_INET || addr->sa_family == AF_INET6) && to_addr(addr, len) == g->group;
        if (group) {
            // Not asked of the kernel: without a multicast route it refuses
            // (ENETUNREACH), and the overlay needs none. getpeername then
            // says ENOTCONN (docs/overlay.md, "Legacy multicast").
            g->connected.store(true, std::memory_order_relaxed);
            d.peer_connected.store(true, std::memory_order_relaxed);
            return 0;
        }
        g->connected.store(false, std::memory_order_relaxed);   // elsewhere, or AF_UNSPEC: the kernel's
    }
    int rc = static_cast<int>(syscall(SYS_connect, b.transport, addr, len));
    d.connect_gen.fetch_add(1, std::memory_order_release);
    if (rc == 0) {
        int saved = errno;
        sockaddr_storage ss;
        socklen_t l = sizeof ss;
        // AF_UNSPEC disconnects; asking is simpler than knowing every case.
        d.peer_connected.store(syscall(SYS_getpeername, b.transport, &ss, &l) == 0, std::memory_order_relaxed);
        errno = saved;
    }
    return rc;
}

int attach_dgram_group(DgramState& d, DgramGroup& g) noexcept {
    if (d.impl == nullptr) return -ENOTCONN;
    return d.impl->attach(g);
}

void detach_dgram_group(DgramState& d) noexcept {
    if (d.impl != nullptr) d.impl->detach_group();
}

int dgram_so_error(BridgeState& b, DgramState&) noexcept {
    if (int e = take_error(b)) return e;
    int v = 0;
    socklen_t l = sizeof v;
    syscall(SYS_getsockopt, b.transport, SOL_SOCKET, SO_ERROR, &v, &l);
    return v;
}

}  // namespace gs::engine
