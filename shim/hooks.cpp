// The exported entry points of libgsocket-preload.so.
//
// Each hook: one relaxed load of the fd's slot; 0 means "not ours" and the
// call goes straight to libc. Nothing below throws (no exception can cross
// into C), nothing allocates or locks (signal handlers call close, send...),
// and errno after a hook is what libc set.

// Meson builds with _FILE_OFFSET_BITS=64, which makes <fcntl.h> rename fcntl
// to fcntl64; we export both names ourselves (off_t is 64-bit here anyway).
#undef _FILE_OFFSET_BITS
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <unistd.h>

#include "core/engine/bridge.h"
#include "core/engine/bridge_util.h"
#include "core/engine/dgram_bridge.h"
#include "shim/flows.h"
#include "shim/group.h"
#include "shim/real.h"
#include "shim/shim.h"

#define GS_EXPORT extern "C" __attribute__((visibility("default")))

using namespace gs::shim;
using gs::policy::Direction;

namespace {

inline uint32_t slot_of(int fd) noexcept {
    return trackable(fd) ? fd_slot(fd).load(std::memory_order_relaxed) : 0;
}

// Reset the slot of an fd number that now names a new open file, releasing
// whatever stale state it had (an fd closed behind our back, e.g. by libc).
inline void fresh_fd(int fd, uint32_t value) noexcept {
    if (!trackable(fd)) return;
    if (value != 0) note_fd(fd);
    if (fd_slot(fd).load(std::memory_order_relaxed) == 0 && value == 0) return;
    uint32_t old = fd_slot(fd).exchange(value, std::memory_order_relaxed);
    release_slot_value(old, -1);
}

inline void count(uint32_t s, bool out, ssize_t n) noexcept {
    if (n > 0 && slot::counts(s)) {
        FlowRecord& r = flow_at(slot::index(s));
        (out ? r.bytes_out : r.bytes_in).fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    }
}

// Received data counts from the first datagram, even on a UDP socket that has
// not sent yet (a server, a multicast listener): record it, unclassified.
inline void count_in(int fd, uint32_t s, ssize_t n) noexcept {
    if (n <= 0) return;
    if (slot::counts(s)) return count(s, false, n);
    if (slot::is_socket(s) && (s & slot::kUdp)) record_pending(fd, s, static_cast<uint64_t>(n));
}

// A bridged flow whose transport failed: the program's end just reads EOF
// (or EPIPE on write); what a TCP program expects is the transport's errno,
// once.
inline ssize_t translate_in(uint32_t s, ssize_t r) noexcept {
    if (r == 0 && slot::is_bridged(s)) {
        int e = bridge_of(s).error.exchange(0, std::memory_order_relaxed);
        if (e != 0) {
            errno = e;
            return -1;
        }
    }
    return r;
}
inline ssize_t translate_out(uint32_t s, ssize_t r) noexcept {
    if (r < 0 && errno == EPIPE && slot::is_bridged(s)) {
        int e = bridge_of(s).error.exchange(0, std::memory_order_relaxed);
        if (e != 0) errno = e;
    }
    return r;
}

// A socket not classified yet whose open file is now reachable some other
// way than through its fd (another fd, an epoll set): it cannot be bridged
// any more (slot::kExposed).
inline uint32_t expose(int fd, uint32_t s) noexcept {
    if (!slot::unclassified(s)) return s;
    if (trackable(fd)) fd_slot(fd).fetch_or(slot::kExposed, std::memory_order_relaxed);
    return s | slot::kExposed;
}

// newfd now refers to the same open file as oldfd.
void on_dup(int oldfd, int newfd) noexcept {
    int saved = errno;
    uint32_t s = slot_of(oldfd);
    if (slot::is_flow(s)) flow_at(slot::index(s)).refs.fetch_add(1, std::memory_order_relaxed);
    fresh_fd(newfd, expose(oldfd, s));
    errno = saved;
}

// Before a call that may start a flow: classify it. Returns -1 (errno set)
// to deny, 0 to go on.
inline int start_flow(int fd, uint32_t s, Direction dir, const sockaddr* to, socklen_t tolen) noexcept {
    if (s != 0 && !slot::unclassified(s)) return 0;   // already classified
    int rc = classify(fd, s, dir, to, tolen);
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return 0;
}

// A datagram send with an address on an unconnected UDP socket, or a TCP
// sendto with MSG_FASTOPEN (a connect in disguise).
inline int before_send(int fd, uint32_t s, int flags, const sockaddr* to, socklen_t tolen) noexcept {
    if (to == nullptr || (s != 0 && !slot::unclassified(s))) return 0;
    if (tolen < sizeof(sa_family_t) || (to->sa_family != AF_INET && to->sa_family != AF_INET6)) return 0;
    if (s == 0) {
        if (!g_ready.load(std::memory_order_relaxed)) return 0;
        s = probe_slot(fd);
        if (s == 0) return 0;
    }
    // A pending record is a UDP socket that received first, or an API request on either protocol.
    if (socket_bits(s) & slot::kUdp) return start_flow(fd, s, Direction::datagram, to, tolen);
    if (flags & MSG_FASTOPEN) return start_flow(fd, s, Direction::connect, to, tolen);
    return 0;
}

// fds passed over SCM_RIGHTS arrive with no state of ours; make sure their
// numbers do not carry stale state from a socket closed behind our back.
void on_received_fds(const msghdr* msg) noexcept {
    if (msg == nullptr || msg->msg_controllen == 0) return;
    for (cmsghdr* c = CMSG_FIRSTHDR(const_cast<msghdr*>(msg)); c != nullptr;
         c = CMSG_NXTHDR(const_cast<msghdr*>(msg), c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char* p = CMSG_DATA(c);
        for (size_t i = 0; i < n; ++i) {
            int fd;
            __builtin_memcpy(&fd, p + i * sizeof(int), sizeof fd);
            fresh_fd(fd, 0);
        }
    }
}

void release_range(unsigned first, unsigned last) noexcept {
    int max = max_tracked_fd();
    if (max < 0 || first > static_cast<unsigned>(max)) return;
    if (last > static_cast<unsigned>(max)) last = static_cast<unsigned>(max);
    for (unsigned fd = first; fd <= last; ++fd) {
        uint32_t s = fd_slot(static_cast<int>(fd)).load(std::memory_order_relaxed);
        if (s == 0 || slot::is_internal(s)) continue;
        uint32_t old = fd_slot(static_cast<int>(fd)).exchange(0, std::memory_order_relaxed);
        release_slot_value(old, static_cast<int>(fd));
    }
}

// close_range over [first, last] that steps around the shim's own fds
// (programs close every fd they do not know: PITFALLS 10).
int close_range_around_internal(unsigned first, unsigned last, int flags) noexcept {
    int max = max_tracked_fd();
    unsigned from = first;
    if (max >= 0 && first <= static_cast<unsigned>(max)) {
        unsigned top = last < static_cast<unsigned>(max) ? last : static_cast<unsigned>(max);
        for (unsigned fd = first; fd <= top; ++fd) {
            if (!slot::is_internal(fd_slot(static_cast<int>(fd)).load(std::memory_order_relaxed))) continue;
            if (fd > from && real::close_range()(from, fd - 1, flags) != 0) return -1;
            from = fd + 1;
        }
    }
    if (from > last) return 0;
    return real::close_range()(from, last, flags);
}

__attribute__((constructor)) void gs_constructor() { init(); }
__attribute__((destructor)) void gs_destructor() { fini(); }

}  // namespace

// ---- sockets ---------------------------------------------------------------

GS_EXPORT int socket(int domain, int type, int protocol) {
    int fd = real::socket()(domain, type, protocol);
    if (fd >= 0 && g_ready.load(std::memory_order_relaxed)) fresh_fd(fd, socket_slot(domain, type, protocol));
    return fd;
}

namespace {
// A bridged UDP flow: its fd is the program's end of a datagram bridge,
// whoever relays it (a child of fork() frames datagrams as its parent does;
// the parent's engine carries them).
inline bool dgram_bridged(uint32_t s) noexcept {
    return slot::is_bridged(s) && flow_at(slot::index(s)).proto == gs::policy::Proto::udp;
}

// Right after a UDP socket was classified by this call (`before`: its slot
// before): bridge it if the policy wants; true when it now is.
inline bool bridge_new_udp(int fd, uint32_t before, bool sending) noexcept {
    if (before != 0 && !slot::unclassified(before)) return false;   // decided when it was classified
    uint32_t s = slot_of(fd);
    if (!slot::is_flow(s) || flow_at(slot::index(s)).proto != gs::policy::Proto::udp) return false;
    if (group_start(fd, s, sending)) return true;   // to a group an [overlay] carries (shim/group.h)
    if (!wants_bridge(s)) return false;
    return bridge_datagram(fd, sending) == 0;
}
}  // namespace

GS_EXPORT int connect(int fd, const sockaddr* addr, socklen_t len) {
    uint32_t s = slot_of(fd);
    if (dgram_bridged(s)) return gs::engine::dgram_connect(bridge_of(s), dgram_of(s), addr, len);
    if (slot::is_bridged(s)) {
        // Connect again on a bridged flow: answer as the kernel would.
        gs::engine::BridgeState& b = bridge_of(s);
        int phase = b.phase.load(std::memory_order_acquire);
        int e = phase == gs::engine::BridgeState::connecting ? EALREADY
                : phase == gs::engine::BridgeState::failed  ? b.error.exchange(0, std::memory_order_relaxed)
                                                            : EISCONN;
        errno = e != 0 ? e : ECONNABORTED;
        return -1;
    }
    if ((s == 0 || slot::unclassified(s)) && addr != nullptr && len >= sizeof(sa_family_t) &&
        (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
        if (start_flow(fd, s, Direction::connect, addr, len) != 0) return -1;
        if (bridge_new_udp(fd, s, false)) {
            s = slot_of(fd);
            return gs::engine::dgram_connect(bridge_of(s), dgram_of(s), addr, len);
        }
        if (int rc = mces_connect(fd, addr, len); rc <= 0) {   // transport = mces / auto
            if (rc == 0) return 0;
            errno = -rc;
            return -1;
        }
        if (wants_bridge(s = slot_of(fd)) && flow_at(slot::index(s)).proto == gs::policy::Proto::tcp) {
            int rc = bridge_connect(fd, addr, len);
            if (rc <= 0) {
                if (rc == 0) return 0;
                errno = -rc;
                return -1;
            }
        }
    }
    return real::connect()(fd, addr, len);
}

// A bridged UDP flow's fd is AF_UNIX: bind, listen and accept are the
// transport's to answer (EINVAL when bound already, EOPNOTSUPP...).
GS_EXPORT int bind(int fd, const sockaddr* addr, socklen_t len) {
    uint32_t s = slot_of(fd);
    if (dgram_bridged(s)) return real::bind()(bridge_of(s).transport, addr, len);
    int rc = real::bind()(fd, addr, len);
    if (rc == 0 && g_ready.load(std::memory_order_relaxed)) mces_after_bind(fd);   // UDP over MCES, if the policy says
    return rc;
}

GS_EXPORT int listen(int fd, int backlog) {
    if (uint32_t s = slot_of(fd); dgram_bridged(s)) return real::listen()(bridge_of(s).transport, backlog);
    if (fail_closed()) {
        uint32_t s = slot_of(fd);
        if (s == 0) s = probe_slot(fd);
        if (socket_bits(s) != 0) {
            errno = -deny(fd, "listen", nullptr, 0);
            return -1;
        }
    }
    int rc = real::listen()(fd, backlog);
    if (rc == 0 && g_ready.load(std::memory_order_relaxed)) mces_after_listen(fd);   // and over MCES, if the policy says
    return rc;
}

namespace {
// `cap` is the size of the program's address buffer before the call: after
// it, *len is the address's real size, which may exceed what was copied.
int after_accept(int lfd, int fd, sockaddr* addr, socklen_t* len, socklen_t cap) noexcept {
    if (fd < 0 || !g_ready.load(std::memory_order_relaxed)) return fd;
    int saved = errno;
    uint32_t ls = slot_of(lfd);
    if (ls == 0) {
        ls = probe_slot(lfd);   // a listener created before we were loaded
        if (ls != 0 && trackable(lfd)) fd_slot(lfd).store(ls, std::memory_order_relaxed);
    }
    uint32_t s = socket_bits(ls);   // a listener with an API request accepts plain sockets
    fresh_fd(fd, s);
    if (s != 0) {
        sockaddr_storage peer{};
        socklen_t plen = sizeof peer;
        if (addr != nullptr && len != nullptr && *len <= cap && *len >= sizeof(sockaddr_in) &&
            *len <= sizeof peer) {
            plen = *len;
            __builtin_memcpy(&peer, addr, plen);
        } else if (real::getpeername()(fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0) {
            plen = 0;
        }
        // A connection the engine opened for an MCES peer: the program is
        // told the MCES peer's address, and the policy classifies by it.
        sockaddr_storage mp;
        socklen_t ml = 0;
        const bool over_mces = plen > 0 && mces_accepted(peer, plen, mp, ml);
        if (over_mces) {
            peer = mp;
            plen = ml;
            if (addr != nullptr && len != nullptr) {
                __builtin_memcpy(addr, &mp, cap < ml ? cap : ml);
                *len = ml;
            }
        }
        if (plen > 0) classify(fd, s, Direction::accept, reinterpret_cast<sockaddr*>(&peer), plen);
        if (over_mces) mces_mark_accepted(fd, peer, plen);
        if (wants_bridge(slot_of(fd))) bridge_connect(fd, nullptr, 0);   // fails open: stays native
    }
    errno = saved;
    return fd;
}
}  // namespace

GS_EXPORT int accept(int fd, sockaddr* addr, socklen_t* len) {
    if (uint32_t s = slot_of(fd); dgram_bridged(s)) return real::accept()(bridge_of(s).transport, addr, len);
    socklen_t cap = len != nullptr ? *len : 0;
    return after_accept(fd, real::accept()(fd, addr, len), addr, len, cap);
}

GS_EXPORT int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
    if (uint32_t s = slot_of(fd); dgram_bridged(s)) return real::accept4()(bridge_of(s).transport, addr, len, flags);
    socklen_t cap = len != nullptr ? *len : 0;
    return after_accept(fd, real::accept4()(fd, addr, len, flags), addr, len, cap);
}

namespace {
// Options a program sets to shape its own blocking calls stay on its end of a
// bridge; every other option belongs to the transport.
bool on_program_end(int level, int name) noexcept {
    return level == SOL_SOCKET && (name == SO_RCVTIMEO_OLD || name == SO_SNDTIMEO_OLD || name == SO_RCVTIMEO_NEW ||
                                   name == SO_SNDTIMEO_NEW || name == SO_RCVLOWAT || name == SO_SNDLOWAT);
}
}  // namespace

GS_EXPORT int getsockopt(int fd, int level, int name, void* val, socklen_t* len) {
    uint32_t s = slot_of(fd);
    if (slot::is_bridged(s) && !on_program_end(level, name)) {
        gs::engine::BridgeState& b = bridge_of(s);
        if (level == SOL_SOCKET && name == SO_ERROR && val != nullptr && len != nullptr && *len >= sizeof(int)) {
            // Reported once, as the kernel does.
            int e = dgram_bridged(s) ? gs::engine::dgram_so_error(b, dgram_of(s))
                                     : b.error.exchange(0, std::memory_order_relaxed);
            __builtin_memcpy(val, &e, sizeof e);
            *len = sizeof e;
            return 0;
        }
        return real::getsockopt()(b.transport, level, name, val, len);
    }
    return real::getsockopt()(fd, level, name, val, len);
}

GS_EXPORT int setsockopt(int fd, int level, int name, const void* val, socklen_t len) {
    // Joining or leaving a group an [overlay] carries (shim/group.h): it may bridge the socket.
    if (int rc = 0; (level == IPPROTO_IP || level == IPPROTO_IPV6) &&
                    group_setsockopt(fd, slot_of(fd), level, name, val, len, &rc))
        return rc;
    uint32_t s = slot_of(fd);
    if (!slot::is_flow(s)) return real::setsockopt()(fd, level, name, val, len);
    if (slot::is_bridged(s) && !on_program_end(level, name)) {
        // The transport carries the flow: its options are the ones that mean something.
        // A stream end follows the program's buffer sizes; a datagram end
        // keeps its own (a unix datagram larger than its send buffer is
        // refused, where UDP takes one datagram beyond a small buffer).
        if (level == SOL_SOCKET && (name == SO_RCVBUF || name == SO_SNDBUF) && !dgram_bridged(s))
            real::setsockopt()(fd, level, name, val, len);
        fd = bridge_of(s).transport;
    }
    const FlowRecord& r = flow_at(slot::index(s));
    uint64_t v;
    int rc;
    if (level == SOL_SOCKET && name == SO_RCVBUF && slot::is_bridged(s) && dgram_bridged(s)) {
        rc = real::setsockopt()(fd, level, name, val, len);
        if (rc == 0) follow_rcvbuf(bridge_of(s).app_end, fd);
        return rc;
    }
    if (!policy_override(r, level, name, val, len, v)) {
        rc = real::setsockopt()(fd, level, name, val, len);
    } else if (name == SO_MAX_PACING_RATE && len >= sizeof(uint64_t)) {
        rc = real::setsockopt()(fd, level, name, &v, sizeof v);
    } else if (name == SO_MAX_PACING_RATE) {
        uint32_t v32 = v >= UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(v);
        rc = real::setsockopt()(fd, level, name, &v32, sizeof v32);
    } else {
        int vi = static_cast<int>(v);
        rc = real::setsockopt()(fd, level, name, &vi, sizeof vi);
    }
    // Linux resets SO_PRIORITY when IP_TOS changes: put the policy's back.
    bool tos = (level == IPPROTO_IP && name == IP_TOS) || (level == IPPROTO_IPV6 && name == IPV6_TCLASS);
    if (rc == 0 && tos && r.decision != nullptr && r.decision->qos.priority >= 0) {
        int saved = errno;
        int p = r.decision->qos.priority;
        real::setsockopt()(fd, SOL_SOCKET, SO_PRIORITY, &p, sizeof p);
        errno = saved;
    }
    return rc;
}

// A bridged flow answers with the transport's addresses: IP, never AF_UNIX.
GS_EXPORT int getsockname(int fd, sockaddr* addr, socklen_t* len) {
    uint32_t s = slot_of(fd);
    if (slot::is_flow(s)) {
        if (int rc = mces_name(s, false, addr, len); rc <= 0) return rc;
    }
    return real::getsockname()(slot::is_bridged(s) ? bridge_of(s).transport : fd, addr, len);
}
GS_EXPORT int getpeername(int fd, sockaddr* addr, socklen_t* len) {
    uint32_t s = slot_of(fd);
    if (slot::is_flow(s)) {
        if (int rc = mces_name(s, true, addr, len); rc <= 0) return rc;
    }
    return real::getpeername()(slot::is_bridged(s) ? bridge_of(s).transport : fd, addr, len);
}
GS_EXPORT int shutdown(int fd, int how) {
    uint32_t s = slot_of(fd);
    if (dgram_bridged(s)) return gs::engine::dgram_shutdown(bridge_of(s), dgram_of(s), fd, how);
    return real::shutdown()(fd, how);
}

// ---- data ------------------------------------------------------------------
//
// A bridged flow's data calls go through core/engine/bridge.h, which does
// them on the transport from the caller's thread when it safely can (order
// kept, no limit the engine enforces) and through the bridge otherwise. The
// calls are handed over as replayable operations: `fd` is the program's end
// or the transport, `skip` what a send already sent. On the program's end
// the kernel's TCP meaning is kept: no address goes in or comes out.

namespace {

// Not in a child of fork(): there the bridge belongs to the parent's engine.
// TCP: a UDP bridge's calls go through dg_* below.
inline bool bridged_here(uint32_t s) noexcept {
    if (!slot::is_bridged(s)) return false;
    const FlowRecord& r = flow_at(slot::index(s));
    return !r.inherited && r.proto == gs::policy::Proto::tcp;
}

// A bridged UDP flow's calls (core/engine/dgram_bridge.h): the program's
// buffers as one msghdr, header added and stripped there.
ssize_t dg_send(int fd, uint32_t s, const void* buf, size_t n, int flags, const sockaddr* to, socklen_t tolen) noexcept {
    if (to != nullptr && tolen == 0) {   // sendto's (sendmsg ignores a name of length 0)
        errno = EINVAL;
        return -1;
    }
    iovec iov{const_cast<void*>(buf), n};
    msghdr m{};
    m.msg_name = const_cast<sockaddr*>(to);
    m.msg_namelen = to != nullptr ? tolen : 0;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    return gs::engine::dgram_send(bridge_of(s), dgram_of(s), fd, &m, flags);
}
ssize_t dg_recv(int fd, uint32_t s, void* buf, size_t n, int flags, sockaddr* from, socklen_t* fromlen) noexcept {
    iovec iov{buf, n};
    msghdr m{};
    if (from != nullptr && fromlen != nullptr) {
        m.msg_name = from;
        m.msg_namelen = *fromlen;
    }
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    ssize_t r = gs::engine::dgram_recv(bridge_of(s), dgram_of(s), fd, &m, flags);
    if (r >= 0 && m.msg_name != nullptr) *fromlen = m.msg_namelen;
    return r;
}
ssize_t dg_vec(int fd, uint32_t s, const iovec* iov, int n, bool out) noexcept {
    msghdr m{};
    m.msg_iov = const_cast<iovec*>(iov);
    m.msg_iovlen = static_cast<size_t>(n);
    return out ? gs::engine::dgram_send(bridge_of(s), dgram_of(s), fd, &m, 0)
               : gs::engine::dgram_recv(bridge_of(s), dgram_of(s), fd, &m, 0);
}

struct BufCall {
    void* buf;
    size_t n;
};
struct AddrCall {
    void* buf;
    size_t n;
    sockaddr* addr;
    socklen_t* addrlen;
    socklen_t tolen;
    int transport;
};
struct MsgCall {
    msghdr* msg;
    int transport;
};
constexpr int kMaxDirectIov = 64;   // a longer vector goes through the bridge (a stack copy per send)

ssize_t op_send(void* c, int fd, size_t skip, int flags) noexcept {
    auto* a = static_cast<BufCall*>(c);
    return real::send()(fd, static_cast<const char*>(a->buf) + skip, a->n - skip, flags);
}
ssize_t op_recv(void* c, int fd, size_t, int flags) noexcept {
    auto* a = static_cast<BufCall*>(c);
    return real::recv()(fd, a->buf, a->n, flags);
}
ssize_t op_sendto(void* c, int fd, size_t skip, int flags) noexcept {
    auto* a = static_cast<AddrCall*>(c);
    const char* p = static_cast<const char*>(a->buf) + skip;
    if (fd == a->transport) return real::sendto()(fd, p, a->n - skip, flags, a->addr, a->tolen);
    return real::send()(fd, p, a->n - skip, flags);
}
ssize_t op_recvfrom(void* c, int fd, size_t, int flags) noexcept {
    auto* a = static_cast<AddrCall*>(c);
    if (fd == a->transport) return real::recvfrom()(fd, a->buf, a->n, flags, a->addr, a->addrlen);
    ssize_t r = real::recv()(fd, a->buf, a->n, flags);
    if (r >= 0 && a->addrlen != nullptr) *a->addrlen = 0;   // TCP gives no address
    return r;
}
// `skip` bytes into the vector: a copy of what is left (at most kMaxDirectIov entries).
int rest_of(const iovec* iov, int n, size_t skip, iovec* out) noexcept {
    int k = 0;
    for (int i = 0; i < n; ++i) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        out[k].iov_base = static_cast<char*>(iov[i].iov_base) + skip;
        out[k].iov_len = iov[i].iov_len - skip;
        skip = 0;
        ++k;
    }
    return k;
}
ssize_t op_sendmsg(void* c, int fd, size_t skip, int flags) noexcept {
    auto* a = static_cast<MsgCall*>(c);
    msghdr m = *a->msg;
    iovec rest[kMaxDirectIov];
    if (skip > 0) {
        m.msg_iovlen = static_cast<size_t>(rest_of(m.msg_iov, static_cast<int>(m.msg_iovlen), skip, rest));
        m.msg_iov = rest;
    }
    if (fd != a->transport) {
        m.msg_name = nullptr;
        m.msg_namelen = 0;
    }
    return real::sendmsg()(fd, &m, flags);
}
ssize_t op_recvmsg(void* c, int fd, size_t, int flags) noexcept {
    auto* a = static_cast<MsgCall*>(c);
    if (fd == a->transport) return real::recvmsg()(fd, a->msg, flags);
    void* name = a->msg->msg_name;
    a->msg->msg_name = nullptr;
    ssize_t r = real::recvmsg()(fd, a->msg, flags);
    a->msg->msg_name = name;
    a->msg->msg_namelen = 0;   // TCP gives no address
    return r;
}

ssize_t bridged_send(int fd, uint32_t s, const void* buf, size_t n, int flags) noexcept {
    BufCall c{const_cast<void*>(buf), n};
    return gs::engine::bridge_send(bridge_of(s), fd, op_send, &c, n, flags);
}
ssize_t bridged_recv(int fd, uint32_t s, void* buf, size_t n, int flags) noexcept {
    BufCall c{buf, n};
    return gs::engine::bridge_recv(bridge_of(s), fd, op_recv, &c, n, flags);
}
ssize_t bridged_sendmsg(int fd, uint32_t s, const msghdr* msg, int flags) noexcept {
    MsgCall c{const_cast<msghdr*>(msg), bridge_of(s).transport};
    size_t len = gs::engine::iov_total(msg->msg_iov, msg->msg_iovlen);
    return gs::engine::bridge_send(bridge_of(s), fd, op_sendmsg, &c, len, flags);
}
ssize_t bridged_recvmsg(int fd, uint32_t s, msghdr* msg, int flags) noexcept {
    MsgCall c{msg, bridge_of(s).transport};
    size_t len = gs::engine::iov_total(msg->msg_iov, msg->msg_iovlen);
    return gs::engine::bridge_recv(bridge_of(s), fd, op_recvmsg, &c, len, flags);
}

}  // namespace

GS_EXPORT ssize_t send(int fd, const void* buf, size_t n, int flags) {
    uint32_t s = slot_of(fd);
    if (s == 0) [[likely]] return real::send()(fd, buf, n, flags);   // not ours: one load, then libc
    if (dgram_bridged(s)) return dg_send(fd, s, buf, n, flags, nullptr, 0);
    if (bridged_here(s)) return translate_out(s, bridged_send(fd, s, buf, n, flags));
    ssize_t r = real::send()(fd, buf, n, flags);
    count(s, true, r);
    return translate_out(s, r);
}

GS_EXPORT ssize_t sendto(int fd, const void* buf, size_t n, int flags, const sockaddr* to, socklen_t tolen) {
    uint32_t s = slot_of(fd);
    if (dgram_bridged(s)) return dg_send(fd, s, buf, n, flags, to, tolen);
    if (bridged_here(s)) {
        AddrCall c{const_cast<void*>(buf), n, const_cast<sockaddr*>(to), nullptr, tolen, bridge_of(s).transport};
        return translate_out(s, gs::engine::bridge_send(bridge_of(s), fd, op_sendto, &c, n, flags));
    }
    if (to != nullptr && before_send(fd, s, flags, to, tolen) != 0) return -1;
    if (to != nullptr && bridge_new_udp(fd, s, true)) return dg_send(fd, slot_of(fd), buf, n, flags, to, tolen);
    ssize_t r = real::sendto()(fd, buf, n, flags, to, tolen);
    count(slot_of(fd), true, r);
    return r;
}

GS_EXPORT ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
    uint32_t s = slot_of(fd);
    if (dgram_bridged(s) && msg != nullptr) return gs::engine::dgram_send(bridge_of(s), dgram_of(s), fd, msg, flags);
    if (bridged_here(s) && msg != nullptr && msg->msg_iovlen <= kMaxDirectIov)
        return translate_out(s, bridged_sendmsg(fd, s, msg, flags));
    if (msg != nullptr && msg->msg_name != nullptr &&
        before_send(fd, s, flags, static_cast<const sockaddr*>(msg->msg_name), msg->msg_namelen) != 0)
        return -1;
    if (msg != nullptr && msg->msg_name != nullptr && msg->msg_namelen != 0 && bridge_new_udp(fd, s, true)) {
        s = slot_of(fd);
        return gs::engine::dgram_send(bridge_of(s), dgram_of(s), fd, msg, flags);
    }
    ssize_t r = real::sendmsg()(fd, msg, flags);
    count(slot_of(fd), true, r);
    return translate_out(s, r);
}

GS_EXPORT int sendmmsg(int fd, mmsghdr* vec, unsigned int n, int flags) {
    uint32_t s = slot_of(fd);
    if (dgram_bridged(s) && vec != nullptr)
        return gs::engine::dgram_sendmmsg(bridge_of(s), dgram_of(s), fd, vec, n, flags);
    if (vec != nullptr && n > 0 && vec[0].msg_hdr.msg_name != nullptr &&
        before_send(fd, s, flags, static_cast<const sockaddr*>(vec[0].msg_hdr.msg_name),
                    vec[0].msg_hdr.msg_namelen) != 0)
        return -1;
    if (vec != nullptr && n > 0 && vec[0].msg_hdr.msg_name != nullptr && vec[0].msg_hdr.msg_namelen != 0 &&
        bridge_new_udp(fd, s, true)) {
        s = slot_of(fd);
        return gs::engine::dgram_sendmmsg(bridge_of(s), dgram_of(s), fd, vec, n, flags);
    }
    int r = real::sendmmsg()(fd, vec, n, flags);
    if (r > 0 && slot::counts(s = slot_of(fd)))
        for (int i = 0; i < r; ++i) count(s, true, vec[i].msg_len);
    return r;
}

GS_EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) {
    uint32_t s = slot_of(fd);
    if (s == 0) [[likely]] return real::recv()(fd, buf, n, flags);
    if (dgram_bridged(s)) return dg_recv(fd, s, buf, n, flags, nullptr, nullptr);
    if (bridged_here(s)) return translate_in(s, bridged_recv(fd, s, buf, n, flags));
    ssize_t r = real::recv()(fd, buf, n, flags);
    count_in(fd, s, r);
    return translate_in(s, r);
}

GS_EXPORT ssize_t recvfrom(int fd, void* buf, size_t n, int flags, sockaddr* from, socklen_t* fromlen) {
    uint32_t s = slot_of(fd);
    if (dgram_bridged(s)) return dg_recv(fd, s, buf, n, flags, from, fromlen);
    if (bridged_here(s)) {
        AddrCall c{buf, n, from, fromlen, 0, bridge_of(s).transport};
        return translate_in(s, gs::engine::bridge_recv(bridge_of(s), fd, op_recvfrom, &c, n, flags));
    }
    ssize_t r = real::recvfrom()(fd, buf, n, flags, from, fromlen);
    count_in(fd, s, r);
    return r;
}

GS_EXPORT ssize_t recvmsg(int fd, msghdr* msg, int flags) {
    uint32_t s = slot_of(fd);
    if (dgram_bridged(s) && msg != nullptr) return gs::engine::dgram_recv(bridge_of(s), dgram_of(s), fd, msg, flags);
    if (bridged_here(s) && msg != nullptr) return translate_in(s, bridged_recvmsg(fd, s, msg, flags));
    ssize_t r = real::recvmsg()(fd, msg, flags);
    if (r >= 0) {
        on_received_fds(msg);
        count_in(fd, slot_of(fd), r);
    }
    return r;
}

GS_EXPORT int recvmmsg(int fd, mmsghdr* vec, unsigned int n, int flags, struct timespec* timeout) {
    if (uint32_t s = slot_of(fd); dgram_bridged(s) && vec != nullptr)
        return gs::engine::dgram_recvmmsg(bridge_of(s), dgram_of(s), fd, vec, n, flags, timeout);
    int r = real::recvmmsg()(fd, vec, n, flags, timeout);
    if (r > 0) {
        uint32_t s = slot_of(fd);
        for (int i = 0; i < r; ++i) {
            on_received_fds(&vec[i].msg_hdr);
            count_in(fd, s, vec[i].msg_len);
            s = slot_of(fd);
        }
    }
    return r;
}

// Fortified variants (-D_FORTIFY_SOURCE): keep libc's buffer checks by
// calling its own __*_chk (which aborts) when the length exceeds the buffer.
GS_EXPORT ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags) {
    uint32_t s = slot_of(fd);
    if (dgram_bridged(s) && n <= buflen) return dg_recv(fd, s, buf, n, flags, nullptr, nullptr);
    if (bridged_here(s) && n <= buflen) return translate_in(s, bridged_recv(fd, s, buf, n, flags));
    ssize_t r = real::__recv_chk()(fd, buf, n, buflen, flags);
    count_in(fd, s, r);
    return translate_in(s, r);
}

GS_EXPORT ssize_t __recvfrom_chk(int fd, void* buf, size_t n, size_t buflen, int flags, sockaddr* from,
                                 socklen_t* fromlen) {
    uint32_t s = slot_of(fd);
    if (dgram_bridged(s) && n <= buflen) return dg_recv(fd, s, buf, n, flags, from, fromlen);
    if (bridged_here(s) && n <= buflen) {
        AddrCall c{buf, n, from, fromlen, 0, bridge_of(s).transport};
        return translate_in(s, gs::engine::bridge_recv(bridge_of(s), fd, op_recvfrom, &c, n, flags));
    }
    ssize_t r = real::__recvfrom_chk()(fd, buf, n, buflen, flags, from, fromlen);
    count_in(fd, s, r);
    return r;
}

GS_EXPORT ssize_t read(int fd, void* buf, size_t n) {
    uint32_t s = slot_of(fd);
    if (s == 0) [[likely]] return real::read()(fd, buf, n);
    if (dgram_bridged(s)) return dg_recv(fd, s, buf, n, 0, nullptr, nullptr);
    if (bridged_here(s)) return translate_in(s, bridged_recv(fd, s, buf, n, 0));
    ssize_t r = real::read()(fd, buf, n);
    count_in(fd, s, r);
    return translate_in(s, r);
}

GS_EXPORT ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen) {
    uint32_t s = slot_of(fd);
    if (dgram_bridged(s) && n <= buflen) return dg_recv(fd, s, buf, n, 0, nullptr, nullptr);
    if (bridged_here(s) && n <= buflen) return translate_in(s, bridged_recv(fd, s, buf, n, 0));
    ssize_t r = real::__read_chk()(fd, buf, n, buflen);
    count_in(fd, s, r);
    return translate_in(s, r);
}

GS_EXPORT ssize_t write(int fd, const void* buf, size_t n) {
    uint32_t s = slot_of(fd);
    if (s == 0) [[likely]] return real::write()(fd, buf, n);
    if (dgram_bridged(s)) return dg_send(fd, s, buf, n, 0, nullptr, 0);
    if (bridged_here(s)) return translate_out(s, bridged_send(fd, s, buf, n, 0));
    ssize_t r = real::write()(fd, buf, n);
    count(s, true, r);
    return translate_out(s, r);
}

GS_EXPORT ssize_t readv(int fd, const iovec* iov, int n) {
    uint32_t s = slot_of(fd);
    if (s == 0) [[likely]] return real::readv()(fd, iov, n);
    if (dgram_bridged(s) && n >= 0 && n <= UIO_MAXIOV) return dg_vec(fd, s, iov, n, false);
    if (bridged_here(s) && n >= 0) {
        msghdr m{};
        m.msg_iov = const_cast<iovec*>(iov);
        m.msg_iovlen = static_cast<size_t>(n);
        return translate_in(s, bridged_recvmsg(fd, s, &m, 0));
    }
    ssize_t r = real::readv()(fd, iov, n);
    count_in(fd, s, r);
    return translate_in(s, r);
}

GS_EXPORT ssize_t writev(int fd, const iovec* iov, int n) {
    uint32_t s = slot_of(fd);
    if (s == 0) [[likely]] return real::writev()(fd, iov, n);
    if (dgram_bridged(s) && n >= 0 && n <= UIO_MAXIOV) return dg_vec(fd, s, iov, n, true);
    if (bridged_here(s) && n >= 0 && n <= kMaxDirectIov) {
        msghdr m{};
        m.msg_iov = const_cast<iovec*>(iov);
        m.msg_iovlen = static_cast<size_t>(n);
        return translate_out(s, bridged_sendmsg(fd, s, &m, 0));
    }
    ssize_t r = real::writev()(fd, iov, n);
    count(s, true, r);
    return translate_out(s, r);
}

// ---- fd bookkeeping ---------------------------------------------------------

GS_EXPORT int close(int fd) {
    if (uint32_t s = slot_of(fd); s != 0) {
        // The shim's own fd: the program did not open it; closing it would
        // break the shim and free the number for the program's next file.
        if (slot::is_internal(s)) return 0;
        // Forget the fd before the kernel can hand its number to another
        // thread's new socket.
        uint32_t old = fd_slot(fd).exchange(0, std::memory_order_relaxed);
        int saved = errno;
        release_slot_value(old, fd);
        errno = saved;
    }
    return real::close()(fd);
}

GS_EXPORT int dup(int fd) {
    int r = real::dup()(fd);
    if (r >= 0) on_dup(fd, r);
    return r;
}

namespace {
int dup_onto(int oldfd, int newfd, int r) noexcept {
    if (r >= 0 && oldfd != newfd) on_dup(oldfd, newfd);
    return r;
}
// dup2 closes newfd first: take its counters while it is still that socket.
void before_dup_onto(int oldfd, int newfd) noexcept {
    uint32_t s = slot_of(newfd);
    if (oldfd != newfd && slot::is_flow(s)) {
        int saved = errno;
        flow_refresh(flow_at(slot::index(s)), newfd);
        errno = saved;
    }
}
}  // namespace

GS_EXPORT int dup2(int oldfd, int newfd) {
    before_dup_onto(oldfd, newfd);
    return dup_onto(oldfd, newfd, real::dup2()(oldfd, newfd));
}

GS_EXPORT int dup3(int oldfd, int newfd, int flags) {
    before_dup_onto(oldfd, newfd);
    return dup_onto(oldfd, newfd, real::dup3()(oldfd, newfd, flags));
}

// fcntl's third argument is an int or a pointer depending on cmd; both travel
// in the same register on every ABI glibc supports, as a pointer-sized value.
GS_EXPORT int fcntl(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    void* arg = va_arg(ap, void*);
    va_end(ap);
    int r = real::fcntl()(fd, cmd, arg);
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) on_dup(fd, r);
    return r;
}

GS_EXPORT int fcntl64(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    void* arg = va_arg(ap, void*);
    va_end(ap);
    int r = real::fcntl64()(fd, cmd, arg);
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) on_dup(fd, r);
    return r;
}

GS_EXPORT int close_range(unsigned int first, unsigned int last, int flags) {
    if (first > last) return real::close_range()(first, last, flags);   // the kernel's EINVAL
    if (!(flags & CLOSE_RANGE_CLOEXEC)) {
        int saved = errno;
        release_range(first, last);
        errno = saved;
    }
    return close_range_around_internal(first, last, flags);
}

GS_EXPORT void closefrom(int lowfd) {
    if (lowfd < 0) return real::closefrom()(lowfd);
    release_range(static_cast<unsigned>(lowfd), ~0u);
    if (close_range_around_internal(static_cast<unsigned>(lowfd), ~0u, 0) != 0)
        real::closefrom()(lowfd);   // close_range missing: libc's own fallback
}

// A socket put in an epoll set before its first send (UDP) or connect (TCP)
// cannot be bridged any more: epoll watches the open file, which a bridge
// would replace on its fd number (slot::kExposed).
GS_EXPORT int epoll_ctl(int epfd, int op, int fd, epoll_event* ev) {
    if (op == EPOLL_CTL_ADD) {
        if (uint32_t s = slot_of(fd); s != 0) expose(fd, s);
    }
    return real::epoll_ctl()(epfd, op, fd, ev);
}
