#include "core/qos/token_bucket.h"

#include <cerrno>

namespace gs::qos {

namespace {

using U128 = unsigned __int128;

// Debt floor: a runaway receive side cannot push credit anywhere near the
// 128-bit limit (2^100 units is ~1.3e21 bytes of debt).
constexpr __int128 kMaxDebt = static_cast<__int128>(1) << 100;

}  // namespace

void TokenBucket::set_rate(uint64_t rate, uint64_t burst, int64_t now) noexcept {
    bool was_unlimited = rate_ == 0;
    if (!was_unlimited) {
        credit_ = credit_at(now);
        if (now > last_) last_ = now;
    }
    rate_ = rate;
    burst_ = rate == 0 ? 0 : (burst ? burst : default_burst(rate));
    cap_ = static_cast<Credit>(burst_) * kUnit;
    if (was_unlimited) {
        credit_ = cap_;   // starts full
        last_ = now;
    }
    if (credit_ > cap_) credit_ = cap_;
}

// The credit at `now`, without changing state: earned = elapsed * rate,
// compared against the room left before the cap instead of added first, so
// nothing overflows whatever the interval (hours idle) or the rate.
TokenBucket::Credit TokenBucket::credit_at(int64_t now) const noexcept {
    if (now <= last_) return credit_;
    U128 elapsed = static_cast<uint64_t>(now - last_);   // now > last_: fits
    U128 earned = elapsed * rate_;                        // < 2^63 * 2^64
    U128 room = static_cast<U128>(cap_ - credit_);        // credit_ <= cap_
    return earned >= room ? cap_ : credit_ + static_cast<Credit>(earned);
}

int64_t TokenBucket::available(int64_t now) const noexcept {
    if (rate_ == 0) return kNever;
    Credit c = credit_at(now);
    if (c <= 0) return 0;
    Credit bytes = c / kUnit;   // <= burst_ < 2^64
    return bytes > kNever ? kNever : static_cast<int64_t>(bytes);
}

int64_t TokenBucket::time_until(uint64_t bytes, int64_t now) const noexcept {
    if (rate_ == 0) return 0;
    Credit want = static_cast<Credit>(bytes < burst_ ? bytes : burst_) * kUnit;
    Credit c = credit_at(now);
    if (c >= want) return 0;
    // ceil(missing / rate): after that many ns exactly enough is earned.
    U128 missing = static_cast<U128>(want - c);
    U128 ns = (missing + rate_ - 1) / rate_;
    return ns >= static_cast<U128>(kNever) ? kNever : static_cast<int64_t>(ns);
}

void TokenBucket::consume(uint64_t bytes, int64_t now) noexcept {
    if (rate_ == 0) return;
    credit_ = credit_at(now);
    if (now > last_) last_ = now;
    credit_ -= static_cast<Credit>(bytes) * kUnit;
    if (credit_ < -kMaxDebt) credit_ = -kMaxDebt;
}

int TokenBucket::set_parent(TokenBucket* p) noexcept {
    // Checked upwards from this bucket only: a bucket does not know its
    // children, so a deep subtree re-parented under a deep chain is not seen.
    int depth = 1;
    for (const TokenBucket* b = p; b; b = b->parent_) {
        if (b == this) return -ELOOP;
        if (++depth > kMaxDepth) return -E2BIG;
    }
    parent_ = p;
    return 0;
}

int64_t chain_time_until(const TokenBucket* b, uint64_t bytes, int64_t now,
                         const TokenBucket* stop) noexcept {
    int64_t wait = 0;
    for (; b && b != stop; b = b->parent()) {
        int64_t t = b->time_until(bytes, now);
        if (t > wait) wait = t;
    }
    return wait;
}

int64_t chain_available(const TokenBucket* b, int64_t now, const TokenBucket* stop) noexcept {
    int64_t avail = kNever;
    for (; b && b != stop; b = b->parent()) {
        int64_t a = b->available(now);
        if (a < avail) avail = a;
    }
    return avail;
}

void chain_consume(TokenBucket* b, uint64_t bytes, int64_t now, const TokenBucket* stop) noexcept {
    for (; b && b != stop; b = b->parent()) b->consume(bytes, now);
}

}  // namespace gs::qos
