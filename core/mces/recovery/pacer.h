// Pacer: spreads a window's worth of packets over a round trip instead of
// sending them back to back (RFC 9002 7.7), a token bucket filled at
// rate = gain * cwnd / smoothed_rtt and holding at most burst_packets * mss.
// The owner asks next_send_time() before each packet and reports on_sent().
#pragma once

#include <cstdint>

#include "core/common/sansio.h"

namespace gs::mces {

struct PacerConfig {
    // RFC 9002 7.7 suggests N = 1.25 so pacing does not itself limit the
    // window; Linux uses 2 in slow start and 1.2 after.
    double gain = 1.25;
    // A short burst is allowed after idle (quicly allows 8 to 10 packets).
    std::uint32_t burst_packets = 10;
    std::uint32_t mss = 1200;
    // At high rates the bucket holds what the rate sends in burst_time, up
    // to max_burst_packets (0: the burst stays burst_packets). Why: a burst
    // of 10 packets that the rate refills in microseconds gains nothing but
    // one timer wake-up per 10 packets; Linux sizes its TSO bursts to about
    // 1 ms of the pacing rate the same way (tcp_tso_autosize), capped at
    // one 64-segment GSO batch.
    sansio::Time burst_time = 0;
    std::uint32_t max_burst_packets = 64;
};

class Pacer {
public:
    explicit Pacer(const PacerConfig& cfg = {});

    // Sets the rate from the congestion window and smoothed RTT (srtt <= 0
    // is treated as 1 ms). Bytes per second = gain * cwnd / srtt.
    void set_rate(std::uint64_t cwnd, sansio::Time srtt);
    // Changes the gain for later set_rate() calls (e.g. 2 in slow start,
    // 1.25 after, as Linux does); non-positive values are ignored.
    void set_gain(double gain) noexcept {
        if (gain > 0) cfg_.gain = gain;
    }
    // Sets the rate directly in bytes per second (0 = unpaced).
    void set_rate_bytes_per_sec(double rate);
    // When a packet of `bytes` may go: `now` (or earlier) when the bucket
    // holds enough, otherwise the time it will.
    sansio::Time next_send_time(std::uint32_t bytes, sansio::Time now) const;
    // Takes the packet's bytes from the bucket (it may go negative: probes
    // and retransmissions the owner sends regardless are still paid for).
    void on_sent(std::uint32_t bytes, sansio::Time now);

    double rate() const noexcept { return rate_; }          // bytes per second
    double burst() const noexcept { return burst_; }         // bytes, at the current rate

private:
    double tokens_at(sansio::Time now) const;
    void size_burst() noexcept;

    PacerConfig cfg_;
    double rate_ = 0;        // 0: unpaced
    double burst_;
    double tokens_;
    sansio::Time last_ = 0;
    bool started_ = false;
};

}  // namespace gs::mces
