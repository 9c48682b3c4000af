// AckPolicy: when the receiver sends an ACK (RFC 9000 13.2.1/13.2.2 and the
// QUIC ack-frequency extension). Per-packet ACKs cost throughput (a study of
// QUIC over high-speed links traced much of its gap to TCP to them), so by
// default an ACK goes after every second ack-eliciting packet, and
//   - immediately when an ack-eliciting packet arrives out of order (below
//     the largest seen, or leaving a gap), so the sender's loss detection
//     hears of the gap at once;
//   - at the latest max_ack_delay after the first unacknowledged
//     ack-eliciting packet.
// Packets that are not ack-eliciting (pure ACKs) never trigger an ACK.
#pragma once

#include <cstdint>

#include "core/common/sansio.h"

namespace gs::mces {

struct AckPolicyConfig {
    std::uint32_t threshold = 2;                          // ack-eliciting packets per ACK
    sansio::Time max_ack_delay = 25 * sansio::kMillisecond;   // RFC 9000 default
};

class AckPolicy {
public:
    static constexpr std::uint32_t kMaxThreshold = 64;

    explicit AckPolicy(const AckPolicyConfig& cfg = {});

    // Sets the packet threshold (1..kMaxThreshold): 0 or -EINVAL (unchanged).
    int set_threshold(std::uint32_t n);
    // Sets max_ack_delay (>= 0): 0 or -EINVAL.
    int set_max_ack_delay(sansio::Time d);

    // A new (not duplicate) packet arrived. Duplicates should not be reported.
    void on_packet(std::uint64_t pn, bool ack_eliciting, sansio::Time now);
    // Asks for the ACK of what is pending to go at once (a realtime peer's
    // PING: its sender measures the round trip and maps our clock with it,
    // so a delayed ACK would only blur both). No-op when nothing is pending.
    void request_immediate() noexcept {
        if (unacked_eliciting_ > 0) immediate_ = true;
    }
    // True when an ACK should go now.
    bool ack_now() const noexcept { return immediate_; }
    // When an ACK is due: now-ish when ack_now(), the delayed-ACK deadline when
    // one is pending, kNever otherwise.
    sansio::Time next_timeout() const noexcept;
    bool pending() const noexcept { return unacked_eliciting_ > 0; }
    // The ack delay to report: time since the largest packet arrived.
    sansio::Time ack_delay(sansio::Time now) const noexcept;
    // An ACK went out: the count and deadline start again.
    void on_ack_sent(sansio::Time now);

    std::uint32_t threshold() const noexcept { return cfg_.threshold; }

private:
    AckPolicyConfig cfg_;
    bool has_largest_ = false;
    std::uint64_t largest_ = 0;
    sansio::Time largest_at_ = 0;
    std::uint32_t unacked_eliciting_ = 0;
    sansio::Time first_unacked_at_ = 0;
    bool immediate_ = false;
};

}  // namespace gs::mces
