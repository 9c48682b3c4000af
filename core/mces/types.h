// Types the MCES elements share (core/mces/*). Each element lives in its own
// directory and library; this header is the little they agree on.
#pragma once

#include <cstdint>

namespace gs::mces {

// An inclusive range of packet numbers, [first, last]: what an ACK frame
// carries and what the receiver's range set produces.
struct PacketRange {
    std::uint64_t first = 0;
    std::uint64_t last = 0;
    friend bool operator==(const PacketRange&, const PacketRange&) = default;
};

}  // namespace gs::mces
