// The receiving half of the FEC element: fed the source packets that arrived
// (with the sequence numbers the sender's Encoder saw) and the REPAIR bodies,
// in any order, with duplicates, stale and hostile input, it gives back the
// source packets it recovers, as soon as a block has any k of its k + r
// symbols. Sans-IO and deterministic; no clock is needed (a realtime caller
// drops what comes back too late itself).
//
// Memory is bounded by the config and allocated only as it is first used
// (a slot's buffer keeps its capacity, so a steady flow allocates nothing):
//   source_window slots of up to 2 + max_packet bytes (the recent sources,
//       by seq modulo the window: a block is decoded from them), plus
//   repair_slots buffers of up to 2 + max_packet bytes (repair symbols of
//       blocks still missing sources), plus
//   max_blocks small block records and a recovered-seq queue of
//       source_window entries.
// memory_bound() is that sum; memory_in_use() what is allocated now.
//
// Window. The highest seq seen (the horizon) moves with the sources, and with
// a repair's last seq by at most source_window at a time (a forged far-future
// block id cannot move it further). A block whose first seq falls
// source_window below the horizon expires: its sources may be overwritten,
// its missing packets are counted `unrecoverable`. A block wider than the
// window ((k - 1) * stride >= source_window) cannot be decoded and is dropped
// (`too_wide`): a receiver needs a window above the sender's k * depth.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/mces/fec/repair_frame.h"
#include "core/mces/fec/rs_code.h"

namespace gs::mces::fec {

struct DecoderConfig {
    std::size_t max_packet = 1400;      // longest source packet, <= kMaxPacket
    std::size_t source_window = 1024;   // sequence numbers kept, 1..2^20
    std::size_t max_blocks = 64;        // blocks waiting for symbols, 1..4096
    std::size_t repair_slots = 256;     // repair symbols kept, 1..65535
};

struct DecoderCounters {
    std::uint64_t sources = 0;            // source packets stored
    std::uint64_t source_duplicates = 0;  // already held (received or recovered)
    std::uint64_t source_stale = 0;       // below the window: not stored
    std::uint64_t source_too_long = 0;    // longer than max_packet: not stored
    std::uint64_t repairs = 0;            // repair symbols stored
    std::uint64_t repair_duplicates = 0;  // the same (block, index) again
    std::uint64_t repair_unneeded = 0;    // the block had all its sources
    std::uint64_t repair_stale = 0;       // block below the window, or too far ahead of it
    std::uint64_t malformed = 0;          // parse_repair failed (see last_parse_error)
    std::uint64_t too_long = 0;           // L > 2 + max_packet
    std::uint64_t too_wide = 0;           // (k - 1) * stride >= source_window
    std::uint64_t inconsistent = 0;       // same block id and stride, other k, r or L
    std::uint64_t no_slot = 0;            // no repair buffer could be freed for it
    std::uint64_t repaired = 0;           // source packets recovered
    std::uint64_t unrecoverable = 0;      // missing sources of blocks given up
    std::uint64_t blocks_decoded = 0;
    std::uint64_t blocks_expired = 0;     // left the window with sources missing
    std::uint64_t blocks_evicted = 0;     // pushed out by newer blocks (max_blocks, repair_slots)
    std::uint64_t decode_failed = 0;      // a recovered symbol with a bad length or padding (forged repair)
};

enum class SourceResult : std::uint8_t {
    stored,       // new: kept for decoding
    duplicate,    // already held: received before, or recovered (the caller delivered it then)
    stale,        // below the window (the caller decides whether it is still useful)
    too_long,     // longer than max_packet
};

// A recovered source packet. `bytes` points into the decoder and stays valid
// until the next on_source()/on_repair() call.
struct Recovered {
    std::uint64_t seq = 0;
    std::span<const std::uint8_t> bytes;
};

class Decoder {
public:
    // An invalid config makes a decoder that stores nothing (valid() false).
    explicit Decoder(const DecoderConfig& cfg);

    bool valid() const noexcept { return valid_; }
    const DecoderConfig& config() const noexcept { return cfg_; }
    const DecoderCounters& counters() const noexcept { return counters_; }
    ParseError last_parse_error() const noexcept { return last_error_; }

    // A source packet arrived. May complete a block (poll_recovered()).
    SourceResult on_source(std::uint64_t seq, std::span<const std::uint8_t> bytes);
    // A REPAIR body arrived. Returns 0, or -EBADMSG when it does not parse
    // (counted), or -ENOSPC when it was dropped for want of room (counted).
    // Stale, duplicate and unneeded repairs return 0.
    int on_repair(std::span<const std::uint8_t> body);

    // The next recovered packet, in the order recovered; false when none.
    bool poll_recovered(Recovered& out) noexcept;

    // Whether `seq` is held (received or recovered) in the window.
    bool has(std::uint64_t seq) const noexcept;
    std::size_t active_blocks() const noexcept { return active_; }
    std::size_t memory_bound() const noexcept;
    std::size_t memory_in_use() const noexcept;

private:
    struct Slot {
        std::uint64_t seq = 0;
        bool present = false;
        std::uint32_t len = 0;
        std::vector<std::uint8_t> data;   // capacity <= 2 + max_packet
    };
    struct Block {
        bool active = false;
        std::uint64_t id = 0;
        std::uint8_t stride = 1, k = 0, r = 0;
        std::uint32_t symbol = 0;
        unsigned have = 0;                // sources held (a hint; recounted before decoding)
        std::uint64_t mask = 0;           // repair indices held
        std::uint16_t slot[kMaxR];        // repair buffer of each index held
        std::uint64_t last() const noexcept { return id + std::uint64_t{k - 1u} * stride; }
        bool contains(std::uint64_t s) const noexcept {
            return s >= id && s <= last() && (s - id) % stride == 0;
        }
    };

    Slot& slot_of(std::uint64_t seq) noexcept { return store_[seq % store_.size()]; }
    const Slot* find(std::uint64_t seq) const noexcept;
    void advance_horizon(std::uint64_t seq);
    void release(Block& b) noexcept;
    void give_up(Block& b, std::uint64_t& counter) noexcept;
    Block* new_block();
    int take_repair_slot(const Block* keep);
    void try_decode(Block& b);
    void push_recovered(std::uint64_t seq) noexcept;

    DecoderConfig cfg_;
    bool valid_ = false;
    DecoderCounters counters_;
    ParseError last_error_ = ParseError::ok;

    bool seen_ = false;
    std::uint64_t horizon_ = 0;
    std::vector<Slot> store_;
    std::vector<Block> blocks_;
    std::size_t active_ = 0;
    std::vector<std::vector<std::uint8_t>> repair_;
    std::vector<std::uint16_t> free_repair_;
    std::vector<std::uint64_t> recovered_;   // ring of seqs
    std::size_t rec_head_ = 0, rec_count_ = 0;
};

}  // namespace gs::mces::fec
