#include "core/mces/recovery/idle_timer.h"

#include <algorithm>

namespace gs::mces {

using sansio::Time;

IdleTimer::IdleTimer(const IdleConfig& cfg, Time now)
    : cfg_(cfg), last_activity_(now), last_rx_(now), last_ping_(now) {}

void IdleTimer::on_received(Time now) {
    last_activity_ = std::max(last_activity_, now);
    last_rx_ = std::max(last_rx_, now);
    sent_since_rx_ = false;
}

void IdleTimer::on_ack_eliciting_sent(Time now) {
    if (!sent_since_rx_) last_activity_ = std::max(last_activity_, now);
    sent_since_rx_ = true;
}

Time IdleTimer::idle_deadline() const noexcept {
    if (cfg_.idle_timeout <= 0) return sansio::kNever;
    return last_activity_ + std::max(cfg_.idle_timeout, 3 * pto_);
}

Time IdleTimer::ping_deadline() const noexcept {
    if (cfg_.keepalive <= 0) return sansio::kNever;
    return std::max(last_rx_, last_ping_) + cfg_.keepalive;
}

Time IdleTimer::next_timeout() const noexcept {
    if (closed_) return sansio::kNever;
    return std::min(idle_deadline(), ping_deadline());
}

IdleTimer::Action IdleTimer::on_timeout(Time now) {
    if (closed_) return Action::None;
    if (now >= idle_deadline()) {
        closed_ = true;
        return Action::Close;
    }
    if (now >= ping_deadline()) {
        last_ping_ = now;
        return Action::SendPing;
    }
    return Action::None;
}

}  // namespace gs::mces
