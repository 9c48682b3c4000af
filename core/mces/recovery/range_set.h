// RangeSet: the packet numbers a receiver has seen, as the ranges an ACK
// frame carries (gs::mces::PacketRange, largest first), plus duplicate
// detection.
//
// Memory is bounded: at most max_ranges ranges are kept. When a new gap would
// exceed that, the oldest (lowest) range is dropped and every packet number at
// or below it is from then on treated as a duplicate: a very late original is
// dropped, which is safe because the sender retransmits data under new packet
// numbers once its loss detection gives up on the old one (RFC 9000 13.2.3
// lets a receiver bound its ACK ranges the same way).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/mces/types.h"

namespace gs::mces {

class RangeSet {
public:
    static constexpr std::size_t kDefaultMaxRanges = 32;
    // Packet numbers are 62-bit on the wire (as in QUIC); larger ones are refused.
    static constexpr std::uint64_t kMaxPacketNumber = (std::uint64_t{1} << 62) - 1;

    explicit RangeSet(std::size_t max_ranges = kDefaultMaxRanges);

    // Records a received packet number. Returns 1 when it is new, 0 when it
    // is a duplicate (held, or at/below the forgotten floor), -EINVAL when it
    // exceeds kMaxPacketNumber.
    int add(std::uint64_t pn);
    // True when pn would be reported a duplicate by add().
    bool is_duplicate(std::uint64_t pn) const;

    // The ranges, largest first and disjoint (never touching): what goes into an ACK.
    std::span<const PacketRange> ranges() const noexcept { return ranges_; }
    bool empty() const noexcept { return ranges_.empty(); }
    // Largest packet number held; only when !empty().
    std::uint64_t largest() const noexcept { return ranges_.front().last; }

    // Forgets everything below pn (e.g. once the peer has acknowledged an ACK
    // that covered them); those packet numbers become duplicates.
    void forget_below(std::uint64_t pn);
    // Packet numbers below floor() are treated as already seen.
    std::uint64_t floor() const noexcept { return floor_; }
    // Ranges dropped because of the bound (a counter for diagnostics).
    std::uint64_t dropped_ranges() const noexcept { return dropped_; }

private:
    std::vector<PacketRange> ranges_;   // descending, disjoint, non-adjacent
    std::size_t max_ranges_;
    std::uint64_t floor_ = 0;
    std::uint64_t dropped_ = 0;
};

}  // namespace gs::mces
