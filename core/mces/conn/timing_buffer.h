// The receive side of the `deadline` element (class realtime): a timing
// buffer in SRT's TSBPD manner. Each message carries its send time on the
// sender's clock; the buffer releases it at send time + latency, mapped to
// this side's clock, in sequence order, and skips a message that is not
// there by the release time of a later one (no head-of-line blocking past a
// deadline). docs/mces.md, "Realtime class (class 3)".
//
// The clock mapping. Let c be this clock minus the sender's (message time
// stamps and TIMESTAMP frames are microseconds since the sender's
// connection started; c absorbs that origin). The buffer keeps two bounds:
//   - c_high = min over messages of (arrival - stamp): a message cannot
//     arrive before it was sent, so c <= c_high;
//   - c_low, from the connection: a packet the sender built at sender time
//     T acknowledged our packet L (sent at t_L on our clock) that it had
//     received ack_delay earlier, so c >= t_L - (T - ack_delay)
//     (clock_sample()). Both directions' delays are inside the gap;
//   - from the first packet on, one more lower bound from the handshake:
//     every short packet the sender builds comes after its side was
//     established, which came after this side's connection was created (a
//     server creates it when it sends ACCEPT; a client before its first
//     INITIAL), so c >= (our creation time) - T for the time T of a
//     TIMESTAMP frame (epoch_sample(); a realtime sender adds one to every
//     packet until our first ACK reaches it, so the first messages come
//     with one). About as tight as the ACK's; later ACKs tighten it.
//     (Message stamps cannot serve: a message held while the handshake
//     ran is stamped with the time the program sent it, before that.)
// A message stamped s is released at s + c_low + latency, which is never
// later than its true deadline s + c + latency, whatever the paths'
// asymmetry: the buffer gives up up to one reverse one-way delay of the
// latency budget for that guarantee. A message that arrives after that time
// is dropped, never delivered.
//
// Before the first ACK sample (about one round trip after the first
// message) only the handshake's bound is known, and it is loose by however
// long the handshake took beyond one round trip (a lost ACCEPT: hundreds of
// milliseconds), so it cannot tell a late message from an early release: a
// message is then released at max(its release time, its arrival +
// latency / 8: time for the messages reordered around it), never dropped
// as late. The guarantee is therefore strict from the first ACK sample on,
// and before it holds for messages whose transit is below 7/8 of the
// latency.
//
// Untrusted input: sequence numbers beyond the window, duplicates, and
// messages past the byte bound are refused and counted; a clock sample
// above c_high (a lying TIMESTAMP) is cut to c_high. Memory: `window`
// slots whose buffers are allocated on first use and reused, holding at
// most max_bytes of messages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/common/sansio.h"

namespace gs::mces {

struct TimingBufferConfig {
    sansio::Time latency = 120 * sansio::kMillisecond;
    std::size_t window = 1024;           // sequence numbers held ahead of the next to deliver
    std::size_t max_bytes = 1 << 20;     // bytes of messages held
    // The window and the byte bound double (up to these) when a message is
    // refused while others are held: more is in flight within one latency
    // than they hold (a fast stream). Memory grows with the peer's rate
    // times the latency, never beyond these.
    std::size_t max_window = 1024;
    std::size_t max_bytes_limit = 1 << 20;
    // How the sender's clock is mapped once an ACK has given a strict lower
    // bound. false (strict): at that bound, as above. true (symmetric): at
    // the midpoint of the two bounds, as NTP does, less `margin`, and never
    // below the strict bound: where the path's two directions take the
    // same time this releases at the deadline - margin, using the whole
    // latency; where they differ by d a message may be released up to
    // d/2 - margin after its deadline. (A path whose round trip is under
    // 2 x margin is released as strict.)
    bool symmetric = false;
    sansio::Time margin = 2 * sansio::kMillisecond;
};

struct TimingCounters {
    std::uint64_t stored = 0;          // messages taken into the buffer
    std::uint64_t released = 0;        // delivered at their release time
    std::uint64_t skipped = 0;         // not there by their release time: never delivered
    std::uint64_t late = 0;            // arrived after their release time: dropped
    std::uint64_t duplicate = 0;       // already held, delivered or skipped
    std::uint64_t too_far = 0;         // beyond the window
    std::uint64_t full = 0;            // over max_bytes
    std::uint64_t clock_samples = 0;   // lower bounds taken
    std::uint64_t clock_cut = 0;       // samples above c_high (cut)
    std::uint64_t grown = 0;           // times the window and byte bound doubled
};

class TimingBuffer {
public:
    enum class Insert : std::uint8_t { stored, duplicate, late, too_far, full };

    explicit TimingBuffer(const TimingBufferConfig& cfg);

    // A message arrived from the network at `now` stamped stamp_us: moves
    // c_high, and the RFC 3550 interarrival jitter when it is the highest
    // seq so far (retransmitted and reordered copies would measure the
    // recovery, not the path). Not for FEC-recovered messages.
    void observe_arrival(std::uint64_t seq, std::uint64_t stamp_us, sansio::Time now) noexcept;
    // A lower bound on c (above). Taken when larger than the current one.
    void clock_sample(sansio::Time lower_bound, bool from_ack = true) noexcept;
    // The handshake's bound from a TIMESTAMP frame of time stamp_us:
    // `created` is this side's connection creation time (above).
    void epoch_sample(std::uint64_t stamp_us, sansio::Time created) noexcept;
    bool has_clock() const noexcept { return has_low_; }
    // An ACK-based sample was taken: the release times are strict.
    bool has_ack_clock() const noexcept { return has_ack_; }
    sansio::Time clock_low() const noexcept { return low_; }
    // The offset release times use (clock_low(), or the symmetric mapping's).
    sansio::Time clock_offset() const noexcept;

    // When a message stamped stamp_us that arrived at `arrival` is released.
    sansio::Time release_time(std::uint64_t stamp_us, sansio::Time arrival) const noexcept;

    // Whether a message stamped stamp_us arriving at `now` is past its
    // release time: insert() would drop it as late.
    bool late(std::uint64_t stamp_us, sansio::Time now) const noexcept {
        return release_time(stamp_us, now) < now;
    }

    // Takes a message (its bytes are copied) at `now`. Lateness is checked
    // before anything that acts on the seq (only a seq below the next to
    // deliver, dropped either way, is counted a duplicate first): a late
    // copy's seq may be wrong (its 16 bits decoded against a largest seq it
    // is too old for: wire/frame.h), and must not move the window.
    Insert insert(std::uint64_t seq, std::uint64_t stamp_us, std::span<const std::uint8_t> msg,
                  sansio::Time now);

    // Delivers, in sequence order, every message whose release time is <= now,
    // skipping (and counting) missing ones before it. deliver(seq, bytes) is
    // called for each; the bytes are valid during the call. Returns how many
    // were delivered.
    template <typename F>
    std::size_t release(sansio::Time now, F&& deliver);

    // The next release time; kNever when nothing is held.
    sansio::Time next_release() const noexcept;
    // The next sequence number to deliver (everything below is done).
    std::uint64_t next_seq() const noexcept { return next_; }
    std::size_t held() const noexcept { return count_; }
    std::size_t window() const noexcept { return slots_.size(); }
    std::size_t byte_bound() const noexcept { return max_bytes_; }
    std::size_t held_bytes() const noexcept { return bytes_; }
    // RFC 3550 interarrival jitter of the messages' transit times, ns.
    sansio::Time jitter() const noexcept { return static_cast<sansio::Time>(jitter_ / 16); }
    const TimingCounters& counters() const noexcept { return counters_; }

private:
    struct Slot {
        std::uint64_t seq = 0;
        bool present = false;
        std::uint64_t stamp_us = 0;
        sansio::Time arrival = 0;
        std::vector<std::uint8_t> bytes;
    };
    Slot& slot(std::uint64_t seq) noexcept { return slots_[seq % slots_.size()]; }
    const Slot& slot(std::uint64_t seq) const noexcept { return slots_[seq % slots_.size()]; }
    // The first held sequence number >= next_ (scans the window), or false.
    bool first_held(std::uint64_t& seq) const noexcept;
    void take(Slot& s) noexcept;
    bool grow();
    Insert refuse(Insert why) noexcept;

    TimingBufferConfig cfg_;
    std::vector<Slot> slots_;
    std::uint64_t next_ = 0;
    std::size_t count_ = 0, bytes_ = 0;
    std::size_t max_bytes_ = 0;   // the byte bound now (grows with the window)
    bool has_low_ = false, has_high_ = false, has_ack_ = false;
    sansio::Time low_ = 0, high_ = 0;
    bool has_transit_ = false;
    std::uint64_t top_seq_ = 0;   // highest seq observed (with has_transit_)
    sansio::Time last_transit_ = 0;
    std::int64_t jitter_ = 0;   // x16, RFC 3550's fixed point
    TimingCounters counters_;
};

template <typename F>
std::size_t TimingBuffer::release(sansio::Time now, F&& deliver) {
    std::size_t n = 0;
    std::uint64_t seq = 0;
    while (count_ > 0 && first_held(seq)) {
        Slot& s = slot(seq);
        if (release_time(s.stamp_us, s.arrival) > now) break;
        counters_.skipped += seq - next_;
        deliver(seq, std::span<const std::uint8_t>(s.bytes));
        take(s);
        next_ = seq + 1;
        ++counters_.released;
        ++n;
    }
    return n;
}

}  // namespace gs::mces
