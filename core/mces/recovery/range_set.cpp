#include "core/mces/recovery/range_set.h"

#include <algorithm>
#include <cerrno>

namespace gs::mces {

RangeSet::RangeSet(std::size_t max_ranges) : max_ranges_(std::max<std::size_t>(max_ranges, 1)) {
    ranges_.reserve(max_ranges_ + 1);
}

bool RangeSet::is_duplicate(std::uint64_t pn) const {
    if (pn < floor_) return true;
    for (const auto& r : ranges_) {
        if (pn > r.last) return false;
        if (pn >= r.first) return true;
    }
    return false;
}

int RangeSet::add(std::uint64_t pn) {
    if (pn > kMaxPacketNumber) return -EINVAL;
    if (pn < floor_) return 0;
    // i: the first range (from the top) whose start is <= pn. Arrivals are
    // mostly at the top, so a linear scan from there is short.
    std::size_t i = 0;
    const std::size_t n = ranges_.size();
    while (i < n && ranges_[i].first > pn) ++i;
    if (i < n && pn <= ranges_[i].last) return 0;
    const bool join_below = i < n && ranges_[i].last + 1 == pn;
    const bool join_above = i > 0 && ranges_[i - 1].first == pn + 1;
    if (join_below && join_above) {
        ranges_[i - 1].first = ranges_[i].first;
        ranges_.erase(ranges_.begin() + static_cast<std::ptrdiff_t>(i));
    } else if (join_below) {
        ranges_[i].last = pn;
    } else if (join_above) {
        ranges_[i - 1].first = pn;
    } else {
        ranges_.insert(ranges_.begin() + static_cast<std::ptrdiff_t>(i), PacketRange{pn, pn});
    }
    while (ranges_.size() > max_ranges_) {
        floor_ = ranges_.back().last + 1;
        ranges_.pop_back();
        ++dropped_;
    }
    return 1;
}

void RangeSet::forget_below(std::uint64_t pn) {
    if (pn <= floor_) return;
    floor_ = pn;
    while (!ranges_.empty() && ranges_.back().last < pn) ranges_.pop_back();
    if (!ranges_.empty() && ranges_.back().first < pn) ranges_.back().first = pn;
}

}  // namespace gs::mces
