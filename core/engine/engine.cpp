#include "core/engine/engine.h"
#include "core/engine/send_queue.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <new>

namespace gs::engine {

int64_t now_ns() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

namespace {
FdGuard g_guard;
// After the drain, how long the loop goes on reaping the I/O of what
// lingered and was ended (Lingering::end).
constexpr int64_t kLingerReapNs = 20'000'000;

// Pairs claimed with g_drain_count, published by their `done` (release).
std::atomic<void (*)(Engine&) noexcept> g_drain_begin[kMaxDrainHooks]{};
std::atomic<bool (*)() noexcept> g_drain_done[kMaxDrainHooks]{};
std::atomic<uint64_t (*)() noexcept> g_drain_progress[kMaxDrainHooks]{};
std::atomic<int> g_drain_count{0};

void drain_begin(Engine& e) noexcept {
    for (int i = 0; i < kMaxDrainHooks; ++i)
        if (g_drain_done[i].load(std::memory_order_acquire) != nullptr)
            if (auto b = g_drain_begin[i].load(std::memory_order_relaxed)) b(e);
}
// A value that changes while the drain gets somewhere (0 without hooks that say).
uint64_t drain_progress() noexcept {
    uint64_t p = 0;
    for (int i = 0; i < kMaxDrainHooks; ++i)
        if (g_drain_done[i].load(std::memory_order_acquire) != nullptr)
            if (auto f = g_drain_progress[i].load(std::memory_order_relaxed)) p += f();
    return p;
}
bool drain_done() noexcept {
    for (int i = 0; i < kMaxDrainHooks; ++i)
        if (auto d = g_drain_done[i].load(std::memory_order_acquire); d != nullptr && !d()) return false;
    return true;
}
}  // namespace

void set_drain_hooks(void (*begin)(Engine& e) noexcept, bool (*done)() noexcept,
                     uint64_t (*progress)() noexcept) noexcept {
    int i = g_drain_count.fetch_add(1, std::memory_order_relaxed);
    if (i >= kMaxDrainHooks || done == nullptr) return;
    g_drain_begin[i].store(begin, std::memory_order_relaxed);
    g_drain_progress[i].store(progress, std::memory_order_relaxed);
    g_drain_done[i].store(done, std::memory_order_release);
}

void set_fd_guard(const FdGuard& g) noexcept { g_guard = g; }
void guard_fd(int fd) noexcept {
    if (fd >= 0 && g_guard.protect) g_guard.protect(fd);
}
void unguard_fd(int fd) noexcept {
    if (fd >= 0 && g_guard.unprotect) g_guard.unprotect(fd);
}
// A raw system call: the engine is linked into the preload library, whose
// exported close() would refuse to close a guarded fd. Under TSan, through
// its interceptor instead: TSan follows fd numbers through the calls it
// sees, and a hidden close makes the number's next owner look like a race
// with the previous one.
void raw_close(int fd) noexcept {
#if defined(__SANITIZE_THREAD__)
    static auto* real = reinterpret_cast<int (*)(int)>(dlsym(RTLD_NEXT, "close"));
    if (real != nullptr) {
        real(fd);
        return;
    }
#endif
    syscall(SYS_close, fd);
}

void close_internal_fd(int fd) noexcept {
    if (fd < 0) return;
    unguard_fd(fd);
    raw_close(fd);
}

namespace {

void sys_close(int fd) noexcept { close_internal_fd(fd); }

// The engine thread creates the ring (SINGLE_ISSUER makes its creator the
// only submitter) and tells the starting thread how that went.
struct StartSync {
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    bool done = false;
    int err = 0;
    Options opts;
};

struct ThreadArg {
    Engine* engine;
    StartSync* sync;
};

}  // namespace

void Engine::WakeRead::complete(Engine& e, const io_uring_cqe&) noexcept {
    e.stats_.wakeups++;
    e.arm_wakeup();
}

int Engine::init(const Options& o) noexcept {
    io_uring_params p{};
    if (o.single_issuer) p.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int rc = io_uring_queue_init_params(o.entries, &ring_, &p);
    if (rc == -EINVAL && o.single_issuer) {   // kernels before 6.1
        p = io_uring_params{};
        rc = io_uring_queue_init_params(o.entries, &ring_, &p);
    }
    if (rc < 0) return rc;
    ring_ok_ = true;
    setup_flags_ = p.flags;
    // Our fds live high, out of the numbers programs pick and count.
    if (int high = fcntl(ring_.ring_fd, F_DUPFD_CLOEXEC, kInternalFdBase); high >= 0) {
        raw_close(ring_.ring_fd);
        ring_.ring_fd = ring_.enter_ring_fd = high;
    }
    guard_fd(ring_.ring_fd);
    wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0) return -errno;
    if (int high = fcntl(wake_fd_, F_DUPFD_CLOEXEC, kInternalFdBase); high >= 0) {
        raw_close(wake_fd_);
        wake_fd_ = high;
    }
    guard_fd(wake_fd_);
    try {
        heap_.reserve(1024);
    } catch (...) {
        return -ENOMEM;
    }
    now_ = now_ns();
    spin_ns_ = o.spin_us * 1000;
    if (const char* e = getenv("GSOCKET_ENGINE_SPIN_US"); e && *e) spin_ns_ = atoll(e) * 1000;
    arm_wakeup();
    return 0;
}

Engine::~Engine() {
    delete send_queue_;
    if (ring_ok_) {
        unguard_fd(ring_.ring_fd);
        io_uring_queue_exit(&ring_);
    }
    if (wake_fd_ >= 0) sys_close(wake_fd_);
}

void Engine::arm_wakeup() noexcept {
    io_uring_sqe* s = sqe();
    io_uring_prep_read(s, wake_fd_, &wake_read_.value, sizeof wake_read_.value, 0);
    io_uring_sqe_set_data(s, static_cast<Completion*>(&wake_read_));
}

io_uring_sqe* Engine::sqe() noexcept {
    io_uring_sqe* s = io_uring_get_sqe(&ring_);
    while (s == nullptr) {   // the SQ is full: hand it to the kernel and retry
        io_uring_submit(&ring_);
        s = io_uring_get_sqe(&ring_);
    }
    return s;
}

bool Engine::on_engine_thread() const noexcept { return thread_ok_ && pthread_equal(thread_, pthread_self()); }

void Engine::submit(Command& c) noexcept {
    Command* head = head_.load(std::memory_order_relaxed);
    do {
        c.next_ = head;
    } while (!head_.compare_exchange_weak(head, &c, std::memory_order_seq_cst, std::memory_order_relaxed));
    // Pairs with the engine's store to sleeping_ before its last look at
    // head_: one of the two sees the other, so no command waits for a wake-up
    // that never comes, and a busy engine is never woken for nothing.
    if (sleeping_.load(std::memory_order_seq_cst)) {
        uint64_t one = 1;
        syscall(SYS_write, wake_fd_, &one, sizeof one);
    }
}

void Engine::run_commands() noexcept {
    Command* c = head_.exchange(nullptr, std::memory_order_acquire);
    // The stack is newest first: reverse it so each thread's commands run in order.
    Command* ordered = nullptr;
    while (c != nullptr) {
        Command* next = c->next_;
        c->next_ = ordered;
        ordered = c;
        c = next;
    }
    while (ordered != nullptr) {
        Command* next = ordered->next_;   // run() may free or reuse the command
        ordered->run(*this);
        stats_.commands++;
        ordered = next;
    }
}

// ---- timers: a binary min-heap of Timer* ------------------------------------

void Engine::heap_up(int i) noexcept {
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (heap_[parent]->deadline_ <= heap_[i]->deadline_) break;
        std::swap(heap_[parent], heap_[i]);
        heap_[parent]->heap_index_ = parent;
        heap_[i]->heap_index_ = i;
        i = parent;
    }
}

void Engine::heap_down(int i) noexcept {
    const int n = static_cast<int>(heap_.size());
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && heap_[l]->deadline_ < heap_[m]->deadline_) m = l;
        if (r < n && heap_[r]->deadline_ < heap_[m]->deadline_) m = r;
        if (m == i) return;
        std::swap(heap_[m], heap_[i]);
        heap_[m]->heap_index_ = m;
        heap_[i]->heap_index_ = i;
        i = m;
    }
}

void Engine::heap_remove(int i) noexcept {
    Timer* t = heap_[i];
    Timer* last = heap_.back();
    heap_.pop_back();
    t->heap_index_ = -1;
    if (last == t) return;
    heap_[i] = last;
    last->heap_index_ = i;
    heap_up(i);
    heap_down(last->heap_index_);
}

void Engine::arm(Timer& t, int64_t deadline) noexcept {
    if (t.heap_index_ >= 0) heap_remove(t.heap_index_);
    t.deadline_ = deadline;
    try {
        heap_.push_back(&t);
    } catch (...) {
        // Out of memory on the engine thread: fire at once rather than never.
        t.fire(*this, now_);
        return;
    }
    t.heap_index_ = static_cast<int>(heap_.size()) - 1;
    heap_up(t.heap_index_);
}

void Engine::cancel(Timer& t) noexcept {
    if (t.heap_index_ >= 0) heap_remove(t.heap_index_);
}

void Engine::linger(Lingering& l) noexcept {
    l.linger_prev_ = nullptr;
    l.linger_next_ = lingering_;
    if (lingering_ != nullptr) lingering_->linger_prev_ = &l;
    lingering_ = &l;
}

void Engine::unlinger(Lingering& l) noexcept {
    if (l.linger_prev_ != nullptr) l.linger_prev_->linger_next_ = l.linger_next_;
    else if (lingering_ == &l) lingering_ = l.linger_next_;
    else return;   // not in the list
    if (l.linger_next_ != nullptr) l.linger_next_->linger_prev_ = l.linger_prev_;
    l.linger_next_ = l.linger_prev_ = nullptr;
}

size_t Engine::lingering() const noexcept {
    size_t n = 0;
    for (const Lingering* l = lingering_; l != nullptr; l = l->linger_next_) ++n;
    return n;
}

bool Engine::lingering_done() const noexcept {
    for (const Lingering* l = lingering_; l != nullptr; l = l->linger_next_)
        if (!l->done()) return false;
    return true;
}

uint64_t Engine::lingering_progress() const noexcept {
    uint64_t p = 0;
    for (const Lingering* l = lingering_; l != nullptr; l = l->linger_next_) p += l->progress();
    return p;
}

void Engine::run_timers() noexcept {
    while (!heap_.empty() && heap_[0]->deadline_ <= now_) {
        Timer* t = heap_[0];
        heap_remove(0);
        stats_.timers_fired++;
        t->fire(*this, now_);   // may re-arm itself
    }
}

// ---- the loop ---------------------------------------------------------------

void Engine::loop() noexcept {
    for (;;) {
        stats_.loops++;
        now_ = now_ns();
        if (head_.load(std::memory_order_relaxed) != nullptr) last_work_ = now_;
        run_commands();
        run_timers();
        if (stopping_.load(std::memory_order_acquire)) {
            // Before stopping, let what must finish finish (bounded).
            if (!draining_) {
                draining_ = true;
                drain_started_ = now_;
                drain_deadline_ = now_ + kDrainLimitNs;
                drain_begin(*this);
                drain_progress_ = drain_progress() + lingering_progress();
            } else if (uint64_t p = drain_progress() + lingering_progress();
                       p != drain_progress_ && !lingering_ended_) {
                // Still getting somewhere (a peer acknowledging): more time, up to kDrainMaxNs.
                drain_progress_ = p;
                drain_deadline_ = std::min(now_ + kDrainLimitNs, drain_started_ + kDrainMaxNs);
            }
            const bool drained = (drain_done() && lingering_done()) || now_ns() >= drain_deadline_;
            if (drained && head_.load(std::memory_order_acquire) == nullptr) {
                if (lingering_ != nullptr) {
                    // What still lingers ends now; its I/O (cancelled
                    // requests) comes back within a few milliseconds, and
                    // is reaped until then. (Work that starts to linger
                    // meanwhile, a bridge ending on a completion reaped
                    // then, is ended the same way at the next round.)
                    lingering_ended_ = true;
                    while (Lingering* l = lingering_) {
                        unlinger(*l);
                        l->end(*this);
                    }
                    drain_deadline_ = now_ns() + kLingerReapNs;
                } else if (!lingering_ended_ || now_ns() >= drain_deadline_) {
                    break;
                }
            }
        }

        __kernel_timespec ts{};
        __kernel_timespec* tsp = nullptr;
        int64_t next = heap_.empty() ? INT64_MAX : heap_[0]->deadline_;
        if (draining_ && drain_deadline_ < next) next = drain_deadline_;
        if (next != INT64_MAX) {
            int64_t wait = next - now_ns();
            if (wait < 0) wait = 0;
            ts.tv_sec = wait / 1'000'000'000;
            ts.tv_nsec = wait % 1'000'000'000;
            tsp = &ts;
        }
        io_uring_cqe* cqe = nullptr;
        // Brief adaptive polling: right after work, more work usually follows
        // within microseconds (the other half of a round trip); sleeping and
        // being woken costs more than that here (docs/engine.md). Spin only
        // while the last work is recent, never past spin_ns_.
        if (spin_ns_ > 0 && now_ns() - last_work_ < spin_ns_) {
            io_uring_submit(&ring_);
            bool got = false;
            while (!got && now_ns() - last_work_ < spin_ns_) {
                io_uring_get_events(&ring_);
                got = io_uring_cq_ready(&ring_) > 0 || head_.load(std::memory_order_acquire) != nullptr;
            }
            if (got) {
                stats_.spins++;
                reap();
                continue;
            }
        }
        sleeping_.store(true, std::memory_order_seq_cst);
        if (head_.load(std::memory_order_seq_cst) != nullptr) {
            sleeping_.store(false, std::memory_order_relaxed);
            io_uring_submit(&ring_);
            // DEFER_TASKRUN: completions are only posted when we ask.
            io_uring_get_events(&ring_);
        } else {
            io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, tsp, nullptr);
            sleeping_.store(false, std::memory_order_relaxed);
        }
        reap();
    }
}

// Every completion there is, in one batch.
void Engine::reap() noexcept {
    // The time the completions are handled at: the loop's was taken before
    // the wait, which may have lasted until the next timer.
    now_ = now_ns();
    unsigned head, n = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
        ++n;
        if (void* owner = io_uring_cqe_get_data(cqe)) static_cast<Completion*>(owner)->complete(*this, *cqe);
    }
    io_uring_cq_advance(&ring_, n);
    stats_.completions += n;
    if (n > 0) last_work_ = now_ns();
}

void* Engine::thread_main(void* arg) noexcept {
    // Signals belong to the program's threads, never to ours.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    pthread_setname_np(pthread_self(), "gsocket-engine");
    auto* a = static_cast<ThreadArg*>(arg);
    Engine* e = a->engine;
    StartSync* sync = a->sync;
    int err = e->init(sync->opts);
    pthread_mutex_lock(&sync->mu);
    sync->err = err;
    sync->done = true;
    pthread_cond_signal(&sync->cv);
    pthread_mutex_unlock(&sync->mu);
    if (err == 0) e->loop();
    return nullptr;
}

Engine* Engine::create(const Options& o, int* err) noexcept {
    int dummy;
    if (err == nullptr) err = &dummy;
    auto* e = new (std::nothrow) Engine();
    if (e == nullptr) return *err = -ENOMEM, nullptr;
    StartSync sync;
    sync.opts = o;
    ThreadArg arg{e, &sync};
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int rc = pthread_create(&e->thread_, &attr, &Engine::thread_main, &arg);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        delete e;
        return *err = -rc, nullptr;
    }
    e->thread_ok_ = true;
    pthread_mutex_lock(&sync.mu);
    while (!sync.done) pthread_cond_wait(&sync.cv, &sync.mu);
    pthread_mutex_unlock(&sync.mu);
    if (sync.err != 0) {
        pthread_join(e->thread_, nullptr);
        e->thread_ok_ = false;
        delete e;
        return *err = sync.err, nullptr;
    }
    *err = 0;
    return e;
}

void Engine::stop() noexcept {
    if (!thread_ok_) return;
    stopping_.store(true, std::memory_order_release);
    if (on_engine_thread()) return;   // the loop ends after this round
    uint64_t one = 1;
    syscall(SYS_write, wake_fd_, &one, sizeof one);
    pthread_join(thread_, nullptr);
    thread_ok_ = false;
}

void Engine::destroy(Engine* e) noexcept {
    if (e == nullptr) return;
    e->stop();
    delete e;
}

// ---- the process's engine -----------------------------------------------------

namespace {
std::atomic<Engine*> g_engine{nullptr};
std::atomic<pid_t> g_engine_pid{0};
std::atomic<bool> g_failed{false};
pthread_mutex_t g_start_mu = PTHREAD_MUTEX_INITIALIZER;

// A fork() while another thread held the start lock would leave it held
// forever in the child.
void reset_after_fork() noexcept { pthread_mutex_init(&g_start_mu, nullptr); }

void stop_at_exit() noexcept {
    Engine* e = g_engine.load(std::memory_order_acquire);
    if (e != nullptr && g_engine_pid.load(std::memory_order_relaxed) == getpid()) e->stop();
}
}  // namespace

Engine* Engine::get() noexcept {
    Engine* e = g_engine.load(std::memory_order_acquire);
    pid_t me = getpid();
    if (e != nullptr && g_engine_pid.load(std::memory_order_relaxed) == me) return e;
    if (g_failed.load(std::memory_order_relaxed) && g_engine_pid.load(std::memory_order_relaxed) == me)
        return nullptr;
    pthread_mutex_lock(&g_start_mu);
    e = g_engine.load(std::memory_order_acquire);
    if (e != nullptr && g_engine_pid.load(std::memory_order_relaxed) != me) {
        // A child of fork(): the parent's engine thread does not exist here.
        // Drop our references to its ring and eventfd; leave its memory.
        if (e->ring_ok_) sys_close(e->ring_.ring_fd);
        if (e->wake_fd_ >= 0) sys_close(e->wake_fd_);
        e = nullptr;
        g_engine.store(nullptr, std::memory_order_release);
    }
    if (e == nullptr) {
        int err = 0;
        e = create(Options{}, &err);
        g_engine_pid.store(me, std::memory_order_relaxed);
        g_failed.store(e == nullptr, std::memory_order_relaxed);
        if (e != nullptr) {
            g_engine.store(e, std::memory_order_release);
            static std::atomic<bool> registered{false};
            if (!registered.exchange(true)) {
                atexit(stop_at_exit);
                pthread_atfork(nullptr, nullptr, reset_after_fork);
            }
        }
    }
    pthread_mutex_unlock(&g_start_mu);
    return e;
}

}  // namespace gs::engine
