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
//
// Borrowing (max_borrowed > 0): a segment that continues the stream exactly
// where the held bytes end, while nothing else is held in the ring, is not
// copied: the buffer keeps a view of the caller's bytes instead (up to
// max_borrowed views; beyond that it copies). Reads see borrowed bytes as
// if they were in the ring. Any segment that would store bytes elsewhere (a
// gap, reordering, a retransmission) first settles: the borrowed bytes left
// are copied into the ring at their offsets. This saves the copy of each
// datagram's payload on the common in-order path, where the reader takes
// the bytes before the datagram's buffer is reused.
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

    // max_borrowed: how many segments may be borrowed (0: every byte is
    // copied, and settle() is never needed).
    RecvBuffer(std::size_t capacity, std::size_t max_gaps = 1024, std::size_t max_borrowed = 0);

    // Takes a segment. `limit` is the flow-control limit advertised to the
    // peer (FlowReceiver::limit()). Returns
    //   0        accepted (possibly all duplicate),
    //   -EDQUOT  beyond the limit or the buffer: flow-control violation,
    //   -EPROTO  contradicts the final size (fin),
    //   -EINVAL  offset out of range,
    //   -ENOBUFS too fragmented: dropped, not an error.
    // Nothing is stored on an error. With borrowing on, `data` may be kept
    // as a view: it must stay valid and unchanged until the next settle().
    int on_segment(std::uint64_t offset, std::span<const std::uint8_t> data, bool fin,
                   std::uint64_t limit);

    // Copies up to dst.size() in-order bytes; returns how many.
    std::size_t read(std::span<std::uint8_t> dst);
    // The next in-order bytes where they are held (up to the ring's wrap, or
    // one borrowed segment: possibly fewer than readable()), without
    // copying; valid until the next call that changes the buffer (settle()
    // included). Then consume(n), n <= that size, releases them as read()
    // would have.
    std::span<const std::uint8_t> peek() const noexcept;
    void consume(std::size_t n);
    std::size_t readable() const noexcept;
    // Copies the borrowed bytes not yet read into the ring: after it, no
    // byte given to on_segment is referred to any more. Cheap when nothing
    // is borrowed. Call it before the bytes given to on_segment are reused.
    void settle();
    // Bytes held as views of the caller's segments (not yet read).
    std::size_t borrowed() const noexcept {
        return borrowed_n_ > 0 ? static_cast<std::size_t>(bend_ - read_offset_) : 0;
    }
    std::uint64_t read_offset() const noexcept { return read_offset_; }
    // Highest offset + 1 received.
    std::uint64_t highest() const noexcept { return highest_; }
    bool fin_received() const noexcept { return has_final_; }
    // Every byte up to the final size has been read.
    bool finished() const noexcept { return has_final_ && read_offset_ == final_size_; }

    std::uint64_t duplicate_bytes() const noexcept { return dup_bytes_; }
    std::uint64_t dropped_segments() const noexcept { return dropped_; }
    // Segments borrowed, and borrowed bytes settle() had to copy.
    std::uint64_t borrowed_segments() const noexcept { return borrowed_total_; }
    std::uint64_t settled_bytes() const noexcept { return settled_bytes_; }

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
    // Borrowed views, a ring of max_borrowed_ (head first). While any is
    // held the ring holds nothing (have_ is empty) and they cover
    // [read_offset_, bend_) in order: the first is cut as it is read.
    std::unique_ptr<std::span<const std::uint8_t>[]> views_;
    std::size_t max_borrowed_ = 0;
    std::size_t head_ = 0;
    std::size_t borrowed_n_ = 0;
    std::uint64_t bend_ = 0;
    std::uint64_t borrowed_total_ = 0;
    std::uint64_t settled_bytes_ = 0;
};

}  // namespace gs::mces
