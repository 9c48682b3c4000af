// Test helpers for code that must run on the engine thread.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <functional>

#include "core/engine/engine.h"

namespace gs::engine::test {

// Runs fn on the engine thread and waits for it (10 s at most).
inline void on_engine(Engine& e, std::function<void(Engine&)> fn) {
    struct Call final : Command {
        std::function<void(Engine&)> fn;
        std::atomic<bool> done{false};
        void run(Engine& en) noexcept override {
            fn(en);
            done.store(true);
        }
    } c;
    c.fn = std::move(fn);
    e.submit(c);
    for (int i = 0; i < 10000 && !c.done.load(); ++i) usleep(1000);
    REQUIRE(c.done.load());
}

// Polls pred every millisecond for up to `ms`.
template <class F>
bool eventually(F pred, int ms = 5000) {
    for (int i = 0; i < ms && !pred(); ++i) usleep(1000);
    return pred();
}

}  // namespace gs::engine::test
