// Congestion control behind a small interface, so the algorithm is chosen by
// name (policy, tests) and the connection code does not change with it.
// Windows are in bytes. The owner (the connection) calls, per RFC 9002
// section 7 / appendix B:
//   on_sent            for every in-flight packet it sends;
//   on_congestion_event once per ACK (or loss timer) that declared in-flight
//                      packets lost, with the newest lost packet's send time;
//   on_persistent_congestion when LossDetector reports it;
//   undo               when the losses that caused the last reduction all
//                      proved spurious (the packets were only reordered);
//   on_ack             for each newly acknowledged in-flight packet (or a
//                      batch of packets sharing the newest send time).
// It may send while bytes_in_flight < cwnd().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/common/sansio.h"
#include "core/mces/recovery/rtt.h"

namespace gs::mces {

struct CcConfig {
    std::uint32_t mss = 1200;             // max datagram payload, bytes
    // 0 = RFC 9002 7.2: min(10 * mss, max(14720, 2 * mss)).
    std::uint64_t initial_window = 0;
    std::uint32_t min_window_packets = 2; // kMinimumWindow = 2 * mss
    std::uint64_t max_window = std::uint64_t{1} << 30;
    // CUBIC (RFC 9438): fast convergence (4.7) on by default.
    bool cubic_fast_convergence = true;
};

class CongestionController {
public:
    virtual ~CongestionController() = default;

    virtual std::string_view name() const noexcept = 0;
    virtual void on_sent(std::uint64_t bytes, std::uint64_t bytes_in_flight, sansio::Time now) = 0;
    // `bytes` of in-flight data sent at `sent_time` were acknowledged at `now`.
    virtual void on_ack(std::uint64_t bytes, sansio::Time sent_time, const RttEstimator& rtt,
                        sansio::Time now) = 0;
    // Loss (or ECN-CE): reduce once per recovery period. Packets sent at or
    // before the start of the current recovery period do not reduce again.
    virtual void on_congestion_event(sansio::Time sent_time, sansio::Time now) = 0;
    // RFC 9002 7.6.2: collapse to the minimum window. Forgets the undo state.
    virtual void on_persistent_congestion(sansio::Time now) = 0;
    // Every packet whose loss started the last reduction (on_congestion_event)
    // was acknowledged after all: the network only reordered them. Restores
    // the state from just before that reduction (the window not below what
    // it is now) and ends its recovery period, as Linux TCP undoes a
    // reduction its DSACKs prove spurious (RFC 2883, RFC 8985 sec. 9.1).
    // Returns true when there was a reduction to undo (once per reduction).
    virtual bool undo(sansio::Time now) = 0;

    virtual std::uint64_t cwnd() const noexcept = 0;
    virtual std::uint64_t ssthresh() const noexcept = 0;
    // True when a packet sent at sent_time belongs to the current recovery period.
    virtual bool in_recovery(sansio::Time sent_time) const noexcept = 0;
    bool in_slow_start() const noexcept { return cwnd() < ssthresh(); }

    // RFC 9002 7.8: the window must not grow while the sender is not using
    // it (application- or flow-control-limited). The owner sets this before
    // reporting ACKs: true when it had nothing to send while bytes in flight
    // were below cwnd.
    void set_app_limited(bool v) noexcept { app_limited_ = v; }
    bool app_limited() const noexcept { return app_limited_; }

protected:
    bool app_limited_ = false;
};

// The algorithms by name: "newreno", "cubic". Returns 0 and sets `out`, or
// -ENOENT for an unknown name with `error` (when given) set to a sentence
// naming the known ones.
int make_congestion_controller(std::string_view name, const CcConfig& cfg,
                               std::unique_ptr<CongestionController>& out,
                               std::string* error = nullptr);
// "cubic, newreno"
std::string_view congestion_controller_names() noexcept;

// The RFC 9002 initial window for cfg (initial_window, or the formula when 0).
std::uint64_t initial_window(const CcConfig& cfg) noexcept;

}  // namespace gs::mces
