#include "core/overlay/hc/hc_node.h"

#include <algorithm>
#include <cerrno>

namespace gs::overlay::hc {

namespace {

constexpr std::uint8_t kForwardTtl = 32;   // join requests, reports, seeks
constexpr std::size_t kMaxHints = 8;

std::uint64_t splitmix(std::uint64_t& s) {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

HcConfig sane(HcConfig c) {
    const Time ms = sansio::kMillisecond;
    c.ping_interval = std::max(c.ping_interval, 4 * ms);
    c.beacon_interval = std::max(c.beacon_interval, ms);
    c.failure_timeout = std::max(c.failure_timeout, c.ping_interval);
    c.head_timeout = std::max(c.head_timeout, c.beacon_interval);
    c.claim_step = std::max<Time>(c.claim_step, 0);
    c.join_retry = std::max(c.join_retry, ms);
    c.max_payload = std::min<std::size_t>(c.max_payload, 65535);
    c.max_members = std::clamp<std::uint32_t>(c.max_members, 1, kMaxMembers);
    c.max_dedup_sources = std::max<std::size_t>(c.max_dedup_sources, 1);
    c.max_queue = std::max<std::size_t>(c.max_queue, 16);
    return c;
}

}  // namespace

HcNode::HcNode(const Addr& self, std::uint64_t overlay, std::uint64_t seed, const HcConfig& cfg,
               std::vector<Addr> bootstrap)
    : self_(self),
      overlay_(overlay),
      cfg_(sane(cfg)),
      bootstrap_(std::move(bootstrap)),
      rng_(seed ^ 0x4843'4e4f'4445ull),
      incarnation_(static_cast<std::uint32_t>(splitmix(rng_))),
      cube_rng_(seed ^ 0x6375'6265'6964ull) {
    if (bootstrap_.size() > 64) bootstrap_.resize(64);
}

std::uint64_t HcNode::rand() { return splitmix(rng_); }

// From a generator of its own, so that drawing ids leaves every other random
// choice (timer jitter, nonces) as it was without them.
std::uint64_t HcNode::new_cube_id() {
    std::uint64_t c = splitmix(cube_rng_);
    while (c == 0) c = splitmix(cube_rng_);   // 0 means "none" (dissolved_)
    return c;
}

bool HcNode::is_head() const {
    return joined_ && view_.head == self_ && view_.n >= 1 && label_ == gray(view_.n - 1);
}

int HcNode::bit_of(Label l) const {
    if (!adjacent(l, label_)) return -1;
    return std::countr_zero(l ^ label_);
}

bool HcNode::slot_live(unsigned bit, Time now) const {
    const Slot& s = slots_[bit];
    return s.has_addr && now - s.last_heard <= cfg_.failure_timeout;
}

// Dead: a holder we heard fell silent for failure_timeout (or said it left),
// or nobody answered for the label for 3 x failure_timeout (a joiner or mover
// that failed before anyone learned its address). The longer wait for the
// second case keeps slow discovery from looking like a failure.
bool HcNode::slot_dead(unsigned bit, Time now) const {
    const Slot& s = slots_[bit];
    if (s.has_addr) return now - std::max(s.last_heard, s.expect_since) > cfg_.failure_timeout;
    return now - s.expect_since > 3 * cfg_.failure_timeout;
}

std::optional<Addr> HcNode::neighbor_addr(Label l) const {
    const int b = bit_of(l);
    if (!joined_ || b < 0 || !slots_[b].has_addr) return std::nullopt;
    return slots_[b].addr;
}

// ---------------------------------------------------------------- output

void HcNode::out(const Addr& to, const Message& m) {
    if (tx_.size() >= cfg_.max_queue) {
        ++hc_.dropped_queue;
        return;
    }
    encode(m, overlay_, scratch_);
    if (std::holds_alternative<Data>(m)) {
        ++stats_.data_sent;
        stats_.data_bytes_sent += scratch_.size();
    } else {
        ++stats_.control_sent;
        stats_.control_bytes_sent += scratch_.size();
    }
    tx_.push_back(sansio::Datagram{self_, to, scratch_});
}

bool HcNode::poll_transmit(sansio::Datagram& out) {
    if (tx_.empty()) return false;
    out = std::move(tx_.front());
    tx_.pop_front();
    return true;
}

bool HcNode::poll_deliver(Delivery& out) {
    if (rx_.empty()) return false;
    out = std::move(rx_.front());
    rx_.pop_front();
    return true;
}

// ---------------------------------------------------------------- lifecycle

// A cube of one, this node its head, under a fresh id: the first member,
// or a merge that left nobody to rejoin through.
void HcNode::found_cube(Time now) {
    View v;
    v.n = 1;
    v.cube = new_cube_id();
    v.head = self_;
    become_member(0, v, now);
}

void HcNode::join(Time now) {
    now_ = std::max(now_, now);
    if (joined_ || joining_) return;
    left_ = false;
    if (bootstrap_.empty()) {
        found_cube(now);
        return;
    }
    joining_ = true;
    join_nonce_ = rand();
    next_join_ = now;
    on_timeout(now);
}

void HcNode::become_member(Label l, const View& v, Time now) {
    joined_ = true;
    joining_ = false;
    dissolve_initiator_ = false;
    label_ = l;
    view_ = v;
    for (auto& s : slots_) s = Slot{};
    for (auto& s : slots_) s.expect_since = now;
    // Moves already in the view happened before we arrived: not news.
    for (unsigned i = 0; i < view_.nmoves; ++i) {
        const int b = bit_of(view_.moves[i].label);
        if (b >= 0) {
            slots_[b].move_epoch = view_.epoch;
            slots_[b].move_seq = view_.moves[i].seq;
        }
    }
    last_view_advance_ = now;
    last_connected_ = now;
    next_join_ = sansio::kNever;
    next_tick_ = now + cfg_.ping_interval / 4;
    next_beacon_ = is_head() ? now + cfg_.beacon_interval : sansio::kNever;
}

void HcNode::lose_label(Time now) {
    ++hc_.rejoins;
    // Keep a few addresses that are likely still members to rejoin through.
    std::vector<Addr> hints;
    if (view_.head != self_) hints.push_back(view_.head);
    for (const auto& s : slots_)
        if (s.has_addr && hints.size() < kMaxHints) hints.push_back(s.addr);
    hints_ = std::move(hints);
    joined_ = false;
    joining_ = true;
    for (auto& s : slots_) s = Slot{};
    view_ = View{};
    next_beacon_ = next_tick_ = flood_at_ = sansio::kNever;
    join_nonce_ = rand();
    next_join_ = now;
}

void HcNode::leave(Time now) {
    now_ = std::max(now_, now);
    if (left_) return;
    if (joined_) {
        if (is_head()) {
            if (view_.n > 1) {
                const int b = bit_of(gray(view_.n - 2));
                if (b >= 0 && slots_[b].has_addr) {
                    // Hand the head role down; our label drops off the top.
                    --view_.n;
                    ++view_.seq;
                    view_.head = slots_[b].addr;
                    for (unsigned i = 0; i < slots_.size(); ++i)
                        if (slots_[i].has_addr) send_ping(i, false, now);
                }
            }
        } else {
            out(view_.head, Report{label_, label_, self_, view_.epoch, view_.seq, Report::kLeave,
                                   kForwardTtl});
            ++hc_.reports_sent;
        }
        for (const auto& s : slots_)
            if (s.has_addr) out(s.addr, Leave{label_});
    }
    joined_ = joining_ = false;
    left_ = true;
    next_beacon_ = next_tick_ = next_join_ = flood_at_ = sansio::kNever;
}

Time HcNode::next_timeout() const {
    if (left_) return sansio::kNever;
    return std::min({next_tick_, next_join_, next_beacon_, flood_at_});
}

void HcNode::on_timeout(Time now) {
    now_ = std::max(now_, now);
    if (left_) return;
    if (joining_ && dissolve_initiator_ && dissolved_ > dissolved_for_ &&
        now - dissolved_at_ > 5 * cfg_.join_retry) {
        // We dissolved our cube into another while (its size having changed
        // as the MERGEs crossed) it dissolved into ours: nobody is left to
        // admit anyone. The initiator of the cube with the larger id founds a
        // new cube; the other cube's members are rejoining through us, and
        // ours through the other initiator, who joins us.
        ++hc_.refounds;
        found_cube(now);
        return;
    }
    if (joining_ && now >= next_join_) {
        const std::size_t total = hints_.size() + bootstrap_.size();
        if (total > 0) {
            const std::size_t i = bootstrap_next_++ % total;
            const Addr& to = i < hints_.size() ? hints_[i] : bootstrap_[i - hints_.size()];
            out(to, JoinReq{self_, join_nonce_, kForwardTtl});
        }
        // A little jitter keeps joiners that started together from retrying together.
        next_join_ = now + cfg_.join_retry + static_cast<Time>(rand() % (cfg_.join_retry / 4 + 1));
    }
    if (!joined_) return;
    if (now >= flood_at_) flood(now);
    if (is_head() && now >= next_beacon_) {
        ++view_.seq;
        last_view_advance_ = now;
        next_beacon_ = now + cfg_.beacon_interval;
        flood(now);
    }
    if (now < next_tick_) return;
    next_tick_ = now + cfg_.ping_interval / 4;

    const unsigned d = dim_of(view_.n);
    bool any_live = false;
    for (unsigned b = 0; b < d && joined_; ++b) {
        const Label l = label_ ^ (Label{1} << b);
        if (!in_cube(l, view_.n)) continue;
        Slot& s = slots_[b];
        if (s.has_addr && now - s.last_sent >= cfg_.ping_interval) send_ping(b, false, now);
        if (slot_live(b, now)) {
            any_live = true;
            continue;
        }
        if (now - s.last_seek >= cfg_.ping_interval) seek(l, now);
        if (slot_dead(b, now) && now - s.last_report >= cfg_.ping_interval) {
            s.last_report = now;
            if (is_head()) {
                const Label before = label_;
                head_fill(l, Addr{}, false, now);
                if (label_ != before) break;
            } else {
                out(view_.head, Report{l, label_, self_, view_.epoch, view_.seq, 0, kForwardTtl});
                ++hc_.reports_sent;
            }
        }
    }
    if (!joined_) return;
    std::size_t live = 0, expected = 0;
    for (unsigned b = 0; b < d; ++b) {
        if (!in_cube(label_ ^ (Label{1} << b), view_.n)) continue;
        ++expected;
        live += slot_live(b, now) ? 1 : 0;
    }
    if (2 * live >= expected) last_connected_ = now;
    if (now - last_connected_ > 3 * cfg_.failure_timeout) {
        lose_label(now);   // cut off from most of the cube for long: start again
        return;
    }
    if (is_head() || view_.n <= 1) return;
    // The highest live labels claim first; the delay is capped because a
    // higher claim wins anyway (and anyone above a claimant counter-claims).
    const std::uint32_t below_top = std::min<std::uint32_t>(view_.n - 1 - rank_of(label_), 16);
    const Time wait = cfg_.head_timeout + static_cast<Time>(below_top) * cfg_.claim_step;
    if (now - last_view_advance_ > wait) {
        if (any_live)
            claim_head(now);
        else
            lose_label(now);   // cut off from everyone: start again
    }
}

// ---------------------------------------------------------------- view

void HcNode::adopt_view(const View& v, Time now) {
    if (v.epoch > view_.epoch && v.claim < rank_of(label_) && in_cube(label_, view_.n)) {
        // A lower member claimed the head role while we live: we rank higher,
        // so we claim in its epoch and win, instead of being cut off.
        const View old = view_;
        view_ = View{};
        view_.epoch = v.epoch;
        view_.cube = v.cube;   // the same takeover: one id for it
        view_.claim = rank_of(label_);
        view_.n = view_.claim + 1;
        view_.head = self_;
        ++hc_.takeovers;
        last_view_advance_ = now;
        view_changed(old, now);
        return;
    }
    const View old = view_;
    view_ = v;
    last_view_advance_ = now;
    view_changed(old, now);
}

void HcNode::view_changed(const View& old, Time now) {
    if (!in_cube(label_, view_.n)) {
        lose_label(now);
        return;
    }
    // Jumped past moves that fell out of the list: any neighbour we do not
    // hear now may have a new holder, so give it time before reporting a hole.
    const bool missed = old.epoch == view_.epoch && old.seq < view_.moves_floor;
    for (unsigned b = 0; b < slots_.size(); ++b) {
        const Label l = label_ ^ (Label{1} << b);
        Slot& s = slots_[b];
        if (!in_cube(l, view_.n)) continue;
        if (missed && now - s.last_heard > cfg_.ping_interval) s.expect_since = now;
        bool fresh = !in_cube(l, old.n);
        for (unsigned i = 0; i < view_.nmoves; ++i) {
            const Move& m = view_.moves[i];
            if (m.label != l) continue;
            if (view_.epoch > s.move_epoch || (view_.epoch == s.move_epoch && m.seq > s.move_seq)) {
                s.move_epoch = view_.epoch;
                s.move_seq = m.seq;
                fresh = true;
            }
        }
        if (fresh && now - s.last_heard > cfg_.ping_interval) {
            // A new holder: forget the old one's address, give the new one time.
            // (Heard from just now: that is already the new holder.)
            s.has_addr = false;
            s.last_heard = kLongAgo;
            s.expect_since = now;
        }
    }
    if (is_head()) {
        if (next_beacon_ == sansio::kNever) next_beacon_ = now + cfg_.beacon_interval;
    } else {
        next_beacon_ = sansio::kNever;
    }
    flood_at_ = std::max(now, last_flood_ + cfg_.ping_interval / 4);
}

void HcNode::flood(Time now) {
    last_flood_ = now;
    flood_at_ = sansio::kNever;
    for (unsigned b = 0; b < dim_of(view_.n); ++b)
        if (slots_[b].has_addr && in_cube(label_ ^ (Label{1} << b), view_.n)) send_ping(b, false, now);
}

void HcNode::claim_head(Time now) {
    ++hc_.takeovers;
    const View old = view_;
    View v;
    v.epoch = view_.epoch + 1;
    v.claim = rank_of(label_);
    v.n = v.claim + 1;
    // A new id: if the old head lives on in a partition we cannot reach, the
    // two cubes must look different when the partition heals.
    v.cube = new_cube_id();
    v.head = self_;
    view_ = v;
    last_view_advance_ = now;
    view_changed(old, now);
}

// Head only: moves into `hole` (or shrinks the top) so the cube is compact
// again. Returns without change when the repair must wait for a retry.
void HcNode::head_fill(Label hole, const Addr& hint, bool have_hint, Time now) {
    if (hole == label_ || !in_cube(hole, view_.n) || view_.n < 2) return;
    const int hb = bit_of(hole);
    if (hb >= 0 && slot_live(static_cast<unsigned>(hb), now)) {
        ++hc_.reports_stale;   // we hear it ourselves
        return;
    }
    const Label below = gray(view_.n - 2);
    const unsigned bb = static_cast<unsigned>(bit_of(below));   // consecutive Gray codes are adjacent
    const View old = view_;
    Label target = hole;
    if (hole == below || (!slot_live(bb, now) && slot_dead(bb, now))) {
        // The member just below us is gone: drop the top label and take its
        // place, staying head. A report for another hole is retried later.
        ++hc_.shrinks;
        target = below;
    } else if (slot_live(bb, now)) {
        ++hc_.fills;
        view_.head = slots_[bb].addr;   // `below` becomes the highest label
    } else {
        return;   // not sure about `below` yet
    }
    --view_.n;
    ++view_.seq;
    view_.add_move(target, view_.seq);
    last_view_advance_ = now;
    // Tell the new head and our old neighbours before we forget them.
    for (unsigned b = 0; b < slots_.size(); ++b)
        if (slots_[b].has_addr) out(slots_[b].addr, Ping{target, 0, view_});
    hints_.clear();
    if (have_hint) hints_.push_back(hint);
    move_to(target, now);
    view_changed(old, now);
}

void HcNode::move_to(Label l, Time now) {
    // The reporter (a neighbour of the hole) is the best start for seeks;
    // without one, our old neighbours.
    if (hints_.empty())
        for (const auto& s : slots_)
            if (s.has_addr && hints_.size() < kMaxHints) hints_.push_back(s.addr);
    label_ = l;
    for (auto& s : slots_) s = Slot{};
    for (auto& s : slots_) {
        s.expect_since = now;
        s.move_epoch = view_.epoch;
        s.move_seq = view_.seq;
    }
    for (Label nb : neighbors_of(label_, view_.n)) seek(nb, now);
}

// ---------------------------------------------------------------- neighbours

void HcNode::heard(Label l, const Addr& from, Time now) {
    const int bi = bit_of(l);
    if (bi < 0) return;
    Slot& s = slots_[bi];
    if (s.has_addr && s.addr != from && now - s.last_heard <= cfg_.failure_timeout &&
        in_cube(l, view_.n)) {
        // Two live holders of one label: both are told; the higher address yields.
        ++hc_.conflicts;
        out(s.addr, Conflict{l, from});
        out(from, Conflict{l, s.addr});
        if (s.addr < from) return;
    }
    s.has_addr = true;
    s.addr = from;
    s.last_heard = now;
}

void HcNode::send_ping(unsigned bit, bool reply, Time now) {
    Slot& s = slots_[bit];
    out(s.addr, Ping{label_, static_cast<std::uint8_t>(reply ? Ping::kReply : 0), view_});
    s.last_sent = now;
}

bool HcNode::route_next(Label target, Label exclude, Time now, Addr& next) const {
    const Label diff = target ^ label_;
    for (int b = static_cast<int>(kMaxDim) - 1; b >= 0; --b) {
        const Label bit = Label{1} << b;
        if (!(diff & bit) || (label_ ^ bit) == exclude) continue;
        if (slot_live(static_cast<unsigned>(b), now)) {
            next = slots_[b].addr;
            return true;
        }
    }
    return false;
}

// Finds the holder of `target` (one of our neighbour labels): the seek goes
// hop by hop toward the label; its holder pings us back.
void HcNode::seek(Label target, Time now) {
    const int b = bit_of(target);
    if (b >= 0) slots_[b].last_seek = now;
    Addr next;
    bool ok = route_next(target, label_, now, next);
    if (!ok) {
        // No neighbour closer to the target: start from any live neighbour, or
        // from an address we remember, and let greedy routing take it on.
        std::vector<Addr> c;
        for (unsigned i = 0; i < dim_of(view_.n); ++i)
            if (slot_live(i, now)) c.push_back(slots_[i].addr);
        if (c.empty()) c = hints_;
        if (c.empty() && view_.head != self_) c.push_back(view_.head);
        if (c.empty()) return;
        next = c[rand() % c.size()];
    }
    ++hc_.seeks_sent;
    out(next, Seek{target, label_, self_, kForwardTtl});
}

// ---------------------------------------------------------------- input

void HcNode::on_datagram(const Addr& from, const Addr&, std::span<const std::uint8_t> bytes,
                         Time now) {
    now_ = std::max(now_, now);
    if (left_) return;
    Message m;
    switch (parse(bytes, overlay_, m)) {
    case ParseResult::foreign: ++stats_.dropped_foreign; return;
    case ParseResult::malformed: ++stats_.dropped_malformed; return;
    case ParseResult::ok: break;
    }
    std::visit(
        [&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, JoinReq>) on_join_req(from, v, now);
            else if constexpr (std::is_same_v<T, JoinAck>) on_join_ack(from, v, now);
            else if constexpr (std::is_same_v<T, Ping>) on_ping(from, v, now);
            else if constexpr (std::is_same_v<T, Seek>) on_seek(from, v, now);
            else if constexpr (std::is_same_v<T, Report>) on_report(from, v, now);
            else if constexpr (std::is_same_v<T, Leave>) on_leave(from, v, now);
            else if constexpr (std::is_same_v<T, Conflict>) on_conflict(from, v, now);
            else if constexpr (std::is_same_v<T, Decline>) on_decline(from, v, now);
            else if constexpr (std::is_same_v<T, Data>) on_data(from, v, now);
            else if constexpr (std::is_same_v<T, Merge>) on_merge(from, v, now);
            else if constexpr (std::is_same_v<T, Dissolve>) on_dissolve(from, v, now);
        },
        m);
}

void HcNode::on_join_req(const Addr&, const JoinReq& m, Time now) {
    if (!joined_ || m.joiner == self_) {
        ++hc_.dropped_unexpected;
        return;
    }
    if (!is_head()) {
        if (m.joiner == view_.head) {
            // It was admitted but lost the answer: any member can repeat it.
            out(m.joiner, JoinAck{gray(view_.n - 1), label_, m.nonce, view_});
            return;
        }
        if (m.ttl == 0 || view_.head == self_) {
            ++hc_.dropped_ttl;
            return;
        }
        out(view_.head, JoinReq{m.joiner, m.nonce, static_cast<std::uint8_t>(m.ttl - 1)});
        return;
    }
    if (view_.n >= cfg_.max_members) {
        ++hc_.dropped_unexpected;
        return;
    }
    ++hc_.joins_admitted;
    const View old = view_;
    const Label l = gray(view_.n);
    ++view_.n;
    ++view_.seq;
    view_.add_move(l, view_.seq);
    view_.head = m.joiner;
    last_view_advance_ = now;
    view_changed(old, now);
    const int b = bit_of(l);   // consecutive Gray codes are adjacent
    if (b >= 0) {
        Slot& s = slots_[b];
        s.has_addr = true;
        s.addr = m.joiner;
        s.last_heard = now;
    }
    out(m.joiner, JoinAck{l, label_, m.nonce, view_});
    // Introduce the joiner: a seek on its behalf toward each of its other
    // neighbours goes around it (through ours), which the joiner cannot do
    // knowing only us.
    for (Label nb : neighbors_of(l, view_.n)) {
        if (nb == label_) continue;
        Addr next;
        if (route_next(nb, l, now, next)) {
            ++hc_.seeks_sent;
            out(next, Seek{nb, l, m.joiner, kForwardTtl});
        }
    }
}

void HcNode::on_join_ack(const Addr& from, const JoinAck& m, Time now) {
    if (dissolved_ != 0 && m.view.cube == dissolved_) {
        ++hc_.merges_dropped;   // a late answer from the cube we dissolved
        return;
    }
    if (joined_) {
        // A second label for us (a retransmitted request admitted twice): give it back.
        if (m.label != label_) out(from, Decline{m.label, m.nonce});
        return;
    }
    if (!joining_ || m.nonce != join_nonce_ || m.view.head != self_ ||
        m.label != gray(m.view.n - 1)) {
        ++hc_.dropped_unexpected;
        return;
    }
    become_member(m.label, m.view, now);
    if (adjacent(m.sender, label_)) heard(m.sender, from, now);
    for (Label nb : neighbors_of(label_, view_.n))
        if (nb != m.sender) seek(nb, now);
    flood(now);
}

void HcNode::on_decline(const Addr& from, const Decline& m, Time now) {
    if (!joined_ || view_.head != from || view_.n < 2 || m.label != gray(view_.n - 1) ||
        label_ != gray(view_.n - 2)) {
        ++hc_.dropped_unexpected;
        return;
    }
    const View old = view_;
    --view_.n;
    ++view_.seq;
    view_.head = self_;
    last_view_advance_ = now;
    view_changed(old, now);
}

void HcNode::on_ping(const Addr& from, const Ping& m, Time now) {
    if (!joined_) {
        ++hc_.dropped_unexpected;
        return;
    }
    if (m.view.cube != view_.cube) {
        // Another cube's view. A takeover (a new epoch draws a new id) comes
        // this way, from the claimant and then from neighbour to neighbour,
        // so it is adopted from a live neighbour at the address we hear it
        // at. Anything else is another partition's member at an address we
        // used to know (a partition healed) or a member of the cube we
        // dissolved that has not heard yet: adopting its view would give us
        // its size and head with our label, a second cube under one id that
        // no MERGE could tell apart. Such pings are ignored, unanswered; the
        // merge goes through the heads (hint()).
        const int b = bit_of(m.sender);
        const bool neighbour = b >= 0 && slot_live(static_cast<unsigned>(b), now) &&
                               slots_[static_cast<unsigned>(b)].addr == from;
        if (!neighbour || (dissolved_ != 0 && m.view.cube == dissolved_)) {
            ++hc_.pings_other_cube;
            return;
        }
    }
    const int cmp = compare_views(m.view, view_);
    if (cmp > 0) adopt_view(m.view, now);
    if (!joined_) return;
    if (adjacent(m.sender, label_) && m.sender != label_) heard(m.sender, from, now);
    // A sender behind us gets our view at once (one answer per ping: no storm).
    if ((m.flags & Ping::kReply) || cmp < 0) out(from, Ping{label_, 0, view_});
}

void HcNode::on_seek(const Addr&, const Seek& m, Time now) {
    if (!joined_) {
        ++hc_.dropped_unexpected;
        return;
    }
    if (m.target == label_) {
        if (!adjacent(m.origin, label_)) {
            ++hc_.dropped_unexpected;
            return;
        }
        heard(m.origin, m.origin_addr, now);
        const int b = bit_of(m.origin);
        if (slots_[b].has_addr && slots_[b].addr == m.origin_addr)
            send_ping(static_cast<unsigned>(b), true, now);
        return;
    }
    if (m.ttl == 0) {
        ++hc_.dropped_ttl;
        return;
    }
    Addr next;
    if (!route_next(m.target, m.origin, now, next)) {
        ++hc_.dropped_unroutable;
        return;
    }
    out(next, Seek{m.target, m.origin, m.origin_addr, static_cast<std::uint8_t>(m.ttl - 1)});
}

void HcNode::on_report(const Addr&, const Report& m, Time now) {
    if (!joined_) {
        ++hc_.dropped_unexpected;
        return;
    }
    if (!is_head()) {
        if (m.ttl == 0 || view_.head == self_) {
            ++hc_.dropped_ttl;
            return;
        }
        Report f = m;
        f.ttl = static_cast<std::uint8_t>(m.ttl - 1);
        out(view_.head, f);
        return;
    }
    // Only reports made with what this epoch knows, and newer than any move
    // of that label, may trigger a repair: a label refilled since is not a hole.
    bool stale = m.epoch != view_.epoch || m.seq < view_.moves_floor || m.seq > view_.seq;
    for (unsigned i = 0; i < view_.nmoves && !stale; ++i)
        if (view_.moves[i].label == m.missing && view_.moves[i].seq > m.seq) stale = true;
    if (stale) {
        ++hc_.reports_stale;
        return;
    }
    head_fill(m.missing, m.reporter_addr, true, now);
}

void HcNode::on_leave(const Addr& from, const Leave& m, Time now) {
    const int b = joined_ ? bit_of(m.sender) : -1;
    if (b < 0 || !slots_[b].has_addr || slots_[b].addr != from) {
        ++hc_.dropped_unexpected;
        return;
    }
    Slot& s = slots_[b];
    s.last_heard = s.expect_since = kLongAgo;   // dead now, no timeout to wait for
    s.last_report = now - cfg_.ping_interval / 2;   // the leaver reported; back it up soon
}

void HcNode::on_conflict(const Addr& from, const Conflict& m, Time now) {
    if (!joined_ || m.other == self_) {
        ++hc_.dropped_unexpected;
        return;
    }
    if (m.label != label_) {
        // A holder that lost a conflict names the winner to its neighbours.
        const int b = bit_of(m.label);
        if (b < 0 || !slots_[b].has_addr || slots_[b].addr != from) {
            ++hc_.dropped_unexpected;
            return;
        }
        slots_[b].addr = m.other;
        slots_[b].last_heard = now;
        return;
    }
    if (!(m.other < self_)) return;   // we keep the label
    for (const auto& s : slots_)
        if (s.has_addr) out(s.addr, Conflict{label_, m.other});
    lose_label(now);
}

// ---------------------------------------------------------------- merging

void HcNode::hint(Addr member, Time now) {
    now_ = std::max(now_, now);
    if (!is_head() || member == self_ || member.port == 0) {
        ++hc_.hints_ignored;
        return;
    }
    for (const auto& s : slots_)
        if (s.has_addr && s.addr == member) {
            ++hc_.hints_ignored;
            return;
        }
    // Token bucket: a flood of hints costs kHintBurst MERGEs, then one per
    // kHintEvery; no state per hint.
    if (hint_refill_ == kLongAgo) hint_refill_ = now;
    if (now - hint_refill_ >= kHintEvery) {
        const Time gained = (now - hint_refill_) / kHintEvery;
        hint_tokens_ = static_cast<int>(std::min<Time>(kHintBurst, hint_tokens_ + gained));
        hint_refill_ += gained * kHintEvery;
    }
    if (hint_tokens_ == 0) {
        ++hc_.hints_limited;
        return;
    }
    --hint_tokens_;
    ++hc_.merges_sent;
    out(member, Merge{view_.cube, view_.n, self_, 0, kForwardTtl});
}

// A MERGE travels to the head of the receiver's cube. Of two heads, the one
// with the larger cube id decides, so that the two never decide differently:
// the smaller cube (ties: the smaller id) dissolves into the larger. The
// decider orders the other to dissolve, or dissolves itself; the smaller id
// dissolves only when ordered. (Sizes can change while MERGEs cross, so both
// may dissolve: see the refound in on_timeout.)
void HcNode::on_merge(const Addr&, const Merge& m, Time now) {
    if (!joined_) {
        ++hc_.dropped_unexpected;
        return;
    }
    if (m.cube == view_.cube || m.head == self_ || (dissolved_ != 0 && m.cube == dissolved_)) {
        ++hc_.merges_dropped;   // one cube, our own MERGE back, or a cube being dissolved
        return;
    }
    if (m.ttl == 0) {
        ++hc_.dropped_ttl;
        return;
    }
    Merge f = m;
    f.ttl = static_cast<std::uint8_t>(m.ttl - 1);
    if (!is_head()) {
        if (view_.head == self_) {
            ++hc_.dropped_ttl;
            return;
        }
        ++hc_.merges_forwarded;
        out(view_.head, f);
        return;
    }
    if (m.flags & Merge::kOrder) {
        if (m.cube > view_.cube)
            dissolve_into(m.head, m.cube, true, now);
        else
            ++hc_.merges_dropped;   // only the larger id orders
        return;
    }
    if (view_.cube < m.cube) {
        // The other head decides: tell it about us.
        ++hc_.merges_sent;
        out(m.head, Merge{view_.cube, view_.n, self_, 0, f.ttl});
        return;
    }
    if (view_.n >= m.n) {
        ++hc_.merges_sent;
        out(m.head, Merge{view_.cube, view_.n, self_, Merge::kOrder, f.ttl});
    } else {
        dissolve_into(m.head, m.cube, true, now);
    }
}

void HcNode::on_dissolve(const Addr& from, const Dissolve& m, Time now) {
    if (!joined_ || m.cube == 0 || m.cube != view_.cube || m.target == self_) {
        ++hc_.dropped_unexpected;
        return;
    }
    // Only a neighbour or the head passes it on: a sender that is neither
    // (spoofing, or a stale address) is not trusted with our label.
    bool known = from == view_.head;
    for (const auto& s : slots_)
        if (s.has_addr && s.addr == from) known = true;
    if (!known) {
        ++hc_.dropped_unexpected;
        return;
    }
    dissolve_into(m.target, 0, false, now);
}

// Leaves the cube for the one whose member is at `target`: the DISSOLVE goes
// on to every neighbour (a flood over the cube's edges, each member passing
// it once since it is no longer a member after), then this node rejoins
// through `target`. Joins are staggered by rank, since the other cube's head
// admits one joiner at a time and a burst would mostly be retried.
void HcNode::dissolve_into(const Addr& target, std::uint64_t target_cube, bool initiator, Time now) {
    const std::uint64_t cube = view_.cube;
    const std::uint32_t rank = rank_of(label_);
    for (const auto& s : slots_)
        if (s.has_addr) out(s.addr, Dissolve{cube, target});
    ++hc_.dissolves;
    lose_label(now);
    dissolved_ = cube;
    dissolved_for_ = target_cube;
    dissolved_at_ = now;
    dissolve_initiator_ = initiator;
    hints_.assign(1, target);
    bootstrap_next_ = 0;
    next_join_ = now + static_cast<Time>(std::min<std::uint32_t>(rank, 256)) * (cfg_.join_retry / 32);
}

// ---------------------------------------------------------------- data

bool HcNode::dedup_seen(Label src, std::uint32_t inc, std::uint32_t seq) {
    const std::uint64_t key = (std::uint64_t{src} << 32) | inc;
    auto it = dedup_.find(key);
    if (it == dedup_.end()) {
        while (dedup_.size() >= cfg_.max_dedup_sources && !dedup_order_.empty()) {
            dedup_.erase(dedup_order_.front());
            dedup_order_.pop_front();
        }
        dedup_.emplace(key, DedupWindow{seq, 1});
        dedup_order_.push_back(key);
        return false;
    }
    DedupWindow& w = it->second;
    const auto ahead = static_cast<std::int32_t>(seq - w.top);
    if (ahead > 0) {
        w.bits = ahead >= 64 ? 1 : (w.bits << ahead) | 1;
        w.top = seq;
        return false;
    }
    const auto behind = static_cast<std::uint32_t>(-static_cast<std::int64_t>(ahead));
    if (behind >= 64) return true;   // older than the window: treated as seen
    const std::uint64_t bit = std::uint64_t{1} << behind;
    if (w.bits & bit) return true;
    w.bits |= bit;
    return false;
}

void HcNode::send_data(const Addr& to, const Data& d) { out(to, d); }

void HcNode::deliver(const Data& d) {
    if (rx_.size() >= cfg_.max_queue) {
        ++hc_.dropped_queue;
        return;
    }
    rx_.push_back(Delivery{d.src, std::vector<std::uint8_t>(d.payload.begin(), d.payload.end())});
    ++stats_.delivered;
}

void HcNode::forward_tree(const Data& d, Time) {
    if (d.ttl == 0) {
        ++hc_.dropped_ttl;
        return;
    }
    Data f = d;
    f.ttl = static_cast<std::uint8_t>(d.ttl - 1);
    for (Label c : tree_children(label_, d.root, view_.n)) {
        const Slot& s = slots_[bit_of(c)];
        if (s.has_addr)
            send_data(s.addr, f);
        else
            ++hc_.dropped_unroutable;
    }
}

void HcNode::on_data(const Addr&, const Data& m, Time now) {
    if (!joined_) {
        ++hc_.dropped_unexpected;
        return;
    }
    if (m.kind == Kind::node && m.dest != label_) {
        if (m.ttl == 0) {
            ++hc_.dropped_ttl;
            return;
        }
        Addr next;
        if (!route_next(m.dest, kMaxMembers, now, next)) {
            ++hc_.dropped_unroutable;
            return;
        }
        Data f = m;
        f.ttl = static_cast<std::uint8_t>(m.ttl - 1);
        send_data(next, f);
        return;
    }
    if (dedup_seen(m.src, m.incarnation, m.seq)) {
        ++stats_.dropped_duplicate;
        return;
    }
    deliver(m);
    if (m.kind == Kind::all) forward_tree(m, now);
}

int HcNode::send(SendTo to, std::span<const std::uint8_t> payload, Time now, LogicalAddress root,
                 LogicalAddress node) {
    now_ = std::max(now_, now);
    if (!joined_) return -ENOTCONN;
    if (payload.size() > cfg_.max_payload) return -EINVAL;
    Label r = label_;
    if (root != kNoAddress) {
        if (root >= kMaxMembers || !in_cube(static_cast<Label>(root), view_.n)) return -EINVAL;
        r = static_cast<Label>(root);
    }
    Data d;
    d.src = label_;
    d.incarnation = incarnation_;
    d.root = r;
    d.seq = ++data_seq_;
    d.ttl = kMaxTtl;
    d.payload = payload;
    dedup_seen(d.src, d.incarnation, d.seq);   // our own copy coming back is a duplicate
    auto hop = [&](Label l) {
        const int b = bit_of(l);
        if (b >= 0 && slots_[b].has_addr)
            send_data(slots_[b].addr, d);
        else
            ++hc_.dropped_unroutable;
    };
    switch (to) {
    case SendTo::all:
        d.kind = Kind::all;
        d.root = label_;
        forward_tree(d, now);
        return 0;
    case SendTo::parent: {
        auto p = tree_parent(label_, r, view_.n);
        if (!p) return -EHOSTUNREACH;
        d.kind = Kind::hop;
        hop(*p);
        return 0;
    }
    case SendTo::children:
        d.kind = Kind::hop;
        for (Label c : tree_children(label_, r, view_.n)) hop(c);
        return 0;
    case SendTo::neighbors:
        d.kind = Kind::hop;
        for (Label nb : neighbors_of(label_, view_.n)) hop(nb);
        return 0;
    case SendTo::node: {
        if (node == kNoAddress || node >= kMaxMembers || !in_cube(static_cast<Label>(node), view_.n))
            return -EINVAL;
        d.kind = Kind::node;
        d.dest = static_cast<Label>(node);
        if (d.dest == label_) {
            deliver(d);
            return 0;
        }
        Addr next;
        if (route_next(d.dest, kMaxMembers, now, next))
            send_data(next, d);
        else
            ++hc_.dropped_unroutable;
        return 0;
    }
    }
    return -EINVAL;
}

// ---------------------------------------------------------------- topology

std::vector<LogicalAddress> HcNode::neighbors() const {
    std::vector<LogicalAddress> out;
    if (!joined_) return out;
    const Time now = now_;   // liveness as of the last time this node was driven
    for (Label nb : neighbors_of(label_, view_.n)) {
        const Slot& s = slots_[bit_of(nb)];
        if (s.has_addr && now - s.last_heard <= cfg_.failure_timeout) out.push_back(nb);
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::optional<LogicalAddress> HcNode::parent(LogicalAddress root) const {
    if (!joined_) return std::nullopt;
    const Label r = root == kNoAddress ? label_ : static_cast<Label>(root);
    if (root != kNoAddress && root >= kMaxMembers) return std::nullopt;
    auto p = tree_parent(label_, r, view_.n);
    if (!p) return std::nullopt;
    return LogicalAddress{*p};
}

std::vector<LogicalAddress> HcNode::children(LogicalAddress root) const {
    std::vector<LogicalAddress> out;
    if (!joined_ || (root != kNoAddress && root >= kMaxMembers)) return out;
    const Label r = root == kNoAddress ? label_ : static_cast<Label>(root);
    for (Label c : tree_children(label_, r, view_.n)) out.push_back(c);
    return out;
}

}  // namespace gs::overlay::hc
