// HcNode: the HC (hypercube) overlay protocol, sans-IO (docs/overlay-hc.md).
//
// Members hold Gray-code labels 0 .. n-1 in rank order (label.h). The member
// with the highest label is the "head": it admits joiners (handing out the
// next label, which makes the joiner the head), fills holes left by failed or
// departed members by moving into them, and beacons. The head's view (epoch,
// claim, seq, n, head address, recent moves) spreads over the neighbour pings.
// Trees and routes are computed locally from (label, n).
//
// Contract: see core/overlay/node.h. The node owns all its state; datagrams
// taken with poll_transmit are the caller's. Memory is bounded whatever
// arrives: a 32-slot neighbour table, a capped dedup table, capped queues.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/overlay/hc/label.h"
#include "core/overlay/hc/wire.h"
#include "core/overlay/node.h"

namespace gs::overlay::hc {

struct HcConfig {
    Time ping_interval = 1 * sansio::kSecond;     // to each neighbour
    Time beacon_interval = 1 * sansio::kSecond;   // the head's view seq tick
    Time failure_timeout = 4 * sansio::kSecond;   // neighbour silent this long: failed
    Time head_timeout = 6 * sansio::kSecond;      // no newer view this long: head failed
    Time claim_step = 500 * sansio::kMillisecond; // per rank below the top, before claiming
    Time join_retry = 1 * sansio::kSecond;        // join request resent
    std::size_t max_payload = 1200;               // send() rejects more (-EINVAL)
    std::uint32_t max_members = 1u << 16;         // the head admits no more
    std::size_t max_dedup_sources = 4096;         // duplicate-suppression table
    std::size_t max_queue = 8192;                 // transmit and deliver queues each
};

// Counters beyond NodeStats (tests, gsctl, benchmarks).
struct HcStats {
    std::uint64_t joins_admitted = 0;   // as head
    std::uint64_t fills = 0;            // holes this node moved into as head
    std::uint64_t shrinks = 0;          // top-of-cube holes removed as head
    std::uint64_t takeovers = 0;        // epochs this node opened
    std::uint64_t rejoins = 0;          // lost the label (out of cube, conflict) and rejoined
    std::uint64_t reports_sent = 0;
    std::uint64_t reports_stale = 0;    // reports the head discarded
    std::uint64_t seeks_sent = 0;
    std::uint64_t conflicts = 0;        // two holders of one label seen
    std::uint64_t dropped_unroutable = 0;
    std::uint64_t dropped_ttl = 0;
    std::uint64_t dropped_queue = 0;    // transmit or deliver queue full
    std::uint64_t dropped_unexpected = 0; // well-formed but not for this state
    // Partition merge (hint(), MERGE, DISSOLVE).
    std::uint64_t hints_ignored = 0;     // not head, itself, a neighbour
    std::uint64_t hints_limited = 0;     // over the rate limit
    std::uint64_t merges_sent = 0;       // MERGE introductions and orders this head sent
    std::uint64_t merges_forwarded = 0;  // toward our head
    std::uint64_t merges_dropped = 0;    // same cube, a dissolved cube, looped, an order from a lower id
    std::uint64_t dissolves = 0;         // labels dropped because the cube dissolved into another
    std::uint64_t pings_other_cube = 0;  // pings with another cube's view, not from a live neighbour
    std::uint64_t refounds = 0;          // see HcNode::on_timeout: both cubes dissolved into each other
};

// hint(): a bucket of kHintBurst introductions, refilled one per kHintEvery.
constexpr int kHintBurst = 4;
constexpr Time kHintEvery = 1 * sansio::kSecond;

class HcNode final : public Node {
public:
    // `self`: this node's underlay address (its messages name it); `overlay`:
    // the overlay's key hash; `seed`: all randomness. `bootstrap`: candidate
    // members to send the join request to; empty means "I am the first member".
    HcNode(const Addr& self, std::uint64_t overlay, std::uint64_t seed, const HcConfig& cfg,
           std::vector<Addr> bootstrap);

    // sansio::Endpoint
    void on_datagram(const Addr& from, const Addr& to, std::span<const std::uint8_t> bytes,
                     Time now) override;
    void on_timeout(Time now) override;
    Time next_timeout() const override;
    bool poll_transmit(sansio::Datagram& out) override;

    // Node
    void join(Time now) override;
    void leave(Time now) override;
    bool joined() const override { return joined_; }
    LogicalAddress address() const override { return joined_ ? LogicalAddress{label_} : kNoAddress; }
    int send(SendTo to, std::span<const std::uint8_t> payload, Time now,
             LogicalAddress root = kNoAddress, LogicalAddress node = kNoAddress) override;
    bool poll_deliver(Delivery& out) override;
    // Neighbours in the cube whose address this node knows and has heard from
    // within failure_timeout, lowest label first.
    std::vector<LogicalAddress> neighbors() const override;
    // From (label, n) alone; nullopt at the root, when not joined, or for a
    // root outside the cube.
    std::optional<LogicalAddress> parent(LogicalAddress root) const override;
    std::vector<LogicalAddress> children(LogicalAddress root) const override;
    const NodeStats& stats() const override { return stats_; }
    // The head (unique in a consistent cube).
    bool leader() const override { return is_head(); }
    // Head only: sends MERGE to `member` (rate-limited) unless it is this node
    // or a neighbour. See docs/overlay-hc.md, "Merging partitions".
    void hint(Addr member, Time now) override;

    // Introspection for tests and gsctl.
    const HcStats& hc_stats() const { return hc_; }
    const View& view() const { return view_; }
    bool is_head() const;
    // The address this node holds for neighbour label `l` (live or not).
    std::optional<Addr> neighbor_addr(Label l) const;
    const Addr& self() const { return self_; }

private:
    struct Slot {   // the neighbour across one bit
        bool has_addr = false;
        Addr addr;
        Time last_heard = kLongAgo;
        Time expect_since = kLongAgo;   // a (new) holder expected from then on
        Time last_sent = kLongAgo;
        Time last_seek = kLongAgo;
        Time last_report = kLongAgo;
        std::uint32_t move_epoch = 0, move_seq = 0;   // last move seen for this label
    };
    struct DedupWindow { std::uint32_t top = 0; std::uint64_t bits = 0; };
    static constexpr Time kLongAgo = -(Time{1} << 60);

    // handlers
    void on_join_req(const Addr& from, const JoinReq& m, Time now);
    void on_join_ack(const Addr& from, const JoinAck& m, Time now);
    void on_ping(const Addr& from, const Ping& m, Time now);
    void on_seek(const Addr& from, const Seek& m, Time now);
    void on_report(const Addr& from, const Report& m, Time now);
    void on_leave(const Addr& from, const Leave& m, Time now);
    void on_conflict(const Addr& from, const Conflict& m, Time now);
    void on_decline(const Addr& from, const Decline& m, Time now);
    void on_data(const Addr& from, const Data& m, Time now);
    void on_merge(const Addr& from, const Merge& m, Time now);
    void on_dissolve(const Addr& from, const Dissolve& m, Time now);
    void dissolve_into(const Addr& target, std::uint64_t target_cube, bool initiator, Time now);
    std::uint64_t new_cube_id();

    // view and membership
    void adopt_view(const View& v, Time now);
    void view_changed(const View& old, Time now);
    void become_member(Label l, const View& v, Time now);
    void found_cube(Time now);
    void lose_label(Time now);   // out of the cube or lost a conflict: rejoin
    void head_fill(Label hole, const Addr& hint, bool have_hint, Time now);
    void move_to(Label l, Time now);
    void claim_head(Time now);
    void flood(Time now);

    // neighbour table
    bool slot_live(unsigned bit, Time now) const;
    bool slot_dead(unsigned bit, Time now) const;
    int bit_of(Label l) const;   // -1 when not adjacent to our label
    void heard(Label l, const Addr& from, Time now);
    void send_ping(unsigned bit, bool reply, Time now);
    void seek(Label target, Time now);
    bool route_next(Label target, Label exclude, Time now, Addr& next) const;

    // data
    bool dedup_seen(Label src, std::uint32_t inc, std::uint32_t seq);
    void forward_tree(const Data& d, Time now);
    void send_data(const Addr& to, const Data& d);
    void deliver(const Data& d);

    // output
    void out(const Addr& to, const Message& m);
    std::uint64_t rand();

    const Addr self_;
    const std::uint64_t overlay_;
    const HcConfig cfg_;
    std::vector<Addr> bootstrap_;
    std::uint64_t rng_;
    const std::uint32_t incarnation_;
    std::uint64_t cube_rng_;   // cube ids only (new_cube_id)

    bool joined_ = false;
    bool joining_ = false;
    bool left_ = false;
    Label label_ = 0;
    View view_;
    std::array<Slot, 32> slots_{};
    Time now_ = 0;   // the latest time this node was driven
    Time last_view_advance_ = 0;
    Time last_connected_ = 0;   // last tick with at least half the neighbours live
    Time next_beacon_ = sansio::kNever;
    Time next_tick_ = sansio::kNever;
    Time next_join_ = sansio::kNever;
    Time flood_at_ = sansio::kNever;
    Time last_flood_ = kLongAgo;
    std::uint64_t join_nonce_ = 0;
    std::size_t bootstrap_next_ = 0;
    std::vector<Addr> hints_;   // addresses to start a seek from after a move (<= 8)

    // Partition merge.
    int hint_tokens_ = kHintBurst;
    Time hint_refill_ = kLongAgo;      // when the bucket last gained a token
    std::uint64_t dissolved_ = 0;      // the cube we left by DISSOLVE (0: none): its views are stale
    std::uint64_t dissolved_for_ = 0;  // the cube we dissolved into
    Time dissolved_at_ = kLongAgo;
    bool dissolve_initiator_ = false;  // we were the head that dissolved the cube

    std::uint32_t data_seq_ = 0;
    std::unordered_map<std::uint64_t, DedupWindow> dedup_;
    std::deque<std::uint64_t> dedup_order_;

    std::deque<sansio::Datagram> tx_;
    std::deque<Delivery> rx_;
    std::vector<std::uint8_t> scratch_;
    NodeStats stats_;
    HcStats hc_;
};

}  // namespace gs::overlay::hc
