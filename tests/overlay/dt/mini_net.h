// A minimal deterministic loop for hand-driven DT tests: datagrams are
// delivered after a fixed delay in send order, timers fire in time order.
// (The large tests use tests/sim; this one has no links, no loss.)
#pragma once

#include <map>
#include <memory>
#include <queue>
#include <vector>

#include "core/overlay/dt/dt_node.h"

namespace dt_test {

using gs::overlay::dt::DtConfig;
using gs::overlay::dt::DtNode;
using gs::overlay::dt::Point;
using gs::sansio::Addr;
using gs::sansio::Datagram;
using gs::sansio::Time;
using gs::sansio::kMillisecond;
using gs::sansio::kSecond;

constexpr std::uint64_t kOverlay = 0x1234567890abcdefull;

inline Addr addr_of(std::size_t i) {
    return Addr::v4(0x0a000000u + static_cast<std::uint32_t>(i / 60000), static_cast<std::uint16_t>(1000 + i % 60000));
}

class MiniNet {
public:
    Time now = 0;
    Time delay = 1 * kMillisecond;
    std::vector<std::unique_ptr<DtNode>> nodes;
    std::map<Addr, DtNode*> by_addr;
    std::uint64_t delivered = 0, to_nowhere = 0;

    DtNode& add(Point p, std::vector<Addr> bootstrap, DtConfig cfg = {}) {
        const std::size_t i = nodes.size();
        nodes.push_back(std::make_unique<DtNode>(addr_of(i), kOverlay, gs::overlay::dt::pack(p), 1000 + i, cfg,
                                                 std::move(bootstrap)));
        by_addr[addr_of(i)] = nodes.back().get();
        return *nodes.back();
    }
    void remove(DtNode& n) { by_addr.erase(n.underlay()); }
    void drain(DtNode& n) {
        Datagram d;
        while (n.poll_transmit(d)) queue_.push({now + delay, seq_++, std::move(d)});
    }
    // Runs until `until`.
    void run(Time until) {
        for (;;) {
            Time t_timer = gs::sansio::kNever;
            DtNode* who = nullptr;
            for (auto& [a, n] : by_addr)
                if (n->next_timeout() < t_timer) {
                    t_timer = n->next_timeout();
                    who = n;
                }
            const Time t_msg = queue_.empty() ? gs::sansio::kNever : queue_.top().at;
            const Time t = std::min(t_timer, t_msg);
            if (t > until) break;
            now = std::max(now, t);
            if (t_msg <= t_timer) {
                Ev e = queue_.top();
                queue_.pop();
                auto it = by_addr.find(e.d.to);
                if (it == by_addr.end()) {
                    ++to_nowhere;
                    continue;
                }
                ++delivered;
                it->second->on_datagram(e.d.from, e.d.to, e.d.bytes, now);
                drain(*it->second);
            } else {
                who->on_timeout(now);
                drain(*who);
            }
        }
        now = until;
    }

private:
    struct Ev {
        Time at;
        std::uint64_t seq;
        Datagram d;
        bool operator>(const Ev& o) const { return at != o.at ? at > o.at : seq > o.seq; }
    };
    std::priority_queue<Ev, std::vector<Ev>, std::greater<>> queue_;
    std::uint64_t seq_ = 0;
};

}  // namespace dt_test
