#include "core/mces/recovery/recv_buffer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace gs::mces {

RecvBuffer::RecvBuffer(std::size_t capacity, std::size_t max_gaps, std::size_t max_borrowed)
    : ring_(std::make_unique_for_overwrite<std::uint8_t[]>(std::max<std::size_t>(capacity, 1))),
      cap_(std::max<std::size_t>(capacity, 1)), max_gaps_(std::max<std::size_t>(max_gaps, 1)),
      max_borrowed_(max_borrowed) {
    if (max_borrowed_ > 0) views_ = std::make_unique<std::span<const std::uint8_t>[]>(max_borrowed_);
}

int RecvBuffer::on_segment(std::uint64_t offset, std::span<const std::uint8_t> data, bool fin,
                           std::uint64_t limit) {
    if (offset > kMaxOffset || data.size() > kMaxOffset - offset) return -EINVAL;
    const std::uint64_t end = offset + data.size();
    if (end > limit || end > read_offset_ + cap_) return -EDQUOT;
    if (has_final_ && (end > final_size_ || (fin && end != final_size_))) return -EPROTO;
    if (fin && end < highest_) return -EPROTO;

    const std::uint64_t s = std::max(offset, read_offset_);
    // Borrow what continues the borrowed bytes (or, with none, the read
    // offset) while the ring is empty; anything else that brings new bytes
    // settles first, so the ring alone holds data again and the copying
    // path below needs to know nothing of views.
    const std::uint64_t next = borrowed_n_ > 0 ? bend_ : read_offset_;
    const bool borrow = s < end && s == next && have_.empty() && borrowed_n_ < max_borrowed_;
    if (s < end && !borrow) settle();
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
    if (borrow) {
        views_[(head_ + borrowed_n_) % max_borrowed_] = data.subspan(static_cast<std::size_t>(s - offset));
        ++borrowed_n_;
        ++borrowed_total_;
        bend_ = end;
        dup_bytes_ += s - offset;
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

void RecvBuffer::settle() {
    if (borrowed_n_ == 0) return;
    // The ring is empty (have_ is): start it at the read offset, as consume() does.
    base_ = read_offset_;
    std::uint64_t at = read_offset_;
    for (; borrowed_n_ > 0; --borrowed_n_, head_ = (head_ + 1) % max_borrowed_) {
        const std::span<const std::uint8_t> v = views_[head_];
        // Fits: on_segment refused bytes past read_offset_ + cap_.
        for (std::size_t done = 0; done < v.size();) {
            const std::size_t pos = static_cast<std::size_t>((at - base_) % cap_);
            const std::size_t chunk = std::min(v.size() - done, cap_ - pos);
            std::memcpy(ring_.get() + pos, v.data() + done, chunk);
            done += chunk;
            at += chunk;
        }
        views_[head_] = {};
    }
    head_ = 0;
    settled_bytes_ += at - read_offset_;
    if (at > read_offset_) have_.add(read_offset_, at);
}

std::size_t RecvBuffer::readable() const noexcept {
    if (borrowed_n_ > 0) return static_cast<std::size_t>(bend_ - read_offset_);
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
    if (borrowed_n_ > 0) return views_[head_];
    const std::size_t at = static_cast<std::size_t>((read_offset_ - base_) % cap_);
    return {ring_.get() + at, std::min(readable(), cap_ - at)};
}

void RecvBuffer::consume(std::size_t n) {
    n = std::min(n, readable());
    if (n == 0) return;
    if (borrowed_n_ > 0) {
        // The ring is empty: every readable byte is borrowed.
        read_offset_ += n;
        while (n > 0) {
            std::span<const std::uint8_t>& v = views_[head_];
            const std::size_t k = std::min(n, v.size());
            v = v.subspan(k);
            n -= k;
            if (v.empty()) {
                head_ = (head_ + 1) % max_borrowed_;
                --borrowed_n_;
            }
        }
        if (borrowed_n_ == 0) {
            head_ = 0;
            base_ = read_offset_;
        }
        return;
    }
    have_.remove(read_offset_, read_offset_ + n);
    read_offset_ += n;
    // Empty: the next byte goes to the ring's start, so a reader that keeps
    // up keeps touching the same few cache-warm bytes of a large ring.
    if (have_.empty()) base_ = read_offset_;
}

}  // namespace gs::mces
