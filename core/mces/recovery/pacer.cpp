#include "core/mces/recovery/pacer.h"

#include <algorithm>
#include <cmath>

namespace gs::mces {

using sansio::Time;

Pacer::Pacer(const PacerConfig& cfg)
    : cfg_(cfg),
      burst_(double(std::max<std::uint32_t>(cfg.burst_packets, 1)) * std::max<std::uint32_t>(cfg.mss, 1)),
      tokens_(burst_) {}

void Pacer::set_rate(std::uint64_t cwnd, Time srtt) {
    if (srtt <= 0) srtt = sansio::kMillisecond;
    set_rate_bytes_per_sec(cfg_.gain * double(cwnd) * double(sansio::kSecond) / double(srtt));
}

void Pacer::set_rate_bytes_per_sec(double rate) {
    rate_ = std::isfinite(rate) && rate > 0 ? rate : 0;
    size_burst();
}

void Pacer::size_burst() noexcept {
    const double mss = std::max<std::uint32_t>(cfg_.mss, 1);
    const double base = double(std::max<std::uint32_t>(cfg_.burst_packets, 1)) * mss;
    if (cfg_.burst_time <= 0 || rate_ == 0) {
        burst_ = base;
        return;
    }
    const double top = std::max(base, double(cfg_.max_burst_packets) * mss);
    burst_ = std::clamp(rate_ * double(cfg_.burst_time) / double(sansio::kSecond), base, top);
}

double Pacer::tokens_at(Time now) const {
    if (!started_ || rate_ == 0) return burst_;
    const Time dt = now > last_ ? now - last_ : 0;
    return std::min(burst_, tokens_ + rate_ * double(dt) / double(sansio::kSecond));
}

Time Pacer::next_send_time(std::uint32_t bytes, Time now) const {
    if (rate_ == 0) return now;
    const double have = tokens_at(now);
    const double need = std::min(double(bytes), burst_);
    if (have >= need) return now;
    const double wait_ns = std::ceil((need - have) * double(sansio::kSecond) / rate_);
    if (wait_ns >= double(sansio::kNever - now)) return sansio::kNever;
    return now + static_cast<Time>(wait_ns);
}

void Pacer::on_sent(std::uint32_t bytes, Time now) {
    tokens_ = tokens_at(now) - double(bytes);
    if (!started_ || now > last_) last_ = now;
    started_ = true;
}

}  // namespace gs::mces
