// IdleTimer: keepalive and idle timeout (RFC 9000 10.1). The connection is
// closed silently when nothing has arrived from the peer for idle_timeout; to
// keep a quiet but wanted connection alive, a PING (any ack-eliciting packet)
// goes when nothing has arrived for keepalive. The effective timeout is never
// below 3 * PTO, so a slow path is not mistaken for a dead one.
#pragma once

#include "core/common/sansio.h"

namespace gs::mces {

struct IdleConfig {
    sansio::Time keepalive = 15 * sansio::kSecond;     // 0 = no keepalive
    sansio::Time idle_timeout = 30 * sansio::kSecond;  // 0 = never close
};

class IdleTimer {
public:
    enum class Action { None, SendPing, Close };

    explicit IdleTimer(const IdleConfig& cfg, sansio::Time now);

    // A packet from the peer was accepted (authenticated, not a duplicate).
    void on_received(sansio::Time now);
    // We sent an ack-eliciting packet. RFC 9000 10.1: the idle period
    // restarts then too, if nothing ack-eliciting was sent since the last
    // receipt, so a sender waiting on ACKs is not timed out early.
    void on_ack_eliciting_sent(sansio::Time now);
    // Current PTO, to keep the timeout at least 3 * PTO.
    void set_pto(sansio::Time pto) noexcept { pto_ = pto; }

    sansio::Time next_timeout() const noexcept;
    // Close when the idle deadline passed; else SendPing when the keepalive is
    // due (at most once per keepalive period); else None.
    Action on_timeout(sansio::Time now);
    bool closed() const noexcept { return closed_; }

private:
    sansio::Time idle_deadline() const noexcept;
    sansio::Time ping_deadline() const noexcept;

    IdleConfig cfg_;
    sansio::Time last_activity_;       // start of the idle period
    sansio::Time last_rx_;
    sansio::Time last_ping_;
    bool sent_since_rx_ = false;
    sansio::Time pto_ = 0;
    bool closed_ = false;
};

}  // namespace gs::mces
