// Guarantee: what holds a class-guaranteed (2) stream to its reserved rate.
// docs/mces-recovery.md, "Guaranteed rate".
//
// The reservation R (bytes/s of stream payload, granted in the handshake and
// admitted against both hosts' ledgers) is both the flow's ceiling and,
// while the path delivers it, its floor:
//   - ceiling: new stream bytes go out at most at R (a token bucket over the
//     stream offset: the sender may send new bytes up to limit()).
//     Retransmissions and headers are not charged: they ride on the wire
//     pacer's headroom (wire_rate() = headroom x R), so what the receiver
//     gets is R, not R minus what was lost;
//   - floor: congestion control may not hold the flow below R. A reserved
//     flow that backed off whenever a best-effort flow filled the queue
//     would get its fair share, not its reservation. While floor() holds,
//     the owner sends with a window of at least floor_window(srtt) and
//     paces at wire_rate(), whatever the controller says;
//     Credit the sender could not use while the program had bytes waiting
//     (a loss episode, a late ACK) is kept for catchup_time, so the rate
//     is the long-run goodput, not a rate minus every hiccup; credit the
//     program left unused is kept only for burst_time (it is not owed);
//   - the path must deliver it: every interval (max(min_interval, 8 srtt))
//     the goodput that was acknowledged is compared with what the flow was
//     owed in it (the new bytes it sent, plus the credit it had to forfeit
//     while bytes were waiting). Below deliver_ratio of it in
//     short_intervals intervals in a row, the path cannot carry the
//     reservation (a slower link, a reservation the network does not
//     honour): the floor is dropped and the congestion controller governs,
//     as for any flow, so a reserved flow never pushes a path into
//     congestion collapse. (One bad interval is not enough: a competing
//     flow's slow-start overshoot costs a burst of loss the floor rides out.)
//     It is a shortfall, counted and reported once (the owner logs it).
//     It ends when an interval delivers again under congestion control (the
//     competition left, the path recovered), and the floor returns. There
//     is no probing at the full rate in between: on a path that cannot
//     carry R, each probe would cost every other flow a burst of loss.
// An interval in which the program wrote (almost) nothing proves nothing
// and is not judged.
//
// Sans-IO, no allocation; the owner passes the time and what was acked.
#pragma once

#include <cstdint>

#include "core/common/sansio.h"

namespace gs::mces {

struct GuaranteeConfig {
    double rate = 0;                    // R, bytes/s of stream payload (> 0)
    std::uint32_t mss = 1200;           // packet size
    double headroom = 1.25;             // wire pacing at headroom x R
    sansio::Time burst_time = 5 * sansio::kMillisecond;   // the bucket holds max(2 mss, R x this)
    sansio::Time catchup_time = 250 * sansio::kMillisecond;   // ... or this much while backlogged
    sansio::Time min_interval = 500 * sansio::kMillisecond;
    double deliver_ratio = 0.9;         // the path delivers when goodput >= this x owed
    std::uint32_t short_intervals = 2;  // bad intervals in a row that make a shortfall
};

struct GuaranteeStatus {
    bool floor = true;                  // the floor holds now
    std::uint64_t shortfalls = 0;       // episodes where the path did not deliver R
    std::uint64_t intervals = 0;        // intervals judged
    double delivered = 0;               // goodput of the last judged interval, bytes/s
    double owed = 0;                    // what the flow was owed in it, bytes/s
};

class Guarantee {
public:
    enum class Event : std::uint8_t { none, shortfall, delivers };

    Guarantee(const GuaranteeConfig& cfg, sansio::Time now);

    // The stream offset new bytes may reach at `now` (sent_offset: the
    // highest offset sent so far). Refills the bucket for the time since
    // the last call.
    std::uint64_t limit(std::uint64_t sent_offset, sansio::Time now);
    // The sender stopped (nothing more may go now) with the program held
    // back (bytes unsent, or its send buffer full): until the next limit(),
    // credit the bucket cannot hold is owed to the flow (the path, the
    // window or the peer's credit held it back, not the sending program).
    void set_waiting(bool w) noexcept { waiting_ = w; }
    // When the bucket will hold `bytes` (now if it does).
    sansio::Time when(std::uint64_t bytes, sansio::Time now) const;
    // New stream bytes went out (not retransmissions).
    void on_new_bytes(std::uint64_t n) noexcept {
        credit_ -= static_cast<double>(n);
        iv_owed_ += static_cast<double>(n);
    }

    // `acked`: the stream bytes acknowledged so far (a running total, so a
    // hole waiting for its retransmission does not hide what arrived
    // behind it). Judges the interval that ends now, if it is over; the
    // first call starts the first interval (the first round trip, before
    // any ACK, is no evidence). Event::shortfall: the path stopped
    // delivering the rate (the floor is dropped: report it);
    // Event::delivers: a shortfall is over.
    Event on_acked(std::uint64_t acked, sansio::Time srtt, sansio::Time now);

    bool floor() const noexcept { return st_.floor; }
    bool in_shortfall() const noexcept { return shortfall_; }
    double wire_rate() const noexcept { return cfg_.headroom * cfg_.rate; }
    // The congestion window the floor guarantees: the wire rate over the
    // round trip, twice (losses stay in flight until detected), + 4 packets.
    std::uint64_t floor_window(sansio::Time srtt) const noexcept;
    double rate() const noexcept { return cfg_.rate; }
    const GuaranteeStatus& status() const noexcept { return st_; }

private:
    double burst(bool backlogged) const noexcept;
    void start_interval(std::uint64_t acked, sansio::Time now) noexcept;

    GuaranteeConfig cfg_;
    GuaranteeStatus st_;
    // The bucket: credit for new bytes beyond the highest offset sent.
    double credit_;
    sansio::Time refilled_;
    // The interval being measured.
    sansio::Time iv_start_ = sansio::kNever;
    std::uint64_t iv_acked_ = 0;        // acked bytes at its start
    double iv_owed_ = 0;                // new bytes sent in it + credit forfeited while backlogged
    std::uint32_t bad_ = 0;             // bad intervals in a row
    bool shortfall_ = false;
    bool waiting_ = false;
};

}  // namespace gs::mces
