// The DT overlay protocol (Delaunay triangulation), sans-IO. See
// docs/overlay-dt.md for the messages byte by byte and the reasoning.
//
// In one paragraph: a member is a point in the plane (its logical address).
// Members send Hellos to the nodes they believe are their Delaunay neighbours;
// a Hello carries the sender's coordinates, whether it takes the receiver for
// a neighbour, and the sender's current neighbour list (coordinates and
// underlay addresses). A node knows the nodes it heard from and the nodes its
// peers listed; it computes the Delaunay star of itself among all of them
// (exact predicates, geometry.h) and probes every node in that star. Its
// neighbours are the nodes of the star that answered within the timeout and
// take it for a neighbour too. Knowledge only ever makes the star more right
// (a true Delaunay edge is an edge of the triangulation of any subset), so
// the only wrong knowledge is about dead nodes: a node in the star that stays
// silent for neighbor_timeout is marked dead and ignored for `memory`. A joiner
// sends a JoinRequest to a bootstrap member; it is forwarded greedily toward
// the joiner's coordinates and the node closest to them (always one of the
// joiner's Delaunay neighbours) answers with a Hello.
//
// Trees: for root R a node's parent is its neighbour closest to R when that
// one is strictly closer to R than the node itself (ties by coordinates):
// greedy routing, which never fails on a Delaunay triangulation, so for a
// member root every other member has a parent and distances strictly fall:
// a spanning tree. Children are computed from the neighbours' reported lists.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/overlay/dt/geometry.h"
#include "core/overlay/node.h"

namespace gs::overlay::dt {

using sansio::Datagram;
using sansio::kNever;

// Message types after the common prefix (node.h).
enum class MsgType : std::uint8_t {
    hello = 0x01,
    join_request = 0x02,
    join_reject = 0x03,
    goodbye = 0x04,
    merge_probe = 0x05,   // a member of another partition looks for its nearest member here
    data = 0x80,
};

struct DtConfig {
    sansio::Time hello_fast = 250 * sansio::kMillisecond;   // while the neighbourhood changes
    sansio::Time hello_slow = 1 * sansio::kSecond;          // once it has been stable
    sansio::Time neighbor_timeout = 4 * sansio::kSecond;    // silence before a neighbour is dropped
    sansio::Time memory = 10 * sansio::kSecond;             // second-hand knowledge kept this long
    sansio::Time join_retry = 1 * sansio::kSecond;          // JoinRequest resent (next bootstrap)
    std::size_t max_payload = 1200;                         // application bytes per data message
    int stable_ticks = 4;                                   // unchanged fast ticks before going slow
};

// Protocol counters beyond NodeStats.
struct DtStats {
    std::uint64_t hellos_sent = 0, hellos_received = 0;
    std::uint64_t join_requests_sent = 0;        // by this joiner (first try and retries)
    std::uint64_t join_requests_forwarded = 0;
    std::uint64_t joins_answered = 0;            // this node was the closest
    std::uint64_t join_rejects_sent = 0, join_rejects_received = 0;
    std::uint64_t goodbyes_received = 0;
    std::uint64_t neighbor_timeouts = 0;         // a heard neighbour fell silent
    std::uint64_t probe_failures = 0;            // a candidate never answered
    std::uint64_t star_recomputes = 0;
    std::uint64_t list_truncated = 0;            // more neighbours than a Hello carries
    std::uint64_t known_full = 0;                // knowledge table full: entry not added
    std::uint64_t dropped_not_member = 0;        // traffic this node cannot act on yet / any more
    std::uint64_t dropped_unroutable = 0;        // data for a node no neighbour is closer to
    std::uint64_t dropped_ttl = 0;
    std::uint64_t dropped_queue_full = 0;        // delivery or transmit queue at its bound
    // Partition merge (hint(), MergeProbe).
    std::uint64_t hints_ignored = 0;             // for itself, a live peer, or while not a member
    std::uint64_t hints_limited = 0;             // over the rate limit
    std::uint64_t merge_probes_sent = 0;         // by this node, on a hint
    std::uint64_t merge_probes_forwarded = 0;
    std::uint64_t merge_probes_answered = 0;     // this node was the nearest: it greeted the prober
    std::uint64_t merge_probes_dropped = 0;      // same partition (prober known), looped back, or a clash
};

// Wire sizes and bounds (docs/overlay-dt.md).
constexpr std::size_t kHelloHeader = kPrefixSize + 10;          // sender u64, flags u8, count u8
constexpr std::size_t kEntrySize = 8 + 16 + 2;                   // coords, ip, port
constexpr std::size_t kMaxListed = 48;                           // entries in one Hello
constexpr std::size_t kJoinRequestSize = kPrefixSize + 8 + 18 + 1;   // MergeProbe too
constexpr std::size_t kShortSize = kPrefixSize + 8;               // JoinReject, Goodbye
constexpr std::size_t kDataHeader = kPrefixSize + 36;
constexpr std::uint8_t kFlagNeighbor = 0x01;                       // "you are in my star"
constexpr std::uint8_t kFlagStable = 0x02;                         // informational
constexpr std::uint8_t kDataTtl = 255;
constexpr std::size_t kMaxKnown = 512;
constexpr std::size_t kMaxDead = 512;
constexpr std::size_t kMaxSources = 4096;
constexpr std::size_t kMaxDeliveries = 4096;
constexpr std::size_t kMaxTransmits = 65536;
// hint(): a bucket of kHintBurst probes, refilled one per kHintEvery.
constexpr int kHintBurst = 4;
constexpr sansio::Time kHintEvery = 1 * sansio::kSecond;

class DtNode final : public Node {
public:
    // `self`: this node's underlay address (the source of what it sends).
    // `overlay_hash`: the overlay's key hash, in every message's prefix.
    // `coords`: the logical address, pack(Point); (-1, -1) is kNoAddress and
    // not allowed (valid() is then false and join() does nothing).
    // `seed`: all randomness (timer jitter, the data epoch).
    // `bootstrap`: members to send the JoinRequest to (tried in turn); empty:
    // this node starts the overlay.
    DtNode(Addr self, std::uint64_t overlay_hash, LogicalAddress coords, std::uint64_t seed,
           DtConfig cfg = {}, std::vector<Addr> bootstrap = {});

    bool valid() const noexcept { return coords_ != kNoAddress; }

    // sansio::Endpoint
    void on_datagram(const Addr& from, const Addr& to, std::span<const std::uint8_t> bytes,
                     Time now) override;
    void on_timeout(Time now) override;
    Time next_timeout() const override;
    bool poll_transmit(Datagram& out) override;

    // Node
    void join(Time now) override;
    void leave(Time now) override;
    bool joined() const override { return state_ == State::member; }
    LogicalAddress address() const override { return joined() ? coords_ : kNoAddress; }
    int send(SendTo to, std::span<const std::uint8_t> payload, Time now,
             LogicalAddress root = kNoAddress, LogicalAddress node = kNoAddress) override;
    bool poll_deliver(Delivery& out) override;
    // Sorted by logical address.
    std::vector<LogicalAddress> neighbors() const override { return nbrs_; }
    std::optional<LogicalAddress> parent(LogicalAddress root) const override;
    std::vector<LogicalAddress> children(LogicalAddress root) const override;
    const NodeStats& stats() const override { return stats_; }
    // Joined and no neighbour with greater (x, y).
    bool leader() const override;
    // Sends a MergeProbe to `member` (rate-limited), unless it is this node or
    // a peer heard within neighbor_timeout. See docs/overlay-dt.md, "Merging
    // partitions".
    void hint(Addr member, Time now) override;

    const DtStats& dt_stats() const noexcept { return dt_; }
    // No change of the star or the neighbours for stable_ticks ticks.
    bool stable() const noexcept { return stable_count_ >= cfg_.stable_ticks; }
    // Nodes currently probed (the Delaunay star of what this node knows).
    const std::vector<LogicalAddress>& desired() const noexcept { return desired_; }
    std::size_t known_count() const noexcept { return known_.size(); }
    const Addr& underlay() const noexcept { return self_; }

private:
    enum class State : std::uint8_t { idle, joining, member, left };
    static constexpr Time kUnset = -1;

    struct Peer {
        Addr addr;
        Time heard = kUnset;         // last Hello from it
        Time mentioned = kUnset;     // last listed by a peer (or named by a JoinRequest)
        Time probe_since = kUnset;   // first Hello sent to it since it was last heard
        Time last_reply = kUnset;    // last out-of-turn Hello to it
        bool wants_us = false;       // its last Hello's neighbour flag
        std::vector<LogicalAddress> list;   // its neighbours, from its last Hello
    };
    struct Source {
        std::uint32_t epoch = 0;
        std::uint32_t top = 0;
        std::uint64_t window = 0;   // bit i: top - i seen
    };

    bool live(const Peer& p, Time now) const noexcept {
        return p.heard != kUnset && now - p.heard <= cfg_.neighbor_timeout;
    }
    bool usable(const Peer& p, Time now) const noexcept {
        return live(p, now) || (p.mentioned != kUnset && now - p.mentioned <= cfg_.memory);
    }
    Peer* upsert(LogicalAddress a, Time now);
    void mark_dead(LogicalAddress a, Time now);
    void refresh(Time now);
    void tick(Time now);
    Time jittered(Time interval);
    std::optional<LogicalAddress> next_hop(LogicalAddress target) const;
    std::optional<LogicalAddress> parent_of(LogicalAddress v, const std::vector<LogicalAddress>& list,
                                            LogicalAddress root) const;

    void handle_hello(const Addr& from, std::span<const std::uint8_t> m, Time now);
    void handle_join_request(std::span<const std::uint8_t> m, Time now);
    void handle_merge_probe(std::span<const std::uint8_t> m, Time now);
    std::optional<LogicalAddress> closer_member(LogicalAddress target) const;
    void greet(LogicalAddress who, const Addr& at, Time now);
    void handle_join_reject(const Addr& from, std::span<const std::uint8_t> m);
    void handle_goodbye(const Addr& from, std::span<const std::uint8_t> m, Time now);
    void handle_data(std::span<const std::uint8_t> m, Time now);
    bool accept_sequence(LogicalAddress source, std::uint32_t epoch, std::uint32_t seq);

    void put_prefix(std::vector<std::uint8_t>& b, MsgType t) const;
    void send_hello(LogicalAddress to, Time now);
    void send_join_request(Time now);
    void send_short(const Addr& to, MsgType t, LogicalAddress a);
    void send_data(LogicalAddress to_node, std::uint8_t kind, std::uint8_t ttl, LogicalAddress source,
                   LogicalAddress root, LogicalAddress dest, std::uint32_t epoch, std::uint32_t seq,
                   std::span<const std::uint8_t> payload);
    void transmit(const Addr& to, std::vector<std::uint8_t> bytes, bool data);
    void deliver(LogicalAddress source, std::span<const std::uint8_t> payload);

    Addr self_;
    std::uint64_t overlay_;
    LogicalAddress coords_;
    Point point_;
    DtConfig cfg_;
    std::vector<Addr> bootstrap_;
    std::uint64_t rng_;
    State state_ = State::idle;

    std::map<LogicalAddress, Peer> known_;
    std::map<LogicalAddress, Time> dead_;   // until when second-hand mentions are ignored
    std::vector<LogicalAddress> desired_;   // sorted
    std::vector<LogicalAddress> nbrs_;      // sorted; subset of desired_
    bool dirty_ = false;
    bool changed_since_tick_ = false;
    int stable_count_ = 0;
    Time next_tick_ = kNever;
    Time join_deadline_ = kNever;
    std::size_t bootstrap_next_ = 0;
    int hint_tokens_ = kHintBurst;
    Time hint_refill_ = kUnset;   // when the bucket last gained a token

    std::uint32_t epoch_ = 0;
    std::uint32_t next_seq_ = 0;
    std::unordered_map<LogicalAddress, Source> sources_;

    std::deque<Datagram> tx_;
    std::deque<Delivery> rx_;
    NodeStats stats_;
    DtStats dt_;
};

}  // namespace gs::overlay::dt
