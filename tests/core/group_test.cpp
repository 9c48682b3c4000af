// Legacy multicast over an overlay, the pieces testable without namespaces
// (docs/overlay.md "Legacy multicast"): the origin header; which group a
// membership option names and which [overlay] carries it; and the datagram
// bridge carrying a group with a stand-in for the overlay member (the other
// end of the member's pair: what the engine's OverlayHost would read and
// write), so every byte the bridge exchanges with the member is seen.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "core/engine/dgram_bridge.h"
#include "core/engine/group_origin.h"
#include "core/engine/overlay_host.h"
#include "core/engine/udp_host.h"
#include "policy/policy.h"
#include "shim/group_match.h"
#include "tests/core/on_engine.h"

using namespace gs::engine;
using gs::sansio::Addr;
using gs::engine::test::eventually;

TEST_CASE("the origin header: 22 bytes as documented, and nothing malformed passes") {
    Addr a = Addr::v4(0x0a4e000b, 6000);   // 10.78.0.11:6000
    uint8_t b[kOriginLen];
    encode_origin(a, b);
    const uint8_t want[kOriginLen] = {0x67, 0x6d, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 78, 0, 11, 0x17, 0x70};
    CHECK(memcmp(b, want, sizeof b) == 0);
    Addr got;
    REQUIRE(decode_origin(b, sizeof b, &got));
    CHECK(got == a);
    CHECK(got.is_v4());
    CHECK_FALSE(decode_origin(b, kOriginLen - 1, &got));   // short
    CHECK_FALSE(decode_origin(nullptr, kOriginLen, &got));
    for (int i : {0, 1, 2, 3}) {   // magic, version, flags
        uint8_t c[kOriginLen];
        memcpy(c, b, sizeof c);
        c[i] ^= 0x01;
        CHECK_FALSE(decode_origin(c, sizeof c, &got));
    }
    uint8_t zero_port[kOriginLen];
    memcpy(zero_port, b, sizeof b);
    zero_port[20] = zero_port[21] = 0;
    CHECK_FALSE(decode_origin(zero_port, sizeof zero_port, &got));
    // Every truncation and every single-byte value at each header position
    // either decodes to what was written or is refused: never read beyond.
    for (size_t n = 0; n <= kOriginLen; ++n) CHECK(decode_origin(b, n, &got) == (n == kOriginLen));
}

namespace {

gs::shim::GroupOption opt(int level, int name, const void* v, socklen_t len) {
    return gs::shim::group_option(level, name, v, len);
}
in_addr v4(const char* s) {
    in_addr a{};
    inet_pton(AF_INET, s, &a);
    return a;
}
bool is(const gs::shim::GroupOption& o, gs::shim::GroupOp op, int family, const char* text) {
    uint8_t b[16] = {};
    inet_pton(family, text, b);
    return o.op == op && o.group.addr.family == family && memcmp(o.group.addr.bytes, b, family == AF_INET ? 4 : 16) == 0;
}

}  // namespace

TEST_CASE("membership options: which group each names") {
    using gs::shim::GroupOp;
    ip_mreq m{v4("239.1.2.3"), v4("0.0.0.0")};
    CHECK(is(opt(IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof m), GroupOp::join, AF_INET, "239.1.2.3"));
    CHECK(is(opt(IPPROTO_IP, IP_DROP_MEMBERSHIP, &m, sizeof m), GroupOp::leave, AF_INET, "239.1.2.3"));
    ip_mreqn mn{};
    mn.imr_multiaddr = v4("224.0.0.251");
    CHECK(is(opt(IPPROTO_IP, IP_ADD_MEMBERSHIP, &mn, sizeof mn), GroupOp::join, AF_INET, "224.0.0.251"));
    ipv6_mreq m6{};
    inet_pton(AF_INET6, "ff3e::1", &m6.ipv6mr_multiaddr);
    CHECK(is(opt(IPPROTO_IPV6, IPV6_JOIN_GROUP, &m6, sizeof m6), GroupOp::join, AF_INET6, "ff3e::1"));
    CHECK(is(opt(IPPROTO_IPV6, IPV6_ADD_MEMBERSHIP, &m6, sizeof m6), GroupOp::join, AF_INET6, "ff3e::1"));
    CHECK(is(opt(IPPROTO_IPV6, IPV6_LEAVE_GROUP, &m6, sizeof m6), GroupOp::leave, AF_INET6, "ff3e::1"));
    inet_pton(AF_INET6, "::ffff:239.1.2.3", &m6.ipv6mr_multiaddr);   // an IPv4 group on an IPv6 socket
    CHECK(is(opt(IPPROTO_IPV6, IPV6_JOIN_GROUP, &m6, sizeof m6), GroupOp::join, AF_INET, "239.1.2.3"));
    group_req g{};
    auto* gin = reinterpret_cast<sockaddr_in*>(&g.gr_group);
    gin->sin_family = AF_INET;
    gin->sin_addr = v4("239.9.9.9");
    for (int level : {IPPROTO_IP, IPPROTO_IPV6}) {
        CHECK(is(opt(level, MCAST_JOIN_GROUP, &g, sizeof g), GroupOp::join, AF_INET, "239.9.9.9"));
        CHECK(is(opt(level, MCAST_LEAVE_GROUP, &g, sizeof g), GroupOp::leave, AF_INET, "239.9.9.9"));
    }
    auto* gin6 = reinterpret_cast<sockaddr_in6*>(&g.gr_group);
    gin6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, "ff02::fb", &gin6->sin6_addr);
    CHECK(is(opt(IPPROTO_IPV6, MCAST_JOIN_GROUP, &g, sizeof g), GroupOp::join, AF_INET6, "ff02::fb"));

    // The kernel's to answer: too short, not multicast, another family, other options.
    CHECK(opt(IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof m - 1).op == GroupOp::none);
    CHECK(opt(IPPROTO_IP, IP_ADD_MEMBERSHIP, nullptr, sizeof m).op == GroupOp::none);
    ip_mreq uni{v4("10.0.0.1"), v4("0.0.0.0")};
    CHECK(opt(IPPROTO_IP, IP_ADD_MEMBERSHIP, &uni, sizeof uni).op == GroupOp::none);
    g.gr_group.ss_family = AF_UNIX;
    CHECK(opt(IPPROTO_IP, MCAST_JOIN_GROUP, &g, sizeof g).op == GroupOp::none);
    CHECK(opt(IPPROTO_IP, MCAST_JOIN_GROUP, &g, sizeof g - 1).op == GroupOp::none);
    ip_mreq_source src{};
    src.imr_multiaddr = v4("239.1.2.3");
    CHECK(opt(IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP, &src, sizeof src).op == GroupOp::none);
    CHECK(opt(IPPROTO_IP, IP_MULTICAST_LOOP, &m, sizeof m).op == GroupOp::none);
    CHECK(opt(SOL_SOCKET, IP_ADD_MEMBERSHIP, &m, sizeof m).op == GroupOp::none);   // 35 is SO_TIMESTAMPNS there
}

TEST_CASE("find_group: the [overlay] carrying a group, exact port first") {
    auto pol = gs::policy::Policy::parse(
        "[overlay a]\nid = 1\nprotocol = DT\ngroup = 239.1.2.3:6000\nserver = 10.0.0.1:8081\n"
        "[overlay b]\nid = 2\nprotocol = HC\ngroup = 239.1.2.3:7000\n"
        "[overlay c]\nid = 3\nprotocol = DT\ngroup = [ff3e::1]:6000\n"
        "[overlay d]\nid = 4\nprotocol = DT\n",
        "t.ini");
    REQUIRE(pol.ok());
    gs::shim::Endpoint e;
    e.addr.family = AF_INET;
    in_addr a = v4("239.1.2.3");
    memcpy(e.addr.bytes, &a, 4);
    struct Case {
        uint16_t port;
        bool any;
        const char* want;   // nullptr: none
    };
    for (const Case& c : {Case{6000, false, "a"}, Case{7000, false, "b"}, Case{7000, true, "b"}, Case{5000, false, nullptr},
                          Case{5000, true, "a"}, Case{0, true, "a"}}) {
        e.port = c.port;
        const gs::policy::Overlay* o = gs::shim::find_group(pol, e, c.any);
        CAPTURE(c.port);
        if (c.want == nullptr) CHECK(o == nullptr);
        else REQUIRE((o != nullptr && o->name == c.want));
    }
    gs::shim::Endpoint e6;
    e6.addr.family = AF_INET6;
    inet_pton(AF_INET6, "ff3e::1", e6.addr.bytes);
    e6.port = 6000;
    const gs::policy::Overlay* o = gs::shim::find_group(pol, e6, false);
    REQUIRE(o != nullptr);
    CHECK(o->name == "c");
    e.addr.bytes[3] = 4;   // 239.1.2.4
    CHECK(gs::shim::find_group(pol, e, true) == nullptr);
}

namespace {

sockaddr_in loopback(uint16_t port = 0) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    return a;
}
sockaddr_in group_addr(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr = v4("239.1.2.3");
    a.sin_port = htons(port);
    return a;
}
uint16_t port_of(int fd) {
    sockaddr_in a{};
    socklen_t l = sizeof a;
    REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &l) == 0);
    return ntohs(a.sin_port);
}
void timeouts(int fd, int s) {
    timeval tv{s, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

// A datagram bridge around a UDP socket on 127.0.0.1, carrying a group:
// `member` is the overlay member's side of the pair (what OverlayHost holds).
struct GroupBridge {
    Engine* e = nullptr;
    BridgeState b;
    DgramState d;
    DgramGroup g;
    std::atomic<uint64_t> out{0}, in{0};
    std::atomic<bool> done{false}, detached{false};
    int prog = -1, member = -1;
    uint16_t port = 0;
    static void on_done(BridgeState* s) noexcept { static_cast<GroupBridge*>(s->owner)->done.store(true); }
    static void on_detached(DgramGroup* g) noexcept { static_cast<GroupBridge*>(g->owner)->detached.store(true); }

    // `group_port`: 0 = the transport's own port (the kernel would deliver
    // the group's datagrams to it); `direct`: sends without a limit go from
    // the program's thread.
    explicit GroupBridge(bool direct, int group_port = 0) {
        e = Engine::create(Options{}, nullptr);
        REQUIRE(e != nullptr);
        int sp[2];
        REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == 0);
        prog = sp[0];
        timeouts(prog, 5);
        b.transport = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in a = loopback();
        REQUIRE(bind(b.transport, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        port = port_of(b.transport);
        b.app_end = sp[1];
        b.bytes_out = &out;
        b.bytes_in = &in;
        b.on_done = &GroupBridge::on_done;
        b.owner = this;
        b.up.direct = direct;
        d.family = AF_INET;
        start_dgram_bridge(*e, b, d);
        int mp[2];
        REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, mp) == 0);
        member = mp[0];
        timeouts(member, 5);
        g.group = Addr::v4(0xef010203, static_cast<uint16_t>(group_port ? group_port : port));
        g.node = Addr::v4(0x0a4e000b, 0);   // 10.78.0.11: the node's IP, as others reach it
        g.member_fd = mp[1];
        g.owner = this;
        g.on_detached = &GroupBridge::on_detached;
        int rc = -1;
        gs::engine::test::on_engine(*e, [&](Engine&) { rc = attach_dgram_group(d, g); });
        REQUIRE(rc == 0);
        CHECK(d.group.load() == &g);
    }
    ~GroupBridge() {
        if (prog >= 0) close(prog);
        CHECK(eventually([&] { return done.load(); }));
        CHECK(detached.load());   // the bridge's end lets go of the group
        Engine::destroy(e);
        close(b.transport);
        close(member);
    }
    ssize_t send(const std::string& data, const sockaddr_in* to) {
        iovec iov{const_cast<char*>(data.data()), data.size()};
        msghdr m{};
        m.msg_name = const_cast<sockaddr_in*>(to);
        m.msg_namelen = to ? sizeof *to : 0;
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        return dgram_send(b, d, prog, &m, 0);
    }
    ssize_t recv(std::string& buf, sockaddr_in* from, int flags = 0) {
        buf.assign(2048, '\0');
        iovec iov{buf.data(), buf.size()};
        msghdr m{};
        sockaddr_storage ss{};
        m.msg_name = &ss;
        m.msg_namelen = sizeof ss;
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        ssize_t r = dgram_recv(b, d, prog, &m, flags);
        if (r >= 0) {
            buf.resize(static_cast<size_t>(r));
            CHECK(m.msg_namelen == sizeof(sockaddr_in));
            memcpy(from, &ss, sizeof *from);
        }
        return r;
    }
    // What the member read: the request, the origin, the payload.
    bool member_read(OverlayRequest& r, Addr& origin, std::string& payload, int flags = 0) {
        char buf[4096];
        ssize_t n = ::recv(member, buf, sizeof buf, flags);
        if (n < static_cast<ssize_t>(sizeof r + kOriginLen)) return false;
        memcpy(&r, buf, sizeof r);
        if (!decode_origin(reinterpret_cast<uint8_t*>(buf) + sizeof r, kOriginLen, &origin)) return false;
        payload.assign(buf + sizeof r + kOriginLen, static_cast<size_t>(n) - sizeof r - kOriginLen);
        return true;
    }
    // The member delivers: OverlayDelivery, then `body` (an origin header and the payload, or junk).
    void member_deliver(const std::string& body) {
        OverlayDelivery od{42};
        std::string m(reinterpret_cast<const char*>(&od), sizeof od);
        m += body;
        REQUIRE(::send(member, m.data(), m.size(), 0) == static_cast<ssize_t>(m.size()));
    }
};

std::string origin_bytes(const Addr& a) {
    uint8_t h[kOriginLen];
    encode_origin(a, h);
    return std::string(reinterpret_cast<char*>(h), sizeof h);
}

bool same(const sockaddr_in& s, const Addr& a) {
    return s.sin_family == AF_INET && ntohs(s.sin_port) == a.port && memcmp(&s.sin_addr, a.ip.data() + 12, 4) == 0;
}

}  // namespace

TEST_CASE("a group member's bridge: sends to the group go to the overlay, others to the kernel") {
    for (bool direct : {false, true}) {
        CAPTURE(direct);
        GroupBridge gb(direct);
        sockaddr_in grp = group_addr(gb.port);
        int loop = 0;   // no copy back: this case looks at the member's side only
        REQUIRE(setsockopt(gb.b.transport, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop) == 0);
        for (const std::string& msg : {std::string("hello"), std::string(), std::string(1400, 'x')}) {
            REQUIRE(gb.send(msg, &grp) == static_cast<ssize_t>(msg.size()));
            OverlayRequest r;
            Addr origin;
            std::string payload;
            REQUIRE(gb.member_read(r, origin, payload));
            CHECK(r.op == OverlayRequest::send);
            CHECK(r.to == static_cast<uint8_t>(gs::overlay::SendTo::all));
            CHECK(origin == Addr::v4(0x0a4e000b, gb.port));   // the node's IP, the socket's port
            CHECK(payload == msg);
        }
        CHECK(eventually([&] { return gb.g.sent.load() == 3; }));
        // Another destination: the kernel's socket, as before.
        int peer = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in pa = loopback();
        REQUIRE(bind(peer, reinterpret_cast<sockaddr*>(&pa), sizeof pa) == 0);
        timeouts(peer, 5);
        sockaddr_in to = loopback(port_of(peer));
        REQUIRE(gb.send("unicast", &to) == 7);
        char buf[64];
        sockaddr_in from{};
        socklen_t fl = sizeof from;
        REQUIRE(recvfrom(peer, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fl) == 7);
        CHECK(ntohs(from.sin_port) == gb.port);
        // The group at another port is not the group.
        sockaddr_in other = group_addr(static_cast<uint16_t>(gb.port + 1));
        gb.send("elsewhere", &other);
        OverlayRequest r;
        Addr origin;
        std::string payload;
        usleep(50000);
        CHECK_FALSE(gb.member_read(r, origin, payload, MSG_DONTWAIT));
        close(peer);
    }
}

TEST_CASE("deliveries reach the program from the sender's address; malformed ones are dropped") {
    GroupBridge gb(true);
    Addr sender = Addr::v4(0x0a4e000c, 6000);   // 10.78.0.12:6000
    gb.member_deliver(origin_bytes(sender) + "from twelve");
    std::string got;
    sockaddr_in from{};
    REQUIRE(gb.recv(got, &from) == 11);
    CHECK(got == "from twelve");
    CHECK(same(from, sender));
    // Junk: no origin, a short one, a bad magic, port 0. Then a good one,
    // which must be the next datagram the program sees.
    std::string bad_magic = origin_bytes(sender);
    bad_magic[0] = 'x';
    std::string zero_port = origin_bytes(sender);
    zero_port[20] = zero_port[21] = 0;
    for (const std::string& junk : {std::string(), std::string("short"), bad_magic + "payload", zero_port + "p"})
        gb.member_deliver(junk);
    gb.member_deliver(origin_bytes(sender) + "good");
    REQUIRE(gb.recv(got, &from) == 4);
    CHECK(got == "good");
    CHECK(gb.g.dropped.load() == 4);
    // Counted once the engine has handed the datagram over: the program may read it first.
    CHECK(eventually([&] { return gb.g.delivered.load() == 2; }));
    CHECK(gb.recv(got, &from, MSG_DONTWAIT) == -1);
    CHECK(errno == EAGAIN);
    // An IPv6 origin cannot be told to an IPv4 socket: dropped.
    Addr six;
    six.ip[0] = 0xfd;
    six.ip[15] = 1;
    six.port = 6000;
    gb.member_deliver(origin_bytes(six) + "v6");
    CHECK(eventually([&] { return gb.g.dropped.load() == 5; }));
}

TEST_CASE("port rule and IP_MULTICAST_LOOP: as the kernel would deliver") {
    SUBCASE("bound to the group's port: its own datagrams come back, unless the loop is off") {
        GroupBridge gb(true);
        sockaddr_in grp = group_addr(gb.port);
        REQUIRE(gb.send("mine", &grp) == 4);
        std::string got;
        sockaddr_in from{};
        REQUIRE(gb.recv(got, &from) == 4);
        CHECK(got == "mine");
        CHECK(same(from, Addr::v4(0x0a4e000b, gb.port)));
        CHECK(eventually([&] { return gb.g.looped.load() == 1; }));   // counted after the hand-over
        int loop = 0;
        REQUIRE(setsockopt(gb.b.transport, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop) == 0);
        REQUIRE(gb.send("quiet", &grp) == 5);
        CHECK(eventually([&] { return gb.g.sent.load() == 2; }));
        usleep(50000);
        CHECK(gb.recv(got, &from, MSG_DONTWAIT) == -1);
        CHECK(gb.g.looped.load() == 1);
    }
    SUBCASE("bound to another port: the group's datagrams are not this socket's") {
        GroupBridge gb(true, 1);   // the group is 239.1.2.3:1, the socket is bound elsewhere
        gb.member_deliver(origin_bytes(Addr::v4(0x0a4e000c, 1)) + "not yours");
        CHECK(eventually([&] { return gb.g.dropped.load() == 1; }));
        sockaddr_in grp = group_addr(1);
        REQUIRE(gb.send("out", &grp) == 3);   // a sender that never receives: still carried
        CHECK(eventually([&] { return gb.g.sent.load() == 1; }));
        std::string got;
        sockaddr_in from{};
        usleep(50000);
        CHECK(gb.recv(got, &from, MSG_DONTWAIT) == -1);   // no loop either
        CHECK(gb.g.delivered.load() == 0);
    }
}

TEST_CASE("connected to the group: sends need no address, nothing is delivered") {
    GroupBridge gb(true);
    sockaddr_in grp = group_addr(gb.port);
    REQUIRE(dgram_connect(gb.b, gb.d, reinterpret_cast<sockaddr*>(&grp), sizeof grp) == 0);
    CHECK(gb.g.connected.load());
    REQUIRE(gb.send("connected", nullptr) == 9);
    OverlayRequest r;
    Addr origin;
    std::string payload;
    REQUIRE(gb.member_read(r, origin, payload));
    CHECK(payload == "connected");
    gb.member_deliver(origin_bytes(Addr::v4(0x0a4e000c, 6000)) + "x");
    CHECK(eventually([&] { return gb.g.dropped.load() == 1; }));
    // AF_UNSPEC disconnects: the kernel's, and the group's.
    sockaddr un{};
    un.sa_family = AF_UNSPEC;
    REQUIRE(dgram_connect(gb.b, gb.d, &un, sizeof un) == 0);
    CHECK_FALSE(gb.g.connected.load());
    CHECK(gb.send("x", nullptr) == -1);
    CHECK(errno == EDESTADDRREQ);
}

TEST_CASE("detach: the member's end hangs up, later sends to the group are the kernel's") {
    GroupBridge gb(false);
    int rc = -1;
    GroupBridge* self = &gb;
    gs::engine::test::on_engine(*gb.e, [&](Engine&) {
        detach_dgram_group(self->d);
        rc = 0;
    });
    REQUIRE(rc == 0);
    CHECK(gb.detached.load());
    CHECK(gb.d.group.load() == nullptr);
    CHECK(gb.g.member_fd == -1);
    // The member sees the end (once the engine's poll has let go of its file).
    pollfd p{gb.member, POLLIN, 0};
    CHECK(eventually([&] { return poll(&p, 1, 0) == 1 && (p.revents & POLLHUP); }));
    char c;
    CHECK(::recv(gb.member, &c, 1, MSG_DONTWAIT) == 0);
    // Attaching again after a detach works (a new join).
    DgramGroup g2;
    int mp[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, mp) == 0);
    g2.group = gb.g.group;
    g2.node = gb.g.node;
    g2.member_fd = mp[1];
    std::atomic<bool> detached2{false};
    g2.owner = &detached2;
    g2.on_detached = [](DgramGroup* g) noexcept { static_cast<std::atomic<bool>*>(g->owner)->store(true); };
    gs::engine::test::on_engine(*gb.e, [&](Engine&) { rc = attach_dgram_group(self->d, g2); });
    REQUIRE(rc == 0);
    DgramGroup g3;
    gs::engine::test::on_engine(*gb.e, [&](Engine&) { rc = attach_dgram_group(self->d, g3); });
    CHECK(rc == -EBUSY);   // one group per socket
    sockaddr_in grp = group_addr(gb.port);
    int loop = 0;
    setsockopt(gb.b.transport, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop);
    REQUIRE(gb.send("again", &grp) == 5);
    char buf[256];
    timeouts(mp[0], 5);
    CHECK(::recv(mp[0], buf, sizeof buf, 0) == static_cast<ssize_t>(sizeof(OverlayRequest) + kOriginLen + 5));
    // The program closes its socket: the bridge ends and lets go of the group.
    close(gb.prog);
    gb.prog = -1;
    CHECK(eventually([&] { return detached2.load(); }));
    CHECK(::recv(mp[0], buf, sizeof buf, 0) == 0);
    close(mp[0]);
}
