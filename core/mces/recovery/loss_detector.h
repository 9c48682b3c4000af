// LossDetector: the sender's record of packets sent and not yet settled (the
// "sent map"), ACK processing, and loss detection as RFC 9002 section 6
// describes it for one packet number space:
//   - a packet is lost when a packet at least packet_threshold (3) numbers
//     later is acknowledged, or when it was sent more than
//     9/8 * max(smoothed_rtt, latest_rtt) before a later acknowledged one;
//   - the probe timeout (PTO) fires when nothing is acknowledged for
//     pto_base * 2^pto_count after the last ack-eliciting send; each firing
//     doubles it until an ACK arrives;
//   - a packet declared lost and acknowledged afterwards was only reordered
//     (a spurious loss): the packet threshold rises to the reordering seen,
//     up to max_packet_threshold, and when the time threshold had declared
//     it, that threshold grows by 1/den of an RTT, up to max_time_threshold_num
//     (RFC 9002 6.1.1 and 6.1.2 allow adaptive thresholds; RACK, RFC 8985,
//     grows its reordering window the same way), so heavy reordering does
//     not collapse the window again and again;
//   - persistent congestion (RFC 9002 7.6) is reported when ack-eliciting
//     packets lost in one event span more than 3 * pto_base with nothing
//     acknowledged in between.
//
// It holds an RttEstimator and feeds it. It does not drive congestion
// control: it reports what was acked and lost (AckOutcome) and the owner
// calls its CongestionController and requeues data from each lost packet's
// token (an opaque value the owner chose when it sent the packet).
//
// Memory is bounded by max_tracked packets: on_sent() refuses more
// (-ENOBUFS), which a well-behaved sender never hits because its congestion
// window is far smaller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "core/common/sansio.h"
#include "core/mces/recovery/rtt.h"
#include "core/mces/types.h"

namespace gs::mces {

struct SentPacket {
    std::uint64_t pn = 0;
    sansio::Time sent = 0;
    std::uint32_t bytes = 0;         // on-the-wire size, counted in bytes in flight
    bool ack_eliciting = false;
    bool in_flight = false;          // counts toward congestion control
    std::uint64_t token = 0;         // the owner's: what the packet carried
};

// What one ACK (or one loss timer) settled. Vectors are reused across calls.
struct AckOutcome {
    std::vector<SentPacket> acked;   // newly acknowledged, ascending pn
    std::vector<SentPacket> lost;    // newly declared lost, ascending pn
    std::uint64_t acked_bytes = 0;   // in-flight bytes among acked
    std::uint64_t lost_bytes = 0;    // in-flight bytes among lost
    // Send time of the newest in-flight packet declared lost (for the
    // congestion event); meaningful when lost_bytes > 0.
    sansio::Time largest_lost_sent = 0;
    bool rtt_sampled = false;
    bool persistent_congestion = false;
    std::size_t spurious_losses = 0;  // earlier "lost" packets this ACK covered
    std::vector<std::uint64_t> spurious;   // their packet numbers, ascending
    void clear();
};

struct LossConfig {
    std::uint32_t packet_threshold = 3;          // kPacketThreshold, the starting value
    std::uint32_t max_packet_threshold = 256;    // adaptive ceiling; = packet_threshold: fixed
    std::size_t spurious_memory = 1024;          // recently lost packets remembered
    std::uint32_t time_threshold_num = 9;        // kTimeThreshold = 9/8, the starting value
    std::uint32_t time_threshold_den = 8;
    std::uint32_t max_time_threshold_num = 16;   // adaptive ceiling: 2 RTT
    std::uint32_t persistent_congestion_threshold = 3;   // kPersistentCongestionThreshold
    std::size_t max_tracked = 16384;             // sent map bound (packets)
    RttConfig rtt{};
};

class LossDetector {
public:
    enum class TimerAction { None, LossDetected, Probe };

    explicit LossDetector(const LossConfig& cfg = {});

    // Records a sent packet. Packet numbers must increase strictly.
    // Returns 0, -EINVAL (pn not above the previous one), -ENOBUFS (sent map full).
    int on_sent(const SentPacket& p);

    // Processes an ACK frame's ranges (largest first, disjoint, each first <=
    // last: the RangeSet/wire order) and the peer's ack delay. Returns 0, or
    // -EINVAL for malformed ranges, -EPROTO when it acknowledges a packet
    // number never sent; on error nothing changes and the ACK must be dropped.
    int on_ack(std::span<const PacketRange> ranges, sansio::Time ack_delay,
               sansio::Time now, AckOutcome& out);

    // When on_timeout wants calling: the loss timer, else the PTO while
    // ack-eliciting packets are in flight, else kNever.
    sansio::Time next_timeout() const noexcept;
    // LossDetected: out.lost holds what the time threshold declared lost.
    // Probe: the PTO fired; the owner sends one or two ack-eliciting packets
    // now, outside the congestion window (new data, or data of the oldest
    // outstanding packet, or a PING). None: nothing due yet.
    TimerAction on_timeout(sansio::Time now, AckOutcome& out);

    // The oldest packet neither acknowledged nor declared lost, or nullptr.
    const SentPacket* oldest_outstanding() const noexcept;

    std::uint64_t bytes_in_flight() const noexcept { return bytes_in_flight_; }
    unsigned pto_count() const noexcept { return pto_count_; }
    std::uint32_t packet_threshold() const noexcept { return packet_threshold_; }
    // Current time threshold numerator (over time_threshold_den).
    std::uint32_t time_threshold_num() const noexcept { return time_threshold_num_; }
    std::uint64_t spurious_losses() const noexcept { return spurious_total_; }
    std::size_t tracked() const noexcept { return map_.size(); }
    bool has_largest_acked() const noexcept { return has_largest_acked_; }
    std::uint64_t largest_acked() const noexcept { return largest_acked_; }
    const RttEstimator& rtt() const noexcept { return rtt_; }
    RttEstimator& rtt() noexcept { return rtt_; }
    // ACKs refused as malformed or acknowledging unsent packets.
    std::uint64_t invalid_acks() const noexcept { return invalid_acks_; }

private:
    enum class State : std::uint8_t { Outstanding, Acked, Lost };
    struct Entry {
        SentPacket p;
        State state;
    };

    void settle(Entry& e, State s);
    void detect_lost(sansio::Time now, AckOutcome& out);
    void trim();
    std::size_t index_of(std::uint64_t pn) const;   // first entry with pn >= given
    void check_spurious(std::span<const PacketRange> ranges, AckOutcome& out);

    struct Lost {
        std::uint64_t pn;
        std::uint64_t largest_acked;                // when it was declared lost
        bool by_time;                               // the time threshold declared it
    };

    LossConfig cfg_;
    RttEstimator rtt_;
    std::deque<Entry> map_;                 // ascending pn
    std::deque<Lost> recent_lost_;          // ascending pn, bounded by spurious_memory
    std::uint32_t packet_threshold_;
    std::uint32_t time_threshold_num_;
    std::uint64_t spurious_total_ = 0;
    bool any_sent_ = false;
    std::uint64_t last_pn_ = 0;
    bool has_largest_acked_ = false;
    std::uint64_t largest_acked_ = 0;
    std::uint64_t bytes_in_flight_ = 0;
    std::size_t ack_eliciting_in_flight_ = 0;
    sansio::Time last_ack_eliciting_sent_ = 0;
    sansio::Time loss_time_ = sansio::kNever;
    sansio::Time first_rtt_sample_ = sansio::kNever;
    unsigned pto_count_ = 0;
    std::uint64_t invalid_acks_ = 0;
};

}  // namespace gs::mces
