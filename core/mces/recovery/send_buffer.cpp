#include "core/mces/recovery/send_buffer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace gs::mces {

SendBuffer::SendBuffer(std::size_t capacity)
    : ring_(std::make_unique_for_overwrite<std::uint8_t[]>(std::max<std::size_t>(capacity, 1))),
      cap_(std::max<std::size_t>(capacity, 1)) {}

std::size_t SendBuffer::free_space() const noexcept {
    return cap_ - static_cast<std::size_t>(write_offset_ - acked_offset_);
}

std::size_t SendBuffer::write(std::span<const std::uint8_t> data) {
    if (finished_) return 0;
    const std::size_t n = std::min(data.size(), free_space());
    const std::size_t cap = cap_;
    std::size_t done = 0;
    while (done < n) {
        const std::size_t pos = static_cast<std::size_t>((write_offset_ + done - base_) % cap);
        const std::size_t chunk = std::min(n - done, cap - pos);
        std::memcpy(ring_.get() + pos, data.data() + done, chunk);
        done += chunk;
    }
    write_offset_ += n;
    return n;
}

std::span<std::uint8_t> SendBuffer::write_space() noexcept {
    if (finished_) return {};
    const std::size_t at = static_cast<std::size_t>((write_offset_ - base_) % cap_);
    return {ring_.get() + at, std::min(free_space(), cap_ - at)};
}

void SendBuffer::commit(std::size_t n) noexcept {
    if (finished_) return;
    const std::size_t at = static_cast<std::size_t>((write_offset_ - base_) % cap_);
    write_offset_ += std::min({n, free_space(), cap_ - at});
}

int SendBuffer::finish() {
    if (finished_) return -EALREADY;
    finished_ = true;
    return 0;
}

int SendBuffer::copy(std::uint64_t offset, std::span<std::uint8_t> dst) const {
    if (offset < acked_offset_ || offset > write_offset_ || dst.size() > write_offset_ - offset)
        return -ERANGE;
    const std::size_t cap = cap_;
    std::size_t done = 0;
    while (done < dst.size()) {
        const std::size_t pos = static_cast<std::size_t>((offset + done - base_) % cap);
        const std::size_t chunk = std::min(dst.size() - done, cap - pos);
        std::memcpy(dst.data() + done, ring_.get() + pos, chunk);
        done += chunk;
    }
    return 0;
}

int SendBuffer::view(std::uint64_t offset, std::size_t length, std::span<const std::uint8_t>& a,
                     std::span<const std::uint8_t>& b) const noexcept {
    if (!holds(offset, length)) return -ERANGE;
    const std::size_t pos = static_cast<std::size_t>((offset - base_) % cap_);
    const std::size_t first = std::min(length, cap_ - pos);
    a = {ring_.get() + pos, first};
    b = {ring_.get(), length - first};
    return 0;
}

bool SendBuffer::has_pending(std::uint64_t limit) const noexcept {
    if (!retx_.empty()) return true;
    if (sent_offset_ < write_offset_ && sent_offset_ < limit) return true;
    return finished_ && sent_offset_ == write_offset_ && !fin_acked_ && (!fin_sent_ || fin_lost_);
}

std::uint64_t SendBuffer::retransmit_bytes() const noexcept {
    std::uint64_t n = 0;
    for (const auto& [s, e] : retx_.ranges()) n += e - s;
    return n;
}

bool SendBuffer::next_segment(std::size_t max_len, std::uint64_t limit, StreamSegment& out) {
    if (max_len == 0 && !(finished_ && (!fin_sent_ || fin_lost_))) return false;
    const bool fin_wanted = finished_ && !fin_acked_;
    if (!retx_.empty()) {
        const auto [s, e] = retx_.front();
        const std::uint64_t len = std::min<std::uint64_t>(e - s, max_len);
        if (len > 0) {
            retx_.remove(s, s + len);
            out = StreamSegment{s, static_cast<std::uint32_t>(len), false, true};
            if (fin_wanted && s + len == write_offset_) {
                out.fin = true;
                fin_sent_ = true;
                fin_lost_ = false;
            }
            return true;
        }
    }
    if (sent_offset_ < write_offset_ && sent_offset_ < limit && max_len > 0) {
        const std::uint64_t len =
            std::min<std::uint64_t>({write_offset_ - sent_offset_, limit - sent_offset_, max_len});
        out = StreamSegment{sent_offset_, static_cast<std::uint32_t>(len), false, false};
        sent_offset_ += len;
        if (fin_wanted && sent_offset_ == write_offset_) {
            out.fin = true;
            fin_sent_ = true;
            fin_lost_ = false;
        }
        return true;
    }
    if (fin_wanted && sent_offset_ == write_offset_ && (!fin_sent_ || fin_lost_)) {
        out = StreamSegment{write_offset_, 0, true, fin_sent_};
        fin_sent_ = true;
        fin_lost_ = false;
        return true;
    }
    return false;
}

std::uint64_t SendBuffer::on_acked(std::uint64_t offset, std::uint32_t length, bool fin) {
    if (fin && finished_ && offset + length == write_offset_) {
        fin_acked_ = true;
        fin_lost_ = false;
    }
    const std::uint64_t s = std::max(offset, acked_offset_);
    const std::uint64_t e = std::min(offset + length, sent_offset_);
    if (s >= e) return 0;
    retx_.remove(s, e);
    std::uint64_t fresh = e - s;
    if (s == acked_offset_ && (acked_.empty() || acked_.front().first > e)) {
        acked_offset_ = e;   // in order, the common case: no interval bookkeeping
    } else {
        fresh = acked_.add(s, e);
        while (!acked_.empty() && acked_.front().first <= acked_offset_) {
            acked_offset_ = std::max(acked_offset_, acked_.front().second);
            acked_.remove(acked_.front().first, acked_.front().second);
        }
    }
    // Empty: the next byte goes to the ring's start (see RecvBuffer::consume).
    if (acked_offset_ == write_offset_) base_ = write_offset_;
    return fresh;
}

void SendBuffer::on_lost(std::uint64_t offset, std::uint32_t length, bool fin) {
    if (fin && finished_ && !fin_acked_ && offset + length == write_offset_) fin_lost_ = true;
    const std::uint64_t s = std::max(offset, acked_offset_);
    const std::uint64_t e = std::min(offset + length, sent_offset_);
    if (s >= e) return;
    retx_.add(s, e);
    // Bytes acknowledged through another copy need no retransmission.
    const auto& acked = acked_.ranges();
    auto it = acked.upper_bound(s);
    if (it != acked.begin()) --it;
    for (; it != acked.end() && it->first < e; ++it) retx_.remove(it->first, it->second);
}

}  // namespace gs::mces
