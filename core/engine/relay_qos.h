// The token-bucket chains every bridge (TCP, core/engine/bridge.cpp; UDP,
// core/engine/dgram_bridge.cpp) shapes with: the flow's own bucket under the
// process's aggregate ([general] rate_up / rate_down, trickle's -u / -d).
// One set of aggregate buckets per process, shared by both kinds of bridge,
// so the aggregate holds over all of a process's flows. Engine thread only.
#pragma once

#include <cstdint>

#include "core/qos/token_bucket.h"

namespace gs::engine {

// The relay sends in 2 ms slices, but the engine may come back late (a
// timer's wake-up, other flows' work): a bucket holding 10 ms of tokens
// keeps such lateness from costing rate, and 10 ms is still a tenth of
// the 100 ms bins smoothness is judged on.
inline uint64_t relay_burst(uint64_t rate) noexcept {
    uint64_t b = rate / 100;
    return b < 3000 ? 3000 : b;
}

// The head of a direction's bucket chain: the flow's own bucket under
// the aggregate when the flow has a rate, else the aggregate (or none).
inline qos::TokenBucket* chain(qos::TokenBucket& own, uint64_t rate, qos::TokenBucket* aggregate,
                               int64_t now) noexcept {
    if (rate == 0) return aggregate;
    own.set_rate(rate, relay_burst(rate), now);
    own.set_parent(aggregate);
    return &own;
}

// The process's aggregate limit for a direction (0 up, 1 down) or nullptr.
// Set by the first bridge that asks (an inline function's statics are one
// object in the whole program).
inline qos::TokenBucket* aggregate(int dir, uint64_t rate, int64_t now) noexcept {
    static qos::TokenBucket buckets[2];
    if (rate == 0) return nullptr;
    if (buckets[dir].unlimited()) buckets[dir].set_rate(rate, relay_burst(rate), now);
    return &buckets[dir];
}

}  // namespace gs::engine
