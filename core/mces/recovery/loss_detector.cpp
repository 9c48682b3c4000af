#include "core/mces/recovery/loss_detector.h"

#include <algorithm>
#include <cerrno>

namespace gs::mces {

using sansio::Time;

void AckOutcome::clear() {
    acked.clear();
    lost.clear();
    acked_bytes = 0;
    lost_bytes = 0;
    largest_lost_sent = 0;
    rtt_sampled = false;
    persistent_congestion = false;
    spurious_losses = 0;
    spurious.clear();
}

LossDetector::LossDetector(const LossConfig& cfg) : cfg_(cfg), rtt_(cfg.rtt) {
    if (cfg_.packet_threshold == 0) cfg_.packet_threshold = 1;
    if (cfg_.max_packet_threshold < cfg_.packet_threshold) cfg_.max_packet_threshold = cfg_.packet_threshold;
    packet_threshold_ = cfg_.packet_threshold;
    if (cfg_.time_threshold_num < cfg_.time_threshold_den) cfg_.time_threshold_num = cfg_.time_threshold_den;
    if (cfg_.max_time_threshold_num < cfg_.time_threshold_num) cfg_.max_time_threshold_num = cfg_.time_threshold_num;
    time_threshold_num_ = cfg_.time_threshold_num;
    if (cfg_.time_threshold_den == 0) cfg_.time_threshold_den = 1;
    if (cfg_.max_tracked == 0) cfg_.max_tracked = 1;
}

int LossDetector::on_sent(const SentPacket& p) {
    if (any_sent_ && p.pn <= last_pn_) return -EINVAL;
    if (map_.size() >= cfg_.max_tracked) return -ENOBUFS;
    any_sent_ = true;
    last_pn_ = p.pn;
    map_.push_back(Entry{p, State::Outstanding});
    if (p.in_flight) bytes_in_flight_ += p.bytes;
    if (p.ack_eliciting && p.in_flight) {
        ++ack_eliciting_in_flight_;
        last_ack_eliciting_sent_ = p.sent;
    }
    return 0;
}

std::size_t LossDetector::index_of(std::uint64_t pn) const {
    auto it = std::lower_bound(map_.begin(), map_.end(), pn,
                               [](const Entry& e, std::uint64_t v) { return e.p.pn < v; });
    return static_cast<std::size_t>(it - map_.begin());
}

void LossDetector::settle(Entry& e, State s) {
    e.state = s;
    if (e.p.in_flight) {
        bytes_in_flight_ -= e.p.bytes;
        if (e.p.ack_eliciting) --ack_eliciting_in_flight_;
    }
}

int LossDetector::on_ack(std::span<const PacketRange> ranges, Time ack_delay, Time now,
                         AckOutcome& out) {
    out.clear();
    // Validate the whole frame before touching state: it comes from the network.
    if (ranges.empty()) {
        ++invalid_acks_;
        return -EINVAL;
    }
    for (std::size_t i = 0; i < ranges.size(); ++i) {
        if (ranges[i].first > ranges[i].last ||
            (i > 0 && ranges[i].last >= ranges[i - 1].first)) {
            ++invalid_acks_;
            return -EINVAL;
        }
    }
    const std::uint64_t largest = ranges.front().last;
    if (!any_sent_ || largest > last_pn_) {
        ++invalid_acks_;
        return -EPROTO;
    }
    if (!has_largest_acked_ || largest > largest_acked_) {
        largest_acked_ = largest;
        has_largest_acked_ = true;
    }

    check_spurious(ranges, out);
    const Entry* largest_newly = nullptr;
    bool any_ack_eliciting = false;
    for (const auto& r : ranges) {
        for (std::size_t i = index_of(r.first); i < map_.size() && map_[i].p.pn <= r.last; ++i) {
            Entry& e = map_[i];
            if (e.state != State::Outstanding) continue;   // already settled (or spuriously lost)
            settle(e, State::Acked);
            out.acked.push_back(e.p);
            if (e.p.in_flight) out.acked_bytes += e.p.bytes;
            any_ack_eliciting |= e.p.ack_eliciting;
            if (e.p.pn == largest) largest_newly = &e;
        }
    }
    if (out.acked.empty()) return 0;
    std::sort(out.acked.begin(), out.acked.end(),
              [](const SentPacket& a, const SentPacket& b) { return a.pn < b.pn; });

    // RFC 9002 5.1: sample only when the largest acknowledged is newly
    // acknowledged and something ack-eliciting was among the new ones.
    if (largest_newly != nullptr && any_ack_eliciting) {
        if (rtt_.on_sample(now - largest_newly->p.sent, ack_delay)) {
            out.rtt_sampled = true;
            if (first_rtt_sample_ == sansio::kNever) first_rtt_sample_ = now;
        }
    }
    detect_lost(now, out);
    pto_count_ = 0;
    trim();
    return 0;
}

void LossDetector::detect_lost(Time now, AckOutcome& out) {
    loss_time_ = sansio::kNever;
    if (!has_largest_acked_) return;
    const Time base = std::max(rtt_.latest(), rtt_.smoothed());
    const Time loss_delay = std::max<Time>(
        base / cfg_.time_threshold_den * time_threshold_num_ +
            base % cfg_.time_threshold_den * time_threshold_num_ / cfg_.time_threshold_den,
        rtt_.config().granularity);
    const Time lost_send_time = now - loss_delay;

    // Persistent congestion: a run of newly lost ack-eliciting packets, sent
    // after the first RTT sample, with no acknowledged packet between them.
    const bool can_persist = first_rtt_sample_ != sansio::kNever;
    const Time pc_duration = rtt_.pto_base() * static_cast<Time>(cfg_.persistent_congestion_threshold);
    bool run = false;
    Time run_start = 0;

    for (std::size_t i = 0; i < map_.size() && map_[i].p.pn <= largest_acked_; ++i) {
        Entry& e = map_[i];
        if (e.state == State::Acked) {
            run = false;
            continue;
        }
        if (e.state != State::Outstanding) continue;
        const bool by_packets = largest_acked_ >= e.p.pn + packet_threshold_;
        if (by_packets || e.p.sent <= lost_send_time) {
            settle(e, State::Lost);
            out.lost.push_back(e.p);
            if (cfg_.spurious_memory > 0) {
                if (recent_lost_.size() >= cfg_.spurious_memory) recent_lost_.pop_front();
                recent_lost_.push_back(Lost{e.p.pn, largest_acked_, !by_packets});
            }
            if (e.p.in_flight) {
                out.lost_bytes += e.p.bytes;
                out.largest_lost_sent = std::max(out.largest_lost_sent, e.p.sent);
            }
            if (can_persist && e.p.ack_eliciting && e.p.sent > first_rtt_sample_) {
                if (!run) {
                    run = true;
                    run_start = e.p.sent;
                } else if (e.p.sent - run_start > pc_duration) {
                    out.persistent_congestion = true;
                }
            }
        } else {
            loss_time_ = std::min(loss_time_, e.p.sent + loss_delay);
        }
    }
}

void LossDetector::check_spurious(std::span<const PacketRange> ranges, AckOutcome& out) {
    if (recent_lost_.empty()) return;
    const std::uint64_t lo = ranges.back().first, hi = ranges.front().last;
    for (auto it = recent_lost_.begin(); it != recent_lost_.end();) {
        if (it->pn < lo || it->pn > hi) {
            ++it;
            continue;
        }
        // ranges are descending: the first range starting at or below pn.
        auto r = std::partition_point(ranges.begin(), ranges.end(),
                                      [&](const PacketRange& x) { return x.first > it->pn; });
        if (r == ranges.end() || it->pn > r->last) {
            ++it;
            continue;
        }
        // It was only late. The threshold that would have spared it:
        const std::uint64_t need = it->largest_acked - it->pn + 1;
        packet_threshold_ = static_cast<std::uint32_t>(
            std::min<std::uint64_t>(cfg_.max_packet_threshold, std::max<std::uint64_t>(packet_threshold_, need)));
        if (it->by_time && time_threshold_num_ < cfg_.max_time_threshold_num) ++time_threshold_num_;
        ++out.spurious_losses;
        out.spurious.push_back(it->pn);
        ++spurious_total_;
        it = recent_lost_.erase(it);
    }
}

void LossDetector::trim() {
    while (!map_.empty() && map_.front().state != State::Outstanding) map_.pop_front();
}

Time LossDetector::next_timeout() const noexcept {
    if (loss_time_ != sansio::kNever) return loss_time_;
    if (ack_eliciting_in_flight_ == 0) return sansio::kNever;
    const Time d = rtt_.pto(pto_count_);
    if (d > sansio::kNever - last_ack_eliciting_sent_) return sansio::kNever;
    return last_ack_eliciting_sent_ + d;
}

LossDetector::TimerAction LossDetector::on_timeout(Time now, AckOutcome& out) {
    out.clear();
    if (loss_time_ != sansio::kNever) {
        if (now < loss_time_) return TimerAction::None;
        detect_lost(now, out);
        trim();
        return TimerAction::LossDetected;
    }
    const Time t = next_timeout();
    if (t == sansio::kNever || now < t) return TimerAction::None;
    ++pto_count_;
    return TimerAction::Probe;
}

const SentPacket* LossDetector::oldest_outstanding() const noexcept {
    for (const auto& e : map_)
        if (e.state == State::Outstanding) return &e.p;
    return nullptr;
}

}  // namespace gs::mces
