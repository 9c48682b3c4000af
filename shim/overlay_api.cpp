// The overlay socket API (api/gsocket.h, "Overlay sockets"): gs_overlay_*
// entry points of libgsocket-preload.so. A member is a protocol node (from
// the attribute file, core/overlay/config) run by the engine's OverlayHost
// (core/engine/overlay_host.h); the program holds one end of its
// SOCK_SEQPACKET pair. C entry points: nothing below them throws across.
#include "api/gsocket.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include "core/engine/engine.h"
#include "core/engine/overlay_host.h"
#include "core/engine/udp_host.h"
#include "core/overlay/config/config.h"
#include "core/overlay/config/factory.h"
#include "shim/log.h"
#include "shim/real.h"
#include "shim/shim.h"

#define GS_EXPORT extern "C" __attribute__((visibility("default")))

using namespace gs::shim;
namespace engine = gs::engine;
namespace ov = gs::overlay;

struct gs_overlay {
    int fd = -1;                     // the program's end of the pair
    engine::Engine* e = nullptr;
    engine::OverlayHost* host = nullptr;   // engine thread only (and while open)
    engine::OverlayShared shared;
    size_t max_payload = 0;
};

namespace {

// Runs fn on the engine thread and waits (API calls only: never from a hook).
template <class F>
bool on_engine(engine::Engine& e, F fn) noexcept {
    struct Call final : engine::Command {
        F* fn = nullptr;
        std::atomic<uint32_t> done{0};
        void run(engine::Engine& en) noexcept override {
            (*fn)(en);
            done.store(1, std::memory_order_release);
            syscall(SYS_futex, reinterpret_cast<uint32_t*>(&done), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
        }
    } c;
    c.fn = &fn;
    e.submit(c);
    while (c.done.load(std::memory_order_acquire) == 0)
        syscall(SYS_futex, reinterpret_cast<uint32_t*>(&c.done), FUTEX_WAIT_PRIVATE, 0, nullptr, nullptr, 0);
    return true;
}

int fail(int err) noexcept {
    errno = err;
    return -1;
}

bool read_file(const char* path, std::string& out, int& err) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        err = errno ? errno : ENOENT;
        return false;
    }
    std::ostringstream ss;
    ss << f.rdbuf();
    out = ss.str();
    return true;
}

uint64_t seed() noexcept {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != sizeof s) {
        timespec t{};
        clock_gettime(CLOCK_MONOTONIC, &t);
        s = static_cast<uint64_t>(t.tv_nsec) ^ (static_cast<uint64_t>(getpid()) << 32);
    }
    return s;
}

gs_overlay* open_member(const char* path) {
    if (path == nullptr) {
        GS_LOG(warn, "gs_overlay_open: config_file is NULL: give the overlay's attribute file (docs/overlay.md) (EINVAL)");
        errno = EINVAL;
        return nullptr;
    }
    std::string text;
    int err = 0;
    if (!read_file(path, text, err)) {
        GS_LOG(warn, "gs_overlay_open: cannot read %s: %s", path, strerror(err));
        errno = err;
        return nullptr;
    }
    ov::Config cfg;
    std::vector<std::string> errors;
    if (ov::parse_config(text, path, cfg, errors) != 0) {
        for (const std::string& m : errors) GS_LOG(warn, "gs_overlay_open: %s", m.c_str());
        errno = EINVAL;
        return nullptr;
    }
    if (!cfg.server.empty())
        GS_LOG(info, "gs_overlay_open: %s: Server = %s is not asked yet by this build: joining through Bootstrap only",
               path, cfg.server.c_str());
    engine::Engine* e = engine::Engine::get();
    if (e == nullptr) {
        GS_LOG(warn, "gs_overlay_open: the gsocket engine cannot start (EAGAIN)");
        errno = EAGAIN;
        return nullptr;
    }
    // The node's UDP socket, at NodeAddress.
    const int family = cfg.node_address.is_v4() ? AF_INET : AF_INET6;
    int udp = real::socket()(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (udp < 0) return nullptr;
    sockaddr_storage ss{};
    socklen_t sl = engine::from_addr(cfg.node_address, ss, family);
    if (real::bind()(udp, reinterpret_cast<sockaddr*>(&ss), sl) != 0) {
        err = errno;
        GS_LOG(warn, "gs_overlay_open: %s: NodeAddress = %s: %s", path, cfg.node_address.str().c_str(), strerror(err));
        real::close()(udp);
        errno = err;
        return nullptr;
    }
    sl = sizeof ss;
    real::getsockname()(udp, reinterpret_cast<sockaddr*>(&ss), &sl);
    gs::sansio::Addr self = engine::to_addr(reinterpret_cast<sockaddr*>(&ss), sl);
    std::string why;
    std::unique_ptr<ov::Node> node = ov::make_node(cfg, self, seed(), {}, why);
    if (!node) {
        GS_LOG(warn, "gs_overlay_open: %s: %s (EINVAL)", path, why.c_str());
        real::close()(udp);
        errno = EINVAL;
        return nullptr;
    }
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) {
        err = errno;
        real::close()(udp);
        errno = err;
        return nullptr;
    }
    int eng_udp = adopt_internal_fd(udp);
    int eng_end = adopt_internal_fd(sp[1]);
    auto* o = new (std::nothrow) gs_overlay;
    if (eng_udp < 0 || eng_end < 0 || o == nullptr) {
        if (eng_udp >= 0) engine::close_internal_fd(eng_udp);
        if (eng_end >= 0) engine::close_internal_fd(eng_end);
        real::close()(sp[0]);
        delete o;
        errno = EMFILE;
        return nullptr;
    }
    o->fd = sp[0];
    o->e = e;
    o->max_payload = cfg.max_payload;
    on_engine(*e, [&](engine::Engine& en) {
        o->host = engine::OverlayHost::start(en, std::move(node), eng_udp, eng_end, o->shared, &err);
    });
    if (o->host == nullptr) {
        GS_LOG(warn, "gs_overlay_open: the overlay member cannot start: %s", strerror(-err));
        engine::close_internal_fd(eng_udp);
        engine::close_internal_fd(eng_end);
        real::close()(o->fd);
        delete o;
        errno = -err;
        return nullptr;
    }
    GS_LOG(info, "overlay %llu (%s): member at %s opened from %s", static_cast<unsigned long long>(cfg.overlay_id),
           cfg.protocol == ov::Protocol::dt ? "DT" : "HC", self.str().c_str(), path);
    return o;
}

int request(gs_overlay* o, const engine::OverlayRequest& r, const void* msg, size_t len, int flags) noexcept {
    iovec iov[2] = {{const_cast<engine::OverlayRequest*>(&r), sizeof r}, {const_cast<void*>(msg), len}};
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = len ? 2 : 1;
    ssize_t n = real::sendmsg()(o->fd, &m, flags | MSG_NOSIGNAL);
    if (n < 0) return errno == EPIPE ? fail(ECONNRESET) : -1;
    return 0;
}

bool member_open(const gs_overlay* o) noexcept {
    return o != nullptr && o->shared.closed.load(std::memory_order_acquire) == 0;
}

}  // namespace

GS_EXPORT gs_overlay* gs_overlay_open(const char* config_file) {
    try {
        return open_member(config_file);
    } catch (...) {   // std::bad_alloc from the config reader: nothing crosses into C
        errno = ENOMEM;
        return nullptr;
    }
}

GS_EXPORT int gs_overlay_join(gs_overlay* o, int timeout_ms) {
    if (!member_open(o)) return fail(o ? ECONNRESET : EINVAL);
    if (o->shared.joined.load(std::memory_order_acquire) == 1) return 0;
    if (request(o, engine::OverlayRequest{engine::OverlayRequest::join}, nullptr, 0, 0) != 0) return -1;
    timespec deadline{};
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    int64_t end = deadline.tv_sec * 1'000'000'000LL + deadline.tv_nsec + int64_t{timeout_ms} * 1'000'000;
    while (o->shared.joined.load(std::memory_order_acquire) == 0) {
        if (o->shared.closed.load(std::memory_order_acquire)) return fail(ECONNRESET);
        timespec ts{}, *tsp = nullptr;
        if (timeout_ms >= 0) {
            timespec now{};
            clock_gettime(CLOCK_MONOTONIC, &now);
            int64_t left = end - (now.tv_sec * 1'000'000'000LL + now.tv_nsec);
            if (left <= 0) return fail(ETIMEDOUT);
            ts.tv_sec = left / 1'000'000'000;
            ts.tv_nsec = left % 1'000'000'000;
            tsp = &ts;
        }
        long rc = syscall(SYS_futex, reinterpret_cast<uint32_t*>(&o->shared.joined), FUTEX_WAIT_PRIVATE, 0, tsp, nullptr, 0);
        if (rc != 0 && errno == EINTR) return fail(EINTR);
    }
    return 0;
}

GS_EXPORT int gs_overlay_send(gs_overlay* o, int to, const void* msg, size_t len, uint64_t root, uint64_t node) {
    if (o == nullptr || (msg == nullptr && len > 0) || to < GS_TO_ALL || to > GS_TO_NODE) {
        GS_LOG(warn, "gs_overlay_send: to = %d, msg %s: give a member, GS_TO_ALL..GS_TO_NODE and a message (EINVAL)",
               to, msg ? "set" : "NULL");
        return fail(EINVAL);
    }
    if (len > o->max_payload) {
        GS_LOG(warn, "gs_overlay_send: %zu bytes is more than this overlay's MaxPayload = %zu (EINVAL)", len, o->max_payload);
        return fail(EINVAL);
    }
    if (!member_open(o)) return fail(ECONNRESET);
    if (o->shared.joined.load(std::memory_order_acquire) == 0) return fail(ENOTCONN);
    engine::OverlayRequest r{engine::OverlayRequest::send, static_cast<uint8_t>(to)};
    r.root = root;
    r.node = node;
    return request(o, r, msg, len, 0);
}

GS_EXPORT ssize_t gs_overlay_recv(gs_overlay* o, void* buf, size_t len, uint64_t* source, int flags) {
    if (o == nullptr || (buf == nullptr && len > 0)) return fail(EINVAL);
    engine::OverlayDelivery d;
    iovec iov[2] = {{&d, sizeof d}, {buf, len}};
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    ssize_t n = real::recvmsg()(o->fd, &m, flags & MSG_DONTWAIT);
    if (n < 0) return -1;
    if (n == 0) return fail(ECONNRESET);   // the member was closed
    if (static_cast<size_t>(n) < sizeof d) return fail(EPROTO);
    if (source) *source = d.source;
    size_t payload = static_cast<size_t>(n) - sizeof d;
    return static_cast<ssize_t>(payload < len ? payload : len);
}

GS_EXPORT int gs_overlay_fd(const gs_overlay* o) { return o ? o->fd : fail(EINVAL); }

GS_EXPORT uint64_t gs_overlay_address(const gs_overlay* o) {
    return o ? o->shared.address.load(std::memory_order_relaxed) : GS_NO_ADDRESS;
}

namespace {

// Runs a topology question on the engine thread. -1 ENOTCONN when not a member.
template <class F>
int topology(gs_overlay* o, F fn) noexcept {
    if (o == nullptr) return fail(EINVAL);
    if (!member_open(o)) return fail(ECONNRESET);
    int rc = 0;
    on_engine(*o->e, [&](engine::Engine&) {
        if (o->host == nullptr || !o->host->node().joined()) {
            rc = -ENOTCONN;
            return;
        }
        try {
            rc = fn(o->host->node());
        } catch (...) {
            rc = -ENOMEM;
        }
    });
    return rc < 0 ? fail(-rc) : rc;
}

int copy_out(const std::vector<ov::LogicalAddress>& v, uint64_t* out, size_t max) noexcept {
    for (size_t i = 0; i < v.size() && i < max && out; ++i) out[i] = v[i];
    return static_cast<int>(v.size());
}

}  // namespace

GS_EXPORT int gs_overlay_neighbors(gs_overlay* o, uint64_t* out, size_t max) {
    return topology(o, [&](ov::Node& n) { return copy_out(n.neighbors(), out, max); });
}

GS_EXPORT int gs_overlay_children(gs_overlay* o, uint64_t root, uint64_t* out, size_t max) {
    return topology(o, [&](ov::Node& n) { return copy_out(n.children(root), out, max); });
}

GS_EXPORT int gs_overlay_parent(gs_overlay* o, uint64_t root, uint64_t* parent) {
    if (parent == nullptr) return fail(EINVAL);
    return topology(o, [&](ov::Node& n) {
        auto p = n.parent(root);
        if (!p) return -ENOENT;
        *parent = *p;
        return 0;
    });
}

GS_EXPORT int gs_overlay_stats(const gs_overlay* o, struct gs_overlay_stats* out) {
    if (o == nullptr || out == nullptr) return fail(EINVAL);
    out->sent = o->shared.sent.load(std::memory_order_relaxed);
    out->delivered = o->shared.delivered.load(std::memory_order_relaxed);
    out->dropped_unread = o->shared.dropped_unread.load(std::memory_order_relaxed);
    out->refused = o->shared.refused.load(std::memory_order_relaxed);
    return 0;
}

GS_EXPORT int gs_overlay_close(gs_overlay* o) {
    if (o == nullptr) return fail(EINVAL);
    // The engine sees its end hang up, leaves the overlay and frees the host.
    real::close()(o->fd);
    for (int i = 0; i < 2000 && o->shared.closed.load(std::memory_order_acquire) == 0; ++i) usleep(1000);
    if (o->shared.closed.load(std::memory_order_acquire) == 0) {
        GS_LOG(warn, "gs_overlay_close: the engine did not let go of the member within 2 s; its memory is kept");
        return 0;   // leaked rather than freed under the engine
    }
    delete o;
    return 0;
}
