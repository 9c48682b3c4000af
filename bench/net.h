// net.h: the small socket helpers the benchmark tools in bench/ share
// (pingpong, isolation, scale_flows). Header-only. The helpers print nothing:
// they return -1 or false with errno set, and each tool writes its own message
// (its name, the port, the errno text).
#pragma once

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

namespace bench {

// Sends (write_it) or receives exactly n bytes of buf on fd, retrying EINTR.
// false on an error (errno set) or when the peer closed first.
inline bool full(int fd, char* buf, size_t n, bool write_it) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = write_it ? send(fd, buf + done, n - done, MSG_NOSIGNAL) : recv(fd, buf + done, n - done, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        done += static_cast<size_t>(r);
    }
    return true;
}

// CLOCK_MONOTONIC in seconds.
inline double now_s() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// A decimal port 1-65535 and nothing else, or -1.
inline int parse_port(const char* s) {
    char* end = nullptr;
    long v = strtol(s, &end, 10);
    return (end != s && *end == '\0' && v >= 1 && v <= 65535) ? static_cast<int>(v) : -1;
}

// A TCP socket (SOCK_STREAM | type_flags, e.g. SOCK_NONBLOCK) with SO_REUSEADDR,
// bound to 127.0.0.1:port and listening with the given backlog. On failure: -1,
// errno set, and *failed (when given) names the call that failed: "socket",
// "bind" or "listen".
inline int listen_loopback(int port, int backlog, int type_flags = 0, const char** failed = nullptr) {
    const char* step = "socket";
    int l = socket(AF_INET, SOCK_STREAM | type_flags, 0);
    if (l >= 0) {
        int one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<uint16_t>(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        step = "bind";
        if (bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
            step = "listen";
            if (listen(l, backlog) == 0) return l;
        }
        int e = errno;
        close(l);
        errno = e;
    }
    if (failed) *failed = step;
    return -1;
}

// A UDP socket bound to 127.0.0.1 (port chosen by the kernel, in *port)
// with 32 MiB buffers: past net.core.rmem_max/wmem_max when allowed (root,
// SO_*BUFFORCE), else as much as they allow. -1 with errno set.
inline int loopback_udp(uint16_t* port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    int big = 32 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) != 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    *port = ntohs(a.sin_port);
    return fd;
}

}  // namespace bench
