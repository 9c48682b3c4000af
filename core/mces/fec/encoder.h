// The sending half of the FEC element: fed the source packets of a flow in
// sequence order, it produces REPAIR frame bodies (repair_frame.h).
// Sans-IO: no socket, no clock (the caller passes `now`), deterministic.
//
// Layout. `k` source packets and `r` repair packets make a block; `depth` D
// blocks are interleaved: a *group* is D * k consecutive sequence numbers,
// and the packet at position p of the group (p = seq - first seq of the
// group) is source p / D of block p % D. A burst of B consecutive losses
// then costs each block at most ceil(B / D) packets, so bursts up to D * r
// are repaired, at the price of D times the block's span in latency. D = 1
// is plain block FEC.
//
// Sequence numbers must be consecutive: a packet whose seq is not the one
// after the previous packet's (a gap, a repeat, a jump back) closes the open
// group (its partial blocks get their repair at once, counted in `gaps`)
// and starts a new group at that seq. The caller numbers the packets it
// protects with its own counter.
//
// Repairs go out when the group is complete (or flushed), row by row across
// its blocks (repair 0 of each block, then repair 1...), so a block's repairs
// are D packets apart on the wire like its sources. The first block of a
// group thus waits up to D - 1 packets longer for its repairs than it would
// alone.
//
// Deadline. Realtime data cannot wait for a block to fill: `max_delay` after
// the first packet of a group, the group is flushed (each partial block gets
// its r repairs with k = the packets it has). next_timeout()/on_timeout() are
// the usual sans-IO pair; flush() does it on demand.
//
// Cost: each packet is folded into the r repair symbols of its block as it
// arrives (r multiply-adds over its bytes), so nothing is buffered but the
// repair symbols themselves; memory is D * r symbols of 2 + max_packet bytes
// plus the output queue, all allocated by the constructor: no allocation per
// packet.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/common/sansio.h"
#include "core/mces/fec/repair_frame.h"
#include "core/mces/fec/rs_code.h"

namespace gs::mces::fec {

struct Layout {
    unsigned k = 10;        // source packets per block, 1..kMaxK
    unsigned r = 2;         // repair packets per block, 1..kMaxR
    unsigned depth = 1;     // interleaved blocks, 1..kMaxStride
    friend bool operator==(const Layout&, const Layout&) = default;
};
// 0 or -EINVAL.
int validate(const Layout& l) noexcept;

struct EncoderConfig {
    Layout layout;
    std::size_t max_packet = 1400;                // longest source packet accepted, <= kMaxPacket
    sansio::Time max_delay = sansio::kNever;      // flush a group this long after its first packet
    // Repair bodies the output queue holds before the oldest unpolled one is
    // overwritten (counted in `overrun`); 0 = 2 * depth * r.
    std::size_t max_pending = 0;
};

struct EncoderCounters {
    std::uint64_t sources = 0;          // packets accepted
    std::uint64_t too_long = 0;         // packets refused: longer than max_packet
    std::uint64_t blocks = 0;           // blocks sealed (full or partial)
    std::uint64_t partial_blocks = 0;   // of which flushed with fewer than k packets
    std::uint64_t repairs = 0;          // repair bodies produced
    std::uint64_t repair_bytes = 0;     // their size (overhead = repair_bytes / source bytes)
    std::uint64_t source_bytes = 0;
    std::uint64_t gaps = 0;             // groups closed early by a non-consecutive seq
    std::uint64_t deadline_flushes = 0; // groups closed by max_delay
    std::uint64_t overrun = 0;          // repair bodies overwritten before they were polled
};

class Encoder {
public:
    // An invalid config (validate(), max_packet > kMaxPacket) makes an
    // encoder that refuses everything: valid() is false, add_source -EINVAL.
    explicit Encoder(const EncoderConfig& cfg);

    bool valid() const noexcept { return valid_; }
    const EncoderConfig& config() const noexcept { return cfg_; }
    const EncoderCounters& counters() const noexcept { return counters_; }

    // Protects one source packet (the caller sends it itself). `now` starts
    // the deadline of a new group. Returns 0, -EMSGSIZE (longer than
    // max_packet: not protected, the group goes on), or -EINVAL (invalid
    // encoder). Repair bodies that became ready wait for poll_repair().
    int add_source(std::uint64_t seq, std::span<const std::uint8_t> bytes, sansio::Time now) noexcept;

    // Seals the open group now: each block that has packets gets its repair.
    void flush() noexcept;
    // The open group's deadline; kNever when no group is open or no max_delay.
    sansio::Time next_timeout() const noexcept;
    // Flushes the open group when now >= next_timeout().
    void on_timeout(sansio::Time now) noexcept;

    // Changes the layout (the adaptive rate rule's choice). The open group is
    // flushed first. Returns 0 or -EINVAL (the layout is then unchanged).
    int set_layout(const Layout& l);

    // The next repair body, oldest first, assigned to `out` (its capacity is
    // reused); false when none is waiting.
    bool poll_repair(std::vector<std::uint8_t>& out);
    std::size_t pending() const noexcept { return out_count_; }

private:
    struct Block {
        unsigned count = 0;          // sources folded in
        std::size_t symbol = 0;      // L so far: 2 + longest source
    };

    void reset_buffers();
    void emit(unsigned d, unsigned i) noexcept;
    std::uint8_t* acc(unsigned d, unsigned i) noexcept {
        return acc_.data() + (std::size_t{d} * cfg_.layout.r + i) * (kLengthPrefix + cfg_.max_packet);
    }

    EncoderConfig cfg_;
    bool valid_ = false;
    EncoderCounters counters_;

    bool open_ = false;             // a group is open
    std::uint64_t group_first_ = 0; // seq of position 0 of the open group
    std::uint64_t next_seq_ = 0;    // the seq that continues the open group
    std::uint64_t pos_ = 0;         // packets of the open group so far
    sansio::Time deadline_ = sansio::kNever;

    std::vector<Block> blocks_;     // depth entries
    std::vector<std::uint8_t> acc_; // depth * r repair accumulators of 2 + max_packet bytes

    // Output ring of repair bodies; each slot keeps its capacity.
    std::vector<std::vector<std::uint8_t>> out_;
    std::size_t out_head_ = 0;
    std::size_t out_count_ = 0;
};

}  // namespace gs::mces::fec
