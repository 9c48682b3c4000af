// The real libc functions behind every hook, resolved once with dlsym(RTLD_NEXT).
//
// Calls can arrive before the library's constructor (other constructors, the
// dynamic loader's own users), so every hook goes through real::fn(), which
// resolves lazily on first use. Resolution never goes through the hooks.
#pragma once

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>

namespace gs::shim::real {

// X(name, return type, parameter list). One line per interposed function.
#define GS_REAL_FUNCTIONS(X)                                                              \
    X(socket, int, (int, int, int))                                                       \
    X(connect, int, (int, const sockaddr*, socklen_t))                                    \
    X(bind, int, (int, const sockaddr*, socklen_t))                                       \
    X(listen, int, (int, int))                                                            \
    X(accept, int, (int, sockaddr*, socklen_t*))                                          \
    X(accept4, int, (int, sockaddr*, socklen_t*, int))                                    \
    X(send, ssize_t, (int, const void*, size_t, int))                                     \
    X(sendto, ssize_t, (int, const void*, size_t, int, const sockaddr*, socklen_t))       \
    X(sendmsg, ssize_t, (int, const msghdr*, int))                                        \
    X(sendmmsg, int, (int, mmsghdr*, unsigned int, int))                                  \
    X(recv, ssize_t, (int, void*, size_t, int))                                           \
    X(recvfrom, ssize_t, (int, void*, size_t, int, sockaddr*, socklen_t*))                \
    X(recvmsg, ssize_t, (int, msghdr*, int))                                              \
    X(recvmmsg, int, (int, mmsghdr*, unsigned int, int, struct timespec*))                \
    X(__recv_chk, ssize_t, (int, void*, size_t, size_t, int))                             \
    X(__recvfrom_chk, ssize_t, (int, void*, size_t, size_t, int, sockaddr*, socklen_t*))  \
    X(read, ssize_t, (int, void*, size_t))                                                \
    X(__read_chk, ssize_t, (int, void*, size_t, size_t))                                  \
    X(write, ssize_t, (int, const void*, size_t))                                         \
    X(readv, ssize_t, (int, const iovec*, int))                                           \
    X(writev, ssize_t, (int, const iovec*, int))                                          \
    X(getsockopt, int, (int, int, int, void*, socklen_t*))                                \
    X(setsockopt, int, (int, int, int, const void*, socklen_t))                           \
    X(getsockname, int, (int, sockaddr*, socklen_t*))                                     \
    X(getpeername, int, (int, sockaddr*, socklen_t*))                                     \
    X(shutdown, int, (int, int))                                                          \
    X(close, int, (int))                                                                  \
    X(dup, int, (int))                                                                    \
    X(dup2, int, (int, int))                                                              \
    X(dup3, int, (int, int, int))                                                         \
    X(fcntl, int, (int, int, ...))                                                        \
    X(fcntl64, int, (int, int, ...))                                                      \
    X(close_range, int, (unsigned int, unsigned int, int))                                \
    X(closefrom, void, (int))                                                            \
    X(epoll_ctl, int, (int, int, int, epoll_event*))

// real::connect() etc.: inline, one relaxed load on the hot path; the first
// call resolves out of line.
#define GS_DECLARE(name, ret, params)                                        \
    using name##_t = ret(*) params;                                          \
    extern std::atomic<name##_t> g_##name;                                   \
    name##_t resolve_##name() noexcept;                                      \
    inline name##_t name() noexcept {                                        \
        name##_t p = g_##name.load(std::memory_order_relaxed);              \
        return __builtin_expect(p != nullptr, 1) ? p : resolve_##name();     \
    }
GS_REAL_FUNCTIONS(GS_DECLARE)
#undef GS_DECLARE

// Resolve every symbol now (the constructor calls this). Returns the number
// of symbols that could not be resolved (each is logged once at debug).
int resolve_all() noexcept;

}  // namespace gs::shim::real
