// The REPAIR frame body of the FEC element: one repair symbol of one block.
// (The frame type byte and the frame's length belong to whoever carries the
// body, the connection; this is what follows them.)
//
// Every source packet of a block is first extended to a source *symbol*:
// its length as 2 bytes big-endian, its bytes, then zeros up to L, the
// block's symbol length (2 + the longest source packet of the block). A
// repair symbol is a combination of those symbols (rs_code.h), so a
// recovered symbol gives back the packet's exact length as well as its bytes:
// the lengths are protected by the same code as the data, at 2 bytes per
// packet instead of a list of k lengths in every repair frame.
//
// Byte by byte (big-endian):
//
//   offset  size  field
//   0       1     scheme: 0x01 = systematic Reed-Solomon over GF(2^8),
//                 normalised Cauchy matrix, length-prefixed symbols (this
//                 page). Others are `unknown_scheme`.
//   1       8     block id: the sequence number of the block's first source
//                 packet. With the stride it names every source of the block.
//   9       1     stride: sequence distance between consecutive sources of
//                 the block, 1..kMaxStride (1: consecutive; D: interleaved
//                 depth D, the block holds every D-th packet)
//   10      1     k: source packets in the block, 1..kMaxK (128). A block
//                 flushed at its deadline has fewer than the layout's k.
//   11      1     r: repair packets of the block, 1..kMaxR (64)
//   12      1     index: this repair symbol's row, 0..r-1 (row 0 is the XOR
//                 of the source symbols)
//   13      2     L: the symbol length, 2..65535 (2 + the longest source
//                 packet of the block; 2 when all of them are empty).
//                 Less than 2 is `bad_length`; a receiver also drops a
//                 symbol longer than 2 + its largest packet (`too_long`).
//   15      L     the repair symbol
//
// The body is exactly 15 + L bytes. Source j of the block (0 <= j < k) is
// the packet with sequence number  block_id + j * stride ; that sum must not
// pass 2^64 - 1 (`bad_range`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/mces/fec/rs_code.h"

namespace gs::mces::fec {

constexpr std::uint8_t kSchemeRsCauchy = 0x01;
constexpr std::size_t kRepairHeaderSize = 15;
constexpr unsigned kMaxStride = 64;             // interleaving depth
constexpr std::size_t kLengthPrefix = 2;
constexpr std::size_t kMinSymbol = kLengthPrefix;          // a block of empty packets
constexpr std::size_t kMaxSymbol = 65535;
constexpr std::size_t kMaxPacket = kMaxSymbol - kLengthPrefix;   // 65533

enum class ParseError : std::uint8_t {
    ok = 0,
    truncated,        // shorter than the header, or than 15 + L
    unknown_scheme,
    bad_stride,       // 0 or > kMaxStride
    bad_k,            // 0 or > kMaxK
    bad_r,            // 0 or > kMaxR
    bad_index,        // >= r
    bad_length,       // L < kMinSymbol
    trailing,         // bytes after the symbol
    bad_range,        // block_id + (k - 1) * stride overflows
};
const char* to_string(ParseError e) noexcept;

// A parsed REPAIR body; `symbol` points into the parsed bytes.
struct RepairView {
    std::uint64_t block_id = 0;
    std::uint8_t stride = 1;
    std::uint8_t k = 0;
    std::uint8_t r = 0;
    std::uint8_t index = 0;
    std::span<const std::uint8_t> symbol;   // L bytes

    // The sequence number of the block's last source.
    std::uint64_t last_seq() const noexcept { return block_id + std::uint64_t{k - 1u} * stride; }
};

// Checks every field of `body` (untrusted) and fills `out`. Allocates
// nothing; `out` is left unspecified on error.
ParseError parse_repair(std::span<const std::uint8_t> body, RepairView& out) noexcept;

// Writes the 15-byte header for a repair symbol of length `symbol_length`
// into out[0..15). Returns 0, or -EINVAL when a field is out of range (the
// same checks as the parser), or -EMSGSIZE when `out` is shorter than 15.
int write_repair_header(std::span<std::uint8_t> out, std::uint64_t block_id, unsigned stride, unsigned k,
                        unsigned r, unsigned index, std::size_t symbol_length) noexcept;

}  // namespace gs::mces::fec
