// Connection life cycle in the simulator: graceful close both ways with data
// in flight, abort (ECONNRESET at the peer), idle timeout (ETIMEDOUT),
// keepalive, a handshake to a silent address (ECONNREFUSED within the
// client's bounded wait), admission refusal, and class 0 datagrams.
#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <set>
#include <vector>

#include "tests/mces/conn/harness.h"

using namespace gs::mces;
using namespace gs::mces::test;
using gs::sim::LinkParams;
using State = Connection::State;

namespace {

LinkParams lossy(double loss) {
    LinkParams lp;
    lp.delay = 10 * kMillisecond;
    lp.jitter = 2 * kMillisecond;
    lp.jitter_reorders = true;
    lp.dup_prob = 0.01;
    lp.loss = loss;
    return lp;
}

LinkParams clean() {
    LinkParams lp;
    lp.delay = 10 * kMillisecond;
    return lp;
}

}  // namespace

TEST_CASE("graceful close: both directions delivered, then both closed with no error") {
    for (double loss : {0.0, 0.05, 0.2}) {
        CAPTURE(loss);
        Pair p(11, lossy(loss));
        REQUIRE(p.connect(kClassReliable, 60 * kSecond));
        const std::uint64_t up = 300'001, down = 200'003;
        std::uint64_t c_written = 0, c_got = 0, c_bad = 0, s_written = 0, s_got = 0, s_bad = 0;
        bool c_eof = false, s_eof = false, c_closed = false, s_closed = false;
        // Client: write everything, half-close, read the server's bytes to EOF, close.
        p.client.app = [&](Time) {
            if (p.cconn->state() == State::closed) return;
            write_pattern(*p.cconn, c_written, up);
            if (c_written == up) p.cconn->shutdown_write();
            if (!c_eof) c_eof = read_pattern(*p.cconn, c_got, c_bad);
            if (c_eof && !c_closed) c_closed = p.cconn->close() == 0;
        };
        // Server: reads to EOF while writing its own bytes; closes with its
        // data still in flight.
        p.server.app = [&](Time) {
            if (p.sconn->state() == State::closed) return;
            if (!s_eof) s_eof = read_pattern(*p.sconn, s_got, s_bad);
            write_pattern(*p.sconn, s_written, down);
            if (s_eof && s_written == down && !s_closed) s_closed = p.sconn->close() == 0;
        };
        p.sim.kick(p.client);
        p.sim.kick(p.server);
        p.client.app(p.sim.now());
        p.server.app(p.sim.now());
        p.sim.kick(p.client);
        p.sim.kick(p.server);
        REQUIRE(p.run_until_closed(120 * kSecond));
        MESSAGE("loss " << loss * 100 << "%: both closed at " << double(p.sim.now()) / 1e9 << " s");
        CHECK(s_got == up);
        CHECK(c_got == down);
        CHECK(s_bad == 0);
        CHECK(c_bad == 0);
        CHECK(p.cconn->error() == 0);
        CHECK(p.sconn->error() == 0);
        // After the drain period the endpoints forget both connections.
        p.sim.run_until(p.sim.now() + 60 * kSecond);
        CHECK(p.client.ep.connection_count() == 0);
        CHECK(p.server.ep.connection_count() == 0);
        CHECK(p.sim.stats().timer_livelocks == 0);
        // The handles stay valid and report the end.
        std::uint8_t b[16];
        CHECK(p.cconn->read(b) == -ENOTCONN);   // closed by this side: reads nothing more
        CHECK(p.cconn->write(b) == -EPIPE);
    }
}

TEST_CASE("abort: RESET reaches the peer as ECONNRESET") {
    Pair p(12, lossy(0.05));
    REQUIRE(p.connect(kClassReliable));
    std::uint64_t written = 0;
    write_pattern(*p.cconn, written, 100'000);
    p.sim.kick(p.client);
    p.sim.run_until(p.sim.now() + 50 * kMillisecond);   // some of it in flight
    REQUIRE(p.cconn->abort() == 0);
    CHECK(p.cconn->state() == State::closed);
    CHECK(p.cconn->error() == ECONNABORTED);
    p.sim.kick(p.client);
    REQUIRE(p.sim.run_while([&] { return p.sconn->state() != State::closed; }, p.sim.now() + 10 * kSecond));
    CHECK(p.sconn->error() == ECONNRESET);
    std::uint8_t b[64];
    CHECK(p.sconn->read(b) == -ECONNRESET);
    CHECK(p.sconn->write(b) == -ECONNRESET);
    CHECK(p.sconn->readable());
    CHECK(p.sconn->writable());
    CHECK(p.cconn->abort() == -ENOTCONN);
}

TEST_CASE("idle timeout: a peer that vanishes gives ETIMEDOUT; keepalive holds a quiet connection") {
    ConnConfig cc;
    cc.idle.keepalive = 5 * kSecond;
    cc.idle.idle_timeout = 12 * kSecond;
    Pair p(13, clean(), cc);
    REQUIRE(p.connect(kClassReliable));
    // Quiet for two minutes: keepalive PINGs keep both sides open.
    p.sim.run_until(p.sim.now() + 120 * kSecond);
    CHECK(p.cconn->state() == State::established);
    CHECK(p.sconn->state() == State::established);
    CHECK(p.cconn->counters().pings_sent + p.sconn->counters().pings_sent >= 10);
    // The server crashes: nothing answers the client's PINGs.
    const gs::sansio::Time crash = p.sim.now();
    REQUIRE(p.sim.remove_node(p.server) == 0);
    REQUIRE(p.sim.run_while([&] { return p.cconn->state() != State::closed; }, crash + 60 * kSecond));
    CHECK(p.cconn->error() == ETIMEDOUT);
    const double after = double(p.sim.now() - crash) / 1e9;
    MESSAGE("idle timeout after " << after << " s (configured 12 s)");
    // The last packet came up to one keepalive before the crash, and the
    // first unanswered PING restarts the idle period (RFC 9000 10.1), which
    // can come up to one keepalive after it.
    CHECK(after >= 12.0 - 5.0);
    CHECK(after <= 12.0 + 5.0);
    std::uint8_t b[8];
    CHECK(p.cconn->read(b) == -ETIMEDOUT);

    // The same for class 0, whose PINGs are answered without ACKs.
    Pair q(14, clean(), cc);
    REQUIRE(q.connect(kClassDatagram));
    q.sim.run_until(q.sim.now() + 120 * kSecond);
    CHECK(q.cconn->state() == State::established);
    CHECK(q.sconn->state() == State::established);
    REQUIRE(q.sim.remove_node(q.client) == 0);
    REQUIRE(q.sim.run_while([&] { return q.sconn->state() != State::closed; }, q.sim.now() + 60 * kSecond));
    CHECK(q.sconn->error() == ETIMEDOUT);
}

TEST_CASE("handshake to a silent address fails with ECONNREFUSED within the bounded wait") {
    gs::sim::Simulator sim(15);
    LinkParams lp = clean();
    REQUIRE(sim.set_default_link(lp) == 0);
    Host client(endpoint_config(Addr::v4(0x0a000001, 5000), 3));
    REQUIRE(sim.add_node(Addr::v4(0x0a000001, 5000), client) == 0);
    std::shared_ptr<Connection> c;
    REQUIRE(client.ep.connect(Addr::v4(0x0a0000fe, 4433), kClassReliable, {}, 0, c) == 0);
    CHECK(c->state() == State::connecting);
    CHECK_FALSE(c->writable());
    std::uint8_t b[4] = {1, 2, 3, 4};
    CHECK(c->write(b) == -EAGAIN);
    sim.kick(client);
    REQUIRE(sim.run_while([&] { return c->state() != State::closed; }, 30 * kSecond));
    CHECK(c->error() == ECONNREFUSED);
    MESSAGE("gave up at " << double(sim.now()) / 1e9 << " s: " << c->message());
    CHECK(sim.now() <= 5 * kSecond + kMillisecond);   // ConnConfig::handshake_timeout
    CHECK(c->message().find("no answer") != std::string::npos);
    CHECK(c->handshake_counters()->initials_sent >= 4);
    sim.run_until(sim.now() + 10 * kSecond);
    CHECK(client.ep.connection_count() == 0);
}

TEST_CASE("admission refusal and impossible chains reach the client as ECONNREFUSED / EINVAL") {
    Pair p(16, clean(), {}, [](const gs::mces::wire::AdmissionRequest& r) {
        gs::mces::wire::Admission a;
        a.admitted = r.service_class != kClassReliable;
        a.code = 7;
        a.reason = "no streams here";
        return a;
    });
    REQUIRE(p.client.ep.connect(Pair::kServer, kClassReliable, {}, p.sim.now(), p.cconn) == 0);
    p.sim.kick(p.client);
    REQUIRE(p.sim.run_while([&] { return p.cconn->state() != State::closed; }, 10 * kSecond));
    CHECK(p.cconn->error() == ECONNREFUSED);
    CHECK(p.cconn->message().find("no streams here") != std::string::npos);
    CHECK(p.server.ep.connection_count() == 0);

    // Class group has no MCES chain (an overlay carries it): the client
    // refuses to start it.
    std::shared_ptr<Connection> c;
    std::string why;
    CHECK(p.client.ep.connect(Pair::kServer, kClassGroup, {}, p.sim.now(), c, {}, &why) == -EINVAL);
    CHECK(why.find("overlay") != std::string::npos);
    const std::vector<std::string> bad = {"framing", "checksum", "handshake", "sequencing", "ordering"};
    CHECK(p.client.ep.connect(Pair::kServer, kClassReliable, {}, p.sim.now(), c, bad, &why) == -EINVAL);
    CHECK(why == "ordering needs sack before it (in-order delivery waits for the retransmission of what is "
                 "missing; without sack a gap would block the stream for ever)");
}

TEST_CASE("refuse_new: a new client is refused with ECONNREFUSED; the connection already there goes on") {
    // A closed UDP socket's endpoint lingering for its last messages
    // (core/engine/mces_dgram.cpp) answers a new peer as the closed port
    // would, and keeps serving the peer it was sending to.
    Pair p(23, clean());
    REQUIRE(p.connect(kClassDatagram));
    p.server.ep.refuse_new();
    std::shared_ptr<Connection> c;
    REQUIRE(p.client.ep.connect(Pair::kServer, kClassDatagram, {}, p.sim.now(), c) == 0);
    p.sim.kick(p.client);
    REQUIRE(p.sim.run_while([&] { return c->state() != State::closed; }, p.sim.now() + 10 * kSecond));
    CHECK(c->error() == ECONNREFUSED);
    CHECK(c->message().find("not taking connections") != std::string::npos);
    CHECK(p.server.ep.counters().refused_closed == 1);
    CHECK(p.server.ep.connection_count() == 1);
    // The first connection still carries messages both ways.
    const std::vector<std::uint8_t> hi = {'h', 'i'};
    REQUIRE(p.cconn->send_datagram(hi) == 2);
    REQUIRE(p.sconn->send_datagram(hi) == 2);
    p.sim.kick(p.client);
    p.sim.kick(p.server);
    p.sim.run_until(p.sim.now() + kSecond);
    std::uint8_t b[8];
    CHECK(p.sconn->recv_datagram(b) == 2);
    CHECK(p.cconn->recv_datagram(b) == 2);
}

TEST_CASE("what the owner's admission set aside goes back once: lost ACCEPTs, abort, chain refusal, endpoint gone") {
    // Each admission sets aside a new handle (a ledger reservation, in the
    // engine); release records what comes back.
    std::uint64_t next = 0;
    std::vector<std::uint64_t> released;
    gs::sim::Simulator* sim = nullptr;
    Time mute_server_until = 0;   // the first ACCEPT is lost (below)
    auto admit = [&](const gs::mces::wire::AdmissionRequest& r) {
        gs::mces::wire::Admission a;
        a.granted = r.qos;
        a.held = ++next;
        if (next == 1 && sim != nullptr) mute_server_until = sim->now() + 100 * kMillisecond;
        if (r.service_class == kClassDatagram) a.service_class = kClassGroup;   // a class with no chain
        return a;
    };
    auto release = [&](std::uint64_t h) { released.push_back(h); };
    // Every handle handed out came back, each once.
    auto all_back = [&] {
        std::vector<std::uint64_t> s = released;
        std::sort(s.begin(), s.end());
        std::vector<std::uint64_t> want(next);
        for (std::uint64_t i = 0; i < next; ++i) want[i] = i + 1;
        return s == want;
    };

    // The first ACCEPT is lost: the client's INITIAL comes again and is
    // answered from the connection, without a second admission.
    Pair p(21, clean(), {}, admit, {}, release);
    sim = &p.sim;
    p.sim.set_link_filter([&](const Addr& from, const Addr&, Time now) {
        return !(from == Pair::kServer && now < mute_server_until);
    });
    REQUIRE(p.connect(kClassReliable, 60 * kSecond));
    CHECK(p.sim.stats().dropped_filter >= 1);
    CHECK(p.server.ep.counters().accept_resent >= 1);
    CHECK(next == 1);
    CHECK(released.empty());
    // Abort: the server's side is forgotten after its drain period, and its handle comes back.
    REQUIRE(p.cconn->abort() == 0);
    p.sim.kick(p.client);
    REQUIRE(p.sim.run_while([&] { return p.server.ep.connection_count() != 0; }, p.sim.now() + 60 * kSecond));
    CHECK(released == std::vector<std::uint64_t>{1});

    // The owner grants a class with no chain: refused by the endpoint after
    // the owner's yes, so no connection holds the handle: back at once.
    std::shared_ptr<Connection> c;
    REQUIRE(p.client.ep.connect(Pair::kServer, kClassDatagram, {}, p.sim.now(), c) == 0);
    p.sim.kick(p.client);
    REQUIRE(p.sim.run_while([&] { return c->state() != State::closed; }, p.sim.now() + 30 * kSecond));
    CHECK(c->error() == ECONNREFUSED);
    CHECK(next >= 2);
    CHECK(all_back());

    // The endpoint goes while a connection lives: its handle comes back.
    auto q = std::make_unique<Pair>(22, clean(), ConnConfig{}, admit, wire::ServerConfig{}, release);
    REQUIRE(q->connect(kClassReliable));
    CHECK_FALSE(all_back());
    q.reset();
    CHECK(all_back());
}

TEST_CASE("class 0: boundaries kept, nothing duplicated, loss passes through as loss") {
    LinkParams lp = lossy(0.05);
    Pair p(17, lp);
    REQUIRE(p.connect(kClassDatagram, 30 * kSecond));
    CHECK_FALSE(p.cconn->chain().stream());
    std::uint8_t b[8] = {};
    CHECK(p.cconn->write(b) == -EOPNOTSUPP);
    CHECK(p.cconn->read(b) == -EOPNOTSUPP);
    std::vector<std::uint8_t> too_big(p.cconn->max_datagram_payload() + 1);
    CHECK(p.cconn->send_datagram(too_big) == -EMSGSIZE);

    const std::uint32_t n = 3000;
    auto size_of = [](std::uint32_t i) { return std::size_t{4} + (i * 37u) % 700u; };
    std::uint32_t next = 0;
    std::set<std::uint32_t> seen;
    std::uint64_t dups = 0, bad = 0, zero_len = 0;
    // 30 messages each 10 ms: the queue never overflows, so only the link loses.
    std::function<void()> tick = [&] {
        for (int k = 0; k < 30 && next < n; ++k, ++next) {
            std::vector<std::uint8_t> m(size_of(next));
            for (std::size_t j = 0; j < m.size(); ++j) m[j] = static_cast<std::uint8_t>(next * 7 + j);
            m[0] = static_cast<std::uint8_t>(next >> 24);
            m[1] = static_cast<std::uint8_t>(next >> 16);
            m[2] = static_cast<std::uint8_t>(next >> 8);
            m[3] = static_cast<std::uint8_t>(next);
            REQUIRE(p.cconn->send_datagram(m) == static_cast<std::ptrdiff_t>(m.size()));
        }
        p.sim.kick(p.client);
        if (next < n) p.sim.schedule(p.sim.now() + 10 * kMillisecond, tick);
    };
    p.server.app = [&](Time) {
        std::uint8_t buf[2048];
        std::size_t full = 0;
        for (;;) {
            const auto r = p.sconn->recv_datagram(buf, &full);
            if (r < 0) break;
            if (r < 4) {
                ++zero_len;
                continue;
            }
            const std::uint32_t i = std::uint32_t{buf[0]} << 24 | std::uint32_t{buf[1]} << 16 |
                                    std::uint32_t{buf[2]} << 8 | buf[3];
            if (!seen.insert(i).second) ++dups;
            if (i >= n || std::size_t(r) != size_of(i) || full != size_of(i)) {
                ++bad;
                continue;
            }
            for (std::size_t j = 4; j < std::size_t(r); ++j)
                if (buf[j] != static_cast<std::uint8_t>(i * 7 + j)) ++bad;
        }
    };
    tick();
    p.sim.run_until(p.sim.now() + 3 * kSecond);
    const double got = double(seen.size()) / n;
    const auto cc = p.cconn->counters();
    MESSAGE("class 0: " << seen.size() << " of " << n << " messages (" << got * 100 << "%), in "
                        << cc.packets_sent << " packets; duplicates dropped by sequencing "
                        << p.sconn->counters().drops.duplicate);
    CHECK(dups == 0);
    CHECK(bad == 0);
    CHECK(zero_len == 0);
    CHECK(cc.retransmits == 0);
    CHECK(got < 0.99);    // 5% packet loss is not repaired
    CHECK(got > 0.90);
    CHECK(p.sconn->counters().drops.duplicate > 0);   // the link duplicated some; none got through

    // Graceful close of a datagram connection: CLOSE both ways.
    REQUIRE(p.cconn->close() == 0);
    p.sim.kick(p.client);
    REQUIRE(p.run_until_closed(30 * kSecond));
    CHECK(p.cconn->error() == 0);
    CHECK(p.sconn->error() == 0);
    CHECK(p.sconn->recv_datagram(b) == -ENOTCONN);
}

TEST_CASE("coalesce_size: several messages share a packet only up to it, one message alone may be larger") {
    // As the shim configures a socket's connections (mces_dgram): packets up
    // to UDP's largest, several messages only within 1200 bytes toward a
    // peer that is not on loopback (the simulator's are 10.0.0.x).
    ConnConfig cc;
    cc.max_datagram_size = 65507;
    cc.coalesce_size = 1200;
    cc.fec_adaptive = false;   // FEC 10/2 throughout: the repairs below are counted from it
    for (std::uint8_t cls : {kClassDatagram, kClassRealtime}) {
        CAPTURE(int(cls));
        Pair p(21, clean(), cc);
        REQUIRE(p.connect(cls, 10 * kSecond));
        p.client.sent_sizes.clear();
        // 40 small messages queued at once, then one of 5000 bytes.
        std::vector<std::uint8_t> small(300, 0x5a), big(5000, 0xa5);
        for (int i = 0; i < 40; ++i) REQUIRE(p.cconn->send_datagram(small) == 300);
        REQUIRE(p.cconn->send_datagram(big) == 5000);
        p.sim.kick(p.client);
        std::size_t got = 0, got_big = 0;
        p.server.app = [&](Time) {
            std::uint8_t buf[8192];
            for (std::ptrdiff_t r; (r = p.sconn->recv_datagram(buf)) >= 0;) {
                if (r == 300) ++got;
                if (r == 5000) ++got_big;
            }
        };
        p.sim.run_until(p.sim.now() + 2 * kSecond);
        CHECK(got == 40);
        CHECK(got_big == 1);
        std::size_t over = 0, carrying = 0;
        for (std::size_t s : p.client.sent_sizes) {
            if (s > 1200) ++over;
            if (s > 300) ++carrying;   // a packet with at least one message
        }
        // The 5000-byte message, alone; class realtime (FEC 10/2) adds the
        // repairs of its group, as long as it: all but the 8 of the four
        // groups of ten small messages.
        CHECK(over == 1 + (cls == kClassRealtime ? p.cconn->counters().repairs_sent - 8 : 0));
        CHECK(carrying >= 11);       // 40 x 300 bytes: at most 3 to a 1200-byte packet, and the big one
        // Without the limit the small ones share one packet.
        ConnConfig whole = cc;
        whole.coalesce_size = 0;
        Pair q(22, clean(), whole);
        REQUIRE(q.connect(cls, 10 * kSecond));
        q.client.sent_sizes.clear();
        for (int i = 0; i < 40; ++i) REQUIRE(q.cconn->send_datagram(small) == 300);
        q.sim.kick(q.client);
        q.sim.run_until(q.sim.now() + 2 * kSecond);
        CHECK(std::count_if(q.client.sent_sizes.begin(), q.client.sent_sizes.end(),
                            [](std::size_t s) { return s > 12000; }) == 1);
    }
}
