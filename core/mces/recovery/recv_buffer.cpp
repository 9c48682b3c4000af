#include "core/mces/recovery/recv_buffer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace gs::mces {

RecvBuffer::RecvBuffer(std::size_t capacity, std::size_t max_gaps)
    : ring_(std::make_unique_for_overwrite<std::uint8_t[]>(std::max<std::size_t>(capacity, 1))),
      cap_(std::max<std::size_t>(capacity, 1)), max_gaps_(std::max<std::size_t>(max_gaps, 1)) {}

int RecvBuffer::on_segment(std::uint64_t offset, std::span<const std::uint8_t> data, bool fin,
                           std::uint64_t limit) {
    if (offset > kMaxOffset || data.size() > kMaxOffset - offset) return -EINVAL;
    const std::uint64_t end = offset + data.size();
    if (end > limit || end > read_offset_ + cap_) return -EDQUOT;
    if (has_final_ && (end > final_size_ || (fin && end != final_size_))) return -EPROTO;
    if (fin && end < highest_) return -EPROTO;

    const std::uint64_t s = std::max(offset, read_offset_);
    if (s < end && have_.size() >= max_gaps_ && !have_.joins(s, end) && s != read_offset_) {
        ++dropped_;
        return -ENOBUFS;
    }
    if (fin) {
        has_final_ = true;
        final_size_ = end;
    }
    highest_ = std::max(highest_, end);
    if (s >= end) {
        dup_bytes_ += data.size();
        return 0;
    }
    // Copy only the bytes not already held: the first copy wins.
    const std::size_t cap = cap_;
    std::uint64_t pos = s;
    auto copy_in = [&](std::uint64_t a, std::uint64_t b) {
        while (a < b) {
            const std::size_t at = static_cast<std::size_t>((a - base_) % cap);
            const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(b - a, cap - at));
            std::memcpy(ring_.get() + at, data.data() + (a - offset), chunk);
            a += chunk;
        }
    };
    const auto& held = have_.ranges();
    auto it = held.upper_bound(s);
    if (it != held.begin()) --it;
    for (; it != held.end() && it->first < end && pos < end; ++it) {
        if (it->second <= pos) continue;
        if (it->first > pos) copy_in(pos, std::min(it->first, end));
        pos = std::max(pos, it->second);
    }
    if (pos < end) copy_in(pos, end);
    const std::uint64_t added = have_.add(s, end);
    dup_bytes_ += data.size() - added;
    return 0;
}

std::size_t RecvBuffer::readable() const noexcept {
    if (have_.empty()) return 0;
    const auto [s, e] = have_.front();
    return s <= read_offset_ ? static_cast<std::size_t>(e - read_offset_) : 0;
}

std::size_t RecvBuffer::read(std::span<std::uint8_t> dst) {
    std::size_t done = 0;
    while (done < dst.size()) {
        const std::span<const std::uint8_t> p = peek();
        if (p.empty()) break;
        const std::size_t n = std::min(dst.size() - done, p.size());
        std::memcpy(dst.data() + done, p.data(), n);
        consume(n);
        done += n;
    }
    return done;
}

std::span<const std::uint8_t> RecvBuffer::peek() const noexcept {
    const std::size_t at = static_cast<std::size_t>((read_offset_ - base_) % cap_);
    return {ring_.get() + at, std::min(readable(), cap_ - at)};
}

void RecvBuffer::consume(std::size_t n) {
    n = std::min(n, readable());
    if (n == 0) return;
    have_.remove(read_offset_, read_offset_ + n);
    read_offset_ += n;
    // Empty: the next byte goes to the ring's start, so a reader that keeps
    // up keeps touching the same few cache-warm bytes of a large ring.
    if (have_.empty()) base_ = read_offset_;
}

}  // namespace gs::mces
