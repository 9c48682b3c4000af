// The GSocket API (api/gsocket.h) in one process linked to the preload
// library: argument checks (errno and the log line naming the argument), and
// the request riding through the shim (grant, pacing, policy defaults,
// refusal and retry, accept). Env from meson: GSOCKET_POLICY = unit.ini,
// GSOCKET_LEDGER and GSOCKET_LOG_FILE in the build dir.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <type_traits>
#include <sstream>
#include <string>

#include "gsocket/gsocket.hpp"

namespace {

std::string log_text() {
    const char* p = getenv("GSOCKET_LOG_FILE");
    REQUIRE(p != nullptr);
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}
void clear_log() {
    const char* p = getenv("GSOCKET_LOG_FILE");
    if (p) truncate(p, 0);
}

gs_qos unset() {
    gs_qos q;
    gs_qos_init(&q);
    return q;
}

// A loopback TCP listener on an ephemeral port.
struct Listener {
    int fd = -1;
    sockaddr_in addr{};
    explicit Listener(int type = SOCK_STREAM) {
        fd = socket(AF_INET, type, 0);
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        socklen_t l = sizeof addr;
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &l);
        if (type == SOCK_STREAM) REQUIRE(listen(fd, 16) == 0);
    }
    ~Listener() { close(fd); }
    const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&addr); }
};

uint64_t pacing(int fd) {
    uint64_t v = 0;
    socklen_t l = sizeof v;
    getsockopt(fd, SOL_SOCKET, SO_MAX_PACING_RATE, &v, &l);
    return v;
}

// Runs `call`, which must fail with `err` and log a line containing `message`.
#define EXPECT_BAD(call, err, message)                                   \
    do {                                                                 \
        clear_log();                                                     \
        errno = 0;                                                       \
        int rc_ = (call);                                                \
        int e_ = errno;                                                  \
        INFO(#call);                                                     \
        CHECK(rc_ == -1);                                                \
        CHECK(e_ == (err));                                              \
        std::string log_ = log_text();                                   \
        INFO("log: " << log_);                                           \
        CHECK(log_.find(message) != std::string::npos);                  \
        CHECK(std::count(log_.begin(), log_.end(), '\n') == 1);          \
    } while (0)

}  // namespace

TEST_CASE("version and qos_init") {
    CHECK(gs_version() == GS_VERSION);
    gs_qos q;
    memset(&q, 0x5a, sizeof q);
    gs_qos_init(&q);
    CHECK(q.rate == 0);
    CHECK(q.latency_us == 0);
    CHECK(q.priority == -1);
    CHECK(q.dscp == -1);
    CHECK(std::string(gs_strerror(ENOBUFS)).find("reserve") != std::string::npos);
}

TEST_CASE("every bad argument: EINVAL (or the documented errno) and one log line naming it") {
    gs_qos q = unset();
    EXPECT_BAD(gs_socket(AF_UNIX, GS_RELIABLE, nullptr), EAFNOSUPPORT, "gs_socket: domain = 1, use AF_INET");
    EXPECT_BAD(gs_socket(AF_INET, static_cast<gs_class>(7), nullptr), EINVAL, "cls = 7 is not a service class");
    EXPECT_BAD(gs_socket(AF_INET, static_cast<gs_class>(-1), nullptr), EINVAL, "cls = -1 is not a service class");
    EXPECT_BAD(gs_socket(AF_INET, GS_GROUP, nullptr), EPROTONOSUPPORT, "cls = GS_GROUP needs the overlay");
    q = unset(); q.priority = 7;
    EXPECT_BAD(gs_socket(AF_INET, GS_RELIABLE, &q), EINVAL, "qos.priority = 7 is out of range, use 0-6");
    q = unset(); q.priority = -2;
    EXPECT_BAD(gs_socket(AF_INET, GS_RELIABLE, &q), EINVAL, "qos.priority = -2 is out of range");
    q = unset(); q.dscp = 64;
    EXPECT_BAD(gs_socket(AF_INET, GS_RELIABLE, &q), EINVAL, "qos.dscp = 64 is out of range, use 0-63");
    q = unset(); q.dscp = -3;
    EXPECT_BAD(gs_socket(AF_INET6, GS_DATAGRAM, &q), EINVAL, "qos.dscp = -3 is out of range");
    q = unset(); q.loss_ppm = 1000001;
    EXPECT_BAD(gs_socket(AF_INET, GS_DATAGRAM, &q), EINVAL, "qos.loss_ppm = 1000001 is above 1000000");
    q = unset(); q.latency_us = 1000;
    EXPECT_BAD(gs_socket(AF_INET, GS_GUARANTEED, &q), EINVAL,
               "qos.latency_us = 1000 needs cls = GS_REALTIME (cls is GS_GUARANTEED)");
    q = unset(); q.jitter_us = 500;
    EXPECT_BAD(gs_socket(AF_INET, GS_RELIABLE, &q), EINVAL, "qos.jitter_us = 500 needs cls = GS_REALTIME");

    int tcp = socket(AF_INET, SOCK_STREAM, 0), udp = socket(AF_INET, SOCK_DGRAM, 0);
    EXPECT_BAD(gs_set_qos(tcp, GS_DATAGRAM, nullptr), EINVAL, "GS_DATAGRAM on a TCP socket");
    EXPECT_BAD(gs_set_qos(udp, GS_GUARANTEED, nullptr), EINVAL, "GS_GUARANTEED on a UDP socket");
    EXPECT_BAD(gs_set_qos(udp, GS_RELIABLE, nullptr), EINVAL, "GS_RELIABLE on a UDP socket");
    EXPECT_BAD(gs_get_qos(tcp, nullptr), EINVAL, "out is NULL");
    EXPECT_BAD(gs_connect(tcp, nullptr, 0, nullptr), EINVAL, "addr is NULL");

    // Not a usable socket: the errno says which, no log line needed.
    int p[2];
    REQUIRE(pipe(p) == 0);
    int un = socket(AF_UNIX, SOCK_STREAM, 0);
    errno = 0;
    CHECK(gs_set_qos(-1, GS_RELIABLE, nullptr) == -1);
    CHECK(errno == EBADF);
    CHECK(gs_set_qos(1 << 22, GS_RELIABLE, nullptr) == -1);
    CHECK(errno == EBADF);
    CHECK(gs_set_qos(p[0], GS_RELIABLE, nullptr) == -1);
    CHECK(errno == ENOTSOCK);
    CHECK(gs_set_qos(un, GS_RELIABLE, nullptr) == -1);
    CHECK(errno == EAFNOSUPPORT);
    gs_grant g;
    CHECK(gs_get_qos(p[0], &g) == -1);
    CHECK(errno == ENOTSOCK);

    // The good ones pass, and nothing is logged.
    clear_log();
    q = unset(); q.latency_us = 20000; q.jitter_us = 2000;
    CHECK(gs_set_qos(udp, GS_REALTIME, &q) == 0);
    CHECK(gs_set_qos(udp, GS_DATAGRAM, nullptr) == 0);   // replaces the request
    q = unset(); q.priority = 6; q.dscp = 63; q.loss_ppm = 1000000;
    CHECK(gs_set_qos(tcp, GS_RELIABLE, &q) == 0);
    CHECK(log_text().empty());
    for (int fd : {tcp, udp, p[0], p[1], un}) close(fd);
}

TEST_CASE("before connect: the request, or the protocol's class") {
    gs_qos q = unset();
    q.rate = 1234;
    q.dscp = 10;
    int fd = gs_socket(AF_INET6, GS_GUARANTEED, &q);
    REQUIRE(fd >= 0);
    gs_grant g;
    REQUIRE(gs_get_qos(fd, &g) == 0);
    CHECK(g.cls == GS_GUARANTEED);
    CHECK(g.qos.rate == 1234);
    CHECK(g.qos.dscp == 10);
    CHECK(g.qos.priority == -1);
    CHECK(g.admission == GS_NONE);
    CHECK(gs_close(fd) == 0);

    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    REQUIRE(gs_get_qos(udp, &g) == 0);
    CHECK(g.cls == GS_DATAGRAM);
    close(udp);
}

TEST_CASE("guaranteed: granted, paced at the rate, policy fills the unset fields, EISCONN after") {
    Listener l;
    gs_qos q = unset();
    q.rate = 2500000;   // 20 Mbit/s
    int fd = gs_socket(AF_INET, GS_GUARANTEED, &q);
    REQUIRE(fd >= 0);
    gs_grant g{};
    REQUIRE(gs_connect(fd, l.sa(), sizeof l.addr, &g) == 0);
    CHECK(g.cls == GS_GUARANTEED);
    CHECK(g.admission == GS_GRANTED);
    CHECK(g.transport == GS_NATIVE);
    CHECK(g.qos.rate == 2500000);
    CHECK(g.qos.dscp == 46);       // unit.ini's
    CHECK(g.qos.priority == 5);    // unit.ini's
    CHECK(pacing(fd) == 2500000);
    int tos = 0;
    socklen_t tl = sizeof tos;
    getsockopt(fd, IPPROTO_IP, IP_TOS, &tos, &tl);
    CHECK((tos >> 2) == 46);
    // A program cannot raise its pacing above what it was granted.
    uint64_t more = 10000000;
    setsockopt(fd, SOL_SOCKET, SO_MAX_PACING_RATE, &more, sizeof more);
    CHECK(pacing(fd) == 2500000);
    clear_log();
    errno = 0;
    CHECK(gs_set_qos(fd, GS_RELIABLE, nullptr) == -1);
    CHECK(errno == EISCONN);
    CHECK(log_text().find("ask before connect") != std::string::npos);
    CHECK(gs_close(fd) == 0);

    // Nothing set: the rate, too, is the policy's (8mbit = 1000000 B/s).
    fd = gs_socket(AF_INET, GS_GUARANTEED, nullptr);
    REQUIRE(gs_connect(fd, l.sa(), sizeof l.addr, &g) == 0);
    CHECK(g.admission == GS_GRANTED);
    CHECK(g.qos.rate == 1000000);
    CHECK(pacing(fd) == 1000000);
    CHECK(gs_close(fd) == 0);
}

TEST_CASE("the same core: a plain socket of an API program is classified by the policy") {
    Listener l;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(connect(fd, l.sa(), sizeof l.addr) == 0);
    gs_grant g{};
    REQUIRE(gs_get_qos(fd, &g) == 0);
    CHECK(g.cls == GS_GUARANTEED);
    CHECK(g.admission == GS_GRANTED);
    CHECK(g.qos.rate == 1000000);
    CHECK(pacing(fd) == 1000000);
    close(fd);   // plain close releases too (the integration test reads the ledger)
}

TEST_CASE("refused with ENOBUFS, the request stays: lower it and connect again") {
    Listener l;
    gs_qos q = unset();
    q.rate = 20000000;   // 160 Mbit/s > capacity 100mbit
    int fd = gs_socket(AF_INET, GS_GUARANTEED, &q);
    REQUIRE(fd >= 0);
    gs_grant g{};
    clear_log();
    errno = 0;
    CHECK(gs_connect(fd, l.sa(), sizeof l.addr, &g) == -1);
    CHECK(errno == ENOBUFS);
    CHECK(log_text().find("connect fails with ENOBUFS") != std::string::npos);
    REQUIRE(gs_get_qos(fd, &g) == 0);
    CHECK(g.cls == GS_GUARANTEED);
    CHECK(g.qos.rate == 20000000);
    CHECK(g.admission == GS_NONE);
    q.rate = 5000000;
    REQUIRE(gs_set_qos(fd, GS_GUARANTEED, &q) == 0);
    REQUIRE(gs_connect(fd, l.sa(), sizeof l.addr, &g) == 0);
    CHECK(g.admission == GS_GRANTED);
    CHECK(g.qos.rate == 5000000);
    CHECK(pacing(fd) == 5000000);
    CHECK(gs_close(fd) == 0);
}

TEST_CASE("realtime over UDP, and a listener with a request still classifies what it accepts") {
    Listener u(SOCK_DGRAM);
    gs_qos q = unset();
    q.latency_us = 20000;
    q.dscp = 34;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);   // gs_socket makes TCP for class realtime
    REQUIRE(gs_set_qos(fd, GS_REALTIME, &q) == 0);
    gs_grant g{};
    REQUIRE(gs_connect(fd, u.sa(), sizeof u.addr, &g) == 0);
    CHECK(g.cls == GS_REALTIME);
    CHECK(g.qos.latency_us == 20000);
    CHECK(g.qos.dscp == 34);
    CHECK(g.admission == GS_NONE);   // no rate: nothing to reserve
    CHECK(send(fd, "x", 1, 0) == 1);
    gs_close(fd);

    int lfd = gs_socket(AF_INET, GS_RELIABLE, nullptr);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(lfd, 4) == 0);
    socklen_t al = sizeof a;
    getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &al);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    int s = accept(lfd, nullptr, nullptr);
    REQUIRE(s >= 0);
    REQUIRE(gs_get_qos(s, &g) == 0);
    CHECK(g.cls == GS_RELIABLE);   // the policy's fallback for accepted TCP
    close(s);
    close(c);
    gs_close(lfd);
}

TEST_CASE("C++ layer: move-only Socket, error_code and throwing forms") {
    static_assert(!std::is_copy_constructible_v<gs::Socket>);
    static_assert(std::is_nothrow_move_constructible_v<gs::Socket>);
    Listener l;
    std::error_code ec;
    gs::Socket s = gs::Socket::create(AF_INET, gs::Class::guaranteed, gs::Qos().rate(250000).priority(3), ec);
    REQUIRE_FALSE(ec);
    gs::Socket moved = std::move(s);
    CHECK_FALSE(s.valid());
    gs_grant g = moved.connect_or_throw(l.sa(), sizeof l.addr);
    CHECK(g.admission == GS_GRANTED);
    CHECK(g.qos.rate == 250000);
    CHECK(g.qos.priority == 3);
    CHECK(moved.qos_or_throw().cls == GS_GUARANTEED);
    CHECK_FALSE(moved.close());
    CHECK_FALSE(moved.valid());

    gs::Socket bad = gs::Socket::create(AF_INET, gs::Class::group, gs::Qos(), ec);
    CHECK(ec == std::errc::protocol_not_supported);
    CHECK_FALSE(bad);
    CHECK_THROWS_AS(gs::Socket::create_or_throw(AF_INET, gs::Class::reliable, gs::Qos().dscp(99)), std::system_error);
}

// ---- overlay sockets --------------------------------------------------------

namespace {
std::string overlay_file(const std::string& body) {
    char path[] = "/tmp/gs-api-overlay-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, body.data(), body.size()) == static_cast<ssize_t>(body.size()));
    close(fd);
    return path;
}
}  // namespace

TEST_CASE("overlay: a first member joins alone, sends to nobody, and the C++ layer owns it") {
    std::string conf = overlay_file("OverlayID = 99\nProtocol = HC\nNodeAddress = 127.0.0.1:0\n");
    std::error_code ec;
    gs::Overlay m = gs::Overlay::open(conf.c_str(), ec);
    REQUIRE_FALSE(ec);
    REQUIRE(m.valid());
    CHECK(m.address() == gs::Overlay::no_address);   // not joined yet
    CHECK(m.send(gs::Overlay::to_all, "x", 1) == std::errc::not_connected);
    REQUIRE_FALSE(m.join(5000));
    CHECK(m.address() != gs::Overlay::no_address);
    CHECK_FALSE(m.send(gs::Overlay::to_all, "alone", 5));
    char buf[16];
    uint64_t from = 0;
    CHECK(m.recv(buf, sizeof buf, from, ec, MSG_DONTWAIT) == -1);
    CHECK(ec == std::errc::resource_unavailable_try_again);
    uint64_t nb[4];
    CHECK(gs_overlay_neighbors(m.get(), nb, 4) == 0);
    uint64_t parent = 0;
    CHECK(gs_overlay_parent(m.get(), GS_NO_ADDRESS, &parent) == -1);   // the root of its own tree
    CHECK(errno == ENOENT);
    gs::Overlay moved = std::move(m);
    CHECK_FALSE(m.valid());
    CHECK(moved.valid());
    moved.close();
    CHECK_FALSE(moved.valid());
    unlink(conf.c_str());
}

TEST_CASE("overlay: what a caller can get wrong is refused with EINVAL") {
    errno = 0;
    CHECK(gs_overlay_open(nullptr) == nullptr);
    CHECK(errno == EINVAL);
    CHECK(gs_overlay_open("/nonexistent/overlay.conf") == nullptr);
    CHECK(errno == ENOENT);
    std::string bad = overlay_file("OverlayID = 99\nProtocol = XY\n");
    CHECK(gs_overlay_open(bad.c_str()) == nullptr);
    CHECK(errno == EINVAL);
    unlink(bad.c_str());
    std::string conf = overlay_file("OverlayID = 98\nProtocol = DT\nNodeAddress = 127.0.0.1:0\nMaxPayload = 1000\n");
    gs_overlay* o = gs_overlay_open(conf.c_str());
    REQUIRE(o != nullptr);
    REQUIRE(gs_overlay_join(o, 5000) == 0);
    char big[1001] = {};
    CHECK(gs_overlay_send(o, GS_TO_ALL, big, sizeof big, GS_NO_ADDRESS, GS_NO_ADDRESS) == -1);
    CHECK(errno == EINVAL);
    CHECK(gs_overlay_send(o, 9, big, 1, GS_NO_ADDRESS, GS_NO_ADDRESS) == -1);
    CHECK(errno == EINVAL);
    CHECK(gs_overlay_send(nullptr, GS_TO_ALL, big, 1, GS_NO_ADDRESS, GS_NO_ADDRESS) == -1);
    CHECK(errno == EINVAL);
    CHECK(gs_overlay_recv(o, nullptr, 10, nullptr, 0) == -1);
    CHECK(errno == EINVAL);
    CHECK(gs_overlay_stats(o, nullptr) == -1);
    gs_overlay_counters s{};
    CHECK(gs_overlay_stats(o, &s) == 0);
    CHECK(gs_overlay_close(o) == 0);
    CHECK(gs_overlay_close(nullptr) == -1);
    unlink(conf.c_str());
}
