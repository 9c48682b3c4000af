// libFuzzer target: arbitrary bytes as datagrams to HC nodes in three states —
// a joined member of a small cube (head and non-head) and a node still joining.
// The input is split into datagrams at each 0xFF 0xFE pair; time moves 100 ms
// per datagram so timers (reports, takeovers, rejoins) run too. After each
// datagram the head is hinted the attacker's address (a MERGE goes there).
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <vector>

#include "core/overlay/hc/hc_node.h"

using namespace gs::overlay;
using namespace gs::overlay::hc;

namespace {

constexpr std::uint64_t kOverlay = 0x1122334455667788ull;   // the corpus's overlay

Addr addr_of(std::uint32_t i) { return Addr::v4(0x0a000000u + i, 9000); }

struct Net {
    std::vector<std::unique_ptr<HcNode>> nodes;
    gs::sansio::Time now = 0;
    std::deque<gs::sansio::Datagram> wire;

    void drain(HcNode& n) {
        gs::sansio::Datagram d;
        while (n.poll_transmit(d))
            if (wire.size() < 10000) wire.push_back(std::move(d));
    }
    void settle(gs::sansio::Time until) {
        for (int guard = 0; guard < 100000 && now <= until; ++guard) {
            while (!wire.empty()) {
                auto d = std::move(wire.front());
                wire.pop_front();
                for (auto& n : nodes)
                    if (n->self() == d.to) {
                        n->on_datagram(d.from, d.to, d.bytes, now);
                        drain(*n);
                    }
            }
            gs::sansio::Time t = gs::sansio::kNever;
            for (auto& n : nodes) t = std::min(t, n->next_timeout());
            if (t > until) break;
            now = std::max(now, t);
            for (auto& n : nodes)
                if (n->next_timeout() <= now) {
                    n->on_timeout(now);
                    drain(*n);
                }
        }
        now = std::max(now, until);
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    HcConfig cfg;
    cfg.max_queue = 256;
    cfg.max_dedup_sources = 64;
    Net net;
    for (std::uint32_t i = 0; i < 3; ++i) {
        std::vector<Addr> boot;
        if (i > 0) boot.push_back(addr_of(0));
        net.nodes.push_back(std::make_unique<HcNode>(addr_of(i), kOverlay, i + 1, cfg, boot));
        net.nodes.back()->join(net.now);
        net.drain(*net.nodes.back());
        net.settle(net.now + 100 * gs::sansio::kMillisecond);
    }
    net.settle(net.now + 2 * gs::sansio::kSecond);
    // A fourth node that keeps trying to join through an address nobody has.
    auto joiner = std::make_unique<HcNode>(addr_of(9), kOverlay, 9, cfg, std::vector<Addr>{addr_of(50)});
    joiner->join(net.now);

    const Addr attacker = addr_of(77);
    std::span<const std::uint8_t> in(data, size);
    std::size_t start = 0;
    for (std::size_t i = 0; i <= in.size(); ++i) {
        const bool cut = i + 1 < in.size() && in[i] == 0xff && in[i + 1] == 0xfe;
        if (!cut && i != in.size()) continue;
        auto dgram = in.subspan(start, i - start);
        start = i + 2;
        for (auto& n : net.nodes) {
            n->on_datagram(attacker, n->self(), dgram, net.now);
            net.drain(*n);
        }
        // The owner hints the head (partition merge): a MERGE to the attacker.
        for (auto& n : net.nodes)
            if (n->leader()) {
                n->hint(attacker, net.now);
                net.drain(*n);
            }
        joiner->on_datagram(attacker, joiner->self(), dgram, net.now);
        gs::sansio::Datagram d;
        while (joiner->poll_transmit(d)) {}
        Delivery dl;
        for (auto& n : net.nodes)
            while (n->poll_deliver(dl)) {}
        net.settle(net.now + 100 * gs::sansio::kMillisecond);
        if (joiner->next_timeout() <= net.now) joiner->on_timeout(net.now);
        ++i;
    }
    // The members still answer: a broadcast goes out without trouble.
    static const std::uint8_t pl[] = {1, 2, 3};
    for (auto& n : net.nodes)
        if (n->joined()) (void)n->send(SendTo::all, pl, net.now);
    net.settle(net.now + 1 * gs::sansio::kSecond);
    return 0;
}
