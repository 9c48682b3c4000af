// CUBIC (RFC 9438) for MCES, windows in bytes:
//   W_cubic(t) = C * (t - K)^3 + W_max,  C = 0.4, beta = 0.7,
//   K = cbrt((W_max - cwnd_epoch) / C)        (in segments and seconds);
// on each ACK in congestion avoidance the window moves toward
// W_cubic(t + RTT) (clamped to 1.5 * cwnd, 4.2), or follows the
// Reno-friendly estimate W_est when that is larger (4.3; alpha = 3(1-beta)/(1+beta),
// then 1 once W_est passes W_max); fast convergence (4.7) lowers W_max when
// a loss comes before the previous W_max was regained. Slow start and
// recovery are as in NewReno (RFC 9002); the epoch starts at the first ACK
// of congestion avoidance, and is shifted by idle time so a quiescent sender
// does not come back with a window grown on paper.
#pragma once

#include "core/mces/recovery/congestion.h"

namespace gs::mces {

class Cubic final : public CongestionController {
public:
    static constexpr double kC = 0.4;
    static constexpr double kBeta = 0.7;

    explicit Cubic(const CcConfig& cfg = {});

    std::string_view name() const noexcept override { return "cubic"; }
    void on_sent(std::uint64_t bytes, std::uint64_t bytes_in_flight, sansio::Time now) override;
    void on_ack(std::uint64_t bytes, sansio::Time sent_time, const RttEstimator& rtt,
                sansio::Time now) override;
    void on_congestion_event(sansio::Time sent_time, sansio::Time now) override;
    void on_persistent_congestion(sansio::Time now) override;
    bool undo(sansio::Time now) override;
    std::uint64_t cwnd() const noexcept override { return static_cast<std::uint64_t>(cwnd_); }
    std::uint64_t ssthresh() const noexcept override { return ssthresh_; }
    bool in_recovery(sansio::Time sent_time) const noexcept override;

    // Observable state for tests and diagnostics (bytes, seconds).
    double w_max() const noexcept { return w_max_; }
    double w_est() const noexcept { return w_est_; }
    double k() const noexcept { return k_; }
    bool has_epoch() const noexcept { return has_epoch_; }
    sansio::Time epoch_start() const noexcept { return epoch_start_; }

private:
    double w_cubic(double t_sec) const noexcept;   // bytes

    CcConfig cfg_;
    double mss_;
    double min_window_;
    double cwnd_;
    std::uint64_t ssthresh_ = UINT64_MAX;
    bool recovering_ = false;               // recovery_start_ is set
    sansio::Time recovery_start_ = 0;
    double w_max_ = 0;          // bytes; 0 until the first congestion event
    double k_ = 0;              // seconds
    double cwnd_epoch_ = 0;
    double w_est_ = 0;
    bool has_epoch_ = false;
    sansio::Time epoch_start_ = 0;
    bool has_sent_ = false;
    sansio::Time last_sent_ = 0;
    // What on_congestion_event changes, as it was just before (for undo).
    struct Saved {
        double cwnd;
        std::uint64_t ssthresh;
        bool recovering;
        sansio::Time recovery_start;
        double w_max, k, cwnd_epoch, w_est;
        bool has_epoch;
        sansio::Time epoch_start;
    };
    bool can_undo_ = false;
    Saved before_{};
};

}  // namespace gs::mces
