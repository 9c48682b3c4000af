// The send scheduler: which flow sends next, and how much.
//
// Order (DESIGN.md "Service classes"):
//   1. strict priority between ranks: realtime > guaranteed > reliable >
//      datagram and group (group is best-effort overlay traffic: it shares
//      datagram's rank and its round robin);
//   2. inside a rank, Deficit Round Robin (Shreedhar & Varghese): each turn a
//      flow may send quantum x weight bytes, so backlogged flows share the
//      rank's bandwidth in proportion to their weights;
//   3. token buckets gate everything: the flow's own chain, then the rank's
//      aggregate (set_class_bucket), then the process aggregate (set_root).
//      A flow whose own chain is empty is parked on a timer heap and skipped
//      without holding up the others; an empty rank aggregate skips the rank
//      (lower ranks go on); an empty root stops everything (it is shared by
//      every flow, so nothing could go anyway).
//
// Why strict priority does not starve lower ranks: a flow is only ever
// picked when its buckets allow it, so a rank takes at most the sum of its
// flows' rates (or its rank aggregate) plus bursts. The engine gives each
// realtime and guaranteed flow its reserved rate as its bucket (admission
// keeps the reservations within capacity) and the realtime rank an
// aggregate equal to the realtime reservations, so guaranteed flows always
// keep their reservation. An unlimited realtime flow with no rank
// aggregate is the one way to starve the rest, and policy admission does
// not produce it.
//
// Sans-IO and intrusive: the engine embeds a SchedFlow in each of its flows
// and tells the scheduler what was queued; next(now) returns who sends what
// and when to call again. The scheduler never allocates after construction
// (the timer heap is sized for max_flows up front), reads no clock and
// touches no socket. Not thread-safe: one engine thread owns it.
//
// Cost per decision: O(1) list work plus O(log n) per flow parked or woken
// (each park is matched by one wake). A flow whose packet is larger than
// quantum x weight rotates ceil(size / quantum) times before it sends, so
// keep the quantum at least the usual packet size (the default is 16 KiB).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/qos/token_bucket.h"
#include "policy/policy.h"

namespace gs::qos {

// Strict-priority rank of a service class (higher goes first).
constexpr int kRanks = 4;
constexpr int rank_of(policy::ServiceClass c) noexcept {
    switch (c) {
        case policy::ServiceClass::realtime: return 3;
        case policy::ServiceClass::guaranteed: return 2;
        case policy::ServiceClass::reliable: return 1;
        case policy::ServiceClass::datagram:
        case policy::ServiceClass::group: return 0;
    }
    return 0;
}

struct FlowConfig {
    policy::ServiceClass service = policy::ServiceClass::reliable;
    uint32_t weight = 1;              // DRR share inside the rank, >= 1
    // true: a byte stream (TCP behind a bridge): queued bytes may be cut
    // anywhere, so the scheduler sends what the buckets allow now. false:
    // datagrams, each sent whole (a large one may put buckets into debt).
    bool stream = false;
    TokenBucket* bucket = nullptr;    // the flow's own chain (not owned); nullptr: no limit
};

// Scheduler state embedded in the engine's flow object. The engine owns it;
// it must stay attached while linked (detach() before destroying it).
class SchedFlow {
public:
    SchedFlow() noexcept = default;
    SchedFlow(const SchedFlow&) = delete;
    SchedFlow& operator=(const SchedFlow&) = delete;

    static constexpr uint32_t kMaxPackets = 64;   // queued datagrams per flow
    uint64_t queued_bytes() const noexcept { return backlog_; }
    uint32_t queued_packets() const noexcept { return count_; }
    bool attached() const noexcept { return attached_; }
    bool paused() const noexcept { return paused_; }

private:
    friend class Scheduler;
    enum class Where : uint8_t { idle, listed, parked };

    uint64_t head_unit(uint32_t max_chunk) const noexcept;

    // configuration
    TokenBucket* bucket_ = nullptr;
    uint32_t weight_ = 1;
    uint8_t rank_ = 0;
    bool stream_ = false;
    bool attached_ = false;
    bool paused_ = false;
    // where it is: in its rank's round robin, on the timer heap, or neither
    Where where_ = Where::idle;
    SchedFlow* prev_ = nullptr;
    SchedFlow* next_ = nullptr;
    uint32_t heap_index_ = 0;
    int64_t wake_ = 0;
    // DRR and the queue
    int64_t deficit_ = 0;
    uint64_t backlog_ = 0;
    uint32_t head_ = 0, count_ = 0;
    uint32_t sizes_[kMaxPackets] = {};   // datagram sizes, a ring
};

struct SchedConfig {
    uint32_t quantum = 16 * 1024;   // DRR bytes per turn per unit of weight
    uint32_t max_chunk = 64 * 1024; // largest stream send in one decision
    // A stream waits until it may send at least min_chunk (or all it has),
    // so it sends full segments rather than a trickle of bytes; but never
    // more than its slowest level earns in min_chunk_ns, so a slow flow
    // (100 kB/s: 500 B per 5 ms) still spreads evenly over 100 ms bins.
    uint32_t min_chunk = 1448;
    uint32_t min_chunk_ns = 5'000'000;
    uint32_t max_flows = 16384;     // sizes the timer heap (allocated once)
};

// What next() decided. flow == nullptr: nothing may go now; call again at
// `wake` (kNever: nothing is queued, or only paused flows). Otherwise send
// `bytes` of `flow` now: the head datagram, or that many stream bytes; the
// scheduler has already dequeued them and taken the tokens.
struct Pick {
    SchedFlow* flow = nullptr;
    uint64_t bytes = 0;
    int64_t wake = kNever;
};

class Scheduler {
public:
    explicit Scheduler(const SchedConfig& cfg = {});
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    // 0, -EINVAL (weight 0, quanta 0), -EALREADY, -ENOSPC (max_flows reached).
    int attach(SchedFlow& f, const FlowConfig& cfg) noexcept;
    // Forgets the flow and whatever it had queued. Safe on a detached flow.
    void detach(SchedFlow& f) noexcept;

    // Queues one datagram of `bytes`, or `bytes` more of a stream.
    // 0, -EINVAL (0 bytes, or more than 4 GiB for a datagram, not attached),
    // -ENOBUFS (kMaxPackets datagrams queued: stop reading the program's
    // socket until next() drains some: that is the back-pressure).
    int enqueue(SchedFlow& f, uint64_t bytes) noexcept;

    // A flow whose socket cannot take more (EAGAIN) is paused: kept with its
    // queue but never picked until resume() (when the socket is writable).
    void pause(SchedFlow& f) noexcept;
    void resume(SchedFlow& f) noexcept;

    // Shared levels (not owned; nullptr removes). The root is the process
    // aggregate ([general] rate_up) that every flow passes through; a rank
    // aggregate bounds a whole rank. A flow's own chain may include either
    // (e.g. flow.parent = process): its walk stops at them, so they are
    // never charged twice.
    void set_root(TokenBucket* b) noexcept { root_ = b; }
    void set_class_bucket(policy::ServiceClass c, TokenBucket* b) noexcept { rank_bucket_[rank_of(c)] = b; }

    // The decision at `now` (see Pick). Dequeues and consumes tokens.
    Pick next(int64_t now) noexcept;

    size_t flows() const noexcept { return attached_; }
    size_t parked() const noexcept { return heap_size_; }

private:
    struct List {
        SchedFlow* head = nullptr;
        SchedFlow* tail = nullptr;
    };
    void link(SchedFlow& f) noexcept;     // to the tail of its rank
    void unlink(SchedFlow& f) noexcept;
    void park(SchedFlow& f, int64_t wake) noexcept;
    void unpark(SchedFlow& f) noexcept;   // off the heap (not relinked)
    void wake_due(int64_t now) noexcept;
    void drop_from_schedule(SchedFlow& f) noexcept;
    void heap_up(uint32_t i) noexcept;
    void heap_down(uint32_t i) noexcept;
    void heap_set(uint32_t i, SchedFlow* f) noexcept;
    bool stops(const TokenBucket* b, int rank) const noexcept { return b == root_ || b == rank_bucket_[rank]; }
    int64_t own_time_until(const SchedFlow& f, uint64_t bytes, int64_t now) const noexcept;
    uint64_t stream_need(const SchedFlow& f, uint64_t unit) const noexcept;

    SchedConfig cfg_;
    List ranks_[kRanks];
    TokenBucket* rank_bucket_[kRanks] = {};
    TokenBucket* root_ = nullptr;
    std::unique_ptr<SchedFlow*[]> heap_;   // min-heap on wake_, cfg_.max_flows slots
    uint32_t heap_size_ = 0;
    size_t attached_ = 0;
};

}  // namespace gs::qos
