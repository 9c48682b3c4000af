// The endpoint under load and attack in the simulator: 1,000 concurrent
// clients on one server, a spoofed-source flood that creates no state, and
// packets with a valid checksum but garbage frames that are dropped and
// counted without harming the connection.
#include <doctest/doctest.h>

#include <cerrno>
#include <vector>

#include "core/mces/wire/frame.h"
#include "core/mces/wire/handshake.h"
#include "core/mces/wire/packet.h"
#include "tests/mces/conn/harness.h"

using namespace gs::mces;
using namespace gs::mces::test;
using gs::sim::LinkParams;
using State = Connection::State;

namespace {

// A client that sends `size` bytes, half-closes, reads the echo to EOF, closes.
struct EchoClient {
    std::unique_ptr<Host> host;
    std::shared_ptr<Connection> conn;
    std::uint64_t written = 0, got = 0, bad = 0;
    bool eof = false, closed = false;
};

// A datagram with a valid short header and CRC around arbitrary frame bytes.
std::vector<std::uint8_t> short_packet(const wire::ConnectionId& dcid, std::uint64_t pn,
                                       std::span<const std::uint8_t> frames) {
    std::vector<std::uint8_t> buf(2048);
    wire::PacketWriter pw(buf);
    pw.begin_short(dcid, pn, 4);
    pw.body().bytes(frames);
    const int n = pw.finish();
    REQUIRE(n > 0);
    buf.resize(static_cast<std::size_t>(n));
    return buf;
}

}  // namespace

TEST_CASE("one server, 1,000 concurrent clients each echo 4 KB") {
    gs::sim::Simulator sim(21);
    LinkParams lp;
    lp.delay = 5 * kMillisecond;
    lp.jitter = 1 * kMillisecond;
    lp.loss = 0.01;
    REQUIRE(sim.set_default_link(lp) == 0);
    ConnConfig small;             // small buffers: 2,000 connections in one process
    small.send_buffer = 16 * 1024;
    small.recv_window = kInitialCredit;
    small.recv_window_max = 32 * 1024;
    const Addr sa = Addr::v4(0x0a000001, 4433);
    EndpointConfig scfg = endpoint_config(sa, 1);
    scfg.conn = small;
    scfg.accept_backlog = 1024;
    Host server(scfg);
    REQUIRE(server.ep.listen({}) == 0);
    struct Served {
        std::shared_ptr<Connection> c;
        std::uint64_t echoed = 0;
        bool closed = false;
    };
    std::vector<Served> served;
    // The server echoes: what it reads it writes back (its send buffer has room
    // for a whole client's bytes), closes after the client's EOF.
    server.app = [&](Time) {
        while (auto c = server.ep.accept()) served.push_back({std::move(c)});
        for (Served& s : served) {
            if (s.closed || s.c->state() == State::closed) continue;
            std::uint8_t buf[4096];
            for (;;) {
                const auto r = s.c->read(buf);
                if (r > 0) {
                    REQUIRE(s.c->write({buf, static_cast<std::size_t>(r)}) == r);
                    s.echoed += static_cast<std::uint64_t>(r);
                    continue;
                }
                if (r == 0) s.closed = s.c->close() == 0;
                break;
            }
        }
    };
    REQUIRE(sim.add_node(sa, server) == 0);

    const std::size_t n = 1000;
    std::uint64_t size = 4096;   // not const: gcc and clang disagree on capturing constants
    std::vector<EchoClient> clients(n);
    for (std::size_t i = 0; i < n; ++i) {
        const Addr ca = Addr::v4(0x0b000000 + static_cast<std::uint32_t>(i), 5000);
        EndpointConfig cc = endpoint_config(ca, 1000 + i);
        cc.conn = small;
        EchoClient& e = clients[i];
        e.host = std::make_unique<Host>(cc);
        e.host->app = [&e, size](Time) {
            if (e.conn->state() == State::closed || e.closed) return;
            write_pattern(*e.conn, e.written, size);
            if (e.written == size) e.conn->shutdown_write();
            if (!e.eof) e.eof = read_pattern(*e.conn, e.got, e.bad);
            if (e.eof) e.closed = e.conn->close() == 0;
        };
        REQUIRE(sim.add_node(ca, *e.host) == 0);
        // Connections start over the first second.
        sim.schedule(static_cast<Time>(i) * kMillisecond, [&e, &sim, sa] {
            REQUIRE(e.host->ep.connect(sa, kClassReliable, {}, sim.now(), e.conn) == 0);
            sim.kick(*e.host);
        });
    }
    std::size_t peak = 0;
    auto all_closed = [&] {
        peak = std::max(peak, server.ep.connection_count());
        for (const auto& e : clients)
            if (!e.conn || e.conn->state() != State::closed) return false;
        return true;
    };
    REQUIRE(sim.run_while([&] { return !all_closed(); }, 120 * kSecond, 10 * kMillisecond));
    std::size_t ok = 0;
    for (const auto& e : clients)
        if (e.got == size && e.bad == 0 && e.conn->error() == 0) ++ok;
    MESSAGE(ok << " of " << n << " clients got their 4 KB back; all closed at " << double(sim.now()) / 1e9
               << " s; server peak " << peak << " connections, " << sim.events_processed() << " events");
    CHECK(ok == n);
    CHECK(served.size() == n);
    CHECK(peak >= n / 2);   // they overlapped
    CHECK(server.ep.counters().refused_busy == 0);
    sim.run_until(sim.now() + 30 * kSecond);
    CHECK(server.ep.connection_count() == 0);   // forgotten after the drain period
    CHECK(sim.stats().timer_livelocks == 0);
}

TEST_CASE("a spoofed-source flood creates no connection state") {
    gs::sim::Simulator sim(22);
    LinkParams lp;
    lp.delay = kMillisecond;
    REQUIRE(sim.set_default_link(lp) == 0);
    const Addr sa = Addr::v4(0x0a000001, 4433);
    EndpointConfig scfg = endpoint_config(sa, 5);
    scfg.max_pending_replies = 64;
    Host server(scfg);
    REQUIRE(server.ep.listen({}) == 0);
    REQUIRE(sim.add_node(sa, server) == 0);

    // A well-formed INITIAL (1200 bytes, HELLO without a cookie).
    wire::ClientConfig hc;
    hc.cid = wire::ConnectionId::from(std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6, 7, 8});
    wire::ClientHandshake hs(hc);
    hs.start(0);
    std::vector<std::uint8_t> initial;
    REQUIRE(hs.poll_transmit(initial));
    REQUIRE(initial.size() >= 1200);

    // 50,000 INITIALs from 50,000 forged addresses (nobody there to get the
    // RETRY), and 50,000 short packets with made-up connection IDs.
    const std::uint32_t n = 50'000;
    for (std::uint32_t i = 0; i < n; ++i) {
        const Addr spoofed = Addr::v4(0xc0000000 + i, static_cast<std::uint16_t>(1024 + i % 60000));
        sim.send({spoofed, sa, initial});
        std::vector<std::uint8_t> junk(40);
        for (std::size_t j = 0; j < junk.size(); ++j) junk[j] = static_cast<std::uint8_t>(i * 31 + j * 7);
        junk[0] = 0x43;   // short header, fixed bit
        sim.send({spoofed, sa, junk});
        if (i % 1000 == 999) sim.run_until(sim.now() + kMillisecond);
    }
    sim.run_until(sim.now() + kSecond);
    const auto& sc = *server.ep.server_counters();
    MESSAGE("flood: " << sc.cookies_issued << " RETRYs, " << server.ep.counters().dropped_unknown_cid
                      << " unknown IDs dropped, " << server.ep.counters().dropped_replies
                      << " replies not queued; connections " << server.ep.connection_count());
    CHECK(server.ep.connection_count() == 0);
    CHECK(server.ep.accept() == nullptr);
    CHECK(sc.cookies_issued + server.ep.counters().dropped_replies == n);
    CHECK(sc.admitted == 0);
    CHECK(server.ep.counters().dropped_unknown_cid == n);
    CHECK(server.ep.counters().connections_created == 0);
    // RETRY is 43 bytes against 1200: no amplification.
    CHECK(server.ep.counters().bytes_out * 20 < server.ep.counters().bytes_in);
}

TEST_CASE("valid checksum, garbage frames: dropped and counted, the connection lives on") {
    LinkParams lp;
    lp.delay = 10 * kMillisecond;
    Pair p(23, lp);
    REQUIRE(p.connect(kClassReliable));
    const wire::ConnectionId scid = p.cconn->peer_cid();   // the server's ID
    const std::uint8_t unknown[] = {0x3f, 1, 2, 3};                       // undefined frame type
    const std::uint8_t truncated[] = {0x04, 0x00, 0x40, 0xff, 'a'};       // STREAM longer than the packet
    const std::uint8_t handshake_frame[] = {0x11, 0x01, 0x00};            // RETRY_TOKEN in a short packet
    const std::uint8_t too_much_credit[] = {0x04, 0x80, 0x10, 0x00, 0x00, 0x01, 'x'};   // 1 MiB offset: flow violation
    const std::uint8_t datagram_in_stream[] = {0x06, 0x01, 'x'};          // class 0 frame on class 1
    std::uint64_t pn = 1'000;   // far ahead: these still decode
    for (auto frames : {std::span<const std::uint8_t>(unknown), std::span<const std::uint8_t>(truncated),
                        std::span<const std::uint8_t>(handshake_frame),
                        std::span<const std::uint8_t>(too_much_credit),
                        std::span<const std::uint8_t>(datagram_in_stream)}) {
        p.sim.send({Pair::kClient, Pair::kServer, short_packet(scid, pn++, frames)});
    }
    // A well-formed PING from another address: not the peer.
    const std::uint8_t ping[] = {0x01};
    p.sim.send({Addr::v4(0x0a000063, 5000), Pair::kServer, short_packet(scid, pn++, ping)});
    // A corrupted copy of a real packet: bad checksum.
    auto corrupt = short_packet(scid, pn++, ping);
    corrupt[corrupt.size() / 2] ^= 0x10;
    p.sim.send({Pair::kClient, Pair::kServer, corrupt});
    p.sim.run_until(p.sim.now() + 100 * kMillisecond);

    const ConnDrops d = p.sconn->counters().drops;
    CHECK(d.parse[wire::ParseError::unknown_frame] == 1);
    CHECK(d.parse[wire::ParseError::truncated] == 1);
    CHECK(d.parse[wire::ParseError::frame_not_allowed] == 1);
    CHECK(d.parse[wire::ParseError::bad_checksum] == 1);
    CHECK(d.flow_violation == 1);
    CHECK(d.bad_frame == 1);
    CHECK(d.wrong_peer == 1);
    CHECK(p.sconn->state() == State::established);

    // And it still carries data.
    std::uint64_t written = 0, got = 0, bad = 0;
    bool eof = false;
    const std::uint64_t total = 200'000;
    p.client.app = [&](Time) {
        write_pattern(*p.cconn, written, total);
        if (written == total) p.cconn->shutdown_write();
    };
    p.server.app = [&](Time) {
        if (!eof) eof = read_pattern(*p.sconn, got, bad);
    };
    p.client.app(p.sim.now());
    p.sim.kick(p.client);
    REQUIRE(p.sim.run_while([&] { return !eof; }, p.sim.now() + 20 * kSecond));
    CHECK(got == total);
    CHECK(bad == 0);
}
