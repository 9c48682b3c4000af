// The origin header of a legacy multicast datagram carried over an overlay
// (docs/overlay.md "Legacy multicast"): in front of the program's payload
// in every overlay message a group member sends, it says which address the
// receivers' recvfrom must show (the sender's node IP and its socket's own
// port), so that a unicast reply to it reaches the sender's socket.
//
//     offset  size  field
//     0       2     magic 0x67 0x6d ("gm")
//     2       1     version = 1
//     3       1     flags = 0 (others: dropped, for a later version to use)
//     4       16    IP: IPv6, or IPv4-mapped (::ffff:a.b.c.d)
//     20      2     UDP port, big-endian, not 0
//
// The bytes come from other members: decode_origin() accepts nothing else
// (short, another magic, version or flag, port 0) and never reads past `len`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/common/sansio.h"

namespace gs::engine {

constexpr std::size_t kOriginLen = 22;
constexpr std::uint8_t kOriginVersion = 1;

inline void encode_origin(const sansio::Addr& a, std::uint8_t out[kOriginLen]) noexcept {
    out[0] = 0x67;
    out[1] = 0x6d;
    out[2] = kOriginVersion;
    out[3] = 0;
    std::memcpy(out + 4, a.ip.data(), 16);
    out[20] = static_cast<std::uint8_t>(a.port >> 8);
    out[21] = static_cast<std::uint8_t>(a.port);
}

// true and *out set for a well-formed header in the first kOriginLen of the
// `len` bytes at `p`; false for anything else.
inline bool decode_origin(const std::uint8_t* p, std::size_t len, sansio::Addr* out) noexcept {
    if (p == nullptr || len < kOriginLen || p[0] != 0x67 || p[1] != 0x6d || p[2] != kOriginVersion || p[3] != 0)
        return false;
    sansio::Addr a;
    std::memcpy(a.ip.data(), p + 4, 16);
    a.port = static_cast<std::uint16_t>((p[20] << 8) | p[21]);
    if (a.port == 0) return false;
    *out = a;
    return true;
}

}  // namespace gs::engine
