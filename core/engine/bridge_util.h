// What both kinds of bridge (TCP, core/engine/bridge.cpp; UDP,
// core/engine/dgram_bridge.cpp) need, once: raw system calls (this code is
// linked into the preload library, whose exported recv/send/... are the
// shim's hooks), the program's end's blocking mode and timeouts, the
// half-close at exit and the end of a bridge's state. Internal to
// core/engine and the shim.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>

#include "core/engine/bridge.h"

namespace gs::engine::sys {

inline ssize_t recv(int fd, void* buf, size_t n, int flags) noexcept {
    return syscall(SYS_recvfrom, fd, buf, n, flags, nullptr, nullptr);
}
inline ssize_t send(int fd, const void* buf, size_t n, int flags) noexcept {
    return syscall(SYS_sendto, fd, buf, n, flags, nullptr, 0);
}
inline ssize_t sendmsg(int fd, const msghdr* m, int flags) noexcept { return syscall(SYS_sendmsg, fd, m, flags); }
inline ssize_t recvmsg(int fd, msghdr* m, int flags) noexcept { return syscall(SYS_recvmsg, fd, m, flags); }
inline int sendmmsg(int fd, mmsghdr* v, unsigned n, int flags) noexcept {
    return static_cast<int>(syscall(SYS_sendmmsg, fd, v, n, flags));
}
inline int recvmmsg(int fd, mmsghdr* v, unsigned n, int flags) noexcept {
    return static_cast<int>(syscall(SYS_recvmmsg, fd, v, n, flags, nullptr));
}
inline int shutdown(int fd, int how) noexcept { return static_cast<int>(syscall(SYS_shutdown, fd, how)); }
// timeout_ms < 0: no timeout.
inline int poll(pollfd* p, nfds_t n, int timeout_ms) noexcept {
    timespec ts{timeout_ms / 1000, (timeout_ms % 1000) * 1'000'000L};
    return static_cast<int>(syscall(SYS_ppoll, p, n, timeout_ms < 0 ? nullptr : &ts, nullptr, 0));
}

}  // namespace gs::engine::sys

namespace gs::engine {

// A call on the program's end does not block: MSG_DONTWAIT, or O_NONBLOCK on it.
inline bool nonblocking(int pfd, int flags) noexcept {
    if (flags & MSG_DONTWAIT) return true;
    long fl = syscall(SYS_fcntl, pfd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}

// The program's end's SO_SNDTIMEO / SO_RCVTIMEO (`opt`) in ms, -1: none.
inline int timeout_ms(int pfd, int opt) noexcept {
    timeval tv{};
    socklen_t l = sizeof tv;
    if (syscall(SYS_getsockopt, pfd, SOL_SOCKET, opt, &tv, &l) != 0 || (tv.tv_sec == 0 && tv.tv_usec == 0))
        return -1;
    int64_t ms = int64_t{tv.tv_sec} * 1000 + (tv.tv_usec + 999) / 1000;
    return ms > INT32_MAX ? INT32_MAX : static_cast<int>(ms);
}

inline size_t iov_total(const iovec* iov, size_t n) noexcept {
    size_t t = 0;
    for (size_t i = 0; i < n; ++i) t += iov[i].iov_len;
    return t;
}

// At exit the program writes no more: half-close its end (if that fd is
// still this bridge's socket, not a file the number went to since) so the
// engine relays what is queued and then sees the end of it.
inline void half_close_program_end(const BridgeState& s) noexcept {
    if (s.program_fd < 0) return;
    struct stat st;
    if (fstat(s.program_fd, &st) == 0 && st.st_ino == s.program_ino) sys::shutdown(s.program_fd, SHUT_WR);
}

// The engine is done with a bridge: close its end of the pair and say the
// flow is closed. The transport stays open until the owner closes it (its
// number must not go elsewhere while the program's fd still asks about it).
// The caller then frees its side and calls s.on_done(&s), last.
inline void retire(BridgeState& s) noexcept {
    close_internal_fd(s.app_end);
    s.app_end = -1;
    if (s.phase.load(std::memory_order_relaxed) == BridgeState::connected)
        s.phase.store(BridgeState::closed, std::memory_order_release);
}

}  // namespace gs::engine
