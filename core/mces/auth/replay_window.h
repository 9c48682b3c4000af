// A sliding-window replay filter over packet numbers (RFC 6479's bitmap, as
// in IPsec and WireGuard): remembers which of the last kReplayWindow packet
// numbers below the largest one have been seen.
//
//   check(pn)  fresh      pn is above the largest, or within the window and
//                         not seen yet
//              duplicate  within the window and seen
//              too_old    kReplayWindow or more below the largest: can no
//                         longer be told apart from a replay, so dropped
//   mark(pn)   records pn (call it only for a packet that authenticated,
//              after check said fresh), sliding the window forward when pn
//              is the new largest.
//
// Fixed size (17 words), never allocates; sans-IO and deterministic.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace gs::mces::auth {

// Packet numbers from largest - kReplayWindow + 1 to largest are tracked.
constexpr std::uint64_t kReplayWindow = 1024;

enum class ReplayCheck : std::uint8_t { fresh, duplicate, too_old };

class ReplayWindow {
public:
    ReplayCheck check(std::uint64_t pn) const noexcept;
    void mark(std::uint64_t pn) noexcept;
    // The largest packet number marked, or -1 before any (the argument
    // wire::decode_packet_number wants). Packet numbers are below 2^62.
    std::int64_t largest() const noexcept {
        return any_ ? static_cast<std::int64_t>(largest_) : -1;
    }

private:
    // One word more than the window, so that sliding clears whole words
    // without ever clearing a bit that is still inside the window.
    static constexpr std::size_t kWords = kReplayWindow / 64 + 1;

    std::array<std::uint64_t, kWords> bits_{};
    std::uint64_t largest_ = 0;
    bool any_ = false;
};

}  // namespace gs::mces::auth
