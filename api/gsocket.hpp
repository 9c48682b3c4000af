// A thin header-only C++20 layer over the GSocket C API (gsocket/gsocket.h).
//
// gs::Socket owns one fd (move-only, closed by the destructor, which releases
// the flow's reservation). Errors are std::error_code (std::generic_category,
// the errno of the C call): the library is C and never throws across its edge,
// and a socket program tests results anyway. For programs that prefer
// exceptions, the *_or_throw forms throw std::system_error with the same code.
// Nothing here allocates but the exceptions.
#pragma once

#include <cerrno>
#include <system_error>
#include <utility>

#include "gsocket/gsocket.h"

namespace gs {

enum class Class : int {
    datagram = GS_DATAGRAM,
    reliable = GS_RELIABLE,
    guaranteed = GS_GUARANTEED,
    realtime = GS_REALTIME,
    group = GS_GROUP,
};

// gs_qos with every field unset, and setters that chain:
//   gs::Qos().rate(2'500'000).dscp(46)
struct Qos {
    gs_qos raw;
    Qos() noexcept { gs_qos_init(&raw); }
    Qos& rate(uint64_t bytes_per_s) noexcept { raw.rate = bytes_per_s; return *this; }
    Qos& rate_down(uint64_t bytes_per_s) noexcept { raw.rate_down = bytes_per_s; return *this; }
    Qos& burst(uint64_t bytes) noexcept { raw.burst = bytes; return *this; }
    Qos& latency_us(uint32_t us) noexcept { raw.latency_us = us; return *this; }
    Qos& jitter_us(uint32_t us) noexcept { raw.jitter_us = us; return *this; }
    Qos& loss_ppm(uint32_t ppm) noexcept { raw.loss_ppm = ppm; return *this; }
    Qos& priority(int p) noexcept { raw.priority = p; return *this; }
    Qos& dscp(int d) noexcept { raw.dscp = d; return *this; }
};

inline const char* name(Class c) noexcept {
    switch (c) {
    case Class::datagram: return "datagram";
    case Class::reliable: return "reliable";
    case Class::guaranteed: return "guaranteed";
    case Class::realtime: return "realtime";
    case Class::group: return "group";
    }
    return "?";
}
inline const char* admission_name(int a) noexcept {
    switch (a) {
    case GS_NONE: return "none";
    case GS_GRANTED: return "granted";
    case GS_DOWNGRADED: return "downgraded";
    case GS_UNRESERVED: return "unreserved";
    }
    return "?";
}

inline std::error_code last_error() noexcept { return {errno, std::generic_category()}; }

class Socket {
public:
    Socket() noexcept = default;
    // Takes ownership of an fd (e.g. one accept() returned).
    explicit Socket(int fd) noexcept : fd_(fd) {}
    Socket(Socket&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Socket& operator=(Socket&& o) noexcept {
        if (this != &o) {
            std::error_code ignored;
            close(ignored);
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    ~Socket() {
        std::error_code ignored;
        close(ignored);
    }

    // gs_socket: an invalid Socket and `ec` set on failure.
    static Socket create(int domain, Class cls, const Qos& qos, std::error_code& ec) noexcept {
        int fd = gs_socket(domain, static_cast<gs_class>(cls), &qos.raw);
        ec = fd < 0 ? last_error() : std::error_code{};
        return Socket(fd);
    }
    static Socket create_or_throw(int domain, Class cls, const Qos& qos = Qos()) {
        std::error_code ec;
        Socket s = create(domain, cls, qos, ec);
        if (ec) throw std::system_error(ec, "gs_socket");
        return s;
    }

    // gs_set_qos (before connect).
    std::error_code set_qos(Class cls, const Qos& qos) noexcept {
        return gs_set_qos(fd_, static_cast<gs_class>(cls), &qos.raw) == 0 ? std::error_code{} : last_error();
    }

    // gs_connect: `granted` says what the flow got. EINPROGRESS (non-blocking)
    // comes back as an error code with `granted` filled.
    std::error_code connect(const sockaddr* addr, socklen_t len, gs_grant& granted) noexcept {
        return gs_connect(fd_, addr, len, &granted) == 0 ? std::error_code{} : last_error();
    }
    gs_grant connect_or_throw(const sockaddr* addr, socklen_t len) {
        gs_grant g{};
        if (std::error_code ec = connect(addr, len, g)) throw std::system_error(ec, "gs_connect");
        return g;
    }

    // gs_get_qos: what the flow has now.
    std::error_code qos(gs_grant& out) const noexcept {
        return gs_get_qos(fd_, &out) == 0 ? std::error_code{} : last_error();
    }
    gs_grant qos_or_throw() const {
        gs_grant g{};
        if (std::error_code ec = qos(g)) throw std::system_error(ec, "gs_get_qos");
        return g;
    }

    // gs_close, releasing the reservation; the Socket becomes invalid either way.
    std::error_code close() noexcept {
        std::error_code ec;
        close(ec);
        return ec;
    }

    int fd() const noexcept { return fd_; }
    bool valid() const noexcept { return fd_ >= 0; }
    explicit operator bool() const noexcept { return valid(); }
    // Gives up ownership.
    int release() noexcept { return std::exchange(fd_, -1); }

private:
    void close(std::error_code& ec) noexcept {
        if (fd_ < 0) return;
        ec = gs_close(std::exchange(fd_, -1)) == 0 ? std::error_code{} : last_error();
    }
    int fd_ = -1;
};

}  // namespace gs
