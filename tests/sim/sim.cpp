#include "tests/sim/sim.h"

#include <algorithm>
#include <cerrno>
#include <map>
#include <unordered_map>
#include <utility>

namespace gs::sim {

namespace {

enum class EvKind : std::uint8_t { deliver, timer, callback };

struct Event {
    Time at;
    std::uint64_t seq;
    std::uint32_t a;   // deliver: packet slot; timer: node; callback: slot
    std::uint32_t b;   // timer: generation
    EvKind kind;
};

// std heap algorithms build a max-heap: "less" here means "later".
struct Later {
    bool operator()(const Event& x, const Event& y) const noexcept {
        return x.at != y.at ? x.at > y.at : x.seq > y.seq;
    }
};

constexpr std::int32_t kNoNode = -1;

}  // namespace

struct Simulator::Impl {
    struct AddrSlot {
        Addr addr;
        std::int32_t node = kNoNode;
    };
    struct Node {
        Endpoint* ep = nullptr;
        std::vector<std::uint32_t> addr_ids;   // [0] is the primary
        Time armed = kNever;                   // time of the live timer event
        std::uint32_t gen = 0;                 // bumped to invalidate timer events
        bool alive = false;
        Time spin_at = -1;
        int spins = 0;
    };
    struct LinkEntry {
        impair::LinkState st;
        std::uint32_t params = 0;   // index into `params`: 0 the default, else an override
    };
    struct Packet {
        std::uint32_t from = 0, to = 0;
        bool corrupted = false;
        std::vector<std::uint8_t> bytes;
    };

    std::uint64_t seed;
    std::vector<Event> heap;
    std::uint64_t seq = 0;

    std::unordered_map<Addr, std::uint32_t, sansio::AddrHash> addr_ids;
    std::vector<AddrSlot> addrs;
    std::vector<Node> nodes;
    std::vector<std::uint32_t> free_nodes;
    std::unordered_map<const Endpoint*, std::uint32_t> node_of;
    std::size_t live_nodes = 0;

    std::vector<LinkParams> params{LinkParams{}};   // [0] is the default link
    std::unordered_map<std::uint64_t, LinkEntry> links;
    std::map<std::pair<Addr, Addr>, std::uint32_t> overrides;   // -> index into params

    std::vector<Packet> packets;
    std::vector<std::uint32_t> free_packets;
    std::vector<std::function<void()>> callbacks;
    std::vector<std::uint32_t> free_callbacks;

    Datagram tx;                       // reused by drain()
    std::vector<std::uint8_t> rx;      // bytes of the datagram being delivered
    TraceFn trace;
    LinkFilter filter;
    DelayModel delay_model;

    explicit Impl(std::uint64_t s) : seed(s) {}

    void push(Time at, EvKind kind, std::uint32_t a, std::uint32_t b) {
        heap.push_back(Event{at, seq++, a, b, kind});
        std::push_heap(heap.begin(), heap.end(), Later{});
    }

    std::uint32_t addr_id(const Addr& a) {
        auto [it, inserted] = addr_ids.try_emplace(a, static_cast<std::uint32_t>(addrs.size()));
        if (inserted) addrs.push_back(AddrSlot{a, kNoNode});
        return it->second;
    }
    const std::uint32_t* find_addr(const Addr& a) const {
        auto it = addr_ids.find(a);
        return it == addr_ids.end() ? nullptr : &it->second;
    }

    static std::uint64_t key(std::uint32_t from, std::uint32_t to) {
        return (static_cast<std::uint64_t>(from) << 32) | to;
    }

    LinkEntry& link(std::uint32_t from, std::uint32_t to) {
        auto [it, inserted] = links.try_emplace(key(from, to));
        if (inserted) {
            const Addr& fa = addrs[from].addr;
            const Addr& ta = addrs[to].addr;
            // Seeded from the addresses, not from ids or creation order, so
            // one link's draws do not depend on what other links did.
            const std::uint64_t s =
                impair::mix64(impair::mix64(seed ^ sansio::AddrHash{}(fa)) ^ sansio::AddrHash{}(ta));
            auto ov = overrides.find({fa, ta});
            it->second.params = ov != overrides.end() ? ov->second : 0;
            it->second.st = impair::LinkState(s);
        }
        return it->second;
    }

    void emit(TraceEvent::Kind kind, Time now, std::uint32_t from, std::uint32_t to_or_none,
              const Addr* to_addr, std::span<const std::uint8_t> bytes,
              impair::Drop reason = impair::Drop::none, bool corrupted = false) {
        if (!trace) return;
        // Copies: the callback may add addresses (and so move the slots).
        const Addr f = addrs[from].addr;
        const Addr t = to_addr ? *to_addr : addrs[to_or_none].addr;
        TraceEvent ev;
        ev.kind = kind;
        ev.at = now;
        ev.from = &f;
        ev.to = &t;
        ev.bytes = bytes;
        ev.reason = reason;
        ev.corrupted = corrupted;
        trace(ev);
    }

    std::uint32_t alloc_packet() {
        if (!free_packets.empty()) {
            const std::uint32_t i = free_packets.back();
            free_packets.pop_back();
            return i;
        }
        packets.emplace_back();
        return static_cast<std::uint32_t>(packets.size() - 1);
    }

    // Puts `d` on the link from -> (d.to). d.bytes may be swapped out.
    void transmit(std::uint32_t from, Datagram& d, Time now, SimStats& st) {
        ++st.datagrams_sent;
        emit(TraceEvent::Kind::send, now, from, 0, &d.to, d.bytes);
        const std::uint32_t* to_p = find_addr(d.to);
        if (to_p == nullptr || addrs[*to_p].node == kNoNode) {
            ++st.dropped_unknown;
            emit(TraceEvent::Kind::drop_unknown, now, from, 0, &d.to, d.bytes);
            return;
        }
        const std::uint32_t to = *to_p;
        if (filter && !filter(addrs[from].addr, addrs[to].addr, now)) {
            ++st.dropped_filter;
            emit(TraceEvent::Kind::drop_filter, now, from, to, nullptr, d.bytes);
            return;
        }
        LinkEntry& le = link(from, to);
        const impair::Decision dec = le.st.offer(params[le.params], d.bytes.size(), now);
        if (dec.drop != impair::Drop::none) {
            ++st.dropped_link;
            emit(TraceEvent::Kind::drop_link, now, from, to, nullptr, d.bytes, dec.drop);
            return;
        }
        Time extra = 0;
        if (delay_model) extra = std::max<Time>(0, delay_model(addrs[from].addr, addrs[to].addr));
        for (int i = 0; i < dec.count; ++i) {
            const std::uint32_t slot = alloc_packet();
            Packet& p = packets[slot];
            p.from = from;
            p.to = to;
            if (i + 1 < dec.count) {
                p.bytes.assign(d.bytes.begin(), d.bytes.end());
            } else {
                p.bytes.swap(d.bytes);   // the last copy takes the buffer
            }
            p.corrupted = dec.d[i].flip_bit >= 0;
            impair::apply_flip(p.bytes, dec.d[i].flip_bit);
            push((dec.d[i].at < now ? now : dec.d[i].at) + extra, EvKind::deliver, slot, 0);
        }
    }

    // After any call into node `id`: send what it queued, re-arm its timer.
    void after(std::uint32_t id, Time now, SimStats& st) {
        Endpoint* ep = nodes[id].ep;
        ep->advance(now);
        while (true) {
            tx.bytes.clear();
            if (!ep->poll_transmit(tx)) break;
            std::uint32_t from = nodes[id].addr_ids[0];
            for (std::uint32_t a : nodes[id].addr_ids) {
                if (addrs[a].addr == tx.from) {
                    from = a;
                    break;
                }
            }
            transmit(from, tx, now, st);
        }
        Node& n = nodes[id];
        const Time t = ep->next_timeout();
        if (t != n.armed) {
            ++n.gen;
            n.armed = t;
            if (t != kNever) push(t < now ? now : t, EvKind::timer, id, n.gen);
        }
    }

    void detach_node(std::uint32_t id) {
        Node& n = nodes[id];
        for (std::uint32_t a : n.addr_ids) addrs[a].node = kNoNode;
        n.addr_ids.clear();
        n.alive = false;
        ++n.gen;
        n.armed = kNever;
        node_of.erase(n.ep);
        n.ep = nullptr;
        free_nodes.push_back(id);
        --live_nodes;
    }

    // Runs the top event. Returns false for a stale timer (nothing ran).
    bool run_one(Time& now, SimStats& st) {
        std::pop_heap(heap.begin(), heap.end(), Later{});
        const Event ev = heap.back();
        heap.pop_back();
        now = ev.at;
        switch (ev.kind) {
        case EvKind::deliver: {
            Packet& p = packets[ev.a];
            const std::uint32_t from = p.from, to = p.to;
            const bool corrupted = p.corrupted;
            rx.swap(p.bytes);
            free_packets.push_back(ev.a);
            const std::int32_t node = addrs[to].node;
            if (node == kNoNode) {
                ++st.dropped_detached;
                emit(TraceEvent::Kind::drop_detached, now, from, to, nullptr, rx);
            } else {
                ++st.datagrams_delivered;
                emit(TraceEvent::Kind::deliver, now, from, to, nullptr, rx, impair::Drop::none,
                     corrupted);
                const auto id = static_cast<std::uint32_t>(node);
                nodes[id].ep->on_datagram(addrs[from].addr, addrs[to].addr, rx, now);
                after(id, now, st);
            }
            break;
        }
        case EvKind::timer: {
            Node& n = nodes[ev.a];
            if (!n.alive || n.gen != ev.b) {
                ++st.timers_stale;
                return false;
            }
            n.armed = kNever;
            if (n.ep->next_timeout() > now) {
                // Moved later without telling us (no kick): re-arm, do not call.
                ++st.timers_stale;
                after(ev.a, now, st);
                return false;
            }
            if (n.spin_at == now) {
                ++n.spins;
            } else {
                n.spin_at = now;
                n.spins = 1;
            }
            if (n.spins > SimStats::kMaxSpins) {
                ++st.timer_livelocks;
                n.spins = 0;
                ++n.gen;
                n.armed = now + sansio::kMicrosecond;
                push(n.armed, EvKind::timer, ev.a, n.gen);
                return true;
            }
            ++st.timers_fired;
            n.ep->on_timeout(now);
            after(ev.a, now, st);
            break;
        }
        case EvKind::callback: {
            std::function<void()> fn = std::move(callbacks[ev.a]);
            callbacks[ev.a] = nullptr;
            free_callbacks.push_back(ev.a);
            ++st.callbacks_run;
            fn();
            break;
        }
        }
        return true;
    }
};

Simulator::Simulator(std::uint64_t seed) : impl_(std::make_unique<Impl>(seed)) {}
Simulator::~Simulator() = default;

int Simulator::add_node(const Addr& addr, Endpoint& ep) {
    Impl& m = *impl_;
    const std::uint32_t aid = m.addr_id(addr);
    if (m.addrs[aid].node != kNoNode) return -EEXIST;
    std::uint32_t id;
    auto it = m.node_of.find(&ep);
    if (it != m.node_of.end()) {
        id = it->second;
    } else {
        if (!m.free_nodes.empty()) {
            id = m.free_nodes.back();
            m.free_nodes.pop_back();
        } else {
            m.nodes.emplace_back();
            id = static_cast<std::uint32_t>(m.nodes.size() - 1);
        }
        Impl::Node& n = m.nodes[id];
        n.ep = &ep;
        n.alive = true;
        n.armed = kNever;
        n.spin_at = -1;
        n.spins = 0;
        m.node_of.emplace(&ep, id);
        ++m.live_nodes;
    }
    m.addrs[aid].node = static_cast<std::int32_t>(id);
    m.nodes[id].addr_ids.push_back(aid);
    m.after(id, now_, stats_);
    return 0;
}

int Simulator::remove_node(Endpoint& ep) {
    auto it = impl_->node_of.find(&ep);
    if (it == impl_->node_of.end()) return -ENOENT;
    impl_->detach_node(it->second);
    return 0;
}

int Simulator::remove_addr(const Addr& addr) {
    Impl& m = *impl_;
    const std::uint32_t* aid = m.find_addr(addr);
    if (aid == nullptr || m.addrs[*aid].node == kNoNode) return -ENOENT;
    const auto id = static_cast<std::uint32_t>(m.addrs[*aid].node);
    auto& ids = m.nodes[id].addr_ids;
    if (ids.size() == 1) {
        m.detach_node(id);
        return 0;
    }
    ids.erase(std::find(ids.begin(), ids.end(), *aid));
    m.addrs[*aid].node = kNoNode;
    return 0;
}

bool Simulator::attached(const Addr& addr) const {
    const std::uint32_t* aid = impl_->find_addr(addr);
    return aid != nullptr && impl_->addrs[*aid].node != kNoNode;
}

std::size_t Simulator::node_count() const noexcept { return impl_->live_nodes; }

int Simulator::set_default_link(const LinkParams& p) {
    if (!p.validate().empty()) return -EINVAL;
    impl_->params[0] = p;   // links without an override read it at every packet
    return 0;
}

int Simulator::set_link(const Addr& from, const Addr& to, const LinkParams& p) {
    if (!p.validate().empty()) return -EINVAL;
    Impl& m = *impl_;
    auto [ov, inserted] = m.overrides.try_emplace({from, to}, static_cast<std::uint32_t>(m.params.size()));
    if (!inserted) {
        m.params[ov->second] = p;
        return 0;
    }
    m.params.push_back(p);
    const std::uint32_t* f = m.find_addr(from);
    const std::uint32_t* t = m.find_addr(to);
    if (f && t) {
        auto it = m.links.find(Impl::key(*f, *t));
        if (it != m.links.end()) it->second.params = ov->second;
    }
    return 0;
}

LinkStats Simulator::link_stats(const Addr& from, const Addr& to) const {
    const std::uint32_t* f = impl_->find_addr(from);
    const std::uint32_t* t = impl_->find_addr(to);
    if (!f || !t) return {};
    auto it = impl_->links.find(Impl::key(*f, *t));
    return it == impl_->links.end() ? LinkStats{} : it->second.st.counters();
}

LinkStats Simulator::total_link_stats() const {
    LinkStats sum;
    for (const auto& [k, e] : impl_->links) sum += e.st.counters();
    return sum;
}

std::uint64_t Simulator::run_until(Time until) {
    std::uint64_t ran = 0;
    Impl& m = *impl_;
    while (!m.heap.empty() && m.heap.front().at <= until) {
        if (m.run_one(now_, stats_)) {
            ++stats_.events_processed;
            ++ran;
        }
    }
    if (until != kNever && until > now_) now_ = until;
    return ran;
}

bool Simulator::run_while(const std::function<bool()>& keep_going, Time deadline, Time check_every) {
    if (!keep_going()) return true;
    Impl& m = *impl_;
    Time next_check = check_every > 0 ? now_ + check_every : now_;
    while (!m.heap.empty() && m.heap.front().at <= deadline) {
        if (m.run_one(now_, stats_)) ++stats_.events_processed;
        if (check_every <= 0 || now_ >= next_check) {
            if (!keep_going()) return true;
            if (check_every > 0) next_check = now_ + check_every;
        }
    }
    if (check_every > 0 && !keep_going()) return true;
    if (deadline != kNever && deadline > now_) now_ = deadline;
    return false;
}

bool Simulator::step(Time deadline) {
    Impl& m = *impl_;
    while (!m.heap.empty() && m.heap.front().at <= deadline) {
        if (m.run_one(now_, stats_)) {
            ++stats_.events_processed;
            return true;
        }
    }
    return false;
}

int Simulator::kick(Endpoint& ep) {
    auto it = impl_->node_of.find(&ep);
    if (it == impl_->node_of.end()) return -ENOENT;
    impl_->after(it->second, now_, stats_);
    return 0;
}

void Simulator::send(Datagram d) {
    const std::uint32_t from = impl_->addr_id(d.from);
    impl_->transmit(from, d, now_, stats_);
}

void Simulator::schedule(Time at, std::function<void()> fn) {
    Impl& m = *impl_;
    std::uint32_t slot;
    if (!m.free_callbacks.empty()) {
        slot = m.free_callbacks.back();
        m.free_callbacks.pop_back();
        m.callbacks[slot] = std::move(fn);
    } else {
        m.callbacks.push_back(std::move(fn));
        slot = static_cast<std::uint32_t>(m.callbacks.size() - 1);
    }
    m.push(at < now_ ? now_ : at, EvKind::callback, slot, 0);
}

void Simulator::set_link_filter(LinkFilter filter) { impl_->filter = std::move(filter); }

void Simulator::set_delay_model(DelayModel model) { impl_->delay_model = std::move(model); }

void Simulator::set_trace(TraceFn fn) { impl_->trace = std::move(fn); }

std::size_t Simulator::pending_events() const noexcept { return impl_->heap.size(); }

}  // namespace gs::sim
