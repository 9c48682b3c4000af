#include "core/qos/scheduler.h"

#include <algorithm>
#include <cerrno>
#include <new>

namespace gs::qos {

// The unit at the head of the queue: the next datagram, or as much of the
// stream as one decision may send.
uint64_t SchedFlow::head_unit(uint32_t max_chunk) const noexcept {
    if (!stream_) return sizes_[head_];
    return std::min<uint64_t>(backlog_, max_chunk);
}

Scheduler::Scheduler(const SchedConfig& cfg)
    : cfg_(cfg), heap_(new (std::nothrow) SchedFlow*[cfg.max_flows ? cfg.max_flows : 1]) {
    if (!heap_) cfg_.max_flows = 0;   // every attach() then says -ENOSPC
}

int Scheduler::attach(SchedFlow& f, const FlowConfig& cfg) noexcept {
    if (f.attached_) return -EALREADY;
    if (cfg.weight == 0 || cfg_.quantum == 0 || cfg_.max_chunk == 0) return -EINVAL;
    if (attached_ >= cfg_.max_flows) return -ENOSPC;
    f.bucket_ = cfg.bucket;
    f.weight_ = cfg.weight;
    f.rank_ = static_cast<uint8_t>(rank_of(cfg.service));
    f.stream_ = cfg.stream;
    f.attached_ = true;
    f.paused_ = false;
    f.where_ = SchedFlow::Where::idle;
    f.deficit_ = 0;
    f.backlog_ = 0;
    f.head_ = f.count_ = 0;
    ++attached_;
    return 0;
}

void Scheduler::detach(SchedFlow& f) noexcept {
    if (!f.attached_) return;
    drop_from_schedule(f);
    f.attached_ = false;
    f.backlog_ = 0;
    f.head_ = f.count_ = 0;
    --attached_;
}

int Scheduler::enqueue(SchedFlow& f, uint64_t bytes) noexcept {
    if (!f.attached_ || bytes == 0) return -EINVAL;
    if (f.stream_) {
        f.backlog_ += bytes;
    } else {
        if (bytes > UINT32_MAX) return -EINVAL;
        if (f.count_ == SchedFlow::kMaxPackets) return -ENOBUFS;
        f.sizes_[(f.head_ + f.count_) % SchedFlow::kMaxPackets] = static_cast<uint32_t>(bytes);
        ++f.count_;
        f.backlog_ += bytes;
    }
    // A flow joining its rank starts its turn with one quantum (DRR).
    if (f.where_ == SchedFlow::Where::idle && !f.paused_) {
        f.deficit_ = int64_t{cfg_.quantum} * f.weight_;
        link(f);
    }
    return 0;
}

void Scheduler::pause(SchedFlow& f) noexcept {
    if (!f.attached_ || f.paused_) return;
    drop_from_schedule(f);
    f.paused_ = true;
}

void Scheduler::resume(SchedFlow& f) noexcept {
    if (!f.attached_ || !f.paused_) return;
    f.paused_ = false;
    if (f.backlog_ > 0) {
        f.deficit_ = int64_t{cfg_.quantum} * f.weight_;
        link(f);
    }
}

void Scheduler::drop_from_schedule(SchedFlow& f) noexcept {
    if (f.where_ == SchedFlow::Where::listed) unlink(f);
    else if (f.where_ == SchedFlow::Where::parked) unpark(f);
    f.where_ = SchedFlow::Where::idle;
}

// --- the rank lists: intrusive, doubly linked, O(1) ---

void Scheduler::link(SchedFlow& f) noexcept {
    List& l = ranks_[f.rank_];
    f.next_ = nullptr;
    f.prev_ = l.tail;
    if (l.tail) l.tail->next_ = &f;
    else l.head = &f;
    l.tail = &f;
    f.where_ = SchedFlow::Where::listed;
}

void Scheduler::unlink(SchedFlow& f) noexcept {
    List& l = ranks_[f.rank_];
    if (f.prev_) f.prev_->next_ = f.next_;
    else l.head = f.next_;
    if (f.next_) f.next_->prev_ = f.prev_;
    else l.tail = f.prev_;
    f.prev_ = f.next_ = nullptr;
    f.where_ = SchedFlow::Where::idle;
}

// --- the timer heap of parked flows: binary min-heap on wake_, O(log n) ---

void Scheduler::heap_set(uint32_t i, SchedFlow* f) noexcept {
    heap_[i] = f;
    f->heap_index_ = i;
}

void Scheduler::heap_up(uint32_t i) noexcept {
    SchedFlow* f = heap_[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (heap_[parent]->wake_ <= f->wake_) break;
        heap_set(i, heap_[parent]);
        i = parent;
    }
    heap_set(i, f);
}

void Scheduler::heap_down(uint32_t i) noexcept {
    SchedFlow* f = heap_[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= heap_size_) break;
        if (child + 1 < heap_size_ && heap_[child + 1]->wake_ < heap_[child]->wake_) ++child;
        if (f->wake_ <= heap_[child]->wake_) break;
        heap_set(i, heap_[child]);
        i = child;
    }
    heap_set(i, f);
}

void Scheduler::park(SchedFlow& f, int64_t wake) noexcept {
    unlink(f);
    f.wake_ = wake;
    f.where_ = SchedFlow::Where::parked;
    // Cannot overflow: each attached flow is in the heap at most once.
    heap_set(heap_size_, &f);
    heap_up(heap_size_++);
}

void Scheduler::unpark(SchedFlow& f) noexcept {
    uint32_t i = f.heap_index_;
    SchedFlow* last = heap_[--heap_size_];
    if (i < heap_size_) {
        heap_set(i, last);
        heap_up(i);
        heap_down(last->heap_index_);
    }
    f.where_ = SchedFlow::Where::idle;
}

void Scheduler::wake_due(int64_t now) noexcept {
    while (heap_size_ > 0 && heap_[0]->wake_ <= now) {
        SchedFlow& f = *heap_[0];
        unpark(f);
        link(f);   // back at the tail of its rank, keeping its deficit
    }
}

// The flow's own levels: its chain up to the shared levels the scheduler
// charges itself (root, rank aggregate).
int64_t Scheduler::own_time_until(const SchedFlow& f, uint64_t bytes, int64_t now) const noexcept {
    int64_t wait = 0;
    for (const TokenBucket* b = f.bucket_; b && !stops(b, f.rank_); b = b->parent())
        wait = std::max(wait, b->time_until(bytes, now));
    return wait;
}

// How much a stream must be allowed before it sends (see min_chunk_ns).
uint64_t Scheduler::stream_need(const SchedFlow& f, uint64_t unit) const noexcept {
    uint64_t need = std::min<uint64_t>(unit, cfg_.min_chunk);
    uint64_t slowest = 0;   // 0: unlimited
    auto consider = [&](const TokenBucket* b) {
        if (b && !b->unlimited() && (slowest == 0 || b->rate() < slowest)) slowest = b->rate();
    };
    for (const TokenBucket* b = f.bucket_; b && !stops(b, f.rank_); b = b->parent()) consider(b);
    consider(rank_bucket_[f.rank_]);
    consider(root_);
    if (slowest != 0) {
        unsigned __int128 earned = static_cast<unsigned __int128>(slowest) * cfg_.min_chunk_ns / 1'000'000'000;
        if (earned < need) need = std::max<uint64_t>(1, static_cast<uint64_t>(earned));
    }
    return need;
}

Pick Scheduler::next(int64_t now) noexcept {
    wake_due(now);
    Pick pick;
    if (heap_size_ > 0) pick.wake = heap_[0]->wake_;
    for (int r = kRanks - 1; r >= 0; --r) {
        List& l = ranks_[r];
        while (SchedFlow* f = l.head) {
            uint64_t unit = f->head_unit(cfg_.max_chunk);
            uint64_t need = f->stream_ ? stream_need(*f, unit) : unit;
            // DRR: not enough credit for this turn: next turn, at the tail.
            if (f->deficit_ < static_cast<int64_t>(need)) {
                f->deficit_ += int64_t{cfg_.quantum} * f->weight_;
                if (f != l.tail) {
                    unlink(*f);
                    link(*f);
                }
                continue;
            }
            // Its own buckets empty: off the round robin until they refill.
            if (int64_t t = own_time_until(*f, need, now); t > 0) {
                park(*f, add_sat(now, t));
                pick.wake = std::min(pick.wake, f->wake_);
                continue;
            }
            // The rank's aggregate empty: the rank waits, lower ranks go on.
            TokenBucket* rank_b = rank_bucket_[r];
            if (rank_b) {
                if (int64_t t = rank_b->time_until(need, now); t > 0) {
                    pick.wake = std::min(pick.wake, add_sat(now, t));
                    break;
                }
            }
            // The process aggregate empty: nothing anywhere may go.
            if (root_) {
                if (int64_t t = root_->time_until(need, now); t > 0) {
                    pick.wake = std::min(pick.wake, add_sat(now, t));
                    return pick;
                }
            }
            uint64_t bytes = unit;
            if (f->stream_) {
                // Send what every level allows now, within the DRR turn.
                int64_t allow = f->deficit_;
                for (const TokenBucket* b = f->bucket_; b && !stops(b, r); b = b->parent())
                    allow = std::min(allow, b->available(now));
                if (rank_b) allow = std::min(allow, rank_b->available(now));
                if (root_) allow = std::min(allow, root_->available(now));
                bytes = std::min<uint64_t>(unit, static_cast<uint64_t>(std::max<int64_t>(allow, 1)));
            }
            for (TokenBucket* b = f->bucket_; b && !stops(b, r); b = b->parent()) b->consume(bytes, now);
            if (rank_b) rank_b->consume(bytes, now);
            if (root_) root_->consume(bytes, now);
            f->deficit_ -= static_cast<int64_t>(bytes);
            f->backlog_ -= bytes;
            if (!f->stream_) {
                f->head_ = (f->head_ + 1) % SchedFlow::kMaxPackets;
                --f->count_;
            }
            if (f->backlog_ == 0) {   // DRR: an idle flow keeps no credit
                unlink(*f);
                f->deficit_ = 0;
            }
            pick.flow = f;
            pick.bytes = bytes;
            pick.wake = now;
            return pick;
        }
    }
    return pick;
}

}  // namespace gs::qos
