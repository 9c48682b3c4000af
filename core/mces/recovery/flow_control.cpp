#include "core/mces/recovery/flow_control.h"

#include <algorithm>
#include <cerrno>

namespace gs::mces {

using sansio::Time;

FlowReceiver::FlowReceiver(const FlowConfig& cfg) : cfg_(cfg) {
    if (cfg_.max_window < cfg_.initial_window) cfg_.max_window = cfg_.initial_window;
    window_ = cfg_.initial_window;
    limit_ = window_;
}

int FlowReceiver::on_data(std::uint64_t end_offset) {
    if (end_offset > limit_) return -EDQUOT;
    highest_ = std::max(highest_, end_offset);
    return 0;
}

void FlowReceiver::on_consumed(std::uint64_t consumed_offset) noexcept {
    consumed_ = std::max(consumed_, std::min(consumed_offset, highest_));
}

bool FlowReceiver::update_due() const noexcept {
    // limit_ - consumed_ is the credit the peer still has (consumed_ <= highest_ <= limit_).
    return limit_ - consumed_ <= window_ / 2;
}

std::uint64_t FlowReceiver::take_update(Time now, Time srtt) {
    if (has_update_ && srtt > 0 && now - last_update_ < 2 * srtt && window_ < cfg_.max_window)
        window_ = std::min(window_ * 2, cfg_.max_window);
    has_update_ = true;
    last_update_ = now;
    limit_ = std::max(limit_, consumed_ + window_);
    return limit_;
}

bool FlowSender::on_limit(std::uint64_t limit) noexcept {
    if (limit <= limit_) return false;
    limit_ = limit;
    return true;
}

}  // namespace gs::mces
