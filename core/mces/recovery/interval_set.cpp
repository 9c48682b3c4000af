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
    // Trimming a range keeps its node (the value, or the extracted key, is
    // changed in place): reading the front of a receive buffer or
    // acknowledging the front of a send buffer allocates nothing.
    while (it != r_.end() && it->first < end) {
        const std::uint64_t a = it->first, b = it->second;
        if (a < start) {
            it->second = start;   // [a, start) stays
            if (b > end) {
                r_.emplace_hint(std::next(it), end, b);   // split: the one case that adds a node
                break;
            }
            ++it;
            continue;
        }
        if (b > end) {
            auto node = r_.extract(it);
            node.key() = end;   // [end, b): still between its neighbours
            r_.insert(std::move(node));
            break;
        }
        it = r_.erase(it);
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
