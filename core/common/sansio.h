// The vocabulary every sans-IO protocol in core/ shares (MCES elements, the
// overlay protocols), and that the engine and the network simulator
// (tests/sim) drive them with.
//
// A protocol endpoint never touches a socket or a clock. Its owner feeds it
// what arrived and what time it is, and takes out what it wants sent and when
// it wants to be called again (the shape of quinn-proto and quicly):
//
//     ep.on_datagram(from, bytes, now);      // a packet arrived
//     ep.on_timeout(now);                    // now >= ep.next_timeout()
//     ep.advance(now);                       // after the application acted
//     while (ep.poll_transmit(d)) send(d);   // after any of the above
//
// Time is nanoseconds on a monotonic clock: CLOCK_MONOTONIC in the engine, a
// virtual clock in the simulator. Same inputs, same outputs: an endpoint that
// needs randomness takes a seed.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace gs::sansio {

using Time = std::int64_t;                      // ns
constexpr Time kNever = std::numeric_limits<Time>::max();
constexpr Time kMicrosecond = 1'000;
constexpr Time kMillisecond = 1'000'000;
constexpr Time kSecond = 1'000'000'000;

// An underlay endpoint (IP address and UDP port). IPv4 is held IPv4-mapped
// (::ffff:a.b.c.d), so one type and one comparison cover both families.
struct Addr {
    std::array<std::uint8_t, 16> ip{};
    std::uint16_t port = 0;                     // host byte order

    // a.b.c.d as a host-order integer, e.g. Addr::v4(0x0a000001, 9000) = 10.0.0.1:9000
    static Addr v4(std::uint32_t host_order_ip, std::uint16_t port) noexcept {
        Addr a;
        a.ip[10] = 0xff;
        a.ip[11] = 0xff;
        a.ip[12] = static_cast<std::uint8_t>(host_order_ip >> 24);
        a.ip[13] = static_cast<std::uint8_t>(host_order_ip >> 16);
        a.ip[14] = static_cast<std::uint8_t>(host_order_ip >> 8);
        a.ip[15] = static_cast<std::uint8_t>(host_order_ip);
        a.port = port;
        return a;
    }
    bool is_v4() const noexcept {
        static constexpr std::uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        return std::memcmp(ip.data(), prefix, sizeof prefix) == 0;
    }
    // 127.0.0.0/8 (IPv4, or IPv4-mapped) or ::1
    bool is_loopback() const noexcept {
        if (is_v4()) return ip[12] == 127;
        static constexpr std::array<std::uint8_t, 16> one{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        return ip == one;
    }
    // "10.0.0.1:9000" or "[::1]:9000"
    std::string str() const;

    friend bool operator==(const Addr&, const Addr&) = default;
    friend auto operator<=>(const Addr&, const Addr&) = default;
};

struct AddrHash {
    std::size_t operator()(const Addr& a) const noexcept {
        std::uint64_t h = 1469598103934665603ull;   // FNV-1a
        for (auto b : a.ip) h = (h ^ b) * 1099511628211ull;
        h = (h ^ (a.port & 0xff)) * 1099511628211ull;
        h = (h ^ (a.port >> 8)) * 1099511628211ull;
        return static_cast<std::size_t>(h);
    }
};

// One UDP datagram an endpoint wants sent. `from` is the local address it
// goes out of (an endpoint may own several); the owner may ignore it when it
// has one socket.
struct Datagram {
    Datagram() = default;
    Datagram(const Addr& f, const Addr& t, std::vector<std::uint8_t> b)
        : from(f), to(t), bytes(std::move(b)) {}

    Addr from;
    Addr to;
    std::vector<std::uint8_t> bytes;

    // Zero-copy sending. A caller that sets may_hold before poll_transmit
    // lets the endpoint leave the payload in its own buffers: the datagram
    // on the wire is then bytes[0, split) + held[0] + held[1] +
    // bytes[split, end). Held bytes stay valid through further poll_transmit
    // calls and no longer: the caller sends them, or flatten()s the
    // datagram, before it calls the endpoint in any other way. Endpoints
    // that never hold leave these three alone (the caller resets them).
    bool may_hold = false;
    std::size_t split = 0;
    std::span<const std::uint8_t> held[2];

    std::size_t size() const noexcept { return bytes.size() + held[0].size() + held[1].size(); }
    bool holds() const noexcept { return !held[0].empty() || !held[1].empty(); }
    // Copies the held bytes into `bytes`: the datagram stands alone after.
    void flatten() {
        if (!holds()) return;
        bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(split), held[1].begin(), held[1].end());
        bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(split), held[0].begin(), held[0].end());
        held[0] = held[1] = {};
        split = 0;
    }
};

// The shape every protocol endpoint has. The simulator drives any of them
// through this; the engine may call the concrete classes directly.
class Endpoint {
public:
    virtual ~Endpoint() = default;
    // A datagram arrived at `to` (one of this endpoint's addresses) from `from`.
    // Must accept any bytes: malformed input is dropped and counted, never trusted.
    virtual void on_datagram(const Addr& from, const Addr& to,
                             std::span<const std::uint8_t> bytes, Time now) = 0;
    // Called when now >= next_timeout().
    virtual void on_timeout(Time now) = 0;
    // The earliest time on_timeout wants calling; kNever when nothing is armed.
    virtual Time next_timeout() const = 0;
    // The time is `now` (never earlier than before). An owner calls it before
    // draining poll_transmit() when nothing else gave the endpoint the time
    // since it last ran: after the application wrote, say. Without it a
    // packet sent after a quiet spell would be stamped with the time of the
    // last event (a stale send time: RTT samples too long, probe timeouts
    // that fire at once). Endpoints that keep no clock ignore it.
    virtual void advance(Time now) { (void)now; }
    // The bytes given to on_datagram since the last call are about to be
    // reused: copy what you still need. An owner that keeps a datagram's
    // bytes valid past on_datagram (the engine's UdpHost, until the owner
    // of the endpoint has read) calls it before reusing them, and lets an
    // endpoint keep views of them until then (mces::ConnConfig::
    // borrow_receive). Endpoints that copy on arrival ignore it.
    virtual void on_batch_end() {}
    // Takes the next datagram to send; false when there is none. out.bytes
    // may hold the buffer of an earlier datagram (the engine's UdpHost hands
    // sent buffers back, to save an allocation per packet): assign or resize
    // it, never append to it.
    virtual bool poll_transmit(Datagram& out) = 0;
};

}  // namespace gs::sansio
