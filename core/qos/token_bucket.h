// A token bucket (rate, burst) with exact integer arithmetic, and chains of
// them (flow -> process aggregate -> ...) for hierarchical limits.
//
// Sans-IO: nothing here reads a clock. Every call takes `now`, monotonic
// nanoseconds chosen by the caller (the engine's clock, or a test's manual
// one). A `now` earlier than one already seen is treated as that time (no
// refill, no error), so a caller mixing clocks cannot mint tokens.
//
// Not thread-safe: the engine owns its buckets and uses them from its one
// thread. Nothing here allocates, throws or fails after construction.
//
// Units: rates in bytes per second and sizes in bytes (as policy::Qos),
// times in nanoseconds. Contract, per bucket:
//   - rate 0 means unlimited: the bucket never delays anything and is skipped
//     in chains (the policy's "not set");
//   - burst 0 means default_burst(rate);
//   - a new bucket starts full (a fresh flow may send one burst at once);
//   - a send of n bytes is allowed when the bucket holds min(n, burst), and
//     then takes all n: a packet larger than the burst waits for a full
//     bucket, goes into debt, and the debt is paid back at the rate. So any
//     size passes eventually and the long-run rate is exact.
#pragma once

#include <cstdint>
#include <limits>

namespace gs::qos {

// "Never" as a time or a delay: nothing queued, or a delay that does not fit.
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

// The burst used when the policy gives none: rate x 2 ms, at least two
// full-size Ethernet frames. 2 ms keeps a greedy sender smooth in 100 ms bins
// (one burst is 2% of a bin) while leaving room for a 64 KiB GSO batch from
// about 32 MB/s up. Unlimited (rate 0) gives 0.
constexpr uint64_t kMinBurst = 2 * 1500;
constexpr uint64_t default_burst(uint64_t rate) noexcept {
    if (rate == 0) return 0;
    uint64_t b = rate / 500;   // rate * 2 ms
    return b < kMinBurst ? kMinBurst : b;
}

class TokenBucket {
public:
    TokenBucket() noexcept = default;   // unlimited, no parent
    TokenBucket(uint64_t rate, uint64_t burst, int64_t now) noexcept { set_rate(rate, burst, now); }

    // Changes rate and burst from `now` on: credit earned so far is kept
    // (capped at the new burst), so a change never mints or loses tokens
    // beyond the cap. From unlimited to limited, the bucket starts full.
    void set_rate(uint64_t rate, uint64_t burst, int64_t now) noexcept;

    uint64_t rate() const noexcept { return rate_; }     // 0 = unlimited
    uint64_t burst() const noexcept { return burst_; }   // after defaulting
    bool unlimited() const noexcept { return rate_ == 0; }

    // Whole bytes that may go now without waiting (0 while in debt);
    // INT64_MAX when unlimited.
    int64_t available(int64_t now) const noexcept;

    // Nanoseconds from `now` until `bytes` may go (0: now). kNever when the
    // answer does not fit in int64 (e.g. rate 1 B/s and an exabyte).
    int64_t time_until(uint64_t bytes, int64_t now) const noexcept;

    // Takes `bytes` at `now`, into debt if need be. The caller decides
    // whether it was allowed (time_until); receive-side limits consume
    // what the kernel already delivered, which may exceed what was allowed.
    void consume(uint64_t bytes, int64_t now) noexcept;

    // The next level up (not owned), or nullptr. Returns -ELOOP if `p` is
    // this bucket or below it, -E2BIG if the chain would exceed
    // kMaxDepth levels; the parent is unchanged then.
    static constexpr int kMaxDepth = 8;
    int set_parent(TokenBucket* p) noexcept;
    TokenBucket* parent() const noexcept { return parent_; }

private:
    // Credit is kept in byte-nanoseconds-per-second: one byte is 1e9 units,
    // and `elapsed_ns * rate` units are earned, exactly. Nothing is rounded,
    // so nothing drifts. 128 bits: 100 Gbit/s for hours is ~1e23 units,
    // and any uint64 rate times any int64 interval fits in unsigned 128.
    using Credit = __int128;
    static constexpr Credit kUnit = 1'000'000'000;
    Credit credit_at(int64_t now) const noexcept;

    uint64_t rate_ = 0, burst_ = 0;
    Credit cap_ = 0;      // burst_ * kUnit
    Credit credit_ = 0;   // at last_; <= cap_, negative in debt
    int64_t last_ = std::numeric_limits<int64_t>::min();
    TokenBucket* parent_ = nullptr;
};

// Chains: `b` and its ancestors, up to but not including `stop` (nullptr:
// to the top). A null `b` is an empty chain. Unlimited levels are skipped.
// These are what a hierarchical limit means: n bytes need tokens at every
// level, so the wait is the longest wait, the allowance the smallest one,
// and a send is taken from every level.
int64_t chain_time_until(const TokenBucket* b, uint64_t bytes, int64_t now,
                         const TokenBucket* stop = nullptr) noexcept;
int64_t chain_available(const TokenBucket* b, int64_t now, const TokenBucket* stop = nullptr) noexcept;
void chain_consume(TokenBucket* b, uint64_t bytes, int64_t now, const TokenBucket* stop = nullptr) noexcept;

// The receive side uses the same buckets, read this way by the engine:
//   n = chain_available(rx, now);   // 0: stop reading this flow, and re-arm at
//   now + chain_time_until(rx, 1, now);
//   ... read at most n (a multishot receive may deliver more) ...
//   chain_consume(rx, delivered, now);   // overshoot becomes debt, paid back

// now + delay without overflow (kNever stays kNever).
constexpr int64_t add_sat(int64_t now, int64_t delay) noexcept {
    return now > 0 && delay >= kNever - now ? kNever : now + delay;
}

}  // namespace gs::qos
