// The systematic Reed-Solomon erasure code of the FEC element, over GF(2^8).
//
// A block is k source symbols s_0..s_{k-1} sent as they are (systematic) and
// r repair symbols p_0..p_{r-1}, p_i = sum_j C[i][j] * s_j. C is a Cauchy
// matrix, C[i][j] = 1 / (x_i + y_j) with y_j = j and x_i = 255 - i: the x
// and y sets are disjoint for j < kMaxK = 128 and i < kMaxR = 64, so every
// entry is defined. Every square submatrix of a Cauchy matrix is
// non-singular; hence for any e <= r erased sources, the e x e system formed
// by the erased columns and any e received repair rows is solvable: the code
// is MDS, any k of the k + r symbols give the block back.
//
// Why Cauchy and not Vandermonde: a systematic Vandermonde generator needs
// the whole k x (k + r) matrix reduced to systematic form per (k, r), and k
// changes when a block is flushed early at a deadline; Cauchy rows do not
// depend on k or r at all (x_i and y_j are fixed), so a partial block of any
// k uses the same coefficients, and the encoder can fold each source into
// the repairs as it arrives, before it knows the final k.
//
// Each column j is scaled by 1 / C[0][j] (scaling a column by a non-zero
// factor keeps every square submatrix non-singular), so row 0 is all ones:
// repair 0 is the plain XOR parity, the cheap and common case (r = 1).
#pragma once

#include <cstddef>
#include <cstdint>

namespace gs::mces::fec {

constexpr unsigned kMaxK = 128;   // source symbols in a block
constexpr unsigned kMaxR = 64;    // repair symbols in a block (fits a 64-bit mask)

// C[i][j]: the coefficient of source j in repair i (i < kMaxR, j < kMaxK;
// out of range gives 0). Never 0 in range.
std::uint8_t coefficient(unsigned i, unsigned j) noexcept;

// Inverts the m x m matrix `a` (row-major, m*m bytes; destroyed) into `out`
// (m*m bytes). m <= kMaxR. Returns 0, or -EINVAL when `a` is singular (never
// for a submatrix of C) or m is out of range.
int invert(std::uint8_t* a, unsigned m, std::uint8_t* out) noexcept;

}  // namespace gs::mces::fec
