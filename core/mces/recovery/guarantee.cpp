#include "core/mces/recovery/guarantee.h"

#include <algorithm>
#include <cmath>

namespace gs::mces {

using sansio::Time;

namespace {
double seconds(Time t) { return static_cast<double>(t) / static_cast<double>(sansio::kSecond); }
}  // namespace

Guarantee::Guarantee(const GuaranteeConfig& cfg, Time now) : cfg_(cfg), credit_(0), refilled_(now) {
    cfg_.rate = std::isfinite(cfg_.rate) && cfg_.rate > 0 ? cfg_.rate : 1;
    cfg_.mss = std::max<std::uint32_t>(cfg_.mss, 1);
    credit_ = burst(false);   // the first packets go at once
}

double Guarantee::burst(bool backlogged) const noexcept {
    const Time t = backlogged ? std::max(cfg_.catchup_time, cfg_.burst_time) : cfg_.burst_time;
    return std::max(2.0 * cfg_.mss, cfg_.rate * seconds(t));
}

std::uint64_t Guarantee::limit(std::uint64_t sent_offset, Time now) {
    const bool backlogged = waiting_;
    if (now > refilled_) {
        const double add = cfg_.rate * seconds(now - refilled_);
        refilled_ = now;
        credit_ += add;
        const double over = credit_ - burst(backlogged);
        if (over > 0) {
            credit_ -= over;
            // Credit the program left unused is no evidence about the path;
            // credit the sender could not use while bytes were waiting is.
            if (backlogged) iv_owed_ += over;
        }
    }
    return sent_offset + static_cast<std::uint64_t>(std::max(credit_, 0.0));
}

Time Guarantee::when(std::uint64_t bytes, Time now) const {
    const double need = static_cast<double>(bytes) - credit_;
    if (need <= 0) return now;
    return now + static_cast<Time>(std::ceil(need / cfg_.rate * static_cast<double>(sansio::kSecond)));
}

std::uint64_t Guarantee::floor_window(Time srtt) const noexcept {
    const double w = 2.0 * wire_rate() * seconds(std::max<Time>(srtt, sansio::kMillisecond));
    return static_cast<std::uint64_t>(w) + 4ull * cfg_.mss;
}

void Guarantee::start_interval(std::uint64_t acked, Time now) noexcept {
    iv_start_ = now;
    iv_acked_ = acked;
    iv_owed_ = 0;
}

Guarantee::Event Guarantee::on_acked(std::uint64_t acked, Time srtt, Time now) {
    if (iv_start_ == sansio::kNever) {
        start_interval(acked, now);
        return Event::none;
    }
    const Time len = std::max(cfg_.min_interval, 8 * srtt);
    if (now - iv_start_ < len) return Event::none;
    const double owed = iv_owed_;
    const double got = static_cast<double>(acked - iv_acked_);
    const double secs = seconds(now - iv_start_);
    start_interval(acked, now);
    if (owed < 4.0 * cfg_.mss) return Event::none;   // the program sent (almost) nothing
    ++st_.intervals;
    st_.delivered = got / secs;
    st_.owed = owed / secs;
    const bool delivers = got >= cfg_.deliver_ratio * owed;
    if (delivers) {
        bad_ = 0;
        st_.floor = true;
        if (!shortfall_) return Event::none;
        shortfall_ = false;
        return Event::delivers;
    }
    if (shortfall_ || ++bad_ < cfg_.short_intervals) return Event::none;
    shortfall_ = true;
    ++st_.shortfalls;
    st_.floor = false;
    return Event::shortfall;
}

}  // namespace gs::mces
