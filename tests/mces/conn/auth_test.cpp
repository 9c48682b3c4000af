// Authenticated MCES connections in the simulator (a pre-shared key on both
// endpoints, core/mces/auth): transfers in both modes with and without loss,
// class 0 and realtime exchanges; peers with another key, or none, get no
// connection and the server keeps nothing and says nothing; tampered and
// replayed packets are dropped, counted and never delivered.
#include <doctest/doctest.h>

#include <time.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/mces/auth/secret.h"
#include "tests/mces/conn/harness.h"

using namespace gs::mces;
using namespace gs::mces::test;
using gs::sim::LinkParams;
using gs::sim::Simulator;

namespace {

std::shared_ptr<const auth::Psk> key(std::uint8_t fill) {
    auto k = std::make_shared<auth::Psk>();
    std::array<std::uint8_t, auth::kPskLen> b;
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(fill + 13 * i);
    REQUIRE(k->set(b) == 0);
    return k;
}

LinkParams path(double loss) {
    LinkParams lp;
    lp.delay = 20 * kMillisecond;   // 40 ms RTT
    lp.jitter = 2 * kMillisecond;
    lp.loss = loss;
    lp.rate_bps = 50'000'000;
    lp.queue_limit = 256 * 1024;
    return lp;
}

double cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

// A client and a listening server, each with its own key (or none) and mode.
struct Keyed {
    Keyed(std::uint64_t seed, const LinkParams& lp, std::shared_ptr<const auth::Psk> server_key,
          std::shared_ptr<const auth::Psk> client_key, auth::Mode server_mode = auth::Mode::encrypt,
          auth::Mode client_mode = auth::Mode::encrypt)
        : sim(seed),
          server(config(Pair::kServer, seed * 2 + 1, std::move(server_key), server_mode)),
          client(config(Pair::kClient, seed * 2 + 2, std::move(client_key), client_mode)) {
        REQUIRE(sim.set_default_link(lp) == 0);
        REQUIRE(server.ep.listen({}) == 0);
        server.app = [this](Time) {
            if (!sconn) sconn = server.ep.accept();
        };
        REQUIRE(sim.add_node(Pair::kServer, server) == 0);
        REQUIRE(sim.add_node(Pair::kClient, client) == 0);
    }
    static EndpointConfig config(const Addr& a, std::uint64_t seed, std::shared_ptr<const auth::Psk> k,
                                 auth::Mode m) {
        EndpointConfig c = endpoint_config(a, seed);
        c.conn.handshake_timeout = 30 * kSecond;   // 5% loss each way can cost INITIALs
        c.psk = std::move(k);
        c.auth_mode = m;
        return c;
    }
    void start(std::uint8_t cls, const wire::Qos& qos = {}) {
        REQUIRE(client.ep.connect(Pair::kServer, cls, qos, sim.now(), cconn) == 0);
        sim.kick(client);
    }
    bool established(Time limit = 30 * kSecond) {
        return sim.run_while([&] { return !(cconn->state() == Connection::State::established && sconn); },
                             sim.now() + limit);
    }

    Simulator sim;
    Host server, client;
    std::shared_ptr<Connection> cconn, sconn;
};

struct Transfer {
    bool complete = false;
    std::uint64_t got = 0, bad = 0;
    int client_error = -1, server_error = -1;
    ConnCounters client, server;
    double cpu = 0;
};

// 1 MB client -> server, then both close; `setup` may tamper, replay, ...
Transfer transfer(Keyed& k, std::uint64_t total, Time horizon) {
    Transfer t;
    std::uint64_t written = 0;
    bool closed_w = false, eof = false;
    k.client.app = [&](Time) {
        if (k.cconn->state() != Connection::State::established) return;
        write_pattern(*k.cconn, written, total);
        if (written == total && !closed_w) {
            REQUIRE(k.cconn->close() == 0);
            closed_w = true;
        }
    };
    k.server.app = [&](Time) {
        if (!k.sconn) k.sconn = k.server.ep.accept();
        if (!k.sconn || eof) return;
        if (read_pattern(*k.sconn, t.got, t.bad)) {
            eof = true;
            REQUIRE(k.sconn->close() == 0);
        }
    };
    const double c0 = cpu_seconds();
    k.start(kClassReliable);
    auto done = [&] {
        return k.cconn->state() == Connection::State::closed && k.sconn &&
               k.sconn->state() == Connection::State::closed;
    };
    k.sim.run_while([&] { return !done(); }, k.sim.now() + horizon);
    t.cpu = cpu_seconds() - c0;
    t.complete = done();
    t.client_error = k.cconn->error();
    t.server_error = k.sconn ? k.sconn->error() : -1;
    t.client = k.cconn->counters();
    if (k.sconn) t.server = k.sconn->counters();
    return t;
}

std::uint64_t auth_drops(const ConnDrops& d) {
    return d.auth_failed + d.replay + d.too_old + d.auth_malformed + d.key_limit + d.no_key;
}

const std::uint64_t kTotal = 1024 * 1024 + 333;

}  // namespace

TEST_CASE("authenticated class 1: 1 MB exactly once and in order at 0 and 5% loss, both modes") {
    for (auth::Mode mode : {auth::Mode::encrypt, auth::Mode::authenticate}) {
        for (double loss : {0.0, 0.05}) {
            for (std::uint64_t seed : {1, 2}) {
                CAPTURE(std::string(auth::name(mode)));
                CAPTURE(loss);
                CAPTURE(seed);
                const auto psk = key(7);
                Keyed k(seed, path(loss), psk, psk, mode, mode);
                const Transfer t = transfer(k, kTotal, 120 * kSecond);
                MESSAGE(std::string(auth::name(mode)) << " loss " << loss * 100 << "%: " << t.client.packets_sent
                                         << " pkts sent, lost " << t.client.lost << ", cpu " << t.cpu * 1e3
                                         << " ms");
                CHECK(t.complete);
                CHECK(t.got == kTotal);
                CHECK(t.bad == 0);
                CHECK(t.client_error == 0);
                CHECK(t.server_error == 0);
                CHECK(k.cconn->authenticated());
                CHECK(k.sconn->authenticated());
                // An honest path: nothing fails to open.
                CHECK(auth_drops(t.server.drops) == 0);
                CHECK(auth_drops(t.client.drops) == 0);
                CHECK(t.client.no_checksum_sent == 0);
                // The same nonces on both sides (the keys came from them).
                CHECK(k.cconn->client_nonce() == k.sconn->client_nonce());
                CHECK(k.cconn->server_nonce() == k.sconn->server_nonce());
                CHECK(k.cconn->client_nonce() != k.cconn->server_nonce());
                // One round trip (retry = under_load): admitted without a
                // cookie, validated by the client's first sealed packet.
                CHECK(k.server.ep.server_counters()->cookies_issued == 0);
                CHECK(k.server.ep.counters().admitted_unvalidated == 1);
                CHECK(k.server.ep.counters().validated == 1);
                CHECK(k.sconn->address_validated());
            }
        }
    }
}

TEST_CASE("authentication costs: CPU time of a 1 MB transfer with and without a key") {
    // Not a bound (the machine is shared), a figure for docs/mces.md.
    double cpu[3] = {};
    for (int i = 0; i < 3; ++i) {
        const auto psk = i == 0 ? nullptr : key(7);
        const auto mode = i == 2 ? auth::Mode::authenticate : auth::Mode::encrypt;
        Keyed k(3, path(0.0), psk, psk, mode, mode);
        const Transfer t = transfer(k, 8 * kTotal, 120 * kSecond);
        CHECK(t.complete);
        CHECK(t.got == 8 * kTotal);
        cpu[i] = t.cpu;
    }
    MESSAGE("8 MB simulator transfer, CPU: keyless " << cpu[0] * 1e3 << " ms, encrypt " << cpu[1] * 1e3
                                                     << " ms, authenticate " << cpu[2] * 1e3 << " ms");
    // Sealing alone: 1200-byte packets (a 13-byte header), per mode.
    for (auth::Mode mode : {auth::Mode::encrypt, auth::Mode::authenticate}) {
        auth::HandshakeValues hv;
        hv.mode = mode;
        hv.client_cid.len = hv.server_cid.len = 8;
        auth::Protection prot;
        REQUIRE(auth::make_protection(*key(7), hv, auth::Role::client, prot) == 0);
        std::vector<std::uint8_t> pkt(1200, 0x5a);
        const int n = 100000;
        const double c0 = cpu_seconds();
        for (int i = 0; i < n; ++i) REQUIRE(prot.send.seal(pkt, 13, static_cast<std::uint64_t>(i)) == 0);
        const double dt = cpu_seconds() - c0;
        MESSAGE(std::string(auth::name(mode)) << ": sealed " << n / dt / 1e3 << "k packets/s of 1200 bytes ("
                                 << 1200.0 * 8 * n / dt / 1e9 << " Gbit/s) on one core");
    }
}

TEST_CASE("authenticated class 0: every message once, boundaries kept, both ways") {
    const auto psk = key(9);
    Keyed k(5, path(0.0), psk, psk);
    k.start(kClassDatagram);
    REQUIRE(k.established());
    CHECK(k.cconn->max_datagram_payload() + 12 ==
          Connection::max_message(k.cconn->chain(), 1200, false));   // the tag is 12 bytes more than the CRC
    std::vector<std::uint8_t> too_big(k.cconn->max_datagram_payload() + 1);
    CHECK(k.cconn->send_datagram(too_big) == -EMSGSIZE);
    const int n = 400;
    std::set<int> at_server, at_client;
    std::uint64_t bad = 0;
    auto take = [&](Connection& c, std::set<int>& seen) {
        std::uint8_t buf[2048];
        for (;;) {
            const auto r = c.recv_datagram(buf);
            if (r < 0) break;
            const int i = buf[0] | buf[1] << 8;
            if (!seen.insert(i).second || r != 2 + i % 900) ++bad;
            for (std::ptrdiff_t j = 2; j < r; ++j)
                if (buf[j] != static_cast<std::uint8_t>(i + j)) ++bad;
        }
    };
    k.server.app = [&](Time) { take(*k.sconn, at_server); };
    k.client.app = [&](Time) { take(*k.cconn, at_client); };
    int next = 0;
    std::function<void()> tick = [&] {
        for (int j = 0; j < 10 && next < n; ++j, ++next) {
            std::vector<std::uint8_t> m(static_cast<std::size_t>(2 + next % 900));
            m[0] = static_cast<std::uint8_t>(next);
            m[1] = static_cast<std::uint8_t>(next >> 8);
            for (std::size_t b = 2; b < m.size(); ++b) m[b] = static_cast<std::uint8_t>(next + int(b));
            REQUIRE(k.cconn->send_datagram(m) == static_cast<std::ptrdiff_t>(m.size()));
            REQUIRE(k.sconn->send_datagram(m) == static_cast<std::ptrdiff_t>(m.size()));
        }
        k.sim.kick(k.client);
        k.sim.kick(k.server);
        if (next < n) k.sim.schedule(k.sim.now() + 10 * kMillisecond, tick);
    };
    tick();
    k.sim.run_until(k.sim.now() + 2 * kSecond);
    CHECK(at_server.size() == static_cast<std::size_t>(n));
    CHECK(at_client.size() == static_cast<std::size_t>(n));
    CHECK(bad == 0);
    CHECK(auth_drops(k.sconn->counters().drops) == 0);
    CHECK(auth_drops(k.cconn->counters().drops) == 0);
}

TEST_CASE("authenticated realtime: every message on time, in order, once") {
    const auto psk = key(11);
    Keyed k(6, path(0.0), psk, psk);
    wire::Qos qos;
    qos.latency_us = 120'000;
    k.start(kClassRealtime, qos);
    REQUIRE(k.established());
    const int n = 300;
    int delivered = 0, bad = 0, last = -1;
    k.server.app = [&](Time) {
        std::uint8_t buf[2048];
        for (;;) {
            const auto r = k.sconn->recv_datagram(buf);
            if (r < 0) break;
            const int i = buf[0] | buf[1] << 8;
            if (r != 500 || i <= last) ++bad;
            last = i;
            ++delivered;
        }
    };
    for (int i = 0; i < n; ++i) {
        k.sim.schedule(k.sim.now() + 10 * kMillisecond + i * 2 * kMillisecond, [&, i] {
            k.client.ep.advance(k.sim.now());
            std::vector<std::uint8_t> m(500, static_cast<std::uint8_t>(i));
            m[0] = static_cast<std::uint8_t>(i);
            m[1] = static_cast<std::uint8_t>(i >> 8);
            REQUIRE(k.cconn->send_datagram(m) == 500);
            k.sim.kick(k.client);
        });
    }
    k.sim.run_until(k.sim.now() + 2 * kSecond);
    CHECK(delivered == n);
    CHECK(bad == 0);
    CHECK(k.sconn->counters().on_time == static_cast<std::uint64_t>(n));
    CHECK(auth_drops(k.sconn->counters().drops) == 0);
}

TEST_CASE("a client with another key gets no connection; the server answers nothing and keeps nothing") {
    Keyed k(7, path(0.0), key(1), key(2));
    k.start(kClassReliable);
    k.sim.run_until(k.sim.now() + 40 * kSecond);
    CHECK(k.cconn->state() == Connection::State::closed);
    CHECK(k.cconn->error() == ECONNREFUSED);
    CHECK(k.cconn->message().find("another key") != std::string::npos);
    MESSAGE("client: " << k.cconn->message());
    const wire::ServerCounters* sc = k.server.ep.server_counters();
    REQUIRE(sc != nullptr);
    CHECK(sc->bad_proof == k.cconn->handshake_counters()->initials_sent);
    CHECK(sc->bad_proof > 1);
    CHECK(sc->cookies_issued == 0);
    CHECK(sc->admitted == 0);   // under_load admits without a cookie, never without the proof
    CHECK(k.server.ep.counters().admitted_unvalidated == 0);
    CHECK(k.server.ep.counters().connections_created == 0);
    CHECK(k.server.ep.counters().datagrams_out == 0);
    CHECK(k.server.ep.connection_count() == 0);
    CHECK_FALSE(k.sconn);
}

TEST_CASE("keyless client to a keyed server, and keyed client to a keyless server: both fail cleanly") {
    SUBCASE("keyless client") {
        Keyed k(8, path(0.0), key(1), nullptr);
        k.start(kClassReliable);
        k.sim.run_until(k.sim.now() + 40 * kSecond);
        CHECK(k.cconn->error() == ECONNREFUSED);
        const wire::ServerCounters* sc = k.server.ep.server_counters();
        CHECK(sc->parse[wire::ParseError::missing_auth] == k.cconn->handshake_counters()->initials_sent);
        CHECK(sc->bad_proof == 0);
        CHECK(k.server.ep.counters().datagrams_out == 0);
        CHECK(k.server.ep.counters().connections_created == 0);
        // Nor do its short packets reach anything: no connection has its ID.
        CHECK_FALSE(k.sconn);
    }
    SUBCASE("keyed client") {
        Keyed k(9, path(0.0), nullptr, key(1));
        k.start(kClassReliable);
        k.sim.run_until(k.sim.now() + 40 * kSecond);
        CHECK(k.cconn->error() == ECONNREFUSED);
        CHECK(k.cconn->message().find("may have another key or auth mode, or none") != std::string::npos);
        MESSAGE("client: " << k.cconn->message());
        const wire::ServerCounters* sc = k.server.ep.server_counters();
        CHECK(sc->parse[wire::ParseError::unsupported_auth] == k.cconn->handshake_counters()->initials_sent);
        CHECK(k.server.ep.counters().datagrams_out == 0);
        CHECK(k.server.ep.counters().connections_created == 0);
    }
}

TEST_CASE("peers that disagree on the mode fail at the handshake: no answer, no state, a message that says why") {
    // The mode is in the handshake proof's key: the server cannot check the
    // INITIAL, so it answers nothing and creates nothing (it used to create
    // a connection that shared no packet keys and idled out 30 s later).
    const auto psk = key(3);
    for (const bool client_auth_only : {true, false}) {
        CAPTURE(client_auth_only);
        Keyed k(10, path(0.0), psk, psk, client_auth_only ? auth::Mode::authenticate : auth::Mode::encrypt,
                client_auth_only ? auth::Mode::encrypt : auth::Mode::authenticate);
        k.start(kClassReliable);
        k.sim.run_until(k.sim.now() + 40 * kSecond);   // past the harness's handshake timeout
        CHECK(k.cconn->state() == Connection::State::closed);
        CHECK(k.cconn->error() == ECONNREFUSED);
        CHECK(k.cconn->message().find("another key or auth mode") != std::string::npos);
        MESSAGE("client: " << k.cconn->message());
        CHECK(k.server.ep.counters().datagrams_out == 0);
        CHECK(k.server.ep.counters().connections_created == 0);
        CHECK(k.server.ep.accept() == nullptr);
    }
}

TEST_CASE("a key that is set but empty fails closed, and says so") {
    auto empty = std::make_shared<const auth::Psk>();   // never set: not valid()
    SUBCASE("client") {
        Keyed k(13, path(0.0), key(1), empty);
        k.start(kClassReliable);
        k.sim.run_until(k.sim.now() + kSecond);
        CHECK(k.cconn->state() == Connection::State::closed);
        CHECK(k.cconn->error() == ECONNREFUSED);
        CHECK(k.cconn->message().find("cannot sign the MCES INITIAL") != std::string::npos);
        CHECK(k.server.ep.counters().datagrams_in == 0);
    }
    SUBCASE("server") {
        Keyed k(14, path(0.0), empty, key(1));
        k.start(kClassReliable);
        k.sim.run_until(k.sim.now() + 40 * kSecond);
        CHECK(k.cconn->error() == ECONNREFUSED);
        CHECK(k.server.ep.server_counters()->bad_proof > 0);
        CHECK(k.server.ep.counters().datagrams_out == 0);
    }
}

TEST_CASE("a tampered packet is dropped and counted; the transfer still completes, exactly") {
    for (auth::Mode mode : {auth::Mode::encrypt, auth::Mode::authenticate}) {
        CAPTURE(std::string(auth::name(mode)));
        const auto psk = key(5);
        Keyed k(11, path(0.0), psk, psk, mode, mode);
        std::uint64_t shorts = 0, tampered = 0;
        // One bit of every 40th short packet toward the server, in turn in
        // the header, the payload and the tag.
        k.server.mutate = [&](std::vector<std::uint8_t>& b) {
            if (b.empty() || (b[0] & 0x80) != 0 || ++shorts % 40 != 0) return;
            const std::size_t at = tampered % 3 == 0 ? 0 : tampered % 3 == 1 ? b.size() / 2 : b.size() - 3;
            b[at] ^= at == 0 ? 0x01 : 0x10;   // the header: a packet number length bit
            ++tampered;
        };
        const Transfer t = transfer(k, kTotal, 60 * kSecond);
        CHECK(tampered > 10);
        CHECK(t.complete);
        CHECK(t.got == kTotal);
        CHECK(t.bad == 0);
        CHECK(t.server_error == 0);
        // Each altered packet failed to open (or, a header changed, to parse).
        CHECK(t.server.drops.auth_failed + t.server.drops.parse.total() == tampered);
        CHECK(t.server.drops.auth_failed >= tampered * 2 / 3);
        MESSAGE(std::string(auth::name(mode)) << ": tampered " << tampered << ", auth_failed " << t.server.drops.auth_failed
                                 << ", parse drops " << t.server.drops.parse.total());
    }
}

TEST_CASE("a replayed packet is dropped as a replay and counted; nothing is delivered twice") {
    const auto psk = key(6);
    Keyed k(12, path(0.0), psk, psk);
    // Copies of client -> server short packets, re-sent later from the
    // client's address.
    std::vector<std::vector<std::uint8_t>> captured;
    std::uint64_t seen = 0;
    k.sim.set_trace([&](const gs::sim::TraceEvent& e) {
        if (e.kind != gs::sim::TraceEvent::Kind::deliver || !(*e.to == Pair::kServer)) return;
        if (e.bytes.empty() || (e.bytes[0] & 0x80) != 0) return;
        if (++seen % 3 == 0) captured.emplace_back(e.bytes.begin(), e.bytes.end());
    });
    // Twice, while the transfer runs: what was captured so far (copies of
    // recent packets and of packets far below the window's top).
    std::uint64_t injected = 0;
    auto replay = [&] {
        for (auto& b : captured) {
            gs::sansio::Datagram d;
            d.from = Pair::kClient;
            d.to = Pair::kServer;
            d.bytes = b;
            k.sim.send(std::move(d));
            ++injected;
        }
    };
    k.sim.schedule(150 * kMillisecond, replay);
    k.sim.schedule(250 * kMillisecond, replay);
    const Transfer t = transfer(k, kTotal, 60 * kSecond);
    CHECK(t.complete);
    CHECK(t.got == kTotal);
    CHECK(t.bad == 0);
    CHECK(injected > 20);
    // Every copy was stopped before any frame was read: by the replay
    // window (within it: replay; below it: too_old), or, when its 1-2 byte
    // packet number now decodes to another full number (a copy more than
    // half its window behind the largest), by the tag (another nonce).
    const auto& d = t.server.drops;
    MESSAGE("injected " << injected << ": replay " << d.replay << ", too_old " << d.too_old
                        << ", auth_failed " << d.auth_failed);
    CHECK(d.replay > 0);
    CHECK(d.replay + d.too_old + d.auth_failed == injected);
    CHECK(d.duplicate == 0);   // sequencing never saw one
}
