#include "core/mces/recovery/interval_set.h"

#include <algorithm>
#include <iterator>

namespace gs::mces {

std::uint64_t IntervalSet::add(std::uint64_t start, std::uint64_t end) {
    if (start >= end) return 0;
    std::uint64_t added = end - start;
    const std::uint64_t s0 = start, e0 = end;
    auto it = r_.upper_bound(start);
    if (it != r_.begin()) {
        auto p = std::prev(it);
        if (p->second >= start) it = p;
    }
    while (it != r_.end() && it->first <= end) {
        const std::uint64_t os = std::max(it->first, s0), oe = std::min(it->second, e0);
        if (oe > os) added -= oe - os;
        start = std::min(start, it->first);
        end = std::max(end, it->second);
        it = r_.erase(it);
    }
    r_.emplace_hint(it, start, end);
    return added;
}

void IntervalSet::remove(std::uint64_t start, std::uint64_t end) {
    if (start >= end) return;
    auto it = r_.upper_bound(start);
    if (it != r_.begin()) {
        auto p = std::prev(it);
        if (p->second > start) it = p;
    }
    while (it != r_.end() && it->first < end) {
        const std::uint64_t a = it->first, b = it->second;
        it = r_.erase(it);
        if (a < start) r_.emplace(a, start);
        if (b > end) {
            r_.emplace(end, b);
            break;
        }
    }
}

bool IntervalSet::contains(std::uint64_t start, std::uint64_t end) const {
    if (start >= end) return true;
    auto it = r_.upper_bound(start);
    if (it == r_.begin()) return false;
    --it;
    return it->first <= start && it->second >= end;
}

bool IntervalSet::joins(std::uint64_t start, std::uint64_t end) const {
    auto it = r_.upper_bound(end);          // first range starting after end
    if (it == r_.begin()) return false;
    --it;                                   // last range starting at or before end
    return it->second >= start;
}

}  // namespace gs::mces
