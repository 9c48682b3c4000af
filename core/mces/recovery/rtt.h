// RttEstimator: round-trip time estimation as RFC 9002 section 5 specifies it
// (latest, smoothed, rttvar, min_rtt, peer ack delay) and the probe timeout
// (PTO) duration of section 6.2.
#pragma once

#include "core/common/sansio.h"

namespace gs::mces {

struct RttConfig {
    // RFC 9002 6.2.2: 333 ms before any sample (kInitialRtt).
    sansio::Time initial_rtt = 333 * sansio::kMillisecond;
    // The peer's max_ack_delay (RFC 9000 default 25 ms); the reported ack
    // delay is capped at it and it is added to the PTO.
    sansio::Time max_ack_delay = 25 * sansio::kMillisecond;
    // kGranularity (RFC 9002 6.1.2): timers never go below 1 ms.
    sansio::Time granularity = sansio::kMillisecond;
};

class RttEstimator {
public:
    explicit RttEstimator(const RttConfig& cfg = {});

    // Takes one sample: latest = ack receive time - send time of the largest
    // newly acked packet; ack_delay as the peer reported it. Negative latest
    // samples are ignored (returns false); a negative or oversized ack delay
    // is clamped to [0, max_ack_delay] (the peer is not trusted).
    bool on_sample(sansio::Time latest, sansio::Time ack_delay);

    bool has_sample() const noexcept { return has_sample_; }
    sansio::Time latest() const noexcept { return latest_; }
    sansio::Time smoothed() const noexcept { return smoothed_; }
    sansio::Time rttvar() const noexcept { return rttvar_; }
    sansio::Time min_rtt() const noexcept { return min_rtt_; }
    const RttConfig& config() const noexcept { return cfg_; }

    // smoothed + max(4 * rttvar, granularity) + max_ack_delay (RFC 9002 6.2.1).
    sansio::Time pto_base() const noexcept;
    // pto_base() * 2^backoff, saturating (the exponent is capped at 30).
    sansio::Time pto(unsigned backoff) const noexcept;

private:
    RttConfig cfg_;
    bool has_sample_ = false;
    sansio::Time latest_ = 0;
    sansio::Time smoothed_;
    sansio::Time rttvar_;
    sansio::Time min_rtt_ = 0;
};

}  // namespace gs::mces
