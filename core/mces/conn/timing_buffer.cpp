#include "core/mces/conn/timing_buffer.h"

#include <algorithm>

namespace gs::mces {

using sansio::kNever;
using sansio::Time;

namespace {
// Stamps are microseconds; a forged one must not overflow the arithmetic.
constexpr std::uint64_t kMaxStampUs = std::uint64_t{1} << 52;
Time stamp_ns(std::uint64_t us) noexcept {
    return static_cast<Time>(std::min(us, kMaxStampUs)) * sansio::kMicrosecond;
}
}  // namespace

TimingBuffer::TimingBuffer(const TimingBufferConfig& cfg) : cfg_(cfg) {
    cfg_.window = std::clamp<std::size_t>(cfg_.window, 1, std::size_t{1} << 20);
    cfg_.max_window = std::clamp<std::size_t>(cfg_.max_window, cfg_.window, std::size_t{1} << 20);
    cfg_.max_bytes_limit = std::max(cfg_.max_bytes_limit, cfg_.max_bytes);
    slots_.resize(cfg_.window);
    max_bytes_ = cfg_.max_bytes;
}

// Doubles the window (the slots are re-placed: seq % size changes) and the
// byte bound, within the config's limits. False when both are at them.
bool TimingBuffer::grow() {
    const std::size_t w = std::min(slots_.size() * 2, cfg_.max_window);
    const std::size_t b = std::min(max_bytes_ * 2, cfg_.max_bytes_limit);
    if (w == slots_.size() && b == max_bytes_) return false;
    if (w != slots_.size()) {
        std::vector<Slot> bigger(w);
        for (Slot& s : slots_)
            if (s.present) bigger[s.seq % w] = std::move(s);
        slots_ = std::move(bigger);
    }
    max_bytes_ = b;
    ++counters_.grown;
    return true;
}

TimingBuffer::Insert TimingBuffer::refuse(Insert why) noexcept {
    ++(why == Insert::full ? counters_.full : counters_.too_far);
    return why;
}

void TimingBuffer::observe_arrival(std::uint64_t seq, std::uint64_t stamp_us, Time now) noexcept {
    const Time transit = now - stamp_ns(stamp_us);
    if (!has_high_ || transit < high_) high_ = transit;
    has_high_ = true;
    if (has_low_ && low_ > high_) {
        low_ = high_;
        ++counters_.clock_cut;
    }
    if (has_transit_ && seq <= top_seq_) return;
    top_seq_ = seq;
    // RFC 3550 6.4.1: J += (|D| - J) / 16, kept x16 as its appendix A.8 does.
    if (has_transit_) {
        Time d = transit - last_transit_;
        if (d < 0) d = -d;
        d = std::min<Time>(d, 60 * sansio::kSecond);
        jitter_ += d - ((jitter_ + 8) >> 4);
    }
    has_transit_ = true;
    last_transit_ = transit;
}

void TimingBuffer::clock_sample(Time lower_bound, bool from_ack) noexcept {
    has_ack_ = has_ack_ || from_ack;
    if (has_high_ && lower_bound > high_) {
        lower_bound = high_;   // c <= c_high holds for sure; the sample lied or the stamp was late
        ++counters_.clock_cut;
    }
    ++counters_.clock_samples;
    if (!has_low_ || lower_bound > low_) low_ = lower_bound;
    has_low_ = true;
}

void TimingBuffer::epoch_sample(std::uint64_t stamp_us, Time created) noexcept {
    // -1 us: the stamp was rounded down to the microsecond.
    clock_sample(created - stamp_ns(stamp_us) - sansio::kMicrosecond, false);
}

Time TimingBuffer::clock_offset() const noexcept {
    if (!cfg_.symmetric || !has_ack_ || !has_high_) return low_;
    return std::max(low_, low_ + (high_ - low_) / 2 - cfg_.margin);   // high_ >= low_ (observe_arrival)
}

Time TimingBuffer::release_time(std::uint64_t stamp_us, Time arrival) const noexcept {
    if (!has_low_) return arrival;
    const Time r = stamp_ns(stamp_us) + clock_offset() + cfg_.latency;
    // Before the ACK's sample: the handshake's bound may be loose; a
    // message past it waits an eighth of the latency for the ones
    // reordered around it.
    return has_ack_ ? r : std::max(r, arrival + cfg_.latency / 8);
}

TimingBuffer::Insert TimingBuffer::insert(std::uint64_t seq, std::uint64_t stamp_us,
                                          std::span<const std::uint8_t> msg, Time now) {
    if (seq < next_) {
        ++counters_.duplicate;   // delivered or skipped already
        return Insert::duplicate;
    }
    // Late before the window is looked at: a late copy's seq may be wrong
    // (frame.h, decode_message_seq), and the skip below would let it push
    // the window past messages still to come.
    if (late(stamp_us, now)) {
        ++counters_.late;
        return Insert::late;
    }
    if (seq - next_ >= slots_.size()) {
        // Sequence numbers a whole window behind this one and never
        // received are not waited for (skipped): without this, a window
        // emptied by releases would refuse every later message for good.
        // Nothing held: straight there; else over empty slots, up to the
        // oldest held message (within the window, so at most a window).
        if (count_ == 0) {
            const std::uint64_t base = seq - (slots_.size() - 1);
            counters_.skipped += base - next_;
            next_ = base;
        } else {
            while (seq - next_ >= slots_.size()) {
                const Slot& o = slot(next_);
                if (o.present && o.seq == next_) break;
                ++counters_.skipped;
                ++next_;
            }
        }
        // Still beyond it: more is in flight than the window holds.
        if (seq - next_ >= slots_.size() && !(grow() && seq - next_ < slots_.size()))
            return refuse(Insert::too_far);
    }
    Slot& s = slot(seq);
    if (s.present) {
        ++counters_.duplicate;
        return Insert::duplicate;
    }
    if (bytes_ + msg.size() > max_bytes_) {
        while (bytes_ + msg.size() > max_bytes_ && grow()) {
        }
        if (bytes_ + msg.size() > max_bytes_) return refuse(Insert::full);
        return insert(seq, stamp_us, msg, now);   // the slots moved
    }
    s.seq = seq;
    s.present = true;
    s.stamp_us = stamp_us;
    s.arrival = now;
    s.bytes.assign(msg.begin(), msg.end());
    ++count_;
    bytes_ += msg.size();
    ++counters_.stored;
    return Insert::stored;
}

bool TimingBuffer::first_held(std::uint64_t& seq) const noexcept {
    if (count_ == 0) return false;
    for (std::uint64_t s = next_; s - next_ < slots_.size(); ++s) {
        const Slot& sl = slot(s);
        if (sl.present && sl.seq == s) {
            seq = s;
            return true;
        }
    }
    return false;
}

void TimingBuffer::take(Slot& s) noexcept {
    s.present = false;
    --count_;
    bytes_ -= s.bytes.size();
}

Time TimingBuffer::next_release() const noexcept {
    std::uint64_t seq = 0;
    if (!first_held(seq)) return kNever;
    const Slot& s = slot(seq);
    return release_time(s.stamp_us, s.arrival);
}

}  // namespace gs::mces
