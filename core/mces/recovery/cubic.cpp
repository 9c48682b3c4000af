#include "core/mces/recovery/cubic.h"

#include <algorithm>
#include <cmath>

namespace gs::mces {

using sansio::Time;

Cubic::Cubic(const CcConfig& cfg)
    : cfg_(cfg),
      mss_(cfg.mss),
      min_window_(double(cfg.min_window_packets) * cfg.mss),
      cwnd_(double(initial_window(cfg))) {}

bool Cubic::in_recovery(Time sent_time) const noexcept {
    return recovering_ && sent_time <= recovery_start_;
}

void Cubic::on_sent(std::uint64_t bytes, std::uint64_t bytes_in_flight, Time now) {
    // Coming out of quiescence (this packet is all that is in flight): the
    // idle time must not count as congestion-avoidance time (the Linux fix
    // quicly also adopts).
    if (has_epoch_ && has_sent_ && bytes_in_flight <= bytes && now > last_sent_)
        epoch_start_ += now - last_sent_;
    has_sent_ = true;
    last_sent_ = now;
}

double Cubic::w_cubic(double t) const noexcept {
    const double d = t - k_;
    return kC * d * d * d * mss_ + w_max_;
}

void Cubic::on_ack(std::uint64_t bytes, Time sent_time, const RttEstimator& rtt, Time now) {
    if (in_recovery(sent_time)) return;
    if (app_limited_) return;
    const double acked = double(bytes);
    if (cwnd_ < double(ssthresh_)) {
        cwnd_ = std::min(cwnd_ + acked, double(cfg_.max_window));
        return;
    }
    if (!has_epoch_) {
        // Congestion avoidance begins (after a loss, or slow start ended
        // at a configured ssthresh): cwnd_epoch is where we are now.
        has_epoch_ = true;
        epoch_start_ = now;
        cwnd_epoch_ = cwnd_;
        w_est_ = cwnd_;
        if (w_max_ < cwnd_) w_max_ = cwnd_;
        k_ = std::cbrt((w_max_ - cwnd_epoch_) / mss_ / kC);
    }
    const double t = double(now - epoch_start_) / double(sansio::kSecond);
    const double rtt_sec = double(rtt.smoothed()) / double(sansio::kSecond);

    // Reno-friendly estimate (4.3), per acked segment fraction of the window.
    const double alpha = w_est_ >= w_max_ ? 1.0 : 3.0 * (1.0 - kBeta) / (1.0 + kBeta);
    w_est_ += alpha * acked / cwnd_ * mss_;

    if (w_cubic(t) < w_est_) {
        cwnd_ = std::max(cwnd_, w_est_);
    } else {
        const double target = std::clamp(w_cubic(t + rtt_sec), cwnd_, 1.5 * cwnd_);
        cwnd_ += (target - cwnd_) * acked / cwnd_;
    }
    cwnd_ = std::min(cwnd_, double(cfg_.max_window));
}

void Cubic::on_congestion_event(Time sent_time, Time now) {
    if (in_recovery(sent_time)) return;
    before_ = Saved{cwnd_, ssthresh_, recovering_, recovery_start_, w_max_, k_, cwnd_epoch_, w_est_,
                    has_epoch_, epoch_start_};
    can_undo_ = true;
    recovering_ = true;
    recovery_start_ = now;
    // Fast convergence: a loss before W_max was regained means another flow
    // is taking bandwidth; release some by aiming lower.
    if (cfg_.cubic_fast_convergence && cwnd_ < w_max_)
        w_max_ = cwnd_ * (1.0 + kBeta) / 2.0;
    else
        w_max_ = cwnd_;
    cwnd_ = std::max(cwnd_ * kBeta, min_window_);
    ssthresh_ = static_cast<std::uint64_t>(cwnd_);
    cwnd_epoch_ = cwnd_;
    k_ = std::cbrt(std::max(0.0, w_max_ - cwnd_epoch_) / mss_ / kC);
    has_epoch_ = false;     // the epoch begins with the first ACK after recovery
}

bool Cubic::undo(Time) {
    if (!can_undo_) return false;
    can_undo_ = false;
    // The epoch resumes where it was: the reduction never happened (the
    // time in between counts as congestion-avoidance time, as it would have).
    cwnd_ = std::max(cwnd_, before_.cwnd);
    ssthresh_ = before_.ssthresh;
    recovering_ = before_.recovering;
    recovery_start_ = before_.recovery_start;
    w_max_ = before_.w_max;
    k_ = before_.k;
    cwnd_epoch_ = before_.cwnd_epoch;
    w_est_ = std::max(w_est_, before_.w_est);
    has_epoch_ = before_.has_epoch;
    epoch_start_ = before_.epoch_start;
    return true;
}

void Cubic::on_persistent_congestion(Time) {
    can_undo_ = false;
    cwnd_ = min_window_;
    recovering_ = false;
    has_epoch_ = false;
    w_max_ = 0;             // the old operating point is no longer evidence
}

}  // namespace gs::mces
