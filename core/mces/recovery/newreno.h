// NewReno as RFC 9002 section 7.3 and appendix B describe it: slow start
// (+bytes acked), congestion avoidance (+1 mss per cwnd acked), halve once per
// recovery period, minimum window on persistent congestion. The reference the
// other algorithms are compared against.
#pragma once

#include "core/mces/recovery/congestion.h"

namespace gs::mces {

class NewReno final : public CongestionController {
public:
    explicit NewReno(const CcConfig& cfg = {});

    std::string_view name() const noexcept override { return "newreno"; }
    void on_sent(std::uint64_t bytes, std::uint64_t bytes_in_flight, sansio::Time now) override;
    void on_ack(std::uint64_t bytes, sansio::Time sent_time, const RttEstimator& rtt,
                sansio::Time now) override;
    void on_congestion_event(sansio::Time sent_time, sansio::Time now) override;
    void on_persistent_congestion(sansio::Time now) override;
    bool undo(sansio::Time now) override;
    std::uint64_t cwnd() const noexcept override { return cwnd_; }
    std::uint64_t ssthresh() const noexcept override { return ssthresh_; }
    bool in_recovery(sansio::Time sent_time) const noexcept override;

private:
    CcConfig cfg_;
    std::uint64_t min_window_;
    std::uint64_t cwnd_;
    std::uint64_t ssthresh_ = UINT64_MAX;
    std::uint64_t acked_in_ca_ = 0;         // bytes toward the next +mss
    bool recovering_ = false;               // recovery_start_ is set
    sansio::Time recovery_start_ = 0;
    struct Saved {
        std::uint64_t cwnd, ssthresh, acked_in_ca;
        bool recovering;
        sansio::Time recovery_start;
    };
    bool can_undo_ = false;
    Saved before_{};                        // just before the last reduction
};

}  // namespace gs::mces
