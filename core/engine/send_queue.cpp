#include "core/engine/send_queue.h"

#include <new>

namespace gs::engine {

qos::SchedConfig SendQueue::config() noexcept {
    qos::SchedConfig c;
    // A stream goes in slices of what its slowest level earns in 2 ms (the
    // bridges' pacing before the scheduler, relay_qos.h): smooth over the
    // 100 ms bins shaping is judged on, and no flow holds the aggregate
    // longer than that while a higher class waits.
    c.min_chunk_ns = 2'000'000;
    c.max_chunk = 64 * 1024;
    return c;
}

SendQueue* SendQueue::get(Engine& e, qos::TokenBucket* root) noexcept {
    SendQueue*& q = e.send_queue();
    if (q == nullptr) q = new (std::nothrow) SendQueue(e);   // attach() says -ENOSPC if its heap could not be had
    if (q != nullptr) q->sched_.set_root(root);
    return q;
}

int SendQueue::attach(Client& c, policy::ServiceClass service, qos::TokenBucket* own, bool stream) noexcept {
    qos::FlowConfig f;
    f.service = service;
    f.stream = stream;
    f.bucket = own;
    return sched_.attach(c, f);
}

void SendQueue::run(Engine& e) noexcept {
    // go() may offer more (and call run): that is picked up by this loop.
    if (running_) {
        again_ = true;
        return;
    }
    running_ = true;
    int64_t wake = qos::kNever;
    for (int picks = 0;; ++picks) {
        again_ = false;
        if (picks == 256) {   // the engine's other work between rounds
            wake = now_ns();
            break;
        }
        qos::Pick p = sched_.next(now_ns());
        if (p.flow == nullptr) {
            if (!again_) {
                wake = p.wake;
                break;
            }
            continue;
        }
        static_cast<Client*>(p.flow)->go(e, p.bytes);
    }
    running_ = false;
    if (wake == qos::kNever) return;
    if (armed_for_ != 0 && armed_for_ <= wake) return;   // an earlier call comes anyway
    if (armed_for_ != 0) e.cancel(*this);
    armed_for_ = wake;
    e.arm(*this, wake);
}

void SendQueue::fire(Engine& e, int64_t) noexcept {
    armed_for_ = 0;
    run(e);
}

}  // namespace gs::engine
