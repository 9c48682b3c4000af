#include "core/overlay/config/factory.h"

#include <algorithm>

namespace gs::overlay {

dt::DtConfig to_dt_config(const Config& c) {
    dt::DtConfig d;
    d.hello_fast = c.hello_fast;
    d.hello_slow = c.hello_slow;
    d.neighbor_timeout = c.neighbor_timeout;
    d.memory = c.memory;
    d.join_retry = c.join_retry;
    d.max_payload = c.max_payload;
    d.stable_ticks = c.stable_ticks;
    return d;
}

hc::HcConfig to_hc_config(const Config& c) {
    hc::HcConfig h;
    h.ping_interval = c.ping_interval;
    h.beacon_interval = c.beacon_interval;
    h.failure_timeout = c.failure_timeout;
    h.head_timeout = c.head_timeout;
    h.claim_step = c.claim_step;
    h.join_retry = c.join_retry;
    h.max_payload = c.max_payload;
    h.max_members = c.max_members;
    return h;
}

LogicalAddress dt_coordinates(const Config& c, std::uint64_t seed) {
    if (!c.random_coordinates) return dt::pack(dt::Point{c.x, c.y});
    // splitmix64: a well-spread point from any seed.
    std::uint64_t z = seed + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const auto x = static_cast<std::int32_t>(z & 0xffffff);
    const auto y = static_cast<std::int32_t>((z >> 32) & 0xffffff);
    return dt::pack(dt::Point{x, y});
}

std::unique_ptr<Node> make_node(const Config& c, const sansio::Addr& self, std::uint64_t seed,
                                const std::vector<sansio::Addr>& members, std::string& error) {
    if (c.data_transport == DataTransport::tcp) {
        error = "overlay " + std::to_string(c.overlay_id) +
                ": DataTransport = TCP is not supported yet, the nodes carry data over UDP "
                "(set DataTransport = UDP)";
        return nullptr;
    }
    std::vector<sansio::Addr> boot;
    for (const auto* list : {&members, &c.bootstrap})
        for (const sansio::Addr& a : *list)
            if (a != self && std::find(boot.begin(), boot.end(), a) == boot.end()) boot.push_back(a);
    if (c.protocol == Protocol::hc)
        return std::make_unique<hc::HcNode>(self, c.key_hash, seed, to_hc_config(c), std::move(boot));
    return std::make_unique<dt::DtNode>(self, c.key_hash, dt_coordinates(c, seed), seed,
                                        to_dt_config(c), std::move(boot));
}

}  // namespace gs::overlay
