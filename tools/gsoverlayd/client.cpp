#include "tools/gsoverlayd/client.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace gs::overlay::server {

namespace {

std::int64_t mono_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

// Waits up to `timeout_ms` for one datagram. 0, -ETIMEDOUT or -errno.
int recv_one(int fd, std::vector<std::uint8_t>& out, std::int64_t deadline) {
    out.assign(kMaxDatagram + 1, 0);
    while (true) {
        const std::int64_t left = deadline - mono_ms();
        if (left <= 0) return -ETIMEDOUT;
        pollfd p{fd, POLLIN, 0};
        const int r = poll(&p, 1, static_cast<int>(left));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) return -ETIMEDOUT;
        const ssize_t n = recv(fd, out.data(), out.size(), 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0 && errno == ECONNREFUSED) continue;   // ICMP from a server not up yet
        if (n < 0) return -errno;
        out.resize(static_cast<std::size_t>(n));
        return 0;
    }
}

}  // namespace

Client::~Client() {
    if (fd_ >= 0) ::close(fd_);
}

int Client::open(const std::string& server) {
    std::string host, port;
    if (!server.empty() && server.front() == '[') {
        const auto close = server.find("]:");
        if (close == std::string::npos) return -EINVAL;
        host = server.substr(1, close - 1);
        port = server.substr(close + 2);
    } else {
        const auto c = server.rfind(':');
        if (c == std::string::npos || c == 0) return -EINVAL;
        host = server.substr(0, c);
        port = server.substr(c + 1);
    }
    addrinfo hints{};
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res) return -EHOSTUNREACH;
    const int fd = socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        const int e = errno;
        freeaddrinfo(res);
        return -e;
    }
    if (connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        const int e = errno;
        freeaddrinfo(res);
        ::close(fd);
        return -e;
    }
    freeaddrinfo(res);
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
    server_ = server;
    // Distinct clients should not share txids: start from the pid and the clock.
    next_txid_ = static_cast<std::uint32_t>(getpid()) * 2654435761u ^ static_cast<std::uint32_t>(mono_ms());
    return 0;
}

int Client::call(Request q, Response& a, int timeout_ms, int tries) {
    if (fd_ < 0) return -EBADF;
    q.txid = ++next_txid_;
    const std::vector<std::uint8_t> bytes = encode_request(q);
    std::vector<std::uint8_t> in;
    for (int t = 0; t < tries; ++t) {
        if (send(fd_, bytes.data(), bytes.size(), 0) < 0 && errno != ECONNREFUSED) return -errno;
        const std::int64_t deadline = mono_ms() + timeout_ms;
        while (true) {
            const int r = recv_one(fd_, in, deadline);
            if (r == -ETIMEDOUT) break;
            if (r < 0) return r;
            if (decode_response(in, a) != 0 || a.txid != q.txid || a.op != q.op) continue;
            Attributes named;
            for (const Attribute& x : a.attrs.items()) named.set(x.name, x.value, Origin{"server " + server_, 0});
            a.attrs = std::move(named);
            return 0;
        }
    }
    return -ETIMEDOUT;
}

int Client::raw(std::span<const std::uint8_t> bytes, std::vector<std::uint8_t>& reply, int timeout_ms) {
    if (fd_ < 0) return -EBADF;
    if (send(fd_, bytes.data(), bytes.size(), 0) < 0 && errno != ECONNREFUSED) return -errno;
    return recv_one(fd_, reply, mono_ms() + timeout_ms);
}

}  // namespace gs::overlay::server
