// TCP flows over MCES in the engine (core/engine/mces_bridge.h), without the
// shim: a client bridge prepared as the shim prepares it (the program's end
// of a socketpair, the program's TCP socket as transport, a UDP socket
// connected to the peer), and a listener that delivers MCES connections to
// a kernel TCP listening socket. Plus the auto verdict table.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "core/engine/engine.h"
#include "core/engine/mces_bridge.h"
#include "core/engine/mces_peers.h"
#include "tests/core/on_engine.h"

using namespace gs;
using namespace gs::engine;
using Clock = std::chrono::steady_clock;

namespace {

sockaddr_in loopback(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    return a;
}

// A TCP listener on 127.0.0.1 (port chosen by the kernel).
int tcp_listener(uint16_t& port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = loopback(0);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(fd, 16) == 0);
    socklen_t l = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &l);
    port = ntohs(a.sin_port);
    return fd;
}

// A UDP port nobody listens on (bound, read, closed).
// A TCP listener on 127.0.0.1 that also takes MCES connections on the same
// port (what the shim sets up at listen()); its port in `port`.
int mces_listener(Engine& e, uint16_t& port, const McesParams& p = McesParams{}) {
    int lfd = tcp_listener(port);
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in here = loopback(port);
    REQUIRE(bind(u, reinterpret_cast<sockaddr*>(&here), sizeof here) == 0);
    struct stat st;
    REQUIRE(fstat(lfd, &st) == 0);
    REQUIRE(mces_listen(e, u, lfd, st.st_ino, AF_INET, reinterpret_cast<sockaddr*>(&here), sizeof here, p) == 0);
    return lfd;
}

// The program closes its listening socket. The engine's once-a-second
// check of it (fstat, SO_ACCEPTCONN) sees a close and a shutdown alike; a
// close while that check runs in the engine's thread is a race on the fd
// number that TSan reports (harmless in the product: the check compares the
// inode), so the socket is shut down first, and closed once the engine let go.
void stop_listener(int lfd) {
    shutdown(lfd, SHUT_RDWR);
    CHECK(test::eventually([] { return !mces_listening(); }, 3000));   // within a second
    close(lfd);
}

uint16_t free_udp_port() {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a = loopback(0);
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t l = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &l);
    close(fd);
    return ntohs(a.sin_port);
}

// What the shim's bridge_connect and mces_connect prepare.
struct ClientFlow {
    BridgeState b;
    McesFlow f;
    int program = -1;                 // the program's end
    std::atomic<bool> done{false};
    ~ClientFlow() {
        if (program >= 0) close(program);
        if (b.transport >= 0) close(b.transport);
    }
    void prepare(uint16_t port, bool fallback, int64_t wait_ns) {
        int sp[2];
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
        program = sp[0];
        b.app_end = sp[1];
        b.transport = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in peer = loopback(port);
        memcpy(&b.peer, &peer, sizeof peer);
        b.peer_len = sizeof peer;
        b.owner = this;
        b.on_done = [](BridgeState* s) noexcept { static_cast<ClientFlow*>(s->owner)->done.store(true); };
        int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        REQUIRE(connect(u, reinterpret_cast<sockaddr*>(&peer), sizeof peer) == 0);
        f.udp_fd = u;
        memcpy(&f.peer, &peer, sizeof peer);
        f.peer_len = sizeof peer;
        f.kind = McesFlow::client;
        f.params.fallback = fallback;
        f.params.handshake_timeout_ns = wait_ns;
    }
};

bool write_all(int fd, const uint8_t* p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return false;
        p += w;
        n -= static_cast<size_t>(w);
    }
    return true;
}

// Reads until EOF (or an error: returns what came, errno in *err).
std::vector<uint8_t> read_all(int fd, int* err = nullptr) {
    std::vector<uint8_t> out;
    uint8_t buf[65536];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (err) *err = r < 0 ? errno : 0;
            return out;
        }
        out.insert(out.end(), buf, buf + r);
    }
}

// What the shim's mces_mark_accepted gives the engine: an accepted flow's
// McesFlow, with a release that counts.
struct AcceptedFlow {
    McesFlow f;
    std::atomic<int> released{0};
    AcceptedFlow() {
        f.kind = McesFlow::accepted;
        f.owner = this;
        f.release = [](McesFlow& m) noexcept { static_cast<AcceptedFlow*>(m.owner)->released.fetch_add(1); };
    }
};

// Accepts one connection from `lfd` and claims it, as the accept hook does;
// the kernel's peer address (the engine's loopback socket) in `from`.
int accept_claimed(int lfd, sockaddr_storage& from, socklen_t& fl) {
    fl = sizeof from;
    int s = accept(lfd, reinterpret_cast<sockaddr*>(&from), &fl);
    REQUIRE(s >= 0);
    sockaddr_storage mp{};
    socklen_t ml = 0;
    REQUIRE(mces_claim_accepted(reinterpret_cast<sockaddr*>(&from), fl, AF_INET, mp, ml));
    return s;
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) {
        seed = seed * 1103515245u + 12345u;
        v[i] = static_cast<uint8_t>(seed >> 16);
    }
    return v;
}

}  // namespace

TEST_CASE("peer table: verdicts per address and port, each for its TTL") {
    PeerTable t;
    const sansio::Addr a = sansio::Addr::v4(0x0a000001, 80), b = sansio::Addr::v4(0x0a000001, 81);
    CHECK(t.lookup(a, 0) == PeerVerdict::unknown);
    t.record(a, PeerVerdict::native, 1000);
    CHECK(t.lookup(a, 1000) == PeerVerdict::native);
    CHECK(t.lookup(b, 1000) == PeerVerdict::unknown);   // another port is another peer
    CHECK(t.lookup(a, 1000 + PeerTable::kNativeTtl - 1) == PeerVerdict::native);
    CHECK(t.lookup(a, 1000 + PeerTable::kNativeTtl) == PeerVerdict::unknown);
    t.record(a, PeerVerdict::mces, 5000);   // a new answer replaces the old
    CHECK(t.lookup(a, 5000 + PeerTable::kMcesTtl - 1) == PeerVerdict::mces);
    CHECK(t.lookup(a, 5000 + PeerTable::kMcesTtl) == PeerVerdict::unknown);
    // Bounded: many peers never grow it; a slot reused forgets its old peer.
    for (uint32_t i = 0; i < 10 * PeerTable::kSlots; ++i) t.record(sansio::Addr::v4(0x0b000000 + i, 443), PeerVerdict::native, 10);
    unsigned known = 0;
    for (uint32_t i = 0; i < 10 * PeerTable::kSlots; ++i)
        known += t.lookup(sansio::Addr::v4(0x0b000000 + i, 443), 10) == PeerVerdict::native;
    CHECK(known <= PeerTable::kSlots);
    CHECK(known > 0);
    t.clear();
    CHECK(t.lookup(sansio::Addr::v4(0x0b000000 + 10 * PeerTable::kSlots - 1, 443), 10) == PeerVerdict::unknown);
}

TEST_CASE("client over MCES: nobody on the UDP port is ECONNREFUSED at once (ICMP), silence is ETIMEDOUT") {
    Engine* e = Engine::create(Options{}, nullptr);
    REQUIRE(e != nullptr);
    {
        ClientFlow c;
        c.prepare(free_udp_port(), false, kMcesWait);
        auto t0 = Clock::now();
        start_mces_bridge(*e, c.b, c.f);
        CHECK(c.b.wait_connected() == ECONNREFUSED);
        CHECK(Clock::now() - t0 < std::chrono::milliseconds(500));
        CHECK(test::eventually([&] { return c.done.load(); }));
        char x;
        CHECK(recv(c.program, &x, 1, 0) == 0);   // the program's end is shut: EOF (the shim adds the errno)
    }
    {
        int silent = socket(AF_INET, SOCK_DGRAM, 0);   // bound: no ICMP, and no answer
        sockaddr_in a = loopback(0);
        bind(silent, reinterpret_cast<sockaddr*>(&a), sizeof a);
        socklen_t l = sizeof a;
        getsockname(silent, reinterpret_cast<sockaddr*>(&a), &l);
        ClientFlow c;
        c.prepare(ntohs(a.sin_port), false, 300'000'000);
        auto t0 = Clock::now();
        start_mces_bridge(*e, c.b, c.f);
        CHECK(c.b.wait_connected() == ETIMEDOUT);
        auto took = Clock::now() - t0;
        CHECK(took >= std::chrono::milliseconds(290));
        CHECK(took < std::chrono::milliseconds(1500));
        CHECK(test::eventually([&] { return c.done.load(); }));
        close(silent);
    }
    CHECK(test::eventually([] { return mces_sites() == 0; }, 5000));   // every connection drained and freed
    Engine::destroy(e);
}

TEST_CASE("auto: no MCES there falls back to kernel TCP, and the peer is remembered") {
    Engine* e = Engine::create(Options{}, nullptr);
    REQUIRE(e != nullptr);
    uint16_t port = 0;
    int lfd = tcp_listener(port);   // TCP there; the UDP port is closed: ICMP unreachable
    PeerTable::process().clear();
    ClientFlow c;
    c.prepare(port, true, kAutoWait);
    const uint64_t fallbacks = mces_totals().fallbacks.load();
    start_mces_bridge(*e, c.b, c.f);
    CHECK(c.b.wait_connected() == 0);
    CHECK(c.f.carried.load() == McesFlow::fell_back);
    CHECK(mces_totals().fallbacks.load() == fallbacks + 1);
    sockaddr_in peer = loopback(port);
    CHECK(mces_peer_says_native(reinterpret_cast<sockaddr*>(&peer), sizeof peer));
    int s = accept(lfd, nullptr, nullptr);
    REQUIRE(s >= 0);
    const auto data = pattern(200000, 7);
    REQUIRE(write_all(c.program, data.data(), data.size()));
    shutdown(c.program, SHUT_WR);
    CHECK(read_all(s) == data);   // over the TCP bridge
    close(s);
    CHECK(test::eventually([&] { return c.done.load(); }));
    stop_listener(lfd);
    CHECK(test::eventually([] { return mces_sites() == 0; }, 5000));   // every connection drained and freed
    Engine::destroy(e);
}

TEST_CASE("client to listener over MCES: bytes both ways, half-close, accept sees the MCES peer") {
    Engine* e = Engine::create(Options{}, nullptr);
    REQUIRE(e != nullptr);
    uint16_t port = 0;
    int lfd = mces_listener(*e, port);
    REQUIRE(test::eventually([] { return mces_listening(); }));

    ClientFlow c;
    c.prepare(port, false, kMcesWait);
    sockaddr_in udp_local{};
    socklen_t ul = sizeof udp_local;
    getsockname(c.f.udp_fd, reinterpret_cast<sockaddr*>(&udp_local), &ul);
    start_mces_bridge(*e, c.b, c.f);
    REQUIRE(c.b.wait_connected() == 0);
    CHECK(c.f.carried.load() == McesFlow::mces);

    sockaddr_storage from{};
    socklen_t fl = sizeof from;
    int s = accept(lfd, reinterpret_cast<sockaddr*>(&from), &fl);
    REQUIRE(s >= 0);
    sockaddr_storage mp{};
    socklen_t ml = 0;
    REQUIRE(mces_claim_accepted(reinterpret_cast<sockaddr*>(&from), fl, AF_INET, mp, ml));
    CHECK(ml == sizeof(sockaddr_in));
    CHECK(reinterpret_cast<sockaddr_in&>(mp).sin_port == udp_local.sin_port);   // the client's UDP address
    CHECK_FALSE(mces_claim_accepted(reinterpret_cast<sockaddr*>(&from), fl, AF_INET, mp, ml));   // once

    // 4 MB up while 3 MB come down, each read to the end in its own thread.
    const auto up = pattern(4 << 20, 1), down = pattern(3 << 20, 2);
    std::vector<uint8_t> got_up, got_down;
    std::thread server([&] {
        got_up = read_all(s);   // until the client's FIN
    });
    std::thread reader([&] { got_down = read_all(c.program); });
    REQUIRE(write_all(s, down.data(), down.size()));
    REQUIRE(write_all(c.program, up.data(), up.size()));
    shutdown(c.program, SHUT_WR);
    server.join();
    CHECK(got_up == up);
    shutdown(s, SHUT_WR);   // EOF reaches the program after every byte
    reader.join();
    CHECK(got_down == down);
    close(s);
    CHECK(test::eventually([&] { return c.done.load(); }));
    CHECK(mces_totals().stream_out.load() >= up.size() + down.size());
    stop_listener(lfd);
    CHECK(test::eventually([] { return mces_sites() == 0; }, 5000));   // every connection drained and freed
    Engine::destroy(e);
}

TEST_CASE("a RESET from the MCES side reaches the client program as ECONNRESET") {
    Engine* e = Engine::create(Options{}, nullptr);
    REQUIRE(e != nullptr);
    uint16_t port = 0;
    int lfd = mces_listener(*e, port);
    ClientFlow c;
    c.prepare(port, false, kMcesWait);
    start_mces_bridge(*e, c.b, c.f);
    REQUIRE(c.b.wait_connected() == 0);
    int s = accept(lfd, nullptr, nullptr);
    REQUIRE(s >= 0);
    linger l{1, 0};   // the server program resets its connection
    setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(s);
    int err = 0;
    read_all(c.program, &err);
    CHECK(test::eventually([&] { return c.b.error.load() == ECONNRESET; }));
    CHECK(test::eventually([&] { return c.done.load(); }));
    stop_listener(lfd);
    CHECK(test::eventually([] { return mces_sites() == 0; }, 5000));   // every connection drained and freed
    Engine::destroy(e);
}

TEST_CASE("an accepted flow gets its connection's counters until the engine lets go of it") {
    Engine* e = Engine::create(Options{}, nullptr);
    REQUIRE(e != nullptr);
    uint16_t port = 0;
    int lfd = mces_listener(*e, port);
    REQUIRE(test::eventually([] { return mces_listening(); }));
    ClientFlow c;
    c.prepare(port, false, kMcesWait);
    start_mces_bridge(*e, c.b, c.f);
    REQUIRE(c.b.wait_connected() == 0);
    sockaddr_storage from{};
    socklen_t fl = 0;
    int s = accept_claimed(lfd, from, fl);

    AcceptedFlow acc;
    sockaddr_in stranger = loopback(1);
    CHECK_FALSE(mces_attach_accepted(reinterpret_cast<sockaddr*>(&stranger), sizeof stranger, acc.f));
    REQUIRE(mces_attach_accepted(reinterpret_cast<sockaddr*>(&from), fl, acc.f));
    CHECK_FALSE(mces_attach_accepted(reinterpret_cast<sockaddr*>(&from), fl, acc.f));   // once

    const auto up = pattern(1 << 20, 3), down = pattern(1 << 20, 4);
    std::vector<uint8_t> got_up, got_down;
    std::thread server([&] { got_up = read_all(s); });
    std::thread reader([&] { got_down = read_all(c.program); });
    REQUIRE(write_all(s, down.data(), down.size()));
    REQUIRE(write_all(c.program, up.data(), up.size()));
    shutdown(c.program, SHUT_WR);
    server.join();
    CHECK(got_up == up);
    // While the connection runs: the server side's own figures (1 MiB came
    // in at <= 9000 bytes a packet, 1 MiB went out).
    CHECK(test::eventually([&] { return acc.f.live.packets_received.load() >= (1u << 20) / 9000; }));
    CHECK(acc.f.live.packets_sent.load() >= (1u << 20) / 9000);
    CHECK(acc.f.live.cwnd.load() > 0);
    CHECK(acc.released.load() == 0);   // the program's side is still open
    shutdown(s, SHUT_WR);
    reader.join();
    CHECK(got_down == down);
    close(s);
    CHECK(test::eventually([&] { return acc.released.load() == 1; }));
    CHECK(acc.f.live.srtt_us.load() > 0);
    // Loopback, both sides with the class's default chain: the CRC is off.
    CHECK(acc.f.live.checksum.load() == 0);
    CHECK(test::eventually([&] { return c.done.load(); }));
    CHECK(c.f.live.checksum.load() == 0);
    // Released: the engine never writes there again (the record may be another flow's now).
    acc.f.reset_live();
    usleep(100'000);
    CHECK(acc.f.live.packets_received.load() == 0);
    CHECK(acc.f.live.checksum.load() == 1);
    CHECK(acc.released.load() == 1);

    // A claimed connection that ends before the hook attaches: its entry
    // goes with it, so a late attach finds nothing (and nothing would
    // release it).
    ClientFlow c2;
    c2.prepare(port, false, kMcesWait);
    start_mces_bridge(*e, c2.b, c2.f);
    REQUIRE(c2.b.wait_connected() == 0);
    int s2 = accept_claimed(lfd, from, fl);
    shutdown(c2.program, SHUT_WR);
    CHECK(read_all(s2).empty());
    close(s2);   // both ways done: the engine's side closes
    CHECK(test::eventually([&] { return c2.done.load(); }));
    stop_listener(lfd);
    CHECK(test::eventually([] { return mces_sites() == 0; }, 5000));   // every link is gone
    AcceptedFlow late;
    CHECK_FALSE(mces_attach_accepted(reinterpret_cast<sockaddr*>(&from), fl, late.f));
    Engine::destroy(e);
}

TEST_CASE("a listener runs the policy's chain: one that lists checksum keeps the CRC a client offered to drop") {
    // The client's chain leaves out checksum: it offers short packets
    // without the CRC32C. On loopback a listener with the class's default
    // chain agrees; one whose chain lists checksum does not.
    static const std::vector<std::string> no_crc = {"framing", "handshake", "sequencing", "sack", "ordering",
                                                    "flowcontrol", "congestion", "pacing", "keepalive", "close"};
    static const std::vector<std::string> crc = {"framing", "checksum", "handshake", "sequencing", "sack", "ordering",
                                                 "flowcontrol", "congestion", "pacing", "keepalive", "close"};
    Engine* e = Engine::create(Options{}, nullptr);
    REQUIRE(e != nullptr);
    for (const bool listener_crc : {false, true}) {
        CAPTURE(listener_crc);
        McesParams lp;
        if (listener_crc) lp.elements = &crc;
        uint16_t port = 0;
        int lfd = mces_listener(*e, port, lp);
        ClientFlow c;
        c.prepare(port, false, kMcesWait);
        c.f.params.elements = &no_crc;
        start_mces_bridge(*e, c.b, c.f);
        REQUIRE(c.b.wait_connected() == 0);
        sockaddr_storage from{};
        socklen_t fl = 0;
        int s = accept_claimed(lfd, from, fl);
        AcceptedFlow acc;
        REQUIRE(mces_attach_accepted(reinterpret_cast<sockaddr*>(&from), fl, acc.f));
        const auto up = pattern(100000, 5);
        REQUIRE(write_all(c.program, up.data(), up.size()));
        shutdown(c.program, SHUT_WR);
        CHECK(read_all(s) == up);
        shutdown(s, SHUT_WR);
        CHECK(read_all(c.program).empty());
        close(s);
        CHECK(test::eventually([&] { return acc.released.load() == 1 && c.done.load(); }));
        CHECK(acc.f.live.checksum.load() == (listener_crc ? 1u : 0u));
        CHECK(c.f.live.checksum.load() == (listener_crc ? 1u : 0u));
        stop_listener(lfd);
        CHECK(test::eventually([] { return mces_sites() == 0; }, 5000));
    }
    Engine::destroy(e);
}

// [general] rate_up over MCES: client links are the engine's send queue's
// flows (send_queue.h), as TCP bridges are. A guaranteed flow with its rate
// and a reliable one, both writing all they can under a 2.5 MB/s aggregate:
// the guaranteed one gets its 1.5 (an even split would give it 1.25), the
// reliable one the rest, and the two together the aggregate (unshaped, the
// reliable one alone moves 1.3 GB/s here).
TEST_CASE("under the process's rate_up, MCES client flows share it by class: guaranteed its rate, reliable the rest") {
    Engine* e = Engine::create(Options{}, nullptr);
    REQUIRE(e != nullptr);
    uint16_t port = 0;
    int lfd = mces_listener(*e, port);
    REQUIRE(test::eventually([] { return mces_listening(); }));
    constexpr uint64_t kAggregate = 2'500'000, kRate = 1'500'000;   // bytes/s
    ClientFlow g, r;
    for (ClientFlow* c : {&g, &r}) {
        c->prepare(port, false, kMcesWait);
        c->b.aggregate_up = kAggregate;
    }
    g.b.service = policy::ServiceClass::guaranteed;
    g.b.rate_up = kRate;
    g.f.params.service_class = 2;
    g.f.params.rate = kRate;
    r.b.service = policy::ServiceClass::reliable;
    // Each flow's first byte says which it is, to the server.
    std::atomic<bool> stop{false};
    auto writer = [&](ClientFlow& c, uint8_t tag) {
        std::vector<uint8_t> chunk(64 * 1024, tag);
        while (!stop.load() && send(c.program, chunk.data(), chunk.size(), MSG_NOSIGNAL) > 0) {}
    };
    int s[2] = {-1, -1};
    std::atomic<uint64_t> got[2] = {0, 0};   // [0] guaranteed, [1] reliable
    auto reader = [&](int i) {
        uint8_t buf[65536];
        ssize_t n = recv(s[i], buf, sizeof buf, 0);
        if (n <= 0) return;
        std::atomic<uint64_t>& to = got[buf[0] == 'G' ? 0 : 1];
        for (; n > 0; n = recv(s[i], buf, sizeof buf, 0)) to.fetch_add(static_cast<uint64_t>(n));
    };
    for (int i = 0; i < 2; ++i) {
        ClientFlow& c = i == 0 ? g : r;
        start_mces_bridge(*e, c.b, c.f);
        REQUIRE(c.b.wait_connected() == 0);
        sockaddr_storage from{};
        socklen_t fl = 0;
        s[i] = accept_claimed(lfd, from, fl);
    }
    std::thread w1(writer, std::ref(g), uint8_t{'G'}), w2(writer, std::ref(r), uint8_t{'R'});
    std::thread r1(reader, 0), r2(reader, 1);
    usleep(500'000);   // past the start (each bucket's 10 ms of burst, the pairs filling)
    const uint64_t g0 = got[0].load(), r0 = got[1].load();
    auto t0 = std::chrono::steady_clock::now();
    usleep(2'000'000);
    const uint64_t g1 = got[0].load(), r1n = got[1].load();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    stop.store(true);
    shutdown(g.program, SHUT_WR);   // the writers stop; the rest drains at the aggregate rate
    shutdown(r.program, SHUT_WR);
    w1.join();
    w2.join();
    r1.join();
    r2.join();
    const double grate = static_cast<double>(g1 - g0) / secs, rrate = static_cast<double>(r1n - r0) / secs;
    MESSAGE("guaranteed " << grate / 1e6 << " MB/s (rate 1.5), reliable " << rrate / 1e6 << " MB/s, sum "
                          << (grate + rrate) / 1e6 << " MB/s (aggregate 2.5)");
    CHECK(grate >= 0.95 * kRate);
    CHECK(grate <= 1.05 * kRate);
    CHECK(rrate >= 0.85 * (kAggregate - kRate));
    CHECK(grate + rrate <= 1.05 * kAggregate);
    for (int fd : s) close(fd);
    CHECK(test::eventually([&] { return g.done.load() && r.done.load(); }));
    stop_listener(lfd);
    CHECK(test::eventually([] { return mces_sites() == 0; }, 5000));
    Engine::destroy(e);
}

// A rule's rate_down on a client's TCP flow over MCES: the link reads the
// connection only as its tokens allow, so the connection's window closes
// and the peer slows (loopback carries 1.3 GB/s unshaped).
TEST_CASE("rate_down on a client's MCES flow: the program receives at the rate, the sender is held back") {
    Engine* e = Engine::create(Options{}, nullptr);
    REQUIRE(e != nullptr);
    uint16_t port = 0;
    int lfd = mces_listener(*e, port);
    REQUIRE(test::eventually([] { return mces_listening(); }));
    constexpr uint64_t kRateDown = 1'000'000;   // bytes/s
    ClientFlow c;
    c.prepare(port, false, kMcesWait);
    c.b.rate_down = kRateDown;
    start_mces_bridge(*e, c.b, c.f);
    REQUIRE(c.b.wait_connected() == 0);
    sockaddr_storage from{};
    socklen_t fl = 0;
    int s = accept_claimed(lfd, from, fl);
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> written{0}, got{0};
    std::thread writer([&] {
        std::vector<uint8_t> chunk(64 * 1024, 'd');
        for (ssize_t n; !stop.load() && (n = send(s, chunk.data(), chunk.size(), MSG_NOSIGNAL)) > 0;)
            written.fetch_add(static_cast<uint64_t>(n));
    });
    std::thread reader([&] {
        uint8_t buf[65536];
        for (ssize_t n; (n = recv(c.program, buf, sizeof buf, 0)) > 0;) got.fetch_add(static_cast<uint64_t>(n));
    });
    usleep(500'000);   // past the start: the bucket's 10 ms of burst, the buffers filling
    const uint64_t g0 = got.load();
    const auto t0 = std::chrono::steady_clock::now();
    usleep(2'000'000);
    const uint64_t g1 = got.load();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double rate = static_cast<double>(g1 - g0) / secs;
    // Held back: what the server's program could write is what the
    // connection's buffers hold beyond what came through.
    const uint64_t ahead = written.load() - got.load();
    MESSAGE("received " << rate / 1e6 << " MB/s (rate_down 1 MB/s); the writer is " << ahead / 1024
                        << " KiB ahead of the reader after 2.5 s");
    CHECK(rate >= 0.95 * kRateDown);
    CHECK(rate <= 1.05 * kRateDown);
    CHECK(ahead < 16u << 20);   // not everything it could write in 2.5 s: backpressure reached it
    stop.store(true);
    shutdown(s, SHUT_RDWR);   // the writer stops; the client sees the reset or the end
    writer.join();
    close(s);
    shutdown(c.program, SHUT_RDWR);
    reader.join();
    CHECK(test::eventually([&] { return c.done.load(); }));
    stop_listener(lfd);
    CHECK(test::eventually([] { return mces_sites() == 0; }, 5000));
    Engine::destroy(e);
}
