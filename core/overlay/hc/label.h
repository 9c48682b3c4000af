// Hypercube label arithmetic for the HC overlay (docs/overlay-hc.md).
//
// A member's logical address is a bit-string label. Labels are handed out in
// Gray-code order: the member of rank i (0-based) holds gray(i), so a cube of
// n members holds exactly {gray(0) .. gray(n-1)} ("compact"). Two members are
// neighbours when their labels differ in exactly one bit and both are in the
// cube. Everything here is pure arithmetic on (label, n): every member computes
// the same answers without asking anyone.
#pragma once

#include <bit>
#include <cstdint>
#include <optional>
#include <vector>

namespace gs::overlay::hc {

using Label = std::uint32_t;

// Largest cube dimension the protocol accepts (labels below 2^kMaxDim). Bounds
// every per-bit table and every label read from the wire.
constexpr unsigned kMaxDim = 24;
constexpr std::uint32_t kMaxMembers = 1u << kMaxDim;

constexpr Label gray(std::uint32_t rank) noexcept { return rank ^ (rank >> 1); }

// Inverse of gray(): the prefix XOR of the bits.
constexpr std::uint32_t rank_of(Label label) noexcept {
    std::uint32_t r = label;
    for (unsigned s = 1; s < 32; s <<= 1) r ^= r >> s;
    return r;
}

// Bits needed to hold n labels: 0 for n <= 1.
constexpr unsigned dim_of(std::uint32_t n) noexcept {
    return n <= 1 ? 0u : static_cast<unsigned>(std::bit_width(n - 1));
}

// True when `label` is held in a compact cube of n members.
constexpr bool in_cube(Label label, std::uint32_t n) noexcept {
    return label < kMaxMembers && rank_of(label) < n;
}

constexpr bool adjacent(Label a, Label b) noexcept { return std::popcount(a ^ b) == 1; }

// The neighbour labels of `label` in a cube of n members, lowest bit first.
std::vector<Label> neighbors_of(Label label, std::uint32_t n);

// Parent of `label` in the spanning tree rooted at `root` (both in the cube):
// flip the highest bit in which they differ whose flip stays inside the cube.
// Such a bit always exists for a Gray-code prefix (checked exhaustively by the
// tests), so every step is a cube edge one bit closer to the root: depth is the
// Hamming distance, at most dim_of(n). nullopt at the root or when an argument
// is outside the cube.
std::optional<Label> tree_parent(Label label, Label root, std::uint32_t n);

// The neighbours whose tree_parent toward `root` is `label`.
std::vector<Label> tree_children(Label label, Label root, std::uint32_t n);

}  // namespace gs::overlay::hc
