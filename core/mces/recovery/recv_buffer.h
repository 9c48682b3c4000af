// RecvBuffer: reassembly of one reliable stream. Segments arrive by offset,
// in any order, overlapping or repeated; contiguous bytes are delivered to
// the application in order, each exactly once.
//
// Memory: a ring of fixed capacity. A segment reaching past the
// flow-control limit (or past read_offset() + capacity) is a protocol error
// and is not stored; so is one contradicting the final size. To bound the
// bookkeeping, at most max_gaps disjoint ranges are held: a segment that would
// open another is dropped (counted), the sender retransmits it later.
// Overlapping bytes are assumed equal (the first copy wins).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/mces/recovery/interval_set.h"

namespace gs::mces {

class RecvBuffer {
public:
    static constexpr std::uint64_t kMaxOffset = (std::uint64_t{1} << 62) - 1;

    RecvBuffer(std::size_t capacity, std::size_t max_gaps = 1024);

    // Takes a segment. `limit` is the flow-control limit advertised to the
    // peer (FlowReceiver::limit()). Returns
    //   0        accepted (possibly all duplicate),
    //   -EDQUOT  beyond the limit or the buffer: flow-control violation,
    //   -EPROTO  contradicts the final size (fin),
    //   -EINVAL  offset out of range,
    //   -ENOBUFS too fragmented: dropped, not an error.
    // Nothing is stored on an error.
    int on_segment(std::uint64_t offset, std::span<const std::uint8_t> data, bool fin,
                   std::uint64_t limit);

    // Copies up to dst.size() in-order bytes; returns how many.
    std::size_t read(std::span<std::uint8_t> dst);
    // The next in-order bytes where they are held (up to the ring's wrap:
    // possibly fewer than readable()), without copying; valid until the
    // next call that changes the buffer. Then consume(n), n <= that size,
    // releases them as read() would have.
    std::span<const std::uint8_t> peek() const noexcept;
    void consume(std::size_t n);
    std::size_t readable() const noexcept;
    std::uint64_t read_offset() const noexcept { return read_offset_; }
    // Highest offset + 1 received.
    std::uint64_t highest() const noexcept { return highest_; }
    bool fin_received() const noexcept { return has_final_; }
    // Every byte up to the final size has been read.
    bool finished() const noexcept { return has_final_ && read_offset_ == final_size_; }

    std::uint64_t duplicate_bytes() const noexcept { return dup_bytes_; }
    std::uint64_t dropped_segments() const noexcept { return dropped_; }

private:
    // Not zeroed: pages the stream never reaches are never committed, and
    // a connection's buffers cost nothing to set up (every byte read was
    // written first).
    std::unique_ptr<std::uint8_t[]> ring_;
    std::size_t cap_;
    std::size_t max_gaps_;
    IntervalSet have_;                   // received, not yet read
    std::uint64_t read_offset_ = 0;
    std::uint64_t base_ = 0;             // the offset at ring position 0 (modulo the capacity)
    std::uint64_t highest_ = 0;
    bool has_final_ = false;
    std::uint64_t final_size_ = 0;
    std::uint64_t dup_bytes_ = 0;
    std::uint64_t dropped_ = 0;
};

}  // namespace gs::mces
