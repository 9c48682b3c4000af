// The endpoint under load and attack in the simulator: 1,000 concurrent
// clients on one server, a spoofed-source flood that creates no state (retry
// = always) or at most max_unvalidated connections that expire (under_load),
// the 1-RTT handshake and anti-amplification, repeated INITIALs, and packets
// with a valid checksum but garbage frames that are dropped and counted
// without harming the connection.
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

namespace {
// A well-formed INITIAL from a client handshake nobody runs: what a spoofer
// sends from forged addresses.
std::vector<std::uint8_t> forged_initial() {
    wire::ClientConfig hc;
    hc.cid = wire::ConnectionId::from(std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6, 7, 8});
    wire::ClientHandshake hs(hc);
    hs.start(0);
    std::vector<std::uint8_t> initial;
    REQUIRE(hs.poll_transmit(initial));
    return initial;
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

TEST_CASE("a spoofed-source flood creates no connection state (retry = always)") {
    gs::sim::Simulator sim(22);
    LinkParams lp;
    lp.delay = kMillisecond;
    REQUIRE(sim.set_default_link(lp) == 0);
    const Addr sa = Addr::v4(0x0a000001, 4433);
    EndpointConfig scfg = endpoint_config(sa, 5);
    scfg.max_pending_replies = 64;
    Host server(scfg);
    REQUIRE(server.ep.listen(Pair::cookie_first()) == 0);
    REQUIRE(sim.add_node(sa, server) == 0);

    // A well-formed INITIAL (1200 bytes, HELLO without a cookie).
    const std::vector<std::uint8_t> initial = forged_initial();
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

// ---- short packets without the CRC32C -------------------------------------

namespace {

Addr v6_loopback(std::uint16_t port) {
    Addr a;
    a.ip[15] = 1;
    a.port = port;
    return a;
}

struct Negotiated {
    wire::Checksum client = wire::Checksum::crc32c, server = wire::Checksum::crc32c;
    std::uint64_t offered = 0, agreed = 0;   // the server's handshake counters
    std::uint64_t got = 0, bad = 0;          // 20 kB client -> server, checked
};

// Connects `ca` to `sa` (class 1), then sends 20 kB over the connection so
// that each side has parsed the other's short packets.
Negotiated negotiate(const Addr& ca, const Addr& sa, const ConnConfig& cconf, const ConnConfig& sconf,
                     std::vector<std::string> client_elements = {},
                     std::vector<std::string> server_elements = {}) {
    gs::sim::Simulator sim(31);
    LinkParams lp;
    lp.delay = 1 * kMillisecond;
    REQUIRE(sim.set_default_link(lp) == 0);
    EndpointConfig scfg = endpoint_config(sa, 61), ccfg = endpoint_config(ca, 62);
    scfg.conn = sconf;
    ccfg.conn = cconf;
    scfg.accept_elements = std::move(server_elements);
    Host server(scfg), client(ccfg);
    REQUIRE(server.ep.listen({}) == 0);
    std::shared_ptr<Connection> cc, sc;
    Negotiated n;
    std::uint64_t written = 0;
    const std::uint64_t total = 20'000;
    client.app = [&](Time) {
        if (cc && cc->state() == Connection::State::established) write_pattern(*cc, written, total);
    };
    server.app = [&](Time) {
        if (!sc) sc = server.ep.accept();
        if (sc) read_pattern(*sc, n.got, n.bad);
    };
    REQUIRE(sim.add_node(sa, server) == 0);
    REQUIRE(sim.add_node(ca, client) == 0);
    REQUIRE(client.ep.connect(sa, kClassReliable, {}, sim.now(), cc, client_elements) == 0);
    sim.kick(client);
    sim.run_while([&] { return n.got < total; }, 5 * kSecond);
    REQUIRE(sc);
    n.client = cc->checksum();
    n.server = sc->checksum();
    n.offered = server.ep.server_counters()->no_checksum_offered;
    n.agreed = server.ep.server_counters()->no_checksum_agreed;
    CHECK(cc->counters().drops.total() == 0);
    CHECK(sc->counters().drops.total() == 0);
    return n;
}

const std::vector<std::string> kNoChecksum = {"framing",     "handshake",  "sequencing", "sack",
                                              "ordering",    "flowcontrol", "congestion", "pacing",
                                              "keepalive",   "close"};
const std::vector<std::string> kWithChecksum = {"framing",  "checksum",    "handshake",  "sequencing",
                                                "sack",     "ordering",    "flowcontrol", "congestion",
                                                "pacing",   "keepalive",   "close"};

}  // namespace

TEST_CASE("Addr::is_loopback and skip_checksum: the one rule") {
    CHECK(Addr::v4(0x7f000001, 1).is_loopback());
    CHECK(Addr::v4(0x7fff0102, 1).is_loopback());      // all of 127.0.0.0/8
    CHECK_FALSE(Addr::v4(0x80000001, 1).is_loopback());
    CHECK_FALSE(Addr::v4(0x0a000001, 1).is_loopback());
    CHECK_FALSE(Addr::v4(0, 1).is_loopback());         // the wildcard is not loopback
    CHECK(v6_loopback(1).is_loopback());
    Addr two = v6_loopback(1);
    two.ip[15] = 2;
    CHECK_FALSE(two.is_loopback());
    CHECK_FALSE(Addr{}.is_loopback());                 // ::

    const Chain def = *default_chain(kClassReliable).chain;
    const Chain bare = *make_chain(kNoChecksum, kClassReliable).chain;
    const Addr lo2 = Addr::v4(0x7f000002, 2), net = Addr::v4(0x0a000001, 3);
    ConnConfig on, off;
    off.loopback_no_checksum = false;
    CHECK(skip_checksum(def, false, on, lo2));
    CHECK(skip_checksum(def, false, on, v6_loopback(2)));
    CHECK_FALSE(skip_checksum(def, false, off, lo2));   // the owner turned it off
    CHECK_FALSE(skip_checksum(def, true, on, lo2));     // an explicit chain with checksum keeps it
    CHECK_FALSE(skip_checksum(def, false, on, net));    // a peer off loopback keeps it
    CHECK(skip_checksum(bare, true, off, net));         // no checksum in the chain: anywhere
}

TEST_CASE("no checksum only when both sides want it; otherwise CRCs, and data flows either way") {
    const Addr cnet = Addr::v4(0x0a000001, 5000), snet = Addr::v4(0x0a000002, 4433);
    const Addr clo = Addr::v4(0x7f000001, 5000), slo = Addr::v4(0x7f000002, 4433);
    ConnConfig on, off;
    off.loopback_no_checksum = false;
    using C = wire::Checksum;
    struct Case {
        const char* what;
        Addr ca, sa;
        ConnConfig cconf, sconf;
        std::vector<std::string> celems, selems;
        C want;
        std::uint64_t offered, agreed;
    };
    const Case cases[] = {
        {"defaults, not loopback", cnet, snet, on, on, {}, {}, C::crc32c, 0, 0},
        {"client without checksum, server default", cnet, snet, on, on, kNoChecksum, {}, C::crc32c, 1, 0},
        {"server without checksum, client default", cnet, snet, on, on, {}, kNoChecksum, C::crc32c, 0, 0},
        {"both without checksum", cnet, snet, on, on, kNoChecksum, kNoChecksum, C::none, 1, 1},
        {"loopback, defaults", clo, slo, on, on, {}, {}, C::none, 1, 1},
        {"loopback ::1, defaults", v6_loopback(5000), v6_loopback(4433), on, on, {}, {}, C::none, 1, 1},
        {"loopback, client turned it off", clo, slo, off, on, {}, {}, C::crc32c, 0, 0},
        {"loopback, server turned it off", clo, slo, on, off, {}, {}, C::crc32c, 1, 0},
        {"loopback, client lists checksum", clo, slo, on, on, kWithChecksum, {}, C::crc32c, 0, 0},
        {"loopback, server lists checksum", clo, slo, on, on, {}, kWithChecksum, C::crc32c, 1, 0},
        {"loopback client, server elsewhere", clo, snet, on, on, {}, {}, C::crc32c, 0, 0},
    };
    for (const Case& c : cases) {
        CAPTURE(c.what);
        const Negotiated n = negotiate(c.ca, c.sa, c.cconf, c.sconf, c.celems, c.selems);
        CHECK(n.client == c.want);
        CHECK(n.server == c.want);   // never one side without the other
        CHECK(n.offered == c.offered);
        CHECK(n.agreed == c.agreed);
        CHECK(n.got == 20'000);
        CHECK(n.bad == 0);
    }
}

TEST_CASE("a short packet in the other form is dropped and counted; garbage on a no-checksum connection does not crash") {
    const std::uint8_t ping[] = {0x01};
    auto bare_packet = [](const wire::ConnectionId& dcid, std::uint64_t pn, std::span<const std::uint8_t> frames) {
        std::vector<std::uint8_t> buf(2048);
        wire::PacketWriter pw(buf);
        pw.begin_short(dcid, pn, 4, wire::Checksum::none);
        pw.body().bytes(frames);
        const int n = pw.finish();
        REQUIRE(n > 0);
        buf.resize(static_cast<std::size_t>(n));
        return buf;
    };

    SUBCASE("no CRC to a CRC connection: bad_checksum") {
        Pair p(41);
        REQUIRE(p.connect(kClassReliable));
        REQUIRE(p.sconn->checksum() == wire::Checksum::crc32c);
        const wire::ConnectionId scid = p.cconn->peer_cid();
        for (std::uint64_t pn = 1000; pn < 1010; ++pn)
            p.sim.send({Pair::kClient, Pair::kServer, bare_packet(scid, pn, ping)});
        p.sim.run_until(p.sim.now() + 100 * kMillisecond);
        CHECK(p.sconn->counters().drops.parse[wire::ParseError::bad_checksum] == 10);
        CHECK(p.sconn->counters().no_checksum_received == 0);
        CHECK(p.sconn->state() == State::established);
    }

    SUBCASE("CRC packets and garbage to a no-CRC connection: no crash, the connection lives on") {
        // Loopback addresses: the default chains agree to no checksum.
        gs::sim::Simulator sim(43);
        LinkParams lp;
        lp.delay = 1 * kMillisecond;
        REQUIRE(sim.set_default_link(lp) == 0);
        const Addr ca = Addr::v4(0x7f000001, 5000), sa = Addr::v4(0x7f000001, 4433);
        Host server(endpoint_config(sa, 71)), client(endpoint_config(ca, 72));
        REQUIRE(server.ep.listen({}) == 0);
        std::shared_ptr<Connection> cc, sc;
        server.app = [&](Time) {
            if (!sc) sc = server.ep.accept();
        };
        REQUIRE(sim.add_node(sa, server) == 0);
        REQUIRE(sim.add_node(ca, client) == 0);
        REQUIRE(client.ep.connect(sa, kClassReliable, {}, sim.now(), cc) == 0);
        sim.kick(client);
        REQUIRE(sim.run_while([&] { return !(sc && cc->state() == State::established); }, 5 * kSecond));
        REQUIRE(sc->checksum() == wire::Checksum::none);
        REQUIRE(cc->checksum() == wire::Checksum::none);
        const wire::ConnectionId scid = cc->peer_cid();
        sim.run_until(sim.now() + kSecond);   // quiet: the client sends nothing more for a while

        const ConnCounters before = sc->counters();
        const EndpointCounters eb = server.ep.counters();
        std::uint64_t pn = 1000, sent = 0;
        // The CRC form: its trailer is read as frames (whatever those bytes are).
        for (int i = 0; i < 50; ++i, ++sent) sim.send({ca, sa, short_packet(scid, pn++, ping)});
        // Every length from the bare flags byte up, the right ID, random bytes after it.
        std::uint64_t z = 0x12345;
        for (std::size_t len = 1; len < 64; ++len) {
            std::vector<std::uint8_t> b(len);
            for (auto& x : b) x = static_cast<std::uint8_t>((z = z * 6364136223846793005ull + 1) >> 56);
            b[0] = 0x40 | (b[0] & 0x03);   // short header, fixed bit, any pn length
            for (std::size_t i = 0; i < scid.len && 1 + i < len; ++i) b[1 + i] = scid.bytes[i];
            sim.send({ca, sa, b});
            ++sent;
        }
        // A stray packet: no connection has this ID.
        std::vector<std::uint8_t> stray = bare_packet(wire::ConnectionId::from(std::array<std::uint8_t, 8>{9, 9, 9, 9, 9, 9, 9, 9}), 1, ping);
        sim.send({ca, sa, stray});
        sim.run_until(sim.now() + 100 * kMillisecond);
        const ConnCounters s = sc->counters();
        const EndpointCounters& e = server.ep.counters();
        CHECK(e.dropped_unknown_cid - eb.dropped_unknown_cid == 1);
        const std::uint64_t runts = e.dropped_runt - eb.dropped_runt;
        CHECK(runts == 8);   // lengths 1-8: shorter than flags + ID
        // Every datagram that reached the connection was either taken or
        // dropped and counted; none is checked against a CRC.
        const std::uint64_t taken = s.packets_received - before.packets_received;
        const std::uint64_t dropped = s.drops.total() - before.drops.total();
        MESSAGE("no-CRC connection fed ", sent - runts, " CRC-form and random packets: ", taken, " taken, ",
                dropped, " dropped");
        CHECK(taken + dropped == sent - runts);
        CHECK(dropped > 0);
        CHECK(s.drops.parse[wire::ParseError::bad_checksum] == 0);
        // Forged packets that parse are taken, as with a CRC anyone can
        // compute: the connection must not fail because of them.
        CHECK(sc->state() == State::established);
        CHECK(cc->state() == State::established);
    }
}

TEST_CASE("claims: what is MCES for an endpoint that shares its socket with plain UDP; its own INITIAL echoed back") {
    EndpointConfig ca, cb;
    ca.local = Addr::v4(0x7f000001, 4000);
    cb.local = Addr::v4(0x7f000001, 5000);
    ca.seed = 3;
    cb.seed = 4;
    Endpoint a(ca), b(cb);
    REQUIRE(a.listen(wire::ServerConfig{}) == 0);   // a UDP socket answers whoever sends to it
    REQUIRE(b.listen(wire::ServerConfig{}) == 0);
    std::shared_ptr<Connection> c;
    REQUIRE(a.connect(cb.local, kClassDatagram, wire::Qos{}, 0, c) == 0);
    gs::sansio::Datagram initial;
    REQUIRE(a.poll_transmit(initial));
    initial.flatten();

    // A long header with an MCES version (or 0) is MCES; a short one only
    // when it names a connection of this endpoint.
    CHECK(b.claims(initial.bytes));
    CHECK(a.claims(short_packet(c->local_cid(), 1, std::vector<std::uint8_t>{0x01})));
    CHECK_FALSE(b.claims(short_packet(c->local_cid(), 1, std::vector<std::uint8_t>{0x01})));
    const std::vector<std::vector<std::uint8_t>> plain = {
        {},                                            // empty
        {'h', 'e', 'l', 'l', 'o'},                     // 0x68: the fixed bit, too short for an ID
        {0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9},            // no fixed bit
        {0xC0, 0x12, 0x34, 0x56, 0x78, 8, 0, 0, 0},   // long, a version that is not MCES
        {0xC0, 0x4D, 0x43},                            // long, cut short
    };
    for (const auto& p : plain) {
        CHECK_FALSE(a.claims(p));
        CHECK_FALSE(b.claims(p));
    }
    const auto before = a.counters();

    // Something that echoes datagrams sends a's INITIAL back to a: dropped,
    // counted, no connection to itself, nothing sent.
    a.on_datagram(cb.local, ca.local, initial.bytes, 1);
    CHECK(a.counters().dropped_reflected == before.dropped_reflected + 1);
    CHECK(a.accept() == nullptr);
    gs::sansio::Datagram out;
    while (a.poll_transmit(out)) CHECK(out.bytes.size() >= 1200);   // only a's own INITIAL resent, if due
    CHECK(a.connection_count() == 1);

    // The same INITIAL at b: answered (an ACCEPT: under_load admits it at once).
    b.on_datagram(ca.local, cb.local, initial.bytes, 1);
    CHECK(b.counters().dropped_reflected == 0);
    REQUIRE(b.poll_transmit(out));
    CHECK(a.claims(out.bytes));
}

namespace {

// Connect and run until the client is established; returns how long it took.
Time time_to_establish(Pair& p, std::uint8_t cls) {
    const Time t0 = p.sim.now();
    REQUIRE(p.client.ep.connect(Pair::kServer, cls, {}, t0, p.cconn) == 0);
    p.sim.kick(p.client);
    REQUIRE(p.sim.run_while([&] { return p.cconn->state() != State::established; }, t0 + 10 * kSecond));
    return p.sim.now() - t0;
}

}  // namespace

TEST_CASE("handshake: one round trip with under_load (the default), two with retry = always") {
    LinkParams lp;
    lp.delay = 20 * kMillisecond;   // RTT 40 ms
    for (std::uint8_t cls : {kClassDatagram, kClassReliable, kClassRealtime}) {
        CAPTURE(int(cls));
        Pair fast(61, lp);
        const Time one = time_to_establish(fast, cls);
        Pair slow(61, lp, {}, {}, Pair::cookie_first());
        const Time two = time_to_establish(slow, cls);
        MESSAGE("class " << int(cls) << ": connect to established " << double(one) / 1e6 << " ms under_load, "
                         << double(two) / 1e6 << " ms retry = always (RTT 40 ms)");
        CHECK(one >= 40 * kMillisecond);
        CHECK(one < 45 * kMillisecond);      // ~1 RTT
        CHECK(two >= 80 * kMillisecond);
        CHECK(two < 85 * kMillisecond);      // ~2 RTT, as before
        const auto& fc = *fast.server.ep.server_counters();
        CHECK(fc.cookies_issued == 0);
        CHECK(fc.admitted_unvalidated == 1);
        CHECK(slow.server.ep.server_counters()->cookies_issued >= 1);   // realtime resends its INITIAL at 30 ms
        CHECK(slow.server.ep.counters().admitted_unvalidated == 0);
        // The client's first short packet (a PING even with nothing to say)
        // proves its address half a round trip later.
        fast.sim.run_until(fast.sim.now() + 25 * kMillisecond);
        REQUIRE(fast.sconn);
        CHECK(fast.sconn->address_validated());
        CHECK(fast.server.ep.counters().validated == 1);
        CHECK(fast.server.ep.unvalidated_count() == 0);
        CHECK(fast.cconn->counters().pings_sent >= 1);
    }
}

TEST_CASE("a server that speaks first (a banner): the program gets the connection at the client's first packet") {
    LinkParams lp;
    lp.delay = 20 * kMillisecond;
    Pair p(62, lp);
    std::string got;
    const std::string banner = "220 hello\r\n";
    Time banner_at = kNever;
    p.server.app = [&](Time) {
        if (!p.sconn && (p.sconn = p.server.ep.accept()))
            REQUIRE(p.sconn->write({reinterpret_cast<const std::uint8_t*>(banner.data()), banner.size()}) ==
                    static_cast<std::ptrdiff_t>(banner.size()));
    };
    p.client.app = [&](Time t) {
        if (!p.cconn) return;
        std::uint8_t b[64];
        for (std::ptrdiff_t r; (r = p.cconn->read(b)) > 0;) got.append(reinterpret_cast<char*>(b), std::size_t(r));
        if (got == banner && banner_at == kNever) banner_at = t;
    };
    const Time t0 = p.sim.now();
    REQUIRE(p.client.ep.connect(Pair::kServer, kClassReliable, {}, t0, p.cconn) == 0);
    p.sim.kick(p.client);
    p.sim.run_until(t0 + 200 * kMillisecond);
    CHECK(got == banner);
    MESSAGE("banner at the client " << double(banner_at - t0) / 1e6 << " ms after connect (RTT 40 ms)");
    // accept() hands the connection over once the client's first packet
    // proved its address (its PING, sent at once on the ACCEPT, arrives at
    // 1.5 RTT): the banner reaches the client at 2 RTT (cookie path: 1.5;
    // a client that speaks first gets its answer at 2 RTT instead of 3). A
    // spoofed INITIAL never reaches the program.
    CHECK(banner_at - t0 >= 79 * kMillisecond);
    CHECK(banner_at - t0 <= 81 * kMillisecond);
    CHECK(p.server.ep.counters().validated == 1);
    CHECK(p.sconn->address_validated());
}

TEST_CASE("anti-amplification: an unvalidated server connection sends at most 3x what it received") {
    LinkParams lp;
    lp.delay = 20 * kMillisecond;
    Pair p(63, lp);
    // The client's packets after its first INITIAL are dropped for 300 ms:
    // until then the server has that INITIAL (1200 bytes) and nothing that
    // proves the address. The client resends its INITIAL meanwhile: each
    // repeat earns an ACCEPT again, within 3x.
    bool hold = true;
    std::uint64_t to_client = 0, from_client = 0;
    std::uint64_t written = 0;
    const std::uint64_t total = 1 << 20;
    p.server.app = [&](Time) {
        if (!p.sconn) p.sconn = p.server.ep.accept();
        if (p.sconn) write_pattern(*p.sconn, written, total);   // 1 MB as soon as it has the connection
    };
    const Time t0 = p.sim.now();
    bool first = true;
    p.sim.set_link_filter([&](const Addr& from, const Addr&, Time) {
        if (from != Pair::kClient || !hold) return true;
        const bool pass = first;
        first = false;
        return pass;   // the first INITIAL only
    });
    p.sim.set_trace([&](const gs::sim::TraceEvent& e) {
        if (e.kind == gs::sim::TraceEvent::Kind::send && *e.from == Pair::kServer) to_client += e.bytes.size();
        if (e.kind == gs::sim::TraceEvent::Kind::deliver && *e.from == Pair::kClient) from_client += e.bytes.size();
    });
    REQUIRE(p.client.ep.connect(Pair::kServer, kClassReliable, {}, t0, p.cconn) == 0);
    p.sim.kick(p.client);
    p.sim.run_until(t0 + 300 * kMillisecond);
    // Established on the client; on the server a connection the program has
    // not been given (a spoofed INITIAL never reaches it).
    CHECK(p.cconn->state() == Connection::State::established);
    CHECK_FALSE(p.sconn);
    CHECK(p.server.ep.counters().admitted_unvalidated == 1);
    MESSAGE("unvalidated: " << to_client << " bytes sent for " << from_client << " received (limit 3x)");
    CHECK(from_client > 0);
    CHECK(to_client <= 3 * from_client);
    hold = false;
    std::uint64_t got = 0, bad = 0;
    p.client.app = [&](Time) { read_pattern(*p.cconn, got, bad); };
    p.sim.kick(p.client);
    REQUIRE(p.sim.run_while([&] { return got < total; }, p.sim.now() + 10 * kSecond));
    CHECK(bad == 0);
    REQUIRE(p.sconn);
    CHECK(p.sconn->address_validated());
    CHECK(p.server.ep.counters().validated == 1);
    CHECK(p.server.ep.counters().unvalidated_expired == 0);
}

TEST_CASE("under load: spoofed INITIALs from many addresses switch the server to RETRY; a real client still connects") {
    gs::sim::Simulator sim(64);
    LinkParams lp;
    lp.delay = 10 * kMillisecond;
    REQUIRE(sim.set_default_link(lp) == 0);
    const Addr sa = Addr::v4(0x0a000001, 4433);
    Host server(endpoint_config(sa, 9));
    REQUIRE(server.ep.listen({}) == 0);   // under_load, max_unvalidated 64
    std::vector<std::shared_ptr<Connection>> accepted;
    std::size_t peak = 0;
    server.app = [&](Time) {
        while (auto c = server.ep.accept()) accepted.push_back(std::move(c));
        peak = std::max(peak, server.ep.unvalidated_count());
    };
    REQUIRE(sim.add_node(sa, server) == 0);
    const Addr ca = Addr::v4(0x0b000001, 5000);
    Host client(endpoint_config(ca, 10));
    REQUIRE(sim.add_node(ca, client) == 0);

    // A well-formed INITIAL, sent from 2,000 forged addresses over 2 s;
    // nobody there answers the ACCEPT or the RETRY.
    const std::vector<std::uint8_t> initial = forged_initial();
    const std::uint32_t n = 2000;
    for (std::uint32_t i = 0; i < n; ++i)
        sim.schedule(static_cast<Time>(i) * kMillisecond, [&sim, &initial, sa, i] {
            sim.send({Addr::v4(0xc0000000 + i, static_cast<std::uint16_t>(1024 + i)), sa, initial});
        });
    // The real client connects in the middle of the flood.
    std::shared_ptr<Connection> real;
    Time t_connect = 0;
    sim.schedule(kSecond, [&] {
        t_connect = sim.now();
        REQUIRE(client.ep.connect(sa, kClassReliable, {}, sim.now(), real) == 0);
        sim.kick(client);
    });
    REQUIRE(sim.run_while([&] { return !real || real->state() != State::established; }, 3 * kSecond));
    const Time took = sim.now() - t_connect;
    sim.run_until(3 * kSecond);
    const auto& sc = *server.ep.server_counters();
    const auto& ec = server.ep.counters();
    MESSAGE("flood of " << n << ": " << ec.admitted_unvalidated << " admitted unvalidated (peak " << peak
                        << " at once), " << sc.retries_under_load << " RETRYs under load, " << ec.unvalidated_expired
                        << " expired so far; the real client connected in " << double(took) / 1e6 << " ms");
    CHECK(peak <= 64);
    CHECK(peak == 64);                       // the limit was reached ...
    CHECK(sc.retries_under_load > 0);        // ... and then the server asked for cookies
    CHECK(real->state() == State::established);
    CHECK(real->handshake_counters()->retries == 1);   // the cookie path: 2 RTT
    CHECK(took <= 45 * kMillisecond);
    CHECK(sim.stats().timer_livelocks == 0);
    // Every spoofed connection expires after the handshake timeout (5 s)
    // and is forgotten at once; the real one stays.
    sim.run_until(10 * kSecond);
    CHECK(server.ep.unvalidated_count() == 0);
    CHECK(server.ep.connection_count() == 1);
    CHECK(ec.unvalidated_expired == ec.admitted_unvalidated);
    CHECK(ec.validated == 0);                // the real client came in with a cookie
    CHECK(sc.admitted_unvalidated == ec.admitted_unvalidated);
    CHECK(ec.admitted_unvalidated + sc.retries_under_load == n + 1);   // + the real client's first INITIAL
    for (const auto& c : accepted)
        if (c != accepted.back() || !(c->peer() == ca)) {
            if (c->peer() == ca) continue;
            CHECK(c->state() == State::closed);
            CHECK(c->error() == ETIMEDOUT);
        }
    // What went to the forged addresses: at most 3x what came from them.
    CHECK(ec.bytes_out <= 3 * ec.bytes_in);
}

TEST_CASE("a repeated INITIAL yields one connection, with or without a cookie") {
    // The client resends its INITIAL after 30 ms at 15-20 ms each way (the
    // shim's UDP case): the copy reaches the server after the first was
    // answered. retry = always: each copy gets a RETRY, and when the two
    // RETRYs carry different cookies (the cookie's clock ticked between
    // them: here a second boundary falls in between) the client's second
    // cookie used to derive another server ID, so another connection.
    for (const bool cookie : {false, true}) {
        for (const Time start : {Time{0}, kSecond - 25 * kMillisecond}) {
            CAPTURE(cookie);
            CAPTURE(start);
            LinkParams lp;
            lp.delay = 17 * kMillisecond;
            lp.jitter = 2 * kMillisecond;
            ConnConfig cc;
            cc.handshake_rto = 30 * kMillisecond;
            Pair p(65, lp, cc, {}, cookie ? Pair::cookie_first() : wire::ServerConfig{});
            p.sim.run_until(start);
            std::size_t accepted = 0;
            p.server.app = [&](Time) {
                while (auto c = p.server.ep.accept()) {
                    ++accepted;
                    if (!p.sconn) p.sconn = c;
                }
            };
            REQUIRE(p.client.ep.connect(Pair::kServer, kClassDatagram, {}, p.sim.now(), p.cconn) == 0);
            p.sim.kick(p.client);
            p.sim.run_until(p.sim.now() + kSecond);
            REQUIRE(p.cconn->state() == State::established);
            const auto* hc = p.cconn->handshake_counters();
            MESSAGE(std::string(cookie ? "retry = always" : "under_load") << ", start " << double(start) / 1e6 << " ms: "
                                                              << hc->initials_sent << " INITIALs, " << hc->retries
                                                              << " RETRYs followed, " << accepted << " accepted");
            CHECK(hc->initials_sent >= 2);   // the repeat happened
            CHECK(accepted == 1);
            CHECK(p.server.ep.counters().connections_created == 1);
            CHECK(p.server.ep.connection_count() == 1);
            CHECK(p.sconn->local_cid() == p.cconn->peer_cid());
            CHECK(p.server.ep.counters().accept_resent >= 1);
        }
    }
}

TEST_CASE("class 0: a client whose first PING is lost PINGs again until the server is heard from") {
    LinkParams lp;
    lp.delay = 20 * kMillisecond;
    Pair p(66, lp);
    // Everything from the client after its INITIAL is lost for 200 ms: the
    // PING sent on the ACCEPT among it. Class 0 has no loss detector to
    // resend it; the client's confirmation timer does (handshake_rto, 250 ms).
    const Time t0 = p.sim.now();
    p.sim.set_link_filter([&](const Addr& from, const Addr&, Time now) {
        return !(from == Pair::kClient && now > t0 && now < t0 + 200 * kMillisecond);
    });
    // accept() hands the connection over only once validated: after the
    // second PING (250 ms + 20 ms), not at the ACCEPT.
    REQUIRE(p.connect(kClassDatagram, kSecond));
    CHECK(p.sim.now() - t0 >= 250 * kMillisecond);
    CHECK(p.sconn->address_validated());
    p.sim.run_until(t0 + 2 * kSecond);
    CHECK(p.server.ep.counters().validated == 1);
    CHECK(p.cconn->counters().pings_sent == 2);   // the first lost, the second answered: no more
    MESSAGE("validated after the second PING; the client sent " << p.cconn->counters().pings_sent << " PINGs");
    p.sim.run_until(t0 + 10 * kSecond);
    CHECK(p.server.ep.counters().unvalidated_expired == 0);
    CHECK(p.sconn->state() == State::established);
    CHECK(p.cconn->counters().pings_sent == 2);
}
