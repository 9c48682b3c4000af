// Flow-control accounting (RFC 9000 section 4, MAX_DATA-style credit).
//
// FlowReceiver: the limit (highest offset + 1) the peer may send up to. It
// moves forward as the application reads: when less than half a window of
// credit is left, an update (a new, higher limit) is due. The window
// auto-tunes (as Chromium/quiche do): if updates are needed more often than
// every 2 RTT, the window is what limits throughput, so it doubles, up to
// max_window. Memory the receiver commits is bounded by max_window.
//
// FlowSender: the peer's limit as advertised (only ever raised; stale or
// reordered smaller values are ignored) and the blocked state, reported once
// per limit.
#pragma once

#include <cstdint>

#include "core/common/sansio.h"

namespace gs::mces {

struct FlowConfig {
    std::uint64_t initial_window = 256 * 1024;
    std::uint64_t max_window = 16 * 1024 * 1024;
};

class FlowReceiver {
public:
    explicit FlowReceiver(const FlowConfig& cfg = {});

    // The highest offset (exclusive) the peer may send to.
    std::uint64_t limit() const noexcept { return limit_; }
    std::uint64_t window() const noexcept { return window_; }
    // Data up to end_offset (exclusive) arrived. Returns 0, or -EDQUOT when it
    // goes beyond limit(): a flow-control violation, the connection's error.
    int on_data(std::uint64_t end_offset);
    // The application has consumed everything below consumed_offset.
    void on_consumed(std::uint64_t consumed_offset) noexcept;
    // True when a limit update should be sent now.
    bool update_due() const noexcept;
    // Computes the new limit (tuning the window with srtt), records it as
    // advertised and returns it; the owner puts it in a MAX_DATA frame.
    std::uint64_t take_update(sansio::Time now, sansio::Time srtt);
    std::uint64_t highest_received() const noexcept { return highest_; }

private:
    FlowConfig cfg_;
    std::uint64_t window_;
    std::uint64_t limit_;
    std::uint64_t consumed_ = 0;
    std::uint64_t highest_ = 0;
    bool has_update_ = false;
    sansio::Time last_update_ = 0;
};

class FlowSender {
public:
    explicit FlowSender(std::uint64_t initial_limit) : limit_(initial_limit) {}

    // A MAX_DATA-style limit arrived; returns true when it raised the limit.
    bool on_limit(std::uint64_t limit) noexcept;
    std::uint64_t limit() const noexcept { return limit_; }
    // Bytes that may still be sent beyond sent_offset.
    std::uint64_t credit(std::uint64_t sent_offset) const noexcept {
        return sent_offset < limit_ ? limit_ - sent_offset : 0;
    }
    // True when the sender has data but no credit, and has not yet said so at
    // this limit (the owner then sends a DATA_BLOCKED-style frame and calls
    // on_blocked_sent()).
    bool should_report_blocked(std::uint64_t sent_offset) const noexcept {
        return credit(sent_offset) == 0 && !(reported_ && reported_at_ == limit_);
    }
    void on_blocked_sent() noexcept {
        reported_ = true;
        reported_at_ = limit_;
    }

private:
    std::uint64_t limit_;
    bool reported_ = false;
    std::uint64_t reported_at_ = 0;
};

}  // namespace gs::mces
