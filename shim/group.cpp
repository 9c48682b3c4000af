#include "shim/group.h"

#include <errno.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>

#include <atomic>
#include <new>
#include <string>
#include <vector>

#include "core/engine/dgram_bridge.h"
#include "core/engine/overlay_host.h"
#include "core/engine/udp_host.h"
#include "core/overlay/config/config.h"
#include "shim/flows.h"
#include "shim/group_match.h"
#include "shim/group_member.h"
#include "shim/log.h"
#include "shim/real.h"
#include "shim/shim.h"

namespace gs::shim {

namespace {

// How long a join waits for the overlay member to be joined before it
// returns (it goes on joining after): the first datagrams a program sends
// right after its join then reach the members already there.
constexpr int64_t kJoinWaitNs = 3'000'000'000;

// One socket's membership: the overlay member (engine::OverlayHost, its
// lease) and what the datagram bridge needs (DgramGroup). Freed when both
// the bridge (on_detached) and the overlay host (on_closed) have let go,
// both on the engine thread.
struct GroupMember {
    OverlayMember m;
    engine::DgramGroup g;
    std::atomic<int> holds{1};   // the host's, from open; the bridge's, from attach
};

void release(GroupMember* gm) noexcept {
    if (gm->holds.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    if (log::on(policy::LogLevel::debug)) {
        auto n = [](const std::atomic<uint64_t>& a) { return static_cast<unsigned long long>(a.load(std::memory_order_relaxed)); };
        GS_LOG(debug, "group: overlay member %llu at %s left: %llu datagrams to the overlay (%llu sent by the node, "
                      "%llu refused), %llu given to the program, %llu dropped",
               static_cast<unsigned long long>(gm->m.overlay_id), gm->m.self.str().c_str(), n(gm->g.sent),
               n(gm->m.shared.sent), n(gm->m.shared.refused), n(gm->g.delivered), n(gm->g.dropped));
    }
    delete gm;
}
void on_detached(engine::DgramGroup* g) noexcept { release(static_cast<GroupMember*>(g->owner)); }
void on_closed(engine::OverlayShared* s) noexcept { release(static_cast<GroupMember*>(s->owner)); }

// A member that will not be attached: closing its end makes the host leave
// and let go (on_closed frees it).
void abandon(GroupMember* gm) noexcept {
    engine::close_internal_fd(gm->g.member_fd);
    gm->g.member_fd = -1;
}

const char* group_text(const policy::Overlay& o, char* buf, size_t len) noexcept {
    Endpoint e;
    e.addr = o.group;
    e.port = o.group_port;
    return format_endpoint(e, buf, len);
}

// Once per overlay (the first 64 of the policy) and kind of problem: a
// program that opens a socket per message must not fill the log.
bool once(const policy::Overlay& o, unsigned kind) noexcept {
    static std::atomic<uint64_t> seen[4];
    const policy::Policy* p = current_policy();
    if (p == nullptr || kind >= 4) return true;
    size_t i = static_cast<size_t>(&o - p->overlays().data());
    if (i >= 64) return true;
    uint64_t bit = uint64_t{1} << i;
    return (seen[kind].fetch_or(bit, std::memory_order_relaxed) & bit) == 0;
}
enum : unsigned { kNoServer, kExposed, kTwoGroups, kOther };

int64_t mono_ns() noexcept {
    timespec t{};
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1'000'000'000LL + t.tv_nsec;
}

// An overlay whose server did not answer is not asked again for a while:
// every socket of a program (and its join, then its first send) would
// otherwise wait up to a second each, and log each time. Per overlay (the
// first 64), CLOCK_MONOTONIC ns.
constexpr int64_t kServerRetryNs = 10'000'000'000;
std::atomic<int64_t>* server_down_until(const policy::Overlay& o) noexcept {
    static std::atomic<int64_t> until[64];
    const policy::Policy* p = current_policy();
    if (p == nullptr) return nullptr;
    size_t i = static_cast<size_t>(&o - p->overlays().data());
    return i < 64 ? &until[i] : nullptr;
}

// The local IP of the route towards the server: the address other members
// reach this node at (a UDP connect sends nothing).
int route_ip(const sansio::Addr& server, sansio::Addr& ip) noexcept {
    const int family = server.is_v4() ? AF_INET : AF_INET6;
    int fd = real::socket()(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    sockaddr_storage ss{};
    socklen_t sl = engine::from_addr(server, ss, family);
    int rc = real::connect()(fd, reinterpret_cast<sockaddr*>(&ss), sl) == 0 ? 0 : -errno;
    if (rc == 0) {
        sl = sizeof ss;
        rc = real::getsockname()(fd, reinterpret_cast<sockaddr*>(&ss), &sl) == 0 ? 0 : -errno;
        if (rc == 0) ip = engine::to_addr(reinterpret_cast<sockaddr*>(&ss), sl);
    }
    real::close()(fd);
    return rc;
}

void wait_joined(engine::OverlayShared& s) noexcept {
    const int64_t end = mono_ns() + kJoinWaitNs;
    while (s.joined.load(std::memory_order_acquire) == 0 && s.closed.load(std::memory_order_acquire) == 0) {
        const int64_t left = end - mono_ns();
        if (left <= 0) return;
        timespec ts{left / 1'000'000'000, left % 1'000'000'000};
        syscall(SYS_futex, reinterpret_cast<uint32_t*>(&s.joined), FUTEX_WAIT_PRIVATE, 0, &ts, nullptr, 0);
    }
}

// Opens the overlay member for a socket on `fd` in `o`'s group: the
// overlay's attributes from the policy (OverlayID, Protocol, Server), its
// node at the local IP of the route towards the server, port 0; joined (or
// joining, after kJoinWaitNs). nullptr, with one log line, when it cannot
// be: the socket stays on native multicast.
GroupMember* open_group(const policy::Overlay& o, int fd) {
    char g[64];
    group_text(o, g, sizeof g);
    if (o.server.empty()) {
        if (once(o, kNoServer))
            GS_LOG(warn, "[overlay %s] (line %d): group %s has no server, and a group member finds the others "
                         "through gsoverlayd: sockets joining %s stay on native multicast (add server = HOST:PORT)",
                   o.name.c_str(), o.line, g, g);
        return nullptr;
    }
    std::atomic<int64_t>* down = server_down_until(o);
    if (down != nullptr && mono_ns() < down->load(std::memory_order_relaxed)) {
        GS_LOG(debug, "group %s: overlay server %s did not answer lately: fd %d stays on native multicast", g,
               o.server.c_str(), fd);
        return nullptr;
    }
    sansio::Addr server, ip;
    int rc = overlay::parse_addr(o.server, server) ? route_ip(server, ip) : -EINVAL;
    if (rc != 0) {
        GS_LOG(warn, "group %s ([overlay %s]): server = %s: %s; the socket on fd %d stays on native multicast", g,
               o.name.c_str(), o.server.c_str(),
               rc == -EINVAL ? "give the overlay server as IP:PORT" : strerror(-rc), fd);
        return nullptr;
    }
    auto* gm = new GroupMember;
    gm->m.shared.on_closed = &on_closed;
    gm->m.shared.owner = gm;
    sansio::Addr node = ip;
    node.port = 0;
    std::string text = "OverlayID = " + std::to_string(o.id) + "\nProtocol = " + o.protocol +
                       "\nServer = " + o.server + "\nNodeAddress = " + node.str() + "\nMaxPayload = 65000\n";
    std::string source = "[overlay " + o.name + "]";
    std::vector<std::string> msgs;
    rc = open_overlay_member(text, source.c_str(), gm->m, msgs);
    if (rc != 0) {
        std::string why;
        for (const std::string& m : msgs) why += (why.empty() ? "" : "; ") + m;
        const bool unreachable = rc == -ETIMEDOUT || rc == -ECONNREFUSED || rc == -EHOSTUNREACH || rc == -ENETUNREACH;
        if (unreachable && down != nullptr) down->store(mono_ns() + kServerRetryNs, std::memory_order_relaxed);
        GS_LOG(warn, "group %s: cannot join overlay %llu: %s; the socket on fd %d stays on native multicast%s", g,
               static_cast<unsigned long long>(o.id), why.empty() ? strerror(-rc) : why.c_str(), fd,
               unreachable ? " (the server is asked again in 10 s)" : "");
        delete gm;   // no host was started: nothing refers to it
        return nullptr;
    }
    for (const std::string& m : msgs) GS_LOG(warn, "group %s: %s", g, m.c_str());
    engine::OverlayRequest join{engine::OverlayRequest::join};
    real::send()(gm->m.fd, &join, sizeof join, MSG_NOSIGNAL);
    wait_joined(gm->m.shared);
    int mfd = adopt_internal_fd(gm->m.fd);   // closed by the engine at detach
    gm->m.fd = -1;
    if (mfd < 0) {
        GS_LOG(warn, "group %s: no room for the member's fd; the socket on fd %d stays on native multicast", g, fd);
        return nullptr;   // its end is closed: the host leaves and frees it
    }
    Endpoint ge;
    ge.addr = o.group;
    ge.port = o.group_port;
    sockaddr_storage ss{};
    socklen_t sl = 0;
    if (o.group.family == AF_INET) {
        auto* in = reinterpret_cast<sockaddr_in*>(&ss);
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, o.group.bytes, 4);
        in->sin_port = htons(o.group_port);
        sl = sizeof *in;
    } else {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, o.group.bytes, 16);
        in6->sin6_port = htons(o.group_port);
        sl = sizeof *in6;
    }
    gm->g.group = engine::to_addr(reinterpret_cast<sockaddr*>(&ss), sl);
    gm->g.node = gm->m.self;
    gm->g.member_fd = mfd;
    gm->g.owner = gm;
    gm->g.on_detached = &on_detached;
    return gm;
}

// The bridged socket `s` carries `gm` from now on. False (logged): it could
// not (the bridge ended); the member is abandoned.
bool attach(int fd, uint32_t s, GroupMember* gm, const policy::Overlay& o) noexcept {
    engine::BridgeState& b = bridge_of(s);
    engine::DgramState& d = dgram_of(s);
    gm->holds.fetch_add(1, std::memory_order_relaxed);   // the bridge's, dropped by on_detached
    int rc = -ENOTCONN;
    if (b.engine != nullptr) run_on_engine(*b.engine, [&](engine::Engine&) { rc = engine::attach_dgram_group(d, gm->g); });
    char g[64];
    group_text(o, g, sizeof g);
    if (rc != 0) {
        GS_LOG(warn, "group %s: the bridge of fd %d cannot carry the group (%s); its group datagrams stay native", g,
               fd, strerror(-rc));
        abandon(gm);
        release(gm);
        return false;
    }
    GS_LOG(info, "group %s: udp socket on fd %d is a member of overlay %llu ([overlay %s], %s) at %s%s", g, fd,
           static_cast<unsigned long long>(o.id), o.name.c_str(), o.protocol.c_str(), gm->m.self.str().c_str(),
           gm->m.shared.joined.load(std::memory_order_relaxed) ? "" : ", still joining");
    return true;
}

bool is_udp(uint32_t s) noexcept {
    if (slot::is_flow(s)) return flow_at(slot::index(s)).proto == policy::Proto::udp;
    return (socket_bits(s) & slot::kUdp) != 0;
}

uint16_t bound_port(int fd) noexcept {
    sockaddr_storage ss{};
    socklen_t sl = sizeof ss;
    Endpoint e;
    if (real::getsockname()(fd, reinterpret_cast<sockaddr*>(&ss), &sl) != 0 ||
        !endpoint_from(reinterpret_cast<sockaddr*>(&ss), sl, e))
        return 0;
    return e.port;
}

// `level`... `len`: the program's call, made on the kernel socket when the
// group cannot be carried after all (the bridge ended under the join).
bool join(int fd, uint32_t s, const policy::Policy& pol, GroupOption opt, int* rc, int level, int name,
          const void* val, socklen_t len) {
    const bool bridged = slot::is_bridged(s);
    opt.group.port = bound_port(bridged ? bridge_of(s).transport : fd);
    const policy::Overlay* o = find_group(pol, opt.group, true);
    if (o == nullptr) return false;
    char g[64];
    group_text(*o, g, sizeof g);
    if (slot::is_flow(s) && (flow_at(slot::index(s)).inherited || flow_at(slot::index(s)).denied)) return false;
    if (bridged) {
        engine::DgramGroup* cur = dgram_of(s).group.load(std::memory_order_acquire);
        if (cur != nullptr) {
            Endpoint ce;
            sockaddr_storage ss{};
            socklen_t sl = engine::from_addr(cur->group, ss, AF_INET6);
            endpoint_from(reinterpret_cast<sockaddr*>(&ss), sl, ce);
            if (ce.addr.family == opt.group.addr.family && memcmp(ce.addr.bytes, opt.group.addr.bytes, 16) == 0) {
                errno = EADDRINUSE;   // as the kernel's second join of a group
                *rc = -1;
                return true;
            }
            if (once(*o, kTwoGroups))
                GS_LOG(warn, "group %s: the udp socket on fd %d is already carried in another group, and a socket "
                             "joins one group over an overlay: this join stays on native multicast", g, fd);
            return false;
        }
    } else if (s & slot::kExposed) {
        if (once(*o, kExposed))
            GS_LOG(warn, "group %s: the udp socket on fd %d is in an epoll set (or shares its file with another fd) "
                         "since before its join, and a bridge cannot follow it there: it stays on native multicast", g, fd);
        return false;
    }
    GroupMember* gm = open_group(*o, fd);
    if (gm == nullptr) return false;
    if (slot::unclassified(s)) {
        sockaddr_storage ss{};
        socklen_t sl = engine::from_addr(gm->g.group, ss, o->group.family == AF_INET ? AF_INET : AF_INET6);
        int c = classify(fd, s, policy::Direction::datagram, reinterpret_cast<sockaddr*>(&ss), sl);
        if (c < 0) {   // on_error = fail with a broken policy: refused, as a send would be
            abandon(gm);
            errno = -c;
            *rc = -1;
            return true;
        }
        s = fd_slot(fd).load(std::memory_order_relaxed);
    }
    if (!slot::is_flow(s)) {
        abandon(gm);
        return false;
    }
    if (!slot::is_bridged(s)) {
        if (bridge_datagram(fd, false) != 0) {
            GS_LOG(warn, "group %s: the udp socket on fd %d cannot be bridged: it stays on native multicast", g, fd);
            abandon(gm);
            return false;
        }
        s = fd_slot(fd).load(std::memory_order_relaxed);
    }
    // Bridged from here on: whatever the attach says, the caller must not
    // treat the program's fd as the UDP socket any more.
    *rc = attach(fd, s, gm, *o) ? 0 : real::setsockopt()(bridge_of(s).transport, level, name, val, len);
    return true;
}

bool leave(int fd, uint32_t s, const GroupOption& opt, int* rc) {
    // A child of fork() holds its parent's bridge: the parent's engine is
    // not running in the child; the kernel answers (EADDRNOTAVAIL).
    if (!slot::is_bridged(s) || flow_at(slot::index(s)).proto != policy::Proto::udp || flow_at(slot::index(s)).inherited)
        return false;
    engine::BridgeState& b = bridge_of(s);
    engine::DgramState& d = dgram_of(s);
    engine::DgramGroup* cur = d.group.load(std::memory_order_acquire);
    if (cur == nullptr || b.engine == nullptr) return false;
    Endpoint ce;
    sockaddr_storage ss{};
    socklen_t sl = engine::from_addr(cur->group, ss, AF_INET6);
    endpoint_from(reinterpret_cast<sockaddr*>(&ss), sl, ce);
    if (ce.addr.family != opt.group.addr.family || memcmp(ce.addr.bytes, opt.group.addr.bytes, 16) != 0) return false;
    run_on_engine(*b.engine, [&](engine::Engine&) { engine::detach_dgram_group(d); });
    char g[64];
    GS_LOG(info, "group %s: udp socket on fd %d left the group (its overlay member leaves)", format_endpoint(ce, g, sizeof g), fd);
    *rc = 0;
    return true;
}

}  // namespace

bool group_setsockopt(int fd, uint32_t s, int level, int name, const void* val, socklen_t len, int* rc) noexcept {
    GroupOption opt = group_option(level, name, val, len);
    if (opt.op == GroupOp::none || !trackable(fd)) return false;
    const policy::Policy* pol = current_policy();
    if (pol == nullptr || pol->overlays().empty()) return false;
    const int saved = errno;
    if (s == 0) {
        s = probe_slot(fd);
        if (s != 0) fd_slot(fd).store(s, std::memory_order_relaxed);   // a socket from before we were loaded
    }
    if (s == 0 || slot::is_internal(s) || !is_udp(s)) return false;
    bool handled = false;
    try {
        handled = opt.op == GroupOp::join ? join(fd, s, *pol, opt, rc, level, name, val, len) : leave(fd, s, opt, rc);
    } catch (...) {   // std::bad_alloc: fail open
        GS_LOG(warn, "group join on fd %d: out of memory; the socket stays on native multicast", fd);
        handled = slot::is_bridged(fd_slot(fd).load(std::memory_order_relaxed));
        if (handled) *rc = 0;
    }
    if (!handled || *rc == 0) errno = saved;
    return handled;
}

bool group_start(int fd, uint32_t s, bool sending) noexcept {
    const policy::Policy* pol = current_policy();
    if (pol == nullptr || pol->overlays().empty() || !slot::is_flow(s) || slot::is_bridged(s)) return false;
    const FlowRecord& r = flow_at(slot::index(s));
    if (r.proto != policy::Proto::udp || r.inherited || r.denied) return false;
    const policy::Overlay* o = find_group(*pol, r.peer, false);
    if (o == nullptr) return false;
    const int saved = errno;
    char g[64];
    group_text(*o, g, sizeof g);
    if (s & slot::kExposed) {
        if (once(*o, kExposed))
            GS_LOG(warn, "group %s: the udp socket on fd %d is in an epoll set (or shares its file with another fd) "
                         "since before its first send, and a bridge cannot follow it there: it stays on native "
                         "multicast", g, fd);
        return false;
    }
    bool bridged = false;
    try {
        GroupMember* gm = open_group(*o, fd);
        if (gm != nullptr) {
            if (bridge_datagram(fd, sending) != 0) {
                GS_LOG(warn, "group %s: the udp socket on fd %d cannot be bridged: it stays on native multicast", g, fd);
                abandon(gm);
            } else {
                bridged = true;
                attach(fd, fd_slot(fd).load(std::memory_order_relaxed), gm, *o);
            }
        }
    } catch (...) {
        GS_LOG(warn, "group %s: out of memory; the socket on fd %d stays on native multicast", g, fd);
        bridged = slot::is_bridged(fd_slot(fd).load(std::memory_order_relaxed));
    }
    errno = saved;
    return bridged;
}

}  // namespace gs::shim
