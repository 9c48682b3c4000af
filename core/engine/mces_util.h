// Small pieces the engine's MCES users share (mces_bridge.cpp: TCP flows;
// mces_dgram.cpp: UDP flows).
#pragma once

#include <sys/random.h>

#include <cstdint>

#include "core/engine/engine.h"
#include "core/engine/mces_bridge.h"
#include "core/mces/wire/handshake.h"

namespace gs::engine {

// The QoS a flow offers in its handshake, from the policy's decision.
inline mces::wire::Qos mces_offer(const McesParams& p) noexcept {
    mces::wire::Qos q;
    if (p.rate > 0) q.rate = p.rate;
    if (p.latency_us > 0) q.latency_us = p.latency_us;
    if (p.dscp >= 0 && p.dscp < 64) q.dscp = static_cast<uint8_t>(p.dscp);
    if (p.priority >= 0 && p.priority < 8) q.priority = static_cast<uint8_t>(p.priority);
    return q;
}

// An endpoint's seed (connection IDs, the cookie key): from the kernel's
// random pool, never 0.
inline uint64_t mces_seed() noexcept {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != sizeof s) s = static_cast<uint64_t>(now_ns()) ^ 0x9e3779b97f4a7c15ull;
    return s | 1;
}

}  // namespace gs::engine
