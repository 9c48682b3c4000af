// The engine: one io_uring loop per process, on its own thread, started
// lazily by the first upgraded flow (a program whose flows all stay native
// never gets a thread).
//
// Threads talk to it in one direction only: an application thread hands it a
// Command (intrusive, storage owned by the caller, so no allocation on the
// hook path) and, if the engine sleeps, wakes it with one eventfd write.
// Everything else happens on the engine thread: completions are dispatched to
// the Completion whose address is in the SQE's user_data (seastar, liburing),
// timers fire in deadline order, and protocol objects (core/qos, core/mces)
// are driven with the engine's `now`.
//
// Errors: 0 or -errno. No exceptions leave this file.
#pragma once

#include <linux/futex.h>
#include <liburing.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <vector>

namespace gs::engine {

class Engine;

// Monotonic nanoseconds: the one clock everything sans-IO is fed with.
int64_t now_ns() noexcept;

// Work handed from any thread to the engine thread. The submitter keeps the
// object alive until run() has been called (a flow record, a stack frame that
// waits for an answer...). run() is called exactly once, on the engine thread.
struct Command {
    virtual void run(Engine& e) noexcept = 0;
    Command* next_ = nullptr;   // intrusive MPSC link, the engine's business

protected:
    ~Command() = default;
};

// Owner of an in-flight io_uring request: its address is the SQE's user_data.
struct Completion {
    virtual void complete(Engine& e, const io_uring_cqe& cqe) noexcept = 0;

protected:
    ~Completion() = default;
};

// A deadline on the engine's clock. Armed and cancelled on the engine thread only.
struct Timer {
    virtual void fire(Engine& e, int64_t now) noexcept = 0;
    int64_t deadline_ = 0;
    int heap_index_ = -1;   // -1: not armed

protected:
    ~Timer() = default;
};

// Work its owner has let go of that still has a little to do on the engine
// thread (a closed UDP socket's last MCES messages, which the kernel would
// still have sent): the engine keeps a list of them (Engine::linger). At
// exit its drain waits for each to be done() as for the drain hooks, and
// counts its progress(); when the loop ends, each one left is told to end
// (end(): unlinger, then free itself, at once or once its I/O is back; the
// loop reaps for a moment after). Engine thread only.
struct Lingering {
    virtual bool done() const noexcept = 0;
    virtual uint64_t progress() const noexcept { return 0; }
    virtual void end(Engine& e) noexcept = 0;
    Lingering* linger_next_ = nullptr;
    Lingering* linger_prev_ = nullptr;

protected:
    ~Lingering() = default;
};

// The engine's fds (and the shim's) are moved to this number or above, out
// of the numbers programs pick, use in loops and count.
constexpr int kInternalFdBase = 512;

// Who must keep programs from closing the engine's own fds (the shim, whose
// close/close_range hooks step around them). Set once, before the first
// engine starts; the engine and its users (the control socket) call
// guard_fd() on every fd they keep and unguard_fd() before closing it.
struct FdGuard {
    void (*protect)(int fd) noexcept = nullptr;
    void (*unprotect)(int fd) noexcept = nullptr;
};
void set_fd_guard(const FdGuard& g) noexcept;
void guard_fd(int fd) noexcept;
void unguard_fd(int fd) noexcept;
// Close one of the engine's own fds (unguarded first), bypassing the hooks.
void close_internal_fd(int fd) noexcept;
// close(2) without the shim's hook, for an fd that was never guarded.
void raw_close(int fd) noexcept;

// Work that must finish before the engine stops at exit (bridges flushing
// what the program wrote): `begin` is called once on the engine thread when
// stop() is asked, and the loop goes on until every `done` says so or
// kDrainLimitNs has passed without progress: `progress` (optional) returns a
// value that changes while the drain gets somewhere (MCES: packets coming
// back from peers), and each change gives kDrainLimitNs more, up to
// kDrainMaxNs in all. Each kind of bridge adds its hooks once (up to
// kMaxDrainHooks; more are ignored), before stop() can be called.
constexpr int64_t kDrainLimitNs = 2'000'000'000;
constexpr int64_t kDrainMaxNs = 30'000'000'000;
constexpr int kMaxDrainHooks = 4;
void set_drain_hooks(void (*begin)(Engine& e) noexcept, bool (*done)() noexcept,
                     uint64_t (*progress)() noexcept = nullptr) noexcept;

struct Options {
    unsigned entries = 256;      // SQ size; the CQ is twice that
    bool single_issuer = true;   // IORING_SETUP_SINGLE_ISSUER|DEFER_TASKRUN when the kernel has them
    // Keep polling for this long after the last work before sleeping
    // (GSOCKET_ENGINE_SPIN_US overrides; 0 = always sleep, the default: see
    // docs/engine.md for why spinning is off until placement is handled).
    int64_t spin_us = 0;
};

struct Stats {
    uint64_t loops = 0, completions = 0, commands = 0, timers_fired = 0, wakeups = 0, spins = 0;
};

class SendQueue;

class Engine {
public:
    // The process's engine, started on first use; nullptr when it cannot start
    // (io_uring refused, no memory, no thread): callers stay native (fail
    // open). After fork() the child starts its own on first use; the parent's
    // is left untouched.
    static Engine* get() noexcept;
    // For tests: an engine that is not the process's (own thread, own ring).
    static Engine* create(const Options& o, int* err) noexcept;
    // Stop the thread after the commands already submitted have run; join.
    void stop() noexcept;
    // Stop and free a created engine.
    static void destroy(Engine* e) noexcept;

    // Any thread. Never blocks, never allocates.
    void submit(Command& c) noexcept;

    // Engine thread only.
    io_uring_sqe* sqe() noexcept;   // flushes to the kernel when the SQ is full; never nullptr
    void arm(Timer& t, int64_t deadline) noexcept;
    void cancel(Timer& t) noexcept;
    bool on_engine_thread() const noexcept;
    int64_t now() const noexcept { return now_; }
    const Stats& stats() const noexcept { return stats_; }
    unsigned features() const noexcept { return ring_.features; }
    unsigned setup_flags() const noexcept { return setup_flags_; }
    // The engine's send queue (send_queue.h), made on first use; freed with the engine.
    SendQueue*& send_queue() noexcept { return send_queue_; }
    // Lingering work (above): kept from now until unlinger().
    void linger(Lingering& l) noexcept;
    void unlinger(Lingering& l) noexcept;
    size_t lingering() const noexcept;   // how many (walks the list: for tests and reports)

private:
    Engine() = default;
    ~Engine();
    int init(const Options& o) noexcept;
    static void* thread_main(void* self) noexcept;
    void loop() noexcept;
    void run_commands() noexcept;
    void run_timers() noexcept;
    void reap() noexcept;
    void arm_wakeup() noexcept;
    void heap_up(int i) noexcept;
    void heap_down(int i) noexcept;
    void heap_remove(int i) noexcept;
    bool lingering_done() const noexcept;
    uint64_t lingering_progress() const noexcept;

    struct WakeRead final : Completion {
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override;
        uint64_t value = 0;
    };

    io_uring ring_{};
    unsigned setup_flags_ = 0;
    bool ring_ok_ = false;
    int wake_fd_ = -1;
    WakeRead wake_read_;
    pthread_t thread_{};
    bool thread_ok_ = false;
    std::atomic<bool> stopping_{false};

    // MPSC: producers push onto head_ (a Treiber stack); the engine takes the
    // whole stack at once and reverses it, so commands from one thread run in
    // the order that thread submitted them.
    std::atomic<Command*> head_{nullptr};
    std::atomic<bool> sleeping_{false};

    std::vector<Timer*> heap_;   // min-heap on deadline_, reserved up front
    int64_t now_ = 0;
    int64_t spin_ns_ = 0, last_work_ = 0;
    bool draining_ = false;
    int64_t drain_deadline_ = 0, drain_started_ = 0;
    uint64_t drain_progress_ = 0;
    bool lingering_ended_ = false;   // the drain is over and end() was called on what lingered
    Lingering* lingering_ = nullptr;
    Stats stats_;
    SendQueue* send_queue_ = nullptr;
};

// Runs fn(Engine&) on e's thread and waits for it: for owners that set up or
// ask about engine-thread objects from another thread. Not from the engine
// thread itself (it would wait for itself), never from a signal handler.
template <class F>
void run_on_engine(Engine& e, F fn) noexcept {
    struct Call final : Command {
        F* fn = nullptr;
        std::atomic<std::uint32_t> done{0};
        void run(Engine& en) noexcept override {
            (*fn)(en);
            done.store(1, std::memory_order_release);
            syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&done), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
        }
    } c;
    c.fn = &fn;
    e.submit(c);
    while (c.done.load(std::memory_order_acquire) == 0)
        syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&c.done), FUTEX_WAIT_PRIVATE, 0, nullptr, nullptr, 0);
}

}  // namespace gs::engine
