#include "shim/log.h"

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <atomic>

namespace gs::shim::log {
namespace {

std::atomic<LogLevel> g_level{LogLevel::warn};
char g_file[PATH_MAX];   // empty = stderr

// Raw syscalls: the log must not re-enter our own hooks.
long sys_write(int fd, const char* p, size_t n) noexcept { return syscall(SYS_write, fd, p, n); }

// fd 2 may have been closed by a daemon and reused for one of the program's
// network sockets; writing there would corrupt its traffic. A unix socket
// (journald) or anything else is fine.
bool stderr_is_safe() noexcept {
    struct stat st;
    if (fstat(2, &st) != 0) return false;
    if (!S_ISSOCK(st.st_mode)) return true;
    int domain = 0;
    socklen_t len = sizeof domain;
    if (syscall(SYS_getsockopt, 2, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) return false;
    return domain == AF_UNIX;
}

}  // namespace

void configure(LogLevel level, const char* file) noexcept {
    g_level.store(level, std::memory_order_relaxed);
    g_file[0] = '\0';
    if (file != nullptr && file[0] != '\0') {
        size_t n = strnlen(file, sizeof g_file - 1);
        memcpy(g_file, file, n);
        g_file[n] = '\0';
    }
}

LogLevel level() noexcept { return g_level.load(std::memory_order_relaxed); }

void line(LogLevel l, const char* fmt, ...) noexcept {
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "gsocket[%d] %s: ", static_cast<int>(getpid()), policy::name(l));
    if (n < 0) return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - static_cast<size_t>(n) - 1, fmt, ap);
    va_end(ap);
    if (m < 0) return;
    size_t len = static_cast<size_t>(n) + static_cast<size_t>(m);
    if (len > sizeof buf - 2) len = sizeof buf - 2;   // truncated: still one line
    buf[len++] = '\n';

    if (g_file[0] != '\0') {
        int fd = static_cast<int>(
            syscall(SYS_openat, AT_FDCWD, g_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
        if (fd >= 0) {
            sys_write(fd, buf, len);
            syscall(SYS_close, fd);
            return;
        }
    }
    if (stderr_is_safe()) sys_write(2, buf, len);
}

}  // namespace gs::shim::log
