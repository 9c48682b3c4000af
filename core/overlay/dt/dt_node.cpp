#include "core/overlay/dt/dt_node.h"

#include <algorithm>
#include <cerrno>

namespace gs::overlay::dt {

namespace {

void put_u16(std::vector<std::uint8_t>& b, std::uint16_t v) {
    b.push_back(static_cast<std::uint8_t>(v >> 8));
    b.push_back(static_cast<std::uint8_t>(v));
}
void put_u32(std::vector<std::uint8_t>& b, std::uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
}
void put_u64(std::vector<std::uint8_t>& b, std::uint64_t v) {
    for (int s = 56; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
}
void put_addr(std::vector<std::uint8_t>& b, const Addr& a) {
    b.insert(b.end(), a.ip.begin(), a.ip.end());
    put_u16(b, a.port);
}
std::uint16_t get_u16(std::span<const std::uint8_t> m, std::size_t at) {
    return static_cast<std::uint16_t>((m[at] << 8) | m[at + 1]);
}
std::uint32_t get_u32(std::span<const std::uint8_t> m, std::size_t at) {
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | m[at + i];
    return v;
}
std::uint64_t get_u64(std::span<const std::uint8_t> m, std::size_t at) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < 8; ++i) v = (v << 8) | m[at + i];
    return v;
}
Addr get_addr(std::span<const std::uint8_t> m, std::size_t at) {
    Addr a;
    std::copy_n(m.begin() + static_cast<std::ptrdiff_t>(at), 16, a.ip.begin());
    a.port = get_u16(m, at + 16);
    return a;
}

std::uint64_t splitmix(std::uint64_t& s) {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

bool contains(const std::vector<LogicalAddress>& sorted, LogicalAddress a) {
    return std::binary_search(sorted.begin(), sorted.end(), a);
}

// Data message kinds on the wire (SendTo's values).
constexpr std::uint8_t kKindMax = static_cast<std::uint8_t>(SendTo::node);

}  // namespace

DtNode::DtNode(Addr self, std::uint64_t overlay_hash, LogicalAddress coords, std::uint64_t seed,
               DtConfig cfg, std::vector<Addr> bootstrap)
    : self_(self),
      overlay_(overlay_hash),
      coords_(coords),
      point_(unpack(coords)),
      cfg_(cfg),
      bootstrap_(std::move(bootstrap)),
      rng_(seed) {
    // A timeout shorter than two slow periods would drop healthy neighbours.
    if (cfg_.hello_fast <= 0) cfg_.hello_fast = DtConfig{}.hello_fast;
    if (cfg_.hello_slow < cfg_.hello_fast) cfg_.hello_slow = cfg_.hello_fast;
    if (cfg_.neighbor_timeout < 2 * cfg_.hello_slow) cfg_.neighbor_timeout = 2 * cfg_.hello_slow;
    if (cfg_.memory < cfg_.neighbor_timeout) cfg_.memory = cfg_.neighbor_timeout;
    if (cfg_.join_retry <= 0) cfg_.join_retry = DtConfig{}.join_retry;
    if (cfg_.max_payload > 0xffff) cfg_.max_payload = 0xffff;
}

Time DtNode::jittered(Time interval) {
    // +-10%, so that nodes started together do not stay in lock step.
    const std::uint64_t r = splitmix(rng_) % 2001;   // 0..2000
    return interval - interval / 10 + static_cast<Time>((static_cast<__int128>(interval) / 5) * r / 2000);
}

// ---------------------------------------------------------------- membership

void DtNode::join(Time now) {
    if (!valid() || state_ != State::idle) return;
    // The epoch makes a restarted node's sequence numbers new to everyone.
    std::uint64_t s = rng_ ^ static_cast<std::uint64_t>(now) ^ coords_;
    epoch_ = static_cast<std::uint32_t>(splitmix(s));
    if (bootstrap_.empty()) {
        state_ = State::member;
        next_tick_ = now;
        return;
    }
    state_ = State::joining;
    send_join_request(now);
    next_tick_ = now + cfg_.hello_fast;
}

void DtNode::send_join_request(Time now) {
    const Addr& to = bootstrap_[bootstrap_next_ % bootstrap_.size()];
    ++bootstrap_next_;
    std::vector<std::uint8_t> b;
    put_prefix(b, MsgType::join_request);
    put_u64(b, coords_);
    put_addr(b, self_);
    b.push_back(kDataTtl);
    transmit(to, std::move(b), false);
    ++dt_.join_requests_sent;
    join_deadline_ = now + jittered(cfg_.join_retry);
}

void DtNode::leave(Time) {
    if (state_ == State::member) {
        // Everyone that may hold us as a neighbour: the star and live peers.
        for (const auto& [a, p] : known_)
            if (p.heard != kUnset || contains(desired_, a)) send_short(p.addr, MsgType::goodbye, coords_);
    }
    state_ = State::left;
    known_.clear();
    dead_.clear();
    desired_.clear();
    nbrs_.clear();
    next_tick_ = kNever;
}

// ---------------------------------------------------------------- knowledge

DtNode::Peer* DtNode::upsert(LogicalAddress a, Time now) {
    auto it = known_.find(a);
    if (it != known_.end()) return &it->second;
    if (known_.size() >= kMaxKnown) {
        // Evict the farthest entry that is neither in the star nor live:
        // far second-hand knowledge is the least likely to matter.
        auto victim = known_.end();
        for (auto i = known_.begin(); i != known_.end(); ++i) {
            if (contains(desired_, i->first) || live(i->second, now)) continue;
            if (victim == known_.end() || closer(point_, unpack(victim->first), unpack(i->first)))
                victim = i;
        }
        if (victim == known_.end() ||
            !closer(point_, unpack(a), unpack(victim->first))) {
            ++dt_.known_full;
            return nullptr;
        }
        known_.erase(victim);
    }
    dirty_ = true;
    return &known_[a];
}

void DtNode::mark_dead(LogicalAddress a, Time now) {
    known_.erase(a);
    if (dead_.size() >= kMaxDead && !dead_.contains(a)) {
        // Forget the mark that ends soonest.
        auto first = std::min_element(dead_.begin(), dead_.end(),
                                      [](const auto& l, const auto& r) { return l.second < r.second; });
        dead_.erase(first);
    }
    dead_[a] = now + cfg_.memory;
    dirty_ = true;
}

// Recomputes the star (when the knowledge changed) and the neighbour set,
// and probes new candidates at once so joins do not wait for a tick.
void DtNode::refresh(Time now) {
    if (state_ != State::member) return;
    if (dirty_) {
        dirty_ = false;
        ++dt_.star_recomputes;
        std::vector<Point> pts{point_};
        std::vector<LogicalAddress> ids{coords_};
        for (const auto& [a, p] : known_) {
            if (!usable(p, now)) continue;
            pts.push_back(unpack(a));
            ids.push_back(a);
        }
        std::vector<LogicalAddress> star;
        for (std::size_t i : delaunay_star(pts, 0)) star.push_back(ids[i]);
        std::sort(star.begin(), star.end());
        if (star != desired_) {
            desired_ = std::move(star);
            changed_since_tick_ = true;
        }
    }
    std::vector<LogicalAddress> n;
    for (LogicalAddress a : desired_) {
        auto it = known_.find(a);
        if (it != known_.end() && live(it->second, now) && it->second.wants_us) n.push_back(a);
    }
    if (n != nbrs_) {
        nbrs_ = std::move(n);
        changed_since_tick_ = true;
        // Neighbours compute trees from our list: tell them soon.
        if (next_tick_ > now + cfg_.hello_fast) next_tick_ = now + jittered(cfg_.hello_fast);
    }
    for (LogicalAddress a : desired_) {
        auto it = known_.find(a);
        if (it == known_.end()) continue;
        if (!live(it->second, now) && it->second.probe_since == kUnset) send_hello(a, now);
    }
}

void DtNode::tick(Time now) {
    if (state_ == State::joining) {
        if (now >= join_deadline_) send_join_request(now);
        next_tick_ = join_deadline_;
        return;
    }
    if (state_ != State::member) {
        next_tick_ = kNever;
        return;
    }
    for (auto it = known_.begin(); it != known_.end();) {
        Peer& p = it->second;
        const LogicalAddress a = it->first;
        ++it;   // mark_dead erases a
        const bool probed = contains(desired_, a);
        if (p.heard != kUnset && !live(p, now)) {
            if (probed) {
                ++dt_.neighbor_timeouts;
                mark_dead(a, now);
                continue;
            }
            // Silent but we never asked: not dead, just not a neighbour.
            p.heard = kUnset;
            p.wants_us = false;
            p.list.clear();
            dirty_ = true;
        }
        if (p.heard == kUnset && probed && p.probe_since != kUnset &&
            now - p.probe_since > cfg_.neighbor_timeout) {
            ++dt_.probe_failures;
            mark_dead(a, now);
            continue;
        }
        if (!usable(p, now)) {
            known_.erase(a);
            dirty_ = true;
        }
    }
    std::erase_if(dead_, [now](const auto& d) { return d.second <= now; });
    refresh(now);
    if (changed_since_tick_ || nbrs_.size() != desired_.size()) {
        stable_count_ = 0;
    } else if (stable_count_ < cfg_.stable_ticks) {
        ++stable_count_;
    }
    changed_since_tick_ = false;
    for (LogicalAddress a : desired_) send_hello(a, now);
    next_tick_ = now + jittered(stable() ? cfg_.hello_slow : cfg_.hello_fast);
}

void DtNode::on_timeout(Time now) {
    if (now < next_tick_) return;
    tick(now);
}

Time DtNode::next_timeout() const { return next_tick_; }

bool DtNode::poll_transmit(Datagram& out) {
    if (tx_.empty()) return false;
    out = std::move(tx_.front());
    tx_.pop_front();
    return true;
}

bool DtNode::poll_deliver(Delivery& out) {
    if (rx_.empty()) return false;
    out = std::move(rx_.front());
    rx_.pop_front();
    return true;
}

// ---------------------------------------------------------------- sending

void DtNode::put_prefix(std::vector<std::uint8_t>& b, MsgType t) const {
    put_u16(b, kMagic);
    b.push_back(kVersion);
    b.push_back(static_cast<std::uint8_t>(Protocol::dt));
    put_u64(b, overlay_);
    b.push_back(static_cast<std::uint8_t>(t));
}

void DtNode::transmit(const Addr& to, std::vector<std::uint8_t> bytes, bool data) {
    if (tx_.size() >= kMaxTransmits) {
        ++dt_.dropped_queue_full;
        return;
    }
    if (data) {
        ++stats_.data_sent;
        stats_.data_bytes_sent += bytes.size();
    } else {
        ++stats_.control_sent;
        stats_.control_bytes_sent += bytes.size();
    }
    tx_.push_back(Datagram{self_, to, std::move(bytes)});
}

void DtNode::send_hello(LogicalAddress to, Time now) {
    auto it = known_.find(to);
    if (it == known_.end()) return;
    Peer& p = it->second;
    if (p.heard == kUnset && p.probe_since == kUnset) p.probe_since = now;
    std::vector<std::uint8_t> b;
    b.reserve(kHelloHeader + nbrs_.size() * kEntrySize);
    put_prefix(b, MsgType::hello);
    put_u64(b, coords_);
    std::uint8_t flags = contains(desired_, to) ? kFlagNeighbor : 0;
    if (stable()) flags |= kFlagStable;
    b.push_back(flags);
    std::size_t count = std::min(nbrs_.size(), kMaxListed);
    if (count < nbrs_.size()) ++dt_.list_truncated;
    b.push_back(static_cast<std::uint8_t>(count));
    for (std::size_t i = 0; i < count; ++i) {
        put_u64(b, nbrs_[i]);
        auto n = known_.find(nbrs_[i]);
        put_addr(b, n != known_.end() ? n->second.addr : Addr{});
    }
    ++dt_.hellos_sent;
    transmit(p.addr, std::move(b), false);
}

void DtNode::send_short(const Addr& to, MsgType t, LogicalAddress a) {
    std::vector<std::uint8_t> b;
    put_prefix(b, t);
    put_u64(b, a);
    transmit(to, std::move(b), false);
}

void DtNode::send_data(LogicalAddress to_node, std::uint8_t kind, std::uint8_t ttl, LogicalAddress source,
                       LogicalAddress root, LogicalAddress dest, std::uint32_t epoch, std::uint32_t seq,
                       std::span<const std::uint8_t> payload) {
    auto it = known_.find(to_node);
    if (it == known_.end()) return;
    std::vector<std::uint8_t> b;
    b.reserve(kDataHeader + payload.size());
    put_prefix(b, MsgType::data);
    b.push_back(kind);
    b.push_back(ttl);
    put_u64(b, source);
    put_u64(b, root);
    put_u64(b, dest);
    put_u32(b, epoch);
    put_u32(b, seq);
    put_u16(b, static_cast<std::uint16_t>(payload.size()));
    b.insert(b.end(), payload.begin(), payload.end());
    transmit(it->second.addr, std::move(b), true);
}

void DtNode::deliver(LogicalAddress source, std::span<const std::uint8_t> payload) {
    if (rx_.size() >= kMaxDeliveries) {
        ++dt_.dropped_queue_full;
        return;
    }
    ++stats_.delivered;
    rx_.push_back(Delivery{source, std::vector<std::uint8_t>(payload.begin(), payload.end())});
}

// ---------------------------------------------------------------- trees

std::optional<LogicalAddress> DtNode::parent_of(LogicalAddress v, const std::vector<LogicalAddress>& list,
                                                LogicalAddress root) const {
    if (v == root) return std::nullopt;
    const Point r = unpack(root);
    std::optional<LogicalAddress> best;
    for (LogicalAddress a : list)
        if (!best || closer(r, unpack(a), unpack(*best))) best = a;
    if (best && closer(r, unpack(*best), unpack(v))) return best;
    return std::nullopt;
}

std::optional<LogicalAddress> DtNode::parent(LogicalAddress root) const {
    if (root == kNoAddress) return std::nullopt;
    return parent_of(coords_, nbrs_, root);
}

std::vector<LogicalAddress> DtNode::children(LogicalAddress root) const {
    if (root == kNoAddress) root = coords_;
    std::vector<LogicalAddress> out;
    for (LogicalAddress v : nbrs_) {
        auto it = known_.find(v);
        if (it == known_.end()) continue;
        if (parent_of(v, it->second.list, root) == coords_) out.push_back(v);
    }
    return out;
}

std::optional<LogicalAddress> DtNode::next_hop(LogicalAddress target) const {
    const Point t = unpack(target);
    std::optional<LogicalAddress> best;
    for (LogicalAddress a : nbrs_)
        if (!best || closer(t, unpack(a), unpack(*best))) best = a;
    if (best && closer(t, unpack(*best), point_)) return best;
    return std::nullopt;
}

int DtNode::send(SendTo to, std::span<const std::uint8_t> payload, Time now, LogicalAddress root,
                 LogicalAddress node) {
    if (state_ != State::member) return -ENOTCONN;
    if (payload.size() > cfg_.max_payload) return -EINVAL;
    if (to > SendTo::node) return -EINVAL;
    const auto kind = static_cast<std::uint8_t>(to);
    const std::uint32_t seq = next_seq_++;
    if (root == kNoAddress) root = coords_;
    auto emit = [&](LogicalAddress n, LogicalAddress r, LogicalAddress d) {
        send_data(n, kind, kDataTtl, coords_, r, d, epoch_, seq, payload);
    };
    switch (to) {
    case SendTo::all:
        for (LogicalAddress c : children(coords_)) emit(c, coords_, kNoAddress);
        return 0;
    case SendTo::parent: {
        auto p = parent(root);
        if (!p) return -EHOSTUNREACH;
        emit(*p, root, kNoAddress);
        return 0;
    }
    case SendTo::children:
        for (LogicalAddress c : children(root)) emit(c, root, kNoAddress);
        return 0;
    case SendTo::neighbors:
        for (LogicalAddress n : nbrs_) emit(n, root, kNoAddress);
        return 0;
    case SendTo::node: {
        if (node == kNoAddress) return -EINVAL;
        if (node == coords_) {
            deliver(coords_, payload);
            return 0;
        }
        auto hop = next_hop(node);
        if (!hop) return -EHOSTUNREACH;
        emit(*hop, root, node);
        return 0;
    }
    }
    (void)now;
    return -EINVAL;
}

// ---------------------------------------------------------------- receiving

void DtNode::on_datagram(const Addr& from, const Addr&, std::span<const std::uint8_t> m, Time now) {
    if (m.size() < kPrefixSize) {
        ++stats_.dropped_malformed;
        return;
    }
    if (get_u16(m, 0) != kMagic || m[2] != kVersion || m[3] != static_cast<std::uint8_t>(Protocol::dt) ||
        get_u64(m, 4) != overlay_) {
        ++stats_.dropped_foreign;
        return;
    }
    if (state_ == State::idle || state_ == State::left) {
        ++dt_.dropped_not_member;
        return;
    }
    switch (static_cast<MsgType>(m[12])) {
    case MsgType::hello: handle_hello(from, m, now); break;
    case MsgType::join_request: handle_join_request(m, now); break;
    case MsgType::merge_probe: handle_merge_probe(m, now); break;
    case MsgType::join_reject: handle_join_reject(from, m); break;
    case MsgType::goodbye: handle_goodbye(from, m, now); break;
    case MsgType::data: handle_data(m, now); break;
    default: ++stats_.dropped_malformed; break;
    }
}

void DtNode::handle_hello(const Addr& from, std::span<const std::uint8_t> m, Time now) {
    if (m.size() < kHelloHeader) {
        ++stats_.dropped_malformed;
        return;
    }
    const LogicalAddress sender = get_u64(m, kPrefixSize);
    const std::uint8_t flags = m[kPrefixSize + 8];
    const std::size_t count = m[kPrefixSize + 9];
    if (sender == kNoAddress || sender == coords_ || (flags & ~(kFlagNeighbor | kFlagStable)) != 0 ||
        count > kMaxListed || m.size() != kHelloHeader + count * kEntrySize) {
        ++stats_.dropped_malformed;
        return;
    }
    std::vector<LogicalAddress> list;
    std::vector<Addr> addrs;
    list.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
        const std::size_t at = kHelloHeader + i * kEntrySize;
        const LogicalAddress a = get_u64(m, at);
        const Addr ad = get_addr(m, at + 8);
        if (a == kNoAddress || a == sender || ad.port == 0) {
            ++stats_.dropped_malformed;
            return;
        }
        list.push_back(a);
        addrs.push_back(ad);
    }
    {
        std::vector<LogicalAddress> s = list;
        std::sort(s.begin(), s.end());
        if (std::adjacent_find(s.begin(), s.end()) != s.end()) {
            ++stats_.dropped_malformed;
            return;
        }
    }
    ++dt_.hellos_received;
    if (state_ == State::joining) {
        // A member answered (directly or as the closest node): we are in.
        state_ = State::member;
        join_deadline_ = kNever;
        next_tick_ = now + jittered(cfg_.hello_fast);
    }
    dead_.erase(sender);
    Peer* p = upsert(sender, now);
    if (p == nullptr) return;
    const bool was_live = live(*p, now);
    const bool wants = (flags & kFlagNeighbor) != 0;
    if (!usable(*p, now)) dirty_ = true;   // it joins the point set
    const bool news = !was_live || p->addr != from || p->wants_us != wants || p->list != list;
    p->addr = from;
    p->heard = now;
    p->probe_since = kUnset;
    p->wants_us = wants;
    if (p->list != list) {
        p->list = list;
        dirty_ = true;
    }
    for (std::size_t i = 0; i < list.size(); ++i) {
        const LogicalAddress a = list[i];
        if (a == coords_) continue;
        auto d = dead_.find(a);
        if (d != dead_.end() && d->second > now) continue;
        Peer* q = upsert(a, now);
        if (q == nullptr) continue;
        if (!usable(*q, now)) dirty_ = true;
        q->mentioned = now;
        if (!live(*q, now)) q->addr = addrs[i];
    }
    if (news) refresh(now);
    // Out of turn: a node that disagrees with us about our edge, or that we
    // have just started to hear, learns our view (and our list) at once.
    auto it = known_.find(sender);
    if (it == known_.end()) return;
    const bool in_star = contains(desired_, sender);
    if ((wants != in_star || (!was_live && in_star)) &&
        (it->second.last_reply == kUnset || now - it->second.last_reply >= cfg_.hello_fast / 2)) {
        it->second.last_reply = now;
        send_hello(sender, now);
    }
}

void DtNode::handle_join_request(std::span<const std::uint8_t> m, Time now) {
    if (m.size() != kJoinRequestSize) {
        ++stats_.dropped_malformed;
        return;
    }
    const LogicalAddress joiner = get_u64(m, kPrefixSize);
    const Addr jaddr = get_addr(m, kPrefixSize + 8);
    const std::uint8_t ttl = m[kPrefixSize + 26];
    if (joiner == kNoAddress || jaddr.port == 0) {
        ++stats_.dropped_malformed;
        return;
    }
    if (state_ != State::member) {
        ++dt_.dropped_not_member;
        return;
    }
    if (jaddr == self_) return;   // our own request came back: nothing to do
    auto same = known_.find(joiner);
    if (joiner == coords_ ||
        (same != known_.end() && live(same->second, now) && same->second.addr != jaddr)) {
        // Those coordinates are taken by a live member.
        ++dt_.join_rejects_sent;
        send_short(jaddr, MsgType::join_reject, joiner);
        return;
    }
    // Greedy toward the joiner, never to its own (stale) entry: to the
    // confirmed neighbour closest to it when one is closer than us. A member
    // with no confirmed neighbour at all (just joined, or its star has just
    // changed and the new members have not answered yet) must not answer as
    // "the closest": it would hand the joiner a far node that both soon
    // drop, leaving the joiner (and whoever later joins through it) in a
    // second triangulation (bench/overlay_sim seed 23). It forwards to its
    // closest star member instead, unconfirmed as it is; if that one is dead
    // the request is lost and the joiner retries (join_retry). (Falling back
    // to the star whenever no confirmed neighbour is closer also converges,
    // but loses more requests to crashed star members: churn recovery in
    // dt_sim took 1.5 s longer.)
    if (auto best = closer_member(joiner)) {
        if (ttl <= 1) {
            ++dt_.dropped_ttl;
            return;
        }
        std::vector<std::uint8_t> b(m.begin(), m.end());
        b[kPrefixSize + 26] = static_cast<std::uint8_t>(ttl - 1);
        ++dt_.join_requests_forwarded;
        transmit(known_.at(*best).addr, std::move(b), false);
        return;
    }
    // We are the closest member: the joiner is our Delaunay neighbour.
    ++dt_.joins_answered;
    greet(joiner, jaddr, now);
}

std::optional<LogicalAddress> DtNode::closer_member(LogicalAddress target) const {
    const Point t = unpack(target);
    auto closest = [&](const std::vector<LogicalAddress>& among) {
        std::optional<LogicalAddress> b;
        for (LogicalAddress a : among)
            if (a != target && known_.contains(a) && (!b || closer(t, unpack(a), unpack(*b)))) b = a;
        if (b && !closer(t, unpack(*b), point_)) b.reset();
        return b;
    };
    std::optional<LogicalAddress> best = closest(nbrs_);
    if (!best && nbrs_.empty()) best = closest(desired_);
    return best;
}

// `who` at `at` is (we were told) nearer to us than to any other member we
// know: take it into our knowledge and greet it, so that it learns our list.
void DtNode::greet(LogicalAddress who, const Addr& at, Time now) {
    dead_.erase(who);
    Peer* p = upsert(who, now);
    if (p == nullptr) return;
    p->mentioned = now;
    if (!live(*p, now)) p->addr = at;
    p->probe_since = kUnset;
    dirty_ = true;
    refresh(now);   // probes it (sends the Hello) if it is in the star
    if (!contains(desired_, who)) send_hello(who, now);
}

// ---------------------------------------------------------------- merging

bool DtNode::leader() const {
    if (state_ != State::member) return false;
    for (LogicalAddress a : nbrs_)
        if (point_ < unpack(a)) return false;
    return true;
}

void DtNode::hint(Addr member, Time now) {
    if (state_ != State::member || member == self_ || member.port == 0) {
        ++dt_.hints_ignored;
        return;
    }
    // A peer we hear is in our partition already (the only peers we hear
    // are the ones we probe or that probe us): nothing to merge through it.
    for (const auto& [a, p] : known_)
        if (p.addr == member && live(p, now)) {
            ++dt_.hints_ignored;
            return;
        }
    // Token bucket: a flood of hints costs kHintBurst probes, then one per
    // kHintEvery; no state per hint.
    if (hint_refill_ == kUnset) hint_refill_ = now;
    if (now - hint_refill_ >= kHintEvery) {
        const Time gained = (now - hint_refill_) / kHintEvery;
        hint_tokens_ = static_cast<int>(std::min<Time>(kHintBurst, hint_tokens_ + gained));
        hint_refill_ += gained * kHintEvery;
    }
    if (hint_tokens_ == 0) {
        ++dt_.hints_limited;
        return;
    }
    --hint_tokens_;
    std::vector<std::uint8_t> b;
    put_prefix(b, MsgType::merge_probe);
    put_u64(b, coords_);
    put_addr(b, self_);
    b.push_back(kDataTtl);
    ++dt_.merge_probes_sent;
    transmit(member, std::move(b), false);
}

// A MergeProbe is a JoinRequest from a node that is already a member
// elsewhere: it is routed greedily toward the prober's position, and the
// member where routing stops (the nearest to the prober in this partition,
// always a Delaunay neighbour of the prober among this partition plus the
// prober) greets it. Its Hello carries its neighbour list, the prober answers
// with its own, and the ordinary star computation stitches the two
// triangulations together from that first edge. Routing that reaches a node
// which hears the prober, or the prober itself, shows there is one partition:
// the probe stops there.
void DtNode::handle_merge_probe(std::span<const std::uint8_t> m, Time now) {
    if (m.size() != kJoinRequestSize) {
        ++stats_.dropped_malformed;
        return;
    }
    const LogicalAddress prober = get_u64(m, kPrefixSize);
    const Addr paddr = get_addr(m, kPrefixSize + 8);
    const std::uint8_t ttl = m[kPrefixSize + 26];
    if (prober == kNoAddress || paddr.port == 0) {
        ++stats_.dropped_malformed;
        return;
    }
    if (state_ != State::member) {
        ++dt_.dropped_not_member;
        return;
    }
    auto same = known_.find(prober);
    if (paddr == self_ || prober == coords_ || (same != known_.end() && live(same->second, now))) {
        // Our own probe came back, or the prober is one of ours: one
        // partition. (A live entry at another address, or another node at our
        // own position, is a position clash between partitions: not merged.)
        ++dt_.merge_probes_dropped;
        return;
    }
    if (auto best = closer_member(prober)) {
        if (ttl <= 1) {
            ++dt_.dropped_ttl;
            return;
        }
        std::vector<std::uint8_t> b(m.begin(), m.end());
        b[kPrefixSize + 26] = static_cast<std::uint8_t>(ttl - 1);
        ++dt_.merge_probes_forwarded;
        transmit(known_.at(*best).addr, std::move(b), false);
        return;
    }
    ++dt_.merge_probes_answered;
    greet(prober, paddr, now);
}

void DtNode::handle_join_reject(const Addr&, std::span<const std::uint8_t> m) {
    if (m.size() != kShortSize) {
        ++stats_.dropped_malformed;
        return;
    }
    if (state_ != State::joining || get_u64(m, kPrefixSize) != coords_) {
        ++dt_.dropped_not_member;
        return;
    }
    // Keep trying: the holder may be a stale entry of our own previous life
    // that will time out. The owner sees the counter.
    ++dt_.join_rejects_received;
}

void DtNode::handle_goodbye(const Addr& from, std::span<const std::uint8_t> m, Time now) {
    if (m.size() != kShortSize) {
        ++stats_.dropped_malformed;
        return;
    }
    const LogicalAddress a = get_u64(m, kPrefixSize);
    if (state_ != State::member) {
        ++dt_.dropped_not_member;
        return;
    }
    auto it = known_.find(a);
    // Only the node itself (its current address) can say goodbye for it.
    if (it == known_.end() || it->second.addr != from) return;
    ++dt_.goodbyes_received;
    mark_dead(a, now);
    refresh(now);
}

bool DtNode::accept_sequence(LogicalAddress source, std::uint32_t epoch, std::uint32_t seq) {
    auto it = sources_.find(source);
    if (it == sources_.end()) {
        if (sources_.size() >= kMaxSources) sources_.erase(sources_.begin());
        sources_[source] = Source{epoch, seq, 1};
        return true;
    }
    Source& s = it->second;
    if (s.epoch != epoch) {
        s = Source{epoch, seq, 1};
        return true;
    }
    if (seq > s.top) {
        const std::uint32_t shift = seq - s.top;
        s.window = shift >= 64 ? 1 : (s.window << shift) | 1;
        s.top = seq;
        return true;
    }
    const std::uint32_t back = s.top - seq;
    if (back >= 64) return false;   // too old to tell: treated as seen
    const std::uint64_t bit = std::uint64_t{1} << back;
    if (s.window & bit) return false;
    s.window |= bit;
    return true;
}

void DtNode::handle_data(std::span<const std::uint8_t> m, Time now) {
    (void)now;
    if (m.size() < kDataHeader) {
        ++stats_.dropped_malformed;
        return;
    }
    const std::uint8_t kind = m[kPrefixSize];
    const std::uint8_t ttl = m[kPrefixSize + 1];
    const LogicalAddress source = get_u64(m, kPrefixSize + 2);
    const LogicalAddress root = get_u64(m, kPrefixSize + 10);
    const LogicalAddress dest = get_u64(m, kPrefixSize + 18);
    const std::uint32_t epoch = get_u32(m, kPrefixSize + 26);
    const std::uint32_t seq = get_u32(m, kPrefixSize + 30);
    const std::size_t len = get_u16(m, kPrefixSize + 34);
    if (kind > kKindMax || source == kNoAddress || root == kNoAddress ||
        (kind == static_cast<std::uint8_t>(SendTo::node)) != (dest != kNoAddress) ||
        m.size() != kDataHeader + len) {
        ++stats_.dropped_malformed;
        return;
    }
    if (state_ != State::member) {
        ++dt_.dropped_not_member;
        return;
    }
    if (source == coords_) {   // our own message came back around a transient loop
        ++stats_.dropped_duplicate;
        return;
    }
    if (!accept_sequence(source, epoch, seq)) {
        ++stats_.dropped_duplicate;
        return;
    }
    const auto payload = m.subspan(kDataHeader, len);
    switch (static_cast<SendTo>(kind)) {
    case SendTo::all:
        deliver(source, payload);
        if (ttl <= 1) {
            ++dt_.dropped_ttl;
            break;
        }
        for (LogicalAddress c : children(source))
            send_data(c, kind, static_cast<std::uint8_t>(ttl - 1), source, source, kNoAddress, epoch, seq, payload);
        break;
    case SendTo::node: {
        if (dest == coords_) {
            deliver(source, payload);
            break;
        }
        if (ttl <= 1) {
            ++dt_.dropped_ttl;
            break;
        }
        auto hop = next_hop(dest);
        if (!hop) {
            ++dt_.dropped_unroutable;
            break;
        }
        send_data(*hop, kind, static_cast<std::uint8_t>(ttl - 1), source, root, dest, epoch, seq, payload);
        break;
    }
    case SendTo::parent:
    case SendTo::children:
    case SendTo::neighbors:
        deliver(source, payload);
        break;
    }
}

}  // namespace gs::overlay::dt
