// The adaptive rate rule of the FEC element: how many repair packets r a
// block of k needs so that the loss left after FEC stays below a target,
// given the loss the receiver measures. Pure functions of their arguments.
//
// Loss model (Gilbert): runs of losses start at a packet with probability
// q = loss / mean_burst and last L packets, L geometric with mean
// `mean_burst` (P(L > m) = c^m, c = 1 - 1 / mean_burst). mean_burst = 1 is
// independent loss. A block interleaved at depth D holds every D-th packet;
// a run starting o packets (0 <= o < D) before one of the block's packets
// erases ceil((L - o) / D) of them from there on. Summing those over the
// block's n = k + r packets (capped at n) gives the block's erasure count S
// exactly up to edge effects and overlapping runs (both make the model a
// little pessimistic). An MDS code loses nothing when S <= r, and otherwise,
// erasures falling alike on sources and repairs, a fraction S / n of the
// sources. residual_loss is E[S / n ; S > r].
//
// Cost: O(D n^2 + n^3) arithmetic per call (n = k + r), well under a
// millisecond for the usual blocks (n <= 50); a rate decision is made
// rarely (once per loss report), not per packet.
#pragma once

namespace gs::mces::fec {

struct LossModel {
    double loss = 0;          // fraction of packets lost, 0..1
    double mean_burst = 1;    // mean length of a run of losses, >= 1
};

// The expected fraction of source packets still missing after FEC with
// blocks of k sources and r repairs, interleaved at `depth`. r = 0 gives
// the loss itself. Arguments are clamped: k in [1, 128], r <= 64, depth in
// [1, 64], loss in [0, 1], mean_burst in [1, 1e6]; NaN counts as 0 (loss)
// or 1 (mean_burst).
double residual_loss(unsigned k, unsigned r, unsigned depth, const LossModel& m) noexcept;

// The smallest r in [0, max_r] whose residual_loss is at most `target`;
// max_r when none is. Monotone: more loss never gives a smaller r.
unsigned choose_repair(unsigned k, unsigned depth, const LossModel& m, double target, unsigned max_r) noexcept;

// The interleaving depth that splits most runs of losses (nine in ten) over
// distinct blocks: the smallest D with P(L > D) <= 0.1, within
// [1, max_depth]. 1 for independent loss.
unsigned choose_depth(const LossModel& m, unsigned max_depth) noexcept;

}  // namespace gs::mces::fec
