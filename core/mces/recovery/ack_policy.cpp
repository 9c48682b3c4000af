#include "core/mces/recovery/ack_policy.h"

#include <cerrno>

namespace gs::mces {

using sansio::Time;

AckPolicy::AckPolicy(const AckPolicyConfig& cfg) : cfg_(cfg) {
    if (cfg_.threshold < 1) cfg_.threshold = 1;
    if (cfg_.threshold > kMaxThreshold) cfg_.threshold = kMaxThreshold;
    if (cfg_.max_ack_delay < 0) cfg_.max_ack_delay = 0;
}

int AckPolicy::set_threshold(std::uint32_t n) {
    if (n < 1 || n > kMaxThreshold) return -EINVAL;
    cfg_.threshold = n;
    if (unacked_eliciting_ >= n) immediate_ = true;
    return 0;
}

int AckPolicy::set_max_ack_delay(Time d) {
    if (d < 0) return -EINVAL;
    cfg_.max_ack_delay = d;
    return 0;
}

void AckPolicy::on_packet(std::uint64_t pn, bool ack_eliciting, Time now) {
    const bool out_of_order = has_largest_ && (pn < largest_ || pn > largest_ + 1);
    if (!has_largest_ || pn > largest_) {
        has_largest_ = true;
        largest_ = pn;
        largest_at_ = now;
    }
    if (!ack_eliciting) return;
    if (unacked_eliciting_ == 0) first_unacked_at_ = now;
    ++unacked_eliciting_;
    if (out_of_order || unacked_eliciting_ >= cfg_.threshold) immediate_ = true;
}

Time AckPolicy::next_timeout() const noexcept {
    if (unacked_eliciting_ == 0) return sansio::kNever;
    if (immediate_) return first_unacked_at_;
    return first_unacked_at_ + cfg_.max_ack_delay;
}

Time AckPolicy::ack_delay(Time now) const noexcept {
    return has_largest_ && now > largest_at_ ? now - largest_at_ : 0;
}

void AckPolicy::on_ack_sent(Time) {
    unacked_eliciting_ = 0;
    immediate_ = false;
}

}  // namespace gs::mces
