// The overlay server's logic, sans-IO: what gsoverlayd does with a request,
// separated from its socket and clock so that tests and the fuzzer drive it.
//
// It keeps, per overlay ID, the overlay's attributes (canonical, as
// Config::overlay_attributes() gives them) and its current members, each with
// a lease. CREATE stores the attributes (or checks them against the stored
// ones: a key attribute that differs is a conflict naming the attribute);
// GET hands them out; JOIN registers a member and answers with up to `want`
// others, freshest first; RENEW extends a lease (and registers a member the
// server does not know, so members survive a server restart); LEAVE removes;
// LIST and STATS report. Leases expire in expire().
//
// Everything is bounded by Limits; a request that cannot be decoded is
// answered Status::malformed when its header can be read and dropped
// otherwise, and counted either way.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/common/sansio.h"
#include "core/overlay/config/config.h"
#include "core/overlay/config/server_wire.h"

namespace gs::overlay::server {

using sansio::Addr;
using sansio::Time;

struct Limits {
    std::size_t max_overlays = 1024;
    std::size_t max_members = 1024;                 // per overlay
    Time lease_default = 30 * sansio::kSecond;      // JOIN/RENEW with lease 0
    Time lease_min = 1 * sansio::kSecond;
    Time lease_max = 3600 * sansio::kSecond;
    std::size_t max_events = 256;                   // log lines waiting for poll_event
};

struct Stats {
    std::uint64_t requests = 0;        // datagrams handled
    std::uint64_t answered = 0;
    std::uint64_t dropped = 0;         // not ours: no answer
    std::uint64_t malformed = 0;       // answered Status::malformed
    std::uint64_t bad_version = 0;
    std::uint64_t unknown_overlay = 0;
    std::uint64_t conflicts = 0;       // CREATE with different key attributes
    std::uint64_t bad_attributes = 0;
    std::uint64_t full = 0;            // refused at a bound
    std::uint64_t created = 0;
    std::uint64_t joins = 0, renews = 0, leaves = 0, expired = 0;
};

class Server {
public:
    explicit Server(Limits limits = {});

    // Handles one datagram that arrived from `from` at `now`. true when
    // `reply` holds an answer to send back to `from` (always <= kMaxDatagram).
    bool handle(const Addr& from, std::span<const std::uint8_t> bytes, Time now,
                std::vector<std::uint8_t>& reply);

    // Drops members whose lease ended by `now`.
    void expire(Time now);
    // When expire() next has something to do; kNever when no member.
    Time next_expiry() const noexcept;

    // true when the overlays (not the members) changed since clear_dirty():
    // the owner saves the state.
    bool dirty() const noexcept { return dirty_; }
    void clear_dirty() noexcept { dirty_ = false; }

    // The state file's text: every overlay's attributes (members are not
    // kept: they come back with their next RENEW).
    std::string save() const;
    // Replaces the overlays with those of a state file named `source`. 0, or
    // -EINVAL with messages (file:line) appended to `errors`; nothing is
    // changed then.
    int load(std::string_view text, std::string_view source, std::vector<std::string>& errors);

    // One line per event worth logging (created, conflict, join, leave,
    // expiry), oldest first; bounded (older lines are dropped and counted).
    bool poll_event(std::string& line);

    const Stats& stats() const noexcept { return stats_; }
    std::size_t overlay_count() const noexcept { return overlays_.size(); }
    std::size_t member_count() const noexcept;
    // nullptr when unknown.
    const Attributes* attributes(std::uint64_t overlay) const;

private:
    struct Member {
        Addr addr;
        Time renewed = 0;
        Time expires = 0;
    };
    struct Overlay {
        Config config;
        Attributes attrs;              // canonical, what GET answers
        std::vector<Member> members;   // unordered
    };

    void answer_create(const Request& q, const Addr& from, Response& a);
    void answer_join(const Request& q, const Addr& from, Time now, Response& a);
    void answer_renew(const Request& q, const Addr& from, Time now, Response& a);
    void answer_leave(const Request& q, const Addr& from, Response& a);
    void answer_list(const Request& q, Time now, Response& a);
    void answer_stats(Response& a);
    Overlay* find(std::uint64_t id, Response& a);
    Time lease_of(std::uint32_t ms) const;
    bool member_addr(const Request& q, const Addr& from, Addr& out, Response& a) const;
    Member* upsert(Overlay& o, const Addr& m, Time now, Time lease, Response& a);
    void event(std::string line);

    Limits limits_;
    std::map<std::uint64_t, Overlay> overlays_;
    std::deque<std::string> events_;
    std::uint64_t events_dropped_ = 0;
    bool dirty_ = false;
    Stats stats_;
};

}  // namespace gs::overlay::server
