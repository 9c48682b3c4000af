// SendBuffer: one reliable stream's outgoing bytes, by offset. The
// application writes at the tail; the connection takes segments to send
// (retransmissions first, then new data within the peer's flow-control
// limit) and reports each segment acknowledged or lost. Bytes are held until
// acknowledged, in a ring of fixed capacity: write() takes only what fits,
// which is the application's backpressure.
//
// Offsets: acked_offset() <= sent_offset() <= write_offset(); everything
// below acked_offset() is acknowledged and freed. on_acked/on_lost accept any
// range (repeated, overlapping, partly already acked): the same bytes may have
// gone in several packets (PTO probes, spurious loss).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/mces/recovery/interval_set.h"

namespace gs::mces {

struct StreamSegment {
    std::uint64_t offset = 0;
    std::uint32_t length = 0;
    bool fin = false;            // the stream ends at offset + length
    bool retransmission = false;
};

class SendBuffer {
public:
    explicit SendBuffer(std::size_t capacity);

    // Appends up to data.size() bytes; returns how many fit (0 when full or finished).
    std::size_t write(std::span<const std::uint8_t> data);
    // The free space at the tail (up to the ring's wrap: possibly less than
    // free_space()), to fill in place; empty when full or finished. Then
    // commit(n), n <= its size, appends the first n bytes as write() would.
    std::span<std::uint8_t> write_space() noexcept;
    void commit(std::size_t n) noexcept;
    // No more writes: the stream ends at write_offset(). 0, or -EALREADY.
    int finish();

    // Chooses the next segment of at most max_len bytes: lost bytes first,
    // then new bytes below `limit` (the peer's flow-control limit), then a
    // bare fin. Marks it in flight. False when there is nothing to send.
    bool next_segment(std::size_t max_len, std::uint64_t limit, StreamSegment& out);
    // Copies bytes [offset, offset + dst.size()) into dst. 0, or -ERANGE when
    // they are not held (already acked and freed, or never written).
    int copy(std::uint64_t offset, std::span<std::uint8_t> dst) const;

    // The same bytes where they are held, without copying: a and b (b is
    // empty unless the range wraps the ring). Valid until on_acked() frees
    // them. 0, or -ERANGE as copy().
    int view(std::uint64_t offset, std::size_t length, std::span<const std::uint8_t>& a,
             std::span<const std::uint8_t>& b) const noexcept;
    // True when copy(offset, a span of length bytes) would succeed.
    bool holds(std::uint64_t offset, std::uint64_t length) const noexcept {
        return offset >= acked_offset_ && offset <= write_offset_ && length <= write_offset_ - offset;
    }

    // Returns the bytes it acknowledged for the first time (a copy acked
    // twice, original and retransmission, counts once).
    std::uint64_t on_acked(std::uint64_t offset, std::uint32_t length, bool fin);
    // Queues the segment's bytes that are not yet acknowledged for retransmission.
    void on_lost(std::uint64_t offset, std::uint32_t length, bool fin);

    std::uint64_t acked_offset() const noexcept { return acked_offset_; }
    std::uint64_t sent_offset() const noexcept { return sent_offset_; }
    std::uint64_t write_offset() const noexcept { return write_offset_; }
    std::size_t free_space() const noexcept;
    // Written and never sent (retransmissions not counted).
    std::uint64_t unsent() const noexcept { return write_offset_ - sent_offset_; }
    bool finished() const noexcept { return finished_; }
    // Something to send now under `limit` (retransmission, new bytes or fin).
    bool has_pending(std::uint64_t limit) const noexcept;
    // New bytes wait but the flow-control limit stops them.
    bool flow_blocked(std::uint64_t limit) const noexcept {
        return sent_offset_ < write_offset_ && sent_offset_ >= limit;
    }
    // Every byte and the fin acknowledged.
    bool all_acked() const noexcept {
        return finished_ && fin_acked_ && acked_offset_ == write_offset_;
    }
    std::uint64_t retransmit_bytes() const noexcept;

private:
    // Not zeroed: pages the stream never reaches are never committed, and
    // a connection's buffers cost nothing to set up (every byte read was
    // written first).
    std::unique_ptr<std::uint8_t[]> ring_;
    std::size_t cap_;
    std::uint64_t acked_offset_ = 0;
    std::uint64_t base_ = 0;     // the offset at ring position 0 (modulo the capacity)
    std::uint64_t sent_offset_ = 0;
    std::uint64_t write_offset_ = 0;
    IntervalSet acked_;          // acknowledged above acked_offset_
    IntervalSet retx_;           // lost and not yet resent
    bool finished_ = false;
    bool fin_sent_ = false;
    bool fin_lost_ = false;
    bool fin_acked_ = false;
};

}  // namespace gs::mces
