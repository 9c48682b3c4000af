// The control socket's server, on the engine thread (see control.h).
//
// One Server per process, created on first use and never freed: completions
// in flight may point into it until the engine is gone, and an atexit handler
// reads its path. It holds a fixed table of kMaxConnections connections,
// each with one buffer for the request line and one std::string reply, so
// memory is bounded whatever clients do: when every slot is busy the server
// stops accepting until one frees, and further clients wait in the listen
// backlog (then get EAGAIN from connect), never in our memory.
//
// Every active connection has exactly one io_uring request in flight (its
// recv or its send) and an idle Timer; the timer cancels the request and the
// completion decides what happens next. That single-owner rule is what makes
// closing safe: a slot is freed only from its own completion.
//
// Threads: application threads touch only the atomics and, under mu_, the
// start/stop handshake; everything else is the engine thread's.
#include "core/engine/control.h"

#include "core/engine/overlay_status.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <new>
#include <string_view>

#include "core/engine/engine.h"
#include "core/qos/ledger.h"

namespace gs::engine {

std::string control_dir() {
    std::string dir, why;
    qos::runtime_dir(dir, why, qos::DirMode::name_only);
    return dir;
}

std::string control_path(pid_t pid) { return control_dir() + "/" + std::to_string(pid) + ".sock"; }

namespace {

constexpr int64_t kIdleNs = kIdleMs * 1'000'000;
constexpr int64_t kAcceptRetryNs = 100'000'000;   // after EMFILE and the like: do not spin
constexpr int kHandshakeWaitMs = 5000;            // bound on waiting for the engine thread

// The engine is linked into the preload library: raw system calls keep the
// shim's hooks (and their classification of sockets) out of the engine's own
// housekeeping.
int sys_socket(int domain, int type) noexcept { return static_cast<int>(syscall(SYS_socket, domain, type, 0)); }
int sys_unlink(const char* p) noexcept { return static_cast<int>(syscall(SYS_unlinkat, AT_FDCWD, p, 0)); }

struct Server;

enum class Phase : uint8_t { free, reading, writing };

struct Conn final : Timer {
    struct Io final : Completion {
        Conn* conn = nullptr;
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override { conn->on_io(e, cqe.res); }
    };

    Server* srv = nullptr;
    int fd = -1;
    Phase phase = Phase::free;
    bool timed_out = false;
    size_t len = 0;
    char buf[kMaxRequest + 1];   // a line of kMaxRequest bytes and its newline
    std::string reply;
    size_t sent = 0;
    Io io;

    void start(Engine& e, int newfd) noexcept;
    void fire(Engine& e, int64_t now) noexcept override;
    void on_io(Engine& e, int res) noexcept;
    void post_recv(Engine& e) noexcept;
    void post_send(Engine& e) noexcept;
    void answer(Engine& e) noexcept;
    void send_text(Engine& e, const char* text) noexcept;
    void close(Engine& e) noexcept;
};

struct Server {
    Server() noexcept {
        init_sync();
        for (Conn& c : conns) {
            c.srv = this;
            c.io.conn = &c;
        }
        accept_op.srv = this;
        accept_retry.srv = this;
        start_cmd.srv = this;
        stop_cmd.srv = this;
    }

    void init_sync() noexcept {
        pthread_mutex_init(&mu, nullptr);
        pthread_condattr_t a;
        pthread_condattr_init(&a);
        pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
        pthread_cond_init(&cv, &a);
        pthread_condattr_destroy(&a);
    }

    struct AcceptOp final : Completion {
        Server* srv = nullptr;
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override { srv->on_accept(e, cqe.res); }
    };
    struct AcceptRetry final : Timer {
        Server* srv = nullptr;
        void fire(Engine& e, int64_t) noexcept override { srv->post_accept(e); }
    };
    struct StartCmd final : Command {
        Server* srv = nullptr;
        void run(Engine& e) noexcept override { srv->finish(srv->start_here(e)); }
    };
    struct StopCmd final : Command {
        Server* srv = nullptr;
        void run(Engine& e) noexcept override { srv->stop_here(e); }
    };

    // ---- shared with application threads ----
    std::atomic<SnapshotFn> fn{nullptr};
    std::atomic<pid_t> running_pid{0};   // the pid answering on path; 0 = none
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pid_t owner_pid = 0;                 // under mu: the process this state belongs to
    bool cmd_busy = false;               // under mu: a start or stop not finished yet
    bool done = false;                   // under mu
    int result = 0;                      // under mu
    // Written by the engine thread before running_pid (release), read by the
    // atexit handler after it (acquire): no allocation at exit.
    char path[sizeof(sockaddr_un::sun_path)] = "";

    // ---- engine thread ----
    int lfd = -1;
    bool accept_pending = false;
    bool stopping = false;
    Conn conns[kMaxConnections];
    AcceptOp accept_op;
    AcceptRetry accept_retry;
    StartCmd start_cmd;
    StopCmd stop_cmd;

    int start_here(Engine& e) noexcept;
    void stop_here(Engine& e) noexcept;
    void maybe_finish_stop() noexcept;
    void finish(int rc) noexcept;
    void post_accept(Engine& e) noexcept;
    void on_accept(Engine& e, int res) noexcept;
    void on_conn_closed(Engine& e) noexcept;
    Conn* free_conn() noexcept;
    void reset_inherited() noexcept;
};

// Cancel `target`'s request; the cancel's own completion carries no owner.
void cancel_op(Engine& e, Completion* target) noexcept {
    io_uring_sqe* s = e.sqe();
    io_uring_prep_cancel(s, target, 0);
    io_uring_sqe_set_data(s, nullptr);
}

// ---- connections --------------------------------------------------------------

void Conn::start(Engine& e, int newfd) noexcept {
    fd = newfd;
    guard_fd(fd);
    phase = Phase::reading;
    timed_out = false;
    len = 0;
    sent = 0;
    e.arm(*this, e.now() + kIdleNs);
    post_recv(e);
}

void Conn::post_recv(Engine& e) noexcept {
    io_uring_sqe* s = e.sqe();
    io_uring_prep_recv(s, fd, buf + len, sizeof buf - len, 0);
    io_uring_sqe_set_data(s, static_cast<Completion*>(&io));
}

void Conn::post_send(Engine& e) noexcept {
    io_uring_sqe* s = e.sqe();
    io_uring_prep_send(s, fd, reply.data() + sent, reply.size() - sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data(s, static_cast<Completion*>(&io));
}

// The request (or the reply) is late: cancel what is in flight and let its
// completion, the slot's single owner, decide.
void Conn::fire(Engine& e, int64_t) noexcept {
    timed_out = true;
    cancel_op(e, &io);
}

void Conn::send_text(Engine& e, const char* text) noexcept {
    try {
        reply.assign(text);
    } catch (...) {
        close(e);
        return;
    }
    phase = Phase::writing;
    timed_out = false;
    sent = 0;
    e.arm(*this, e.now() + kIdleNs);
    post_send(e);
}

void Conn::answer(Engine& e) noexcept {
    std::string_view line;
    const Request r = parse_request(buf, len, &line);
    if (r == Request::ping) return send_text(e, "pong\n");
    if (r == Request::flows || r == Request::overlays) {
        SnapshotFn f = srv->fn.load(std::memory_order_acquire);
        try {
            if (r == Request::overlays) reply = overlays_json(line.substr(8));
            else reply = f ? f() : std::string("error: no snapshot\n");
            if (reply.empty() || reply.back() != '\n') reply += '\n';
        } catch (...) {
            return send_text(e, "error: out of memory\n");
        }
        phase = Phase::writing;
        timed_out = false;
        sent = 0;
        e.arm(*this, e.now() + kIdleNs);
        return post_send(e);
    }
    char msg[128];
    unknown_request_text(line, msg);
    send_text(e, msg);
}

void Conn::on_io(Engine& e, int res) noexcept {
    if (srv->stopping) return close(e);
    if (phase == Phase::reading) {
        if (res == -ECANCELED && timed_out) return send_text(e, "error: no request within 2 s\n");
        if (res < 0 || (res == 0 && len == 0)) return close(e);
        if (res == 0) return answer(e);   // EOF ends the line (shutdown(SHUT_WR) without a newline)
        len += static_cast<size_t>(res);
        if (memchr(buf, '\n', len) != nullptr) return answer(e);
        if (len == sizeof buf) return send_text(e, "error: request longer than 256 bytes\n");
        if (timed_out) return send_text(e, "error: no request within 2 s\n");   // the cancel lost the race
        e.arm(*this, e.now() + kIdleNs);   // silence is counted from the last byte
        return post_recv(e);
    }
    // Writing: an error, a reader that went away, or the timeout's cancel.
    if (res <= 0 || timed_out) return close(e);
    sent += static_cast<size_t>(res);
    if (sent >= reply.size()) return close(e);
    e.arm(*this, e.now() + kIdleNs);
    post_send(e);
}

void Conn::close(Engine& e) noexcept {
    e.cancel(*this);
    // Forget the number before the kernel frees it: a fork() in another
    // thread right after the close copies this state into a child, whose
    // reset_inherited() would otherwise close the number again, by then
    // maybe the program's own new fd (a pipe made just before the fork).
    const int f = fd;
    fd = -1;
    close_internal_fd(f);
    phase = Phase::free;
    std::string().swap(reply);   // a large snapshot's memory goes back now
    srv->on_conn_closed(e);
}

// ---- the listener -------------------------------------------------------------

Conn* Server::free_conn() noexcept {
    for (Conn& c : conns)
        if (c.phase == Phase::free) return &c;
    return nullptr;
}

void Server::post_accept(Engine& e) noexcept {
    if (lfd < 0 || stopping || accept_pending || free_conn() == nullptr) return;
    io_uring_sqe* s = e.sqe();
    io_uring_prep_accept(s, lfd, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data(s, static_cast<Completion*>(&accept_op));
    accept_pending = true;
}

void Server::on_accept(Engine& e, int res) noexcept {
    accept_pending = false;
    if (stopping) {
        if (res >= 0) close_internal_fd(res);
        return maybe_finish_stop();
    }
    if (res < 0) {
        if (res == -EINTR || res == -ECONNABORTED || res == -EAGAIN) return post_accept(e);
        // EMFILE, ENFILE, ENOMEM: retrying at once would spin the engine.
        e.arm(accept_retry, e.now() + kAcceptRetryNs);
        return;
    }
    Conn* c = free_conn();   // post_accept() made sure there is one
    if (c == nullptr) {
        close_internal_fd(res);
        return;
    }
    c->start(e, res);
    post_accept(e);   // waits (not armed) while every slot is busy
}

void Server::on_conn_closed(Engine& e) noexcept {
    if (stopping) return maybe_finish_stop();
    post_accept(e);
}

int Server::start_here(Engine& e) noexcept {
    if (lfd >= 0) return 0;
    std::string dir, why, p;
    try {
        int rc = qos::runtime_dir(dir, why, qos::DirMode::create);
        if (rc < 0) return rc;
        p = dir + "/" + std::to_string(getpid()) + ".sock";
    } catch (...) {
        return -ENOMEM;
    }
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (p.size() >= sizeof a.sun_path) return -ENAMETOOLONG;
    memcpy(a.sun_path, p.c_str(), p.size() + 1);
    int fd = sys_socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return -errno;
    guard_fd(fd);
    // The path carries our pid: whatever is there was left by a dead process
    // that had it before us.
    sys_unlink(a.sun_path);
    int rc = 0;
    if (syscall(SYS_bind, fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        rc = -errno;
    } else if (syscall(SYS_fchmodat, AT_FDCWD, a.sun_path, 0600) != 0 ||
               syscall(SYS_listen, fd, kListenBacklog) != 0) {
        // fchmodat rather than umask: the umask is the program's, shared by its threads.
        rc = -errno;
        sys_unlink(a.sun_path);
    }
    if (rc < 0) {
        close_internal_fd(fd);
        return rc;
    }
    lfd = fd;
    stopping = false;
    memcpy(path, a.sun_path, sizeof path);
    running_pid.store(getpid(), std::memory_order_release);
    post_accept(e);
    return 0;
}

// Cancel everything in flight; the last completion closes the listener and
// wakes control_stop() (maybe_finish_stop).
void Server::stop_here(Engine& e) noexcept {
    if (lfd < 0) return finish(0);
    stopping = true;
    running_pid.store(0, std::memory_order_release);
    sys_unlink(path);
    e.cancel(accept_retry);
    if (accept_pending) cancel_op(e, &accept_op);
    for (Conn& c : conns) {
        if (c.phase == Phase::free) continue;
        e.cancel(c);
        cancel_op(e, &c.io);
    }
    maybe_finish_stop();
}

void Server::maybe_finish_stop() noexcept {
    if (!stopping || accept_pending) return;
    for (Conn& c : conns)
        if (c.phase != Phase::free) return;
    const int f = lfd;   // forgotten first, as in Conn::close
    lfd = -1;
    close_internal_fd(f);
    stopping = false;
    finish(0);
}

void Server::finish(int rc) noexcept {
    pthread_mutex_lock(&mu);
    result = rc;
    done = true;
    cmd_busy = false;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

// In a child of fork(): the state describes the parent's server, whose engine
// thread does not exist here. Drop our copies of its descriptors (the parent
// keeps answering on its own) and start from nothing.
void Server::reset_inherited() noexcept {
    if (lfd >= 0) close_internal_fd(lfd);
    lfd = -1;
    for (Conn& c : conns) {
        if (c.fd >= 0) close_internal_fd(c.fd);
        c.fd = -1;
        c.phase = Phase::free;
        c.heap_index_ = -1;   // it was in the parent's timer heap
        std::string().swap(c.reply);
    }
    accept_retry.heap_index_ = -1;
    accept_pending = false;
    stopping = false;
    cmd_busy = false;
    running_pid.store(0, std::memory_order_relaxed);
    owner_pid = getpid();
}

Server* server() noexcept {
    static Server* s = new (std::nothrow) Server();
    return s;
}

// A fork() while another thread was inside control_start() would leave the
// lock held, or the condition variable mid-wait, forever in the child.
void after_fork_child() noexcept {
    if (Server* s = server()) s->init_sync();
}

// A process that exits normally leaves no socket file behind; the listener
// itself goes with the process. Another process's (a fork parent's) file is
// not ours to remove.
void unlink_at_exit() noexcept {
    Server* s = server();
    if (s != nullptr && s->running_pid.load(std::memory_order_acquire) == getpid()) sys_unlink(s->path);
}

// Wait (mu held) for the engine to have run the start or stop command.
int wait_done(Server* s) noexcept {
    timespec until{};
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += kHandshakeWaitMs / 1000;
    while (!s->done) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT) break;
    }
    // On a time-out the command stays submitted (cmd_busy): it is part of
    // the Server, so running late does no harm, and nobody resubmits it meanwhile.
    return s->done ? s->result : -ETIMEDOUT;
}

}  // namespace

int control_start(SnapshotFn fn) noexcept {
    if (fn == nullptr) return -EINVAL;
    Server* s = server();
    if (s == nullptr) return -ENOMEM;
    s->fn.store(fn, std::memory_order_release);
    const pid_t me = getpid();
    if (s->running_pid.load(std::memory_order_acquire) == me) return 0;
    errno = 0;
    Engine* e = Engine::get();
    if (e == nullptr) return errno ? -errno : -ENODEV;
    static std::atomic<bool> registered{false};
    if (!registered.exchange(true)) {
        atexit(unlink_at_exit);
        pthread_atfork(nullptr, nullptr, after_fork_child);
    }
    pthread_mutex_lock(&s->mu);
    if (s->owner_pid != me) s->reset_inherited();
    int rc = 0;
    if (s->running_pid.load(std::memory_order_acquire) == me) {
        rc = 0;
    } else if (s->cmd_busy) {
        rc = -EBUSY;
    } else if (e->on_engine_thread()) {
        rc = s->start_here(*e);   // the engine's own state: no handshake
    } else {
        s->cmd_busy = true;
        s->done = false;
        e->submit(s->start_cmd);
        rc = wait_done(s);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int control_stop() noexcept {
    Server* s = server();
    if (s == nullptr) return 0;
    const pid_t me = getpid();
    pthread_mutex_lock(&s->mu);
    if (s->owner_pid != me || s->running_pid.load(std::memory_order_acquire) != me) {
        pthread_mutex_unlock(&s->mu);
        return 0;   // nothing of ours runs
    }
    if (s->cmd_busy) {
        pthread_mutex_unlock(&s->mu);
        return -EBUSY;
    }
    Engine* e = Engine::get();
    if (e == nullptr) {
        pthread_mutex_unlock(&s->mu);
        return -ENODEV;
    }
    s->cmd_busy = true;
    s->done = false;
    if (e->on_engine_thread()) {
        // The drain needs this thread's loop: begin it and return; finish()
        // takes the lock, so let go of it first.
        pthread_mutex_unlock(&s->mu);
        s->stop_here(*e);
        return 0;
    }
    e->submit(s->stop_cmd);
    int rc = wait_done(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

}  // namespace gs::engine
