// gs::sim: a discrete-event network simulator that drives sans-IO endpoints
// (core/common/sansio.h) over impaired links (tools/gsimpair/impair.h).
//
// Model
//   - One virtual clock (sansio::Time, ns), starting at 0. Nothing reads a
//     real clock; a run with the same seed and the same calls is identical.
//   - Events (a datagram arriving, an endpoint's timer, a test callback) sit
//     in a heap ordered by (time, sequence number): events at equal times run
//     in the order they were scheduled.
//   - A node is a sansio::Endpoint attached at one or more addresses. After
//     every call into an endpoint (on_datagram, on_timeout, add_node, kick)
//     the simulator drains its poll_transmit() and re-arms its timer from
//     next_timeout(). A timer that is re-armed or cancelled is invalidated
//     lazily (a generation number), never searched for in the heap.
//   - A datagram from A to B goes through the link (A, B): each ordered pair
//     of addresses has its own impairment state and counters (queue, burst
//     state, PRNG), made on first use with the parameters of set_link(A, B)
//     if given, else the default link. The per-link PRNG seed is derived from
//     the simulator seed and the two addresses, so traffic on one link never
//     changes the random draws of another.
//   - Datagram.from: if it is not one of the sending endpoint's addresses
//     (e.g. left empty by an endpoint with one address), the endpoint's first
//     address is used.
//   - A datagram to an address no node is attached at is dropped at send time
//     (stats().dropped_unknown); one whose destination was removed while it
//     was in flight is dropped on arrival (stats().dropped_detached).
//
// Threading: none. One Simulator is used from one thread. Endpoints are
// called only from inside run_until / run_while / step / add_node / kick.
//
// Ownership: the simulator does not own endpoints. An endpoint must stay
// alive while it is attached (until remove_node or the simulator's end).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "core/common/sansio.h"
#include "tools/gsimpair/impair.h"

namespace gs::sim {

using sansio::Addr;
using sansio::Datagram;
using sansio::Endpoint;
using sansio::kNever;
using sansio::Time;
using impair::LinkParams;
using LinkStats = impair::Counters;

// What the trace callback sees. The pointers and spans are valid only during
// the callback, which must not call back into the Simulator.
struct TraceEvent {
    enum class Kind : std::uint8_t {
        send,          // an endpoint handed out a datagram (before the link)
        deliver,       // a datagram reaches its destination endpoint
        drop_link,     // the link dropped it (see `reason`)
        drop_unknown,  // no node at the destination address (at send time)
        drop_detached, // the destination was removed while it was in flight
        drop_filter,   // the link filter refused it (a partition)
    };
    Kind kind = Kind::send;
    Time at = 0;
    const Addr* from = nullptr;
    const Addr* to = nullptr;
    std::span<const std::uint8_t> bytes;      // as delivered (corruption applied)
    impair::Drop reason = impair::Drop::none; // for drop_link
    bool corrupted = false;                   // for deliver
};
using TraceFn = std::function<void(const TraceEvent&)>;

// Simulator-wide counters (the per-link ones are in link_stats()).
struct SimStats {
    std::uint64_t events_processed = 0;  // events that ran (stale timers not counted)
    std::uint64_t datagrams_sent = 0;    // taken from poll_transmit() or send()
    std::uint64_t datagrams_delivered = 0;
    std::uint64_t dropped_unknown = 0;   // destination address not attached at send time
    std::uint64_t dropped_detached = 0;  // destination removed while in flight
    std::uint64_t dropped_link = 0;      // all link drops (mtu, loss, burst, queue)
    std::uint64_t dropped_filter = 0;    // refused by the link filter (set_link_filter)
    std::uint64_t timers_fired = 0;
    std::uint64_t timers_stale = 0;      // popped after being re-armed or cancelled
    std::uint64_t callbacks_run = 0;     // schedule() callbacks
    // An endpoint whose timer fired and which asked again for a time <= now
    // more than kMaxSpins times in a row at one instant: a bug in the
    // endpoint. Its timer is pushed 1 us later to keep the run going; tests
    // should CHECK this stays 0.
    std::uint64_t timer_livelocks = 0;
    static constexpr int kMaxSpins = 10000;
};

class Simulator {
public:
    // `seed` feeds every link's PRNG (see the model above).
    explicit Simulator(std::uint64_t seed = 1);
    ~Simulator();
    Simulator(const Simulator&) = delete;
    Simulator& operator=(const Simulator&) = delete;

    // ---- topology -----------------------------------------------------------
    // Attaches `ep` at `addr`. Calling it again with the same endpoint and
    // another address gives that node one more address (the first one is its
    // primary, see Datagram.from above). The endpoint is kicked at once (its
    // pending datagrams are sent and its timer armed at now()).
    // Returns 0, or -EEXIST when `addr` is already attached (to any node).
    int add_node(const Addr& addr, Endpoint& ep);

    // Detaches the endpoint from all its addresses and cancels its timer: a
    // crash. Datagrams it already sent stay in flight; datagrams to it are
    // dropped (dropped_detached). The endpoint is never called again unless
    // re-added (a restart: add_node with the same or another object).
    // Returns 0, or -ENOENT when it is not attached.
    int remove_node(Endpoint& ep);
    // Detaches one address; the node keeps its others (it is removed when
    // this was its last one). Returns 0 or -ENOENT.
    int remove_addr(const Addr& addr);
    // True when `addr` is attached.
    bool attached(const Addr& addr) const;
    std::size_t node_count() const noexcept;

    // ---- links --------------------------------------------------------------
    // Parameters of every link without an override. Links already in use take
    // the new parameters too (their state and counters are kept).
    // Returns 0, or -EINVAL when p.validate() is not empty.
    int set_default_link(const LinkParams& p);
    // Parameters of the one direction from -> to (call twice for both).
    // Works before or after the addresses are attached. 0 or -EINVAL.
    int set_link(const Addr& from, const Addr& to, const LinkParams& p);
    // A partition or any other reachability rule too large for set_link: a
    // datagram from -> to sent at `now` for which filter(from, to, now) is
    // false is dropped before the link (stats().dropped_filter; the link's
    // counters do not see it). Pass {} to remove. The filter must be
    // deterministic and must not call back into the Simulator.
    using LinkFilter = std::function<bool(const Addr& from, const Addr& to, Time now)>;
    void set_link_filter(LinkFilter filter);
    // A propagation delay that depends on the pair, for underlay models with
    // too many pairs for set_link (e.g. delay proportional to the distance
    // between node positions): every datagram from -> to that the link
    // delivers arrives model(from, to) later than the link alone would have
    // it (after the link's delay, jitter and queue; a negative value counts
    // as 0). The link's FIFO order is kept as long as the model returns the
    // same value for a pair, which it must (deterministic, no call back into
    // the Simulator). Pass {} to remove; datagrams already in flight keep
    // their arrival time.
    using DelayModel = std::function<Time(const Addr& from, const Addr& to)>;
    void set_delay_model(DelayModel model);
    // Counters of the link from -> to (all zero when it never carried a packet).
    LinkStats link_stats(const Addr& from, const Addr& to) const;
    // Sum over all links.
    LinkStats total_link_stats() const;

    // ---- driving ------------------------------------------------------------
    Time now() const noexcept { return now_; }

    // Runs every event due at or before `until`, then sets now() to `until`
    // (when it is later). Returns the number of events run.
    std::uint64_t run_until(Time until);
    // Runs events while `keep_going()` is true and the next event is due at
    // or before `deadline`. keep_going is checked before the first event and
    // then after each event, or, when check_every > 0, only after events at
    // least check_every of virtual time after the previous check (for
    // predicates that look at a thousand nodes). Returns true when
    // keep_going() returned false (now() is then the time of the last event
    // run); false at the deadline (now() == deadline) or when no event is
    // left (now() is then moved to the deadline too).
    bool run_while(const std::function<bool()>& keep_going, Time deadline, Time check_every = 0);
    // Runs the single next event (if any and due by `deadline`). Returns
    // false when there is none.
    bool step(Time deadline = kNever);

    // Tells the simulator an endpoint changed outside its callbacks (e.g. the
    // test called ep.send_to_all() or ep.join()): drains its poll_transmit()
    // at now() and re-arms its timer. No-op (returns -ENOENT) if not attached.
    int kick(Endpoint& ep);

    // Sends a datagram as if from d.from (attached or not: spoofed and
    // foreign packets are allowed) through the link d.from -> d.to, at now().
    void send(Datagram d);

    // Runs fn at virtual time `at` (now() if earlier), in event order. fn may
    // call any method here (add/remove nodes, set links, kick, send), but not
    // run_until/run_while/step.
    void schedule(Time at, std::function<void()> fn);

    // ---- observing ----------------------------------------------------------
    std::uint64_t events_processed() const noexcept { return stats_.events_processed; }
    const SimStats& stats() const noexcept { return stats_; }
    // Called for every send, delivery and drop; pass {} to stop tracing.
    void set_trace(TraceFn fn);
    // Events waiting (stale timers included).
    std::size_t pending_events() const noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    Time now_ = 0;
    SimStats stats_;
};

}  // namespace gs::sim
