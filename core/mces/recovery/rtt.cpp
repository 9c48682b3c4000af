#include "core/mces/recovery/rtt.h"

#include <algorithm>

namespace gs::mces {

using sansio::Time;

RttEstimator::RttEstimator(const RttConfig& cfg)
    : cfg_(cfg), smoothed_(cfg.initial_rtt), rttvar_(cfg.initial_rtt / 2) {}

bool RttEstimator::on_sample(Time latest, Time ack_delay) {
    if (latest < 0) return false;
    latest_ = latest;
    if (!has_sample_) {
        // RFC 9002 5.3: the first sample sets everything; ack delay is ignored.
        has_sample_ = true;
        min_rtt_ = latest;
        smoothed_ = latest;
        rttvar_ = latest / 2;
        return true;
    }
    min_rtt_ = std::min(min_rtt_, latest);
    ack_delay = std::clamp<Time>(ack_delay, 0, cfg_.max_ack_delay);
    // Subtract the peer's delay only when that does not take the sample
    // below min_rtt: a lying peer cannot shrink the estimate below what was seen.
    Time adjusted = latest;
    if (latest >= min_rtt_ + ack_delay) adjusted = latest - ack_delay;
    const Time dev = smoothed_ > adjusted ? smoothed_ - adjusted : adjusted - smoothed_;
    rttvar_ = (3 * rttvar_ + dev) / 4;
    smoothed_ = (7 * smoothed_ + adjusted) / 8;
    return true;
}

Time RttEstimator::pto_base() const noexcept {
    return smoothed_ + std::max(4 * rttvar_, cfg_.granularity) + cfg_.max_ack_delay;
}

Time RttEstimator::pto(unsigned backoff) const noexcept {
    Time d = pto_base();
    const unsigned shift = std::min(backoff, 30u);
    for (unsigned i = 0; i < shift; ++i) {
        if (d > sansio::kNever / 2) return sansio::kNever;
        d *= 2;
    }
    return d;
}

}  // namespace gs::mces
