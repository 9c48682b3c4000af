// A set of half-open ranges [start, end) of stream offsets, merged on insert.
// The send buffer keeps acked and to-retransmit bytes in it, the receive
// buffer the bytes that arrived. Memory is one map node per disjoint range;
// the owners bound the count (RecvBuffer refuses segments that would open a
// new gap past its limit).
#pragma once

#include <cstdint>
#include <map>

namespace gs::mces {

class IntervalSet {
public:
    using Map = std::map<std::uint64_t, std::uint64_t>;   // start -> end

    // Adds [start, end), merging with ranges it overlaps or touches.
    // Returns the number of bytes that were not in the set before.
    std::uint64_t add(std::uint64_t start, std::uint64_t end);
    // Removes [start, end); ranges partly inside are trimmed or split.
    void remove(std::uint64_t start, std::uint64_t end);
    // True when every byte of [start, end) is in the set (empty range: true).
    bool contains(std::uint64_t start, std::uint64_t end) const;
    // True when [start, end) overlaps or touches a range already held, i.e.
    // adding it would not increase size().
    bool joins(std::uint64_t start, std::uint64_t end) const;

    bool empty() const noexcept { return r_.empty(); }
    std::size_t size() const noexcept { return r_.size(); }
    // The lowest range; only when !empty().
    std::pair<std::uint64_t, std::uint64_t> front() const { return *r_.begin(); }
    const Map& ranges() const noexcept { return r_; }
    void clear() noexcept { r_.clear(); }

private:
    Map r_;
};

}  // namespace gs::mces
