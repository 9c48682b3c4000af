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
#include <cstdint>
#include <sys/types.h>
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

// An overlay member (gs_overlay_*; docs/overlay.md): move-only, closed (it
// leaves the overlay) by the destructor.
//   auto m = gs::Overlay::open_or_throw("member.conf");
//   m.join_or_throw(10'000);
//   m.send(gs::Overlay::to_all, "hi", 2);
class Overlay {
public:
    enum To : int {
        to_all = GS_TO_ALL, to_parent = GS_TO_PARENT, to_children = GS_TO_CHILDREN,
        to_neighbors = GS_TO_NEIGHBORS, to_node = GS_TO_NODE,
    };
    static constexpr uint64_t no_address = GS_NO_ADDRESS;

    Overlay() noexcept = default;
    Overlay(Overlay&& o) noexcept : o_(std::exchange(o.o_, nullptr)) {}
    Overlay& operator=(Overlay&& o) noexcept {
        if (this != &o) {
            close();
            o_ = std::exchange(o.o_, nullptr);
        }
        return *this;
    }
    Overlay(const Overlay&) = delete;
    Overlay& operator=(const Overlay&) = delete;
    ~Overlay() { close(); }

    // gs_overlay_open: an invalid Overlay and `ec` set on failure.
    static Overlay open(const char* config_file, std::error_code& ec) noexcept {
        Overlay m;
        m.o_ = gs_overlay_open(config_file);
        ec = m.o_ ? std::error_code{} : last_error();
        return m;
    }
    static Overlay open_or_throw(const char* config_file) {
        std::error_code ec;
        Overlay m = open(config_file, ec);
        if (ec) throw std::system_error(ec, "gs_overlay_open");
        return m;
    }

    std::error_code join(int timeout_ms) noexcept {
        return gs_overlay_join(o_, timeout_ms) == 0 ? std::error_code{} : last_error();
    }
    void join_or_throw(int timeout_ms) {
        if (std::error_code ec = join(timeout_ms)) throw std::system_error(ec, "gs_overlay_join");
    }
    // `root` for to_parent / to_children (no_address: this member), `node` for to_node.
    std::error_code send(To to, const void* msg, size_t len, uint64_t root = no_address,
                         uint64_t node = no_address) noexcept {
        return gs_overlay_send(o_, to, msg, len, root, node) == 0 ? std::error_code{} : last_error();
    }
    // The message's length (cut to len) and its sender, or -1 and `ec`.
    ssize_t recv(void* buf, size_t len, uint64_t& source, std::error_code& ec, int flags = 0) noexcept {
        ssize_t n = gs_overlay_recv(o_, buf, len, &source, flags);
        ec = n < 0 ? last_error() : std::error_code{};
        return n;
    }

    uint64_t address() const noexcept { return gs_overlay_address(o_); }
    int fd() const noexcept { return o_ ? gs_overlay_fd(o_) : -1; }
    bool valid() const noexcept { return o_ != nullptr; }
    explicit operator bool() const noexcept { return valid(); }
    gs_overlay* get() const noexcept { return o_; }

    // Leaves the overlay; the Overlay becomes invalid.
    void close() noexcept {
        if (o_) gs_overlay_close(std::exchange(o_, nullptr));
    }

private:
    gs_overlay* o_ = nullptr;
};

}  // namespace gs
