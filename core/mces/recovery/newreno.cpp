#include "core/mces/recovery/newreno.h"

#include <algorithm>

namespace gs::mces {

using sansio::Time;

NewReno::NewReno(const CcConfig& cfg)
    : cfg_(cfg),
      min_window_(std::uint64_t{cfg.min_window_packets} * cfg.mss),
      cwnd_(initial_window(cfg)) {}

void NewReno::on_sent(std::uint64_t, std::uint64_t, Time) {}

bool NewReno::in_recovery(Time sent_time) const noexcept {
    return recovering_ && sent_time <= recovery_start_;
}

void NewReno::on_ack(std::uint64_t bytes, Time sent_time, const RttEstimator&, Time) {
    if (in_recovery(sent_time)) return;
    if (app_limited_) return;
    if (cwnd_ < ssthresh_) {
        cwnd_ += bytes;
    } else {
        // +mss per cwnd of acknowledged bytes, carried across calls so small
        // ACKs add up exactly.
        acked_in_ca_ += bytes;
        while (acked_in_ca_ >= cwnd_) {
            acked_in_ca_ -= cwnd_;
            cwnd_ += cfg_.mss;
        }
    }
    cwnd_ = std::min(cwnd_, cfg_.max_window);
}

void NewReno::on_congestion_event(Time sent_time, Time now) {
    if (in_recovery(sent_time)) return;
    before_ = Saved{cwnd_, ssthresh_, acked_in_ca_, recovering_, recovery_start_};
    can_undo_ = true;
    recovering_ = true;
    recovery_start_ = now;
    ssthresh_ = std::max(cwnd_ / 2, min_window_);
    cwnd_ = ssthresh_;
    acked_in_ca_ = 0;
}

bool NewReno::undo(Time) {
    if (!can_undo_) return false;
    can_undo_ = false;
    cwnd_ = std::max(cwnd_, before_.cwnd);
    ssthresh_ = before_.ssthresh;
    acked_in_ca_ = before_.acked_in_ca;
    recovering_ = before_.recovering;
    recovery_start_ = before_.recovery_start;
    return true;
}

void NewReno::on_persistent_congestion(Time) {
    can_undo_ = false;
    cwnd_ = min_window_;
    recovering_ = false;
    acked_in_ca_ = 0;
}

}  // namespace gs::mces
