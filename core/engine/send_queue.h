// Priority between a process's flows where they share a send limit.
//
// With [general] rate_up set, every bridged flow of the process sends
// through one aggregate bucket (relay_qos.h). Who gets its tokens is the
// scheduler's decision (core/qos/scheduler.h): strict priority realtime >
// guaranteed > reliable > datagram and group, deficit round robin inside a
// class, each flow's own bucket (its policy rate) keeping a high class from
// starving the rest. The bridges (TCP and UDP) say what they have to send
// (offer), and the queue calls them back (go) when it is their turn; what
// go() is told to send is already charged to the buckets.
//
// Engine thread only. One queue per engine (so per process), made on first
// use and freed with the engine.
#pragma once

#include <cstdint>

#include "core/engine/engine.h"
#include "core/qos/scheduler.h"
#include "policy/policy.h"

namespace gs::engine {

class SendQueue final : Timer {
public:
    struct Client : qos::SchedFlow {
        // Send `bytes` now: that many stream bytes, or the head datagram.
        virtual void go(Engine& e, uint64_t bytes) noexcept = 0;

    protected:
        ~Client() = default;
    };

    // The engine's queue under the process's send aggregate `root` (not
    // owned); nullptr without memory (the caller then paces on its own).
    static SendQueue* get(Engine& e, qos::TokenBucket* root) noexcept;

    // `own`: the flow's chain head (its bucket under the aggregate, or the
    // aggregate itself). 0 or the scheduler's -errno.
    int attach(Client& c, policy::ServiceClass service, qos::TokenBucket* own, bool stream) noexcept;
    void detach(Client& c) noexcept { sched_.detach(c); }

    // `bytes` more of a stream, or one more datagram of `bytes`.
    int offer(Client& c, uint64_t bytes) noexcept { return sched_.enqueue(c, bytes); }
    // The client's destination is full: skip it until resume().
    void pause(Client& c) noexcept { sched_.pause(c); }
    void resume(Client& c) noexcept { sched_.resume(c); }

    // Let go whoever may go now; arm the timer for the next.
    void run(Engine& e) noexcept;

    // Queue sizes a send decision may cut a stream into (tests, docs).
    static qos::SchedConfig config() noexcept;

    explicit SendQueue(Engine&) noexcept : sched_(config()) {}
    ~SendQueue() = default;

private:
    void fire(Engine& e, int64_t) noexcept override;

    qos::Scheduler sched_;
    int64_t armed_for_ = 0;   // the timer's deadline, 0: not armed
    bool running_ = false, again_ = false;
};

}  // namespace gs::engine
