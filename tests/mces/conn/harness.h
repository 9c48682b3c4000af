// Test scaffolding for MCES connections in the simulator: a Host wraps an
// mces::Endpoint and runs the test's application code after every event, so
// applications react (write, read, close) at the instant something changed,
// exactly as the engine would after a poll wake-up.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "core/common/sansio.h"
#include "core/mces/conn/endpoint.h"
#include "tests/sim/sim.h"

namespace gs::mces::test {

using sansio::Addr;
using sansio::kMillisecond;
using sansio::kNever;
using sansio::kSecond;
using sansio::Time;

class Host final : public sansio::Endpoint {
public:
    explicit Host(const EndpointConfig& cfg) : ep(cfg) {}
    void on_datagram(const Addr& from, const Addr& to, std::span<const std::uint8_t> bytes,
                     Time now) override {
        if (now < asleep_until) {   // the kernel keeps it until the process runs
            slept.push_back({from, to, {bytes.begin(), bytes.end()}});
            return;
        }
        if (mutate) {
            // Tampering in flight: the endpoint sees an altered copy (kept
            // until the next datagram, past on_batch_end).
            mutated.assign(bytes.begin(), bytes.end());
            mutate(mutated);
            bytes = mutated;
        }
        ep.on_datagram(from, to, bytes, now);
        if (app) app(now);
        // The contract of ConnConfig::borrow_receive, kept as the engine's
        // UdpHost keeps it: the application read, then the endpoint copies
        // what it still needs, then the bytes may change. (A no-op when no
        // connection borrows.)
        ep.on_batch_end();
        if (scribble) {
            // The simulator's delivery buffer, writable: it is reused for the
            // next packet anyway; overwriting it now makes a view kept past
            // on_batch_end read garbage at once.
            auto* p = const_cast<std::uint8_t*>(bytes.data());
            std::fill(p, p + bytes.size(), std::uint8_t{0xEE});
        }
    }
    void on_timeout(Time now) override {
        if (now < asleep_until) return;
        // Awake after a sleep: what came meanwhile, as one batch (the
        // engine reads its socket's backlog at once), then the timers.
        for (const Slept& d : slept) ep.on_datagram(d.from, d.to, d.bytes, now);
        if (!slept.empty()) ep.on_batch_end();
        slept.clear();
        ep.on_timeout(now);
        if (app) app(now);
    }
    Time next_timeout() const override {
        if (!slept.empty()) return asleep_until;
        return std::max(ep.next_timeout(), asleep_until);
    }
    void advance(Time now) override { ep.advance(now); }
    // With hold, the endpoint may leave payload in its send buffers, as
    // under the engine's UdpHost; the simulator keeps datagrams past the
    // next call, so they are flattened at once (the checksum then covers
    // bytes that were never in one buffer at the sender).
    bool poll_transmit(sansio::Datagram& d) override {
        d.may_hold = hold;
        d.split = 0;
        d.held[0] = d.held[1] = {};
        if (!ep.poll_transmit(d)) return false;
        held_bytes += d.size() - d.bytes.size();
        d.flatten();
        sent_sizes.push_back(d.size());
        return true;
    }

    mces::Endpoint ep;
    bool hold = false;
    bool scribble = false;           // overwrite each datagram after on_batch_end
    std::uint64_t held_bytes = 0;   // payload sent from the send buffer
    std::vector<std::size_t> sent_sizes;   // every datagram sent, in order
    std::function<void(Time)> app;   // the application, run after every event
    // Called with a copy of every received datagram before the endpoint sees it.
    std::function<void(std::vector<std::uint8_t>&)> mutate;
    std::vector<std::uint8_t> mutated;
    // A process kept from running (descheduled) until this time: datagrams
    // wait, timers do not fire, the application does not run.
    Time asleep_until = 0;
    struct Slept {
        Addr from, to;
        std::vector<std::uint8_t> bytes;
    };
    std::vector<Slept> slept;
};

// The stream's content: a function of the offset, so the reader checks every
// byte without a copy.
inline std::uint8_t pattern(std::uint64_t off) {
    std::uint64_t z = (off >> 3) * 0x9e3779b97f4a7c15ull + 0x1234567;
    z ^= z >> 29;
    return static_cast<std::uint8_t>(z >> (8 * (off & 7)));
}

// Writes pattern bytes from `written` on until the connection stops taking them.
inline void write_pattern(Connection& c, std::uint64_t& written, std::uint64_t total) {
    std::uint8_t chunk[16384];
    while (written < total) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(sizeof chunk, total - written));
        for (std::size_t i = 0; i < n; ++i) chunk[i] = pattern(written + i);
        const auto r = c.write({chunk, n});
        if (r <= 0) break;
        written += static_cast<std::uint64_t>(r);
    }
}

// Reads everything available, checking the pattern; returns true at EOF.
inline bool read_pattern(Connection& c, std::uint64_t& got, std::uint64_t& bad) {
    std::uint8_t buf[16384];
    for (;;) {
        const auto r = c.read(buf);
        if (r == 0) return true;
        if (r < 0) return false;
        for (std::ptrdiff_t i = 0; i < r; ++i)
            if (buf[i] != pattern(got + static_cast<std::uint64_t>(i))) ++bad;
        got += static_cast<std::uint64_t>(r);
    }
}

inline EndpointConfig endpoint_config(const Addr& a, std::uint64_t seed) {
    EndpointConfig c;
    c.local = a;
    c.seed = seed;
    return c;
}

}  // namespace gs::mces::test

namespace gs::mces::test {

// A client and a server endpoint in one simulator, the server listening.
struct Pair {
    // sc: the server's handshake (default: RetryPolicy::under_load).
    explicit Pair(std::uint64_t seed, const sim::LinkParams& lp = {}, const ConnConfig& conn = {},
                  wire::AdmitFn admit = {}, wire::ServerConfig sc = {}, ReleaseFn release = {})
        : sim(seed),
          server(with_conn(endpoint_config(kServer, seed * 2 + 1), conn)),
          client(with_conn(endpoint_config(kClient, seed * 2 + 2), conn)) {
        REQUIRE(sim.set_default_link(lp) == 0);
        REQUIRE(server.ep.listen(std::move(sc), std::move(admit), std::move(release)) == 0);
        server.app = [this](Time) {
            if (!sconn) sconn = server.ep.accept();
        };
        REQUIRE(sim.add_node(kServer, server) == 0);
        REQUIRE(sim.add_node(kClient, client) == 0);
    }
    static EndpointConfig with_conn(EndpointConfig c, const ConnConfig& conn) {
        c.conn = conn;
        return c;
    }
    // Connects and runs until both sides are established (or `limit`).
    bool connect(std::uint8_t cls, Time limit = 10 * kSecond) {
        REQUIRE(client.ep.connect(kServer, cls, {}, sim.now(), cconn) == 0);
        sim.kick(client);
        return sim.run_while(
            [&] { return !(cconn->state() == Connection::State::established && sconn); },
            sim.now() + limit);
    }
    // The server's handshake asking every client for a cookie first.
    static wire::ServerConfig cookie_first() {
        wire::ServerConfig sc;
        sc.retry = wire::RetryPolicy::always;
        return sc;
    }
    bool run_until_closed(Time limit) {
        return sim.run_while(
            [&] {
                return !(cconn->state() == Connection::State::closed && sconn &&
                         sconn->state() == Connection::State::closed);
            },
            sim.now() + limit);
    }

    static inline const Addr kClient = Addr::v4(0x0a000001, 5000);
    static inline const Addr kServer = Addr::v4(0x0a000002, 4433);
    sim::Simulator sim;
    Host server, client;
    std::shared_ptr<Connection> cconn, sconn;
};

}  // namespace gs::mces::test
