// The engine's UDP host (core/engine/udp_host.h): a sans-IO endpoint on a
// real UDP socket, driven by the engine: datagrams in and out, its timer,
// GSO runs out and GRO batches in, errors counted, a clean close.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "tests/core/on_engine.h"
#include "core/engine/udp_host.h"

using namespace gs::engine;
using gs::engine::test::eventually;
using gs::engine::test::on_engine;
using gs::sansio::Addr;
using gs::sansio::Datagram;
using gs::sansio::kNever;
using gs::sansio::Time;

namespace {


int udp_socket(sockaddr_in* bound = nullptr) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (bound) *bound = a;
    return fd;
}

Addr addr_of(const sockaddr_in& a) { return Addr::v4(ntohl(a.sin_addr.s_addr), ntohs(a.sin_port)); }

// Echoes every datagram; counts; sends what a test queues; one optional timer.
struct TestEndpoint final : gs::sansio::Endpoint {
    std::deque<Datagram> out;
    std::atomic<uint64_t> got{0}, got_bytes{0}, timeouts{0};
    bool echo = true;
    std::vector<std::string> seen;    // payloads (when recording)
    bool record = false;
    Time timer = kNever;
    std::function<void(Time, TestEndpoint&)> on_timer;
    void on_datagram(const Addr& from, const Addr&, std::span<const uint8_t> b, Time) override {
        got.fetch_add(1);
        got_bytes.fetch_add(b.size());
        if (record) seen.emplace_back(reinterpret_cast<const char*>(b.data()), b.size());
        if (echo) out.push_back(Datagram{{}, from, {b.begin(), b.end()}});
    }
    void on_timeout(Time now) override {
        timeouts.fetch_add(1);
        timer = kNever;
        if (on_timer) on_timer(now, *this);
    }
    Time next_timeout() const override { return timer; }
    bool poll_transmit(Datagram& d) override {
        if (out.empty()) return false;
        d = std::move(out.front());
        out.pop_front();
        return true;
    }
};

struct EngineFixture {
    Engine* e = Engine::create(Options{}, nullptr);
    EngineFixture() { REQUIRE(e != nullptr); }
    ~EngineFixture() { Engine::destroy(e); }
};

UdpHost* host_on(Engine& e, int fd, gs::sansio::Endpoint& ep, UdpHostOptions o = {}) {
    UdpHost* h = nullptr;
    on_engine(e, [&](Engine& en) {
        int err = 1;
        h = UdpHost::start(en, fd, ep, o, nullptr, nullptr, &err);
        CHECK(err == 0);
    });
    REQUIRE(h != nullptr);
    return h;
}

}  // namespace

TEST_CASE("an endpoint on the engine answers a plain UDP socket, and closes cleanly") {
    EngineFixture f;
    sockaddr_in ha{}, ca{};
    int hfd = udp_socket(&ha);
    int cfd = udp_socket(&ca);
    TestEndpoint ep;
    UdpHost* h = host_on(*f.e, hfd, ep);
    CHECK(h->local() == addr_of(ha));
    for (int i = 0; i < 200; ++i) {
        std::string m = "datagram " + std::to_string(i);
        REQUIRE(sendto(cfd, m.data(), m.size(), 0, reinterpret_cast<sockaddr*>(&ha), sizeof ha) == static_cast<ssize_t>(m.size()));
    }
    char buf[256];
    for (int i = 0; i < 200; ++i) {
        ssize_t n = recv(cfd, buf, sizeof buf, 0);
        REQUIRE(n > 0);
        CHECK(std::string(buf, static_cast<size_t>(n)) == "datagram " + std::to_string(i));
    }
    CHECK(ep.got.load() == 200);
    on_engine(*f.e, [&](Engine& en) {
        CHECK(h->stats().rx_datagrams == 200);
        CHECK(h->stats().tx_datagrams == 200);
        CHECK(h->stats().rx_calls <= 200);
        h->close(en);
    });
    // The host closed its socket: the port is free again.
    CHECK(eventually([&] {
        int t = socket(AF_INET, SOCK_DGRAM, 0);
        bool ok = bind(t, reinterpret_cast<sockaddr*>(&ha), sizeof ha) == 0;
        close(t);
        return ok;
    }));
    close(cfd);
}

TEST_CASE("the endpoint's timer drives it: 50 pings, one per millisecond, all answered") {
    EngineFixture f;
    sockaddr_in aa{}, ba{};
    int afd = udp_socket(&aa), bfd = udp_socket(&ba);
    TestEndpoint a, b;
    a.echo = false;
    int sent = 0;
    const Addr to = addr_of(ba);
    a.on_timer = [&](Time now, TestEndpoint& self) {
        self.out.push_back(Datagram{{}, to, {'p', static_cast<uint8_t>(sent)}});
        if (++sent < 50) self.timer = now + 1'000'000;
    };
    UdpHost* hb = host_on(*f.e, bfd, b);
    UdpHost* ha = nullptr;
    on_engine(*f.e, [&](Engine& en) {
        a.timer = gs::engine::now_ns();   // due at once
        int err = 0;
        ha = UdpHost::start(en, afd, a, {}, nullptr, nullptr, &err);
        REQUIRE(ha != nullptr);
    });
    CHECK(eventually([&] { return a.got.load() == 50; }));
    CHECK(b.got.load() == 50);
    CHECK(a.timeouts.load() == 50);
    on_engine(*f.e, [&](Engine& en) {
        CHECK(ha->stats().timeouts == 50);
        ha->close(en);
        hb->close(en);
    });
}

TEST_CASE("runs to one peer go out as GSO batches and arrive whole, in order (GRO on the way in)") {
    EngineFixture f;
    sockaddr_in sa{}, ra{};
    int sfd = udp_socket(&sa), rfd = udp_socket(&ra);
    TestEndpoint sender, receiver;
    sender.echo = receiver.echo = false;
    receiver.record = true;
    UdpHost* hr = host_on(*f.e, rfd, receiver);
    UdpHost* hs = host_on(*f.e, sfd, sender);
    const int kCount = 3000;
    const Addr to = addr_of(ra);
    for (int burst = 0; burst < kCount / 300; ++burst) {
        on_engine(*f.e, [&](Engine& en) {
            for (int i = burst * 300; i < (burst + 1) * 300; ++i) {
                std::vector<uint8_t> p(1200, static_cast<uint8_t>(i));
                memcpy(p.data(), &i, sizeof i);
                sender.out.push_back(Datagram{{}, to, std::move(p)});
            }
            hs->poke(en);
        });
        REQUIRE(eventually([&] { return receiver.got.load() == static_cast<uint64_t>((burst + 1) * 300); }));
    }
    on_engine(*f.e, [&](Engine& en) {
        const UdpHostStats& s = hs->stats();
        MESSAGE("3000 x 1200 B: ", s.tx_calls, " sendmmsg calls, ", s.tx_gso_batches, " GSO batches; receiver: ",
                hr->stats().rx_calls, " recvmmsg calls, ", hr->stats().rx_gro_batches, " GRO batches");
        CHECK(s.tx_datagrams == kCount);
        CHECK(s.tx_gso_batches > 0);
        CHECK(s.tx_calls < kCount / 10);
        CHECK(hr->stats().rx_datagrams == kCount);
        REQUIRE(receiver.seen.size() == static_cast<size_t>(kCount));
        for (int i = 0; i < kCount; ++i) {
            int n = -1;
            memcpy(&n, receiver.seen[static_cast<size_t>(i)].data(), sizeof n);
            CHECK(n == i);
            CHECK(receiver.seen[static_cast<size_t>(i)].size() == 1200);
        }
        hs->close(en);
        hr->close(en);
    });
}

TEST_CASE("a datagram the kernel refuses is counted and lost; the rest go") {
    EngineFixture f;
    sockaddr_in sa{}, ra{};
    int sfd = udp_socket(&sa), rfd = udp_socket(&ra);
    TestEndpoint sender;
    sender.echo = false;
    UdpHost* hs = host_on(*f.e, sfd, sender);
    on_engine(*f.e, [&](Engine& en) {
        Addr v6;   // an IPv6 peer for an IPv4 socket
        v6.ip[15] = 1;
        v6.port = 9;
        sender.out.push_back(Datagram{{}, addr_of(ra), {'a'}});
        sender.out.push_back(Datagram{{}, v6, {'b'}});
        sender.out.push_back(Datagram{{}, addr_of(ra), std::vector<uint8_t>(70000, 'c')});   // EMSGSIZE
        sender.out.push_back(Datagram{{}, addr_of(ra), {'d'}});
        hs->poke(en);
        CHECK(hs->stats().tx_errors == 2);
        CHECK(hs->stats().tx_datagrams == 2);
    });
    char buf[16];
    CHECK(recv(rfd, buf, sizeof buf, 0) == 1);
    CHECK(buf[0] == 'a');
    CHECK(recv(rfd, buf, sizeof buf, 0) == 1);
    CHECK(buf[0] == 'd');
    on_engine(*f.e, [&](Engine& en) { hs->close(en); });
    close(rfd);
}

TEST_CASE("start refuses what is not a bound UDP/IP socket") {
    EngineFixture f;
    int sp[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_DGRAM, 0, sp) == 0);
    TestEndpoint ep;
    on_engine(*f.e, [&](Engine& en) {
        int err = 0;
        CHECK(UdpHost::start(en, sp[0], ep, {}, nullptr, nullptr, &err) == nullptr);
        CHECK(err == -EAFNOSUPPORT);
        CHECK(UdpHost::start(en, 12345, ep, {}, nullptr, nullptr, &err) == nullptr);
        CHECK(err == -EBADF);
    });
    close(sp[0]);
    close(sp[1]);
}

// Lets `sender` (an endpoint with a `total` to build) send `count`
// datagrams, `burst` per poke, each burst received before the next; `after`
// runs on the engine thread right after each poke.
template <class Sender>
void send_in_bursts(Engine& e, UdpHost& hs, Sender& sender, TestEndpoint& receiver, int count, int burst,
                    const std::function<void()>& after = {}) {
    for (int sent = 0; sent < count; sent += burst) {
        on_engine(e, [&](Engine& en) {
            sender.total += burst;
            hs.poke(en);
            if (after) after();
        });
        REQUIRE(eventually([&] { return receiver.got.load() == static_cast<uint64_t>(sender.total); }));
    }
}

// An endpoint that builds each datagram into the buffer it is handed, as
// mces::Endpoint does: sizes alternate, so a reused buffer shrinks and grows.
struct BuildingEndpoint final : gs::sansio::Endpoint {
    Addr to;
    int total = 0, built = 0, reused = 0;
    void on_datagram(const Addr&, const Addr&, std::span<const uint8_t>, Time) override {}
    void on_timeout(Time) override {}
    Time next_timeout() const override { return kNever; }
    bool poll_transmit(Datagram& d) override {
        if (built == total) return false;
        if (d.bytes.capacity() > 0) ++reused;
        const size_t size = built % 3 == 0 ? 40 : 1200;
        d.bytes.resize(size);
        for (size_t i = 0; i < size; ++i) d.bytes[i] = static_cast<uint8_t>(built + i);
        memcpy(d.bytes.data(), &built, sizeof built);
        d.to = to;
        ++built;
        return true;
    }
};

TEST_CASE("sent datagrams' buffers are handed back to the endpoint, and what it builds in them arrives intact") {
    EngineFixture f;
    sockaddr_in sa{}, ra{};
    int sfd = udp_socket(&sa), rfd = udp_socket(&ra);
    TestEndpoint receiver;
    receiver.echo = false;
    receiver.record = true;
    BuildingEndpoint sender;
    sender.to = addr_of(ra);
    UdpHost* hr = host_on(*f.e, rfd, receiver);
    UdpHost* hs = host_on(*f.e, sfd, sender);
    const int kCount = 2000;
    send_in_bursts(*f.e, *hs, sender, receiver, kCount, 200);
    on_engine(*f.e, [&](Engine& en) {
        // Every burst after the first is built in buffers of earlier ones.
        MESSAGE(sender.reused, " of ", kCount, " datagrams built in a reused buffer");
        CHECK(sender.reused >= kCount - 200);
        REQUIRE(receiver.seen.size() == static_cast<size_t>(kCount));
        for (int i = 0; i < kCount; ++i) {
            const std::string& s = receiver.seen[static_cast<size_t>(i)];
            REQUIRE(s.size() == (i % 3 == 0 ? 40u : 1200u));
            int n = -1;
            memcpy(&n, s.data(), sizeof n);
            CHECK(n == i);
            bool same = true;
            for (size_t k = sizeof n; k < s.size(); ++k) same &= static_cast<uint8_t>(s[k]) == static_cast<uint8_t>(i + k);
            CHECK(same);
        }
        hs->close(en);
        hr->close(en);
    });
}

// An endpoint that leaves each datagram's payload in its own store
// (Datagram::may_hold), as mces::Endpoint leaves stream data in the send
// buffer: the host sends header + payload + trailer from three places.
struct HoldingEndpoint final : gs::sansio::Endpoint {
    Addr to;
    int total = 0, built = 0, held = 0;
    std::vector<uint8_t> store = std::vector<uint8_t>(1 << 20);
    void on_datagram(const Addr&, const Addr&, std::span<const uint8_t>, Time) override {}
    void on_timeout(Time) override {}
    Time next_timeout() const override { return kNever; }
    bool poll_transmit(Datagram& d) override {
        if (built == total) return false;
        const size_t len = 1000 + static_cast<size_t>(built % 7);   // runs end where the size changes
        const size_t at = (static_cast<size_t>(built) * 1009) % (store.size() - 2000);
        for (size_t i = 0; i < len; ++i) store[at + i] = static_cast<uint8_t>(built * 31 + i);
        d.bytes.resize(6);
        memcpy(d.bytes.data(), &built, 4);
        d.bytes[4] = 0xEE;   // the trailer, after the held part
        d.bytes[5] = static_cast<uint8_t>(built);
        d.to = to;
        if (d.may_hold) {
            d.split = 4;
            // Two pieces, as a ring that wraps gives.
            d.held[0] = std::span<const uint8_t>(store).subspan(at, 300);
            d.held[1] = std::span<const uint8_t>(store).subspan(at + 300, len - 300);
            ++held;
        } else {
            d.bytes.insert(d.bytes.begin() + 4, store.begin() + static_cast<long>(at),
                           store.begin() + static_cast<long>(at + len));
        }
        ++built;
        return true;
    }
};

TEST_CASE("payload an endpoint holds goes out from its buffers, between the datagram's own bytes") {
    EngineFixture f;
    sockaddr_in ra{};
    int sfd = udp_socket(), rfd = udp_socket(&ra);
    TestEndpoint receiver;
    receiver.echo = false;
    receiver.record = true;
    HoldingEndpoint sender;
    sender.to = addr_of(ra);
    UdpHost* hr = host_on(*f.e, rfd, receiver);
    UdpHost* hs = host_on(*f.e, sfd, sender);
    const int kCount = 2000;
    // The host is done with the store when poke returns (what waits for
    // POLLOUT was copied): scribbling on it changes nothing sent.
    send_in_bursts(*f.e, *hs, sender, receiver, kCount, 250,
                   [&] { std::fill(sender.store.begin(), sender.store.end(), uint8_t{0x55}); });
    on_engine(*f.e, [&](Engine& en) {
        CHECK(sender.held == kCount);
        MESSAGE(hs->stats().tx_gso_batches, " GSO batches, ", hs->stats().tx_held_copied,
                " held datagrams copied to wait for room");
        CHECK(hs->stats().tx_gso_batches > 0);
        REQUIRE(receiver.seen.size() == static_cast<size_t>(kCount));
        for (int i = 0; i < kCount; ++i) {
            const std::string& s = receiver.seen[static_cast<size_t>(i)];
            const size_t len = 1000 + static_cast<size_t>(i % 7);
            REQUIRE(s.size() == len + 6);
            int n = -1;
            memcpy(&n, s.data(), 4);
            CHECK(n == i);
            bool same = true;
            for (size_t k = 0; k < len; ++k) same &= static_cast<uint8_t>(s[4 + k]) == static_cast<uint8_t>(i * 31 + k);
            CHECK(same);
            CHECK(static_cast<uint8_t>(s[4 + len]) == 0xEE);
            CHECK(static_cast<uint8_t>(s[5 + len]) == static_cast<uint8_t>(i));
        }
        hs->close(en);
        hr->close(en);
    });
}

TEST_CASE("Datagram::flatten puts held bytes where they go on the wire") {
    const std::vector<uint8_t> a{'b', 'c'}, b{'d'};
    Datagram d{{}, {}, {'a', 'e', 'f'}};
    d.split = 1;
    d.held[0] = a;
    d.held[1] = b;
    CHECK(d.size() == 6);
    CHECK(d.holds());
    d.flatten();
    CHECK(!d.holds());
    CHECK(d.size() == 6);
    CHECK(std::string(d.bytes.begin(), d.bytes.end()) == "abcdef");
    d.flatten();   // nothing held: no change
    CHECK(std::string(d.bytes.begin(), d.bytes.end()) == "abcdef");
}

namespace {

// Datagram `seq`: its number, then bytes that depend on it and the position.
std::vector<uint8_t> numbered(uint32_t seq) {
    std::vector<uint8_t> v(100 + seq % 700);
    memcpy(v.data(), &seq, sizeof seq);
    for (size_t i = sizeof seq; i < v.size(); ++i) v[i] = static_cast<uint8_t>(seq * 31 + i * 7);
    return v;
}
bool intact(std::span<const uint8_t> b) {
    uint32_t seq = 0;
    if (b.size() < sizeof seq) return false;
    memcpy(&seq, b.data(), sizeof seq);
    return std::ranges::equal(b, numbered(seq));
}

// Keeps views of what arrives (as mces borrow_receive does) until
// on_batch_end, which checks they are still intact and copies the unread ones.
struct BorrowingEndpoint final : gs::sansio::Endpoint {
    std::deque<std::span<const uint8_t>> views;
    std::deque<std::vector<uint8_t>> settled;   // copied at on_batch_end, read before views
    uint64_t got = 0, batch_ends = 0, settled_count = 0, broken_at_end = 0;
    void on_datagram(const Addr&, const Addr&, std::span<const uint8_t> b, Time) override {
        ++got;
        views.push_back(b);
    }
    void on_batch_end() override {
        ++batch_ends;
        for (auto v : views) {
            broken_at_end += !intact(v);
            settled.emplace_back(v.begin(), v.end());
            ++settled_count;
        }
        views.clear();
    }
    void on_timeout(Time) override {}
    Time next_timeout() const override { return kNever; }
    bool poll_transmit(Datagram&) override { return false; }
};

// The owner: reads at most `per_call` datagrams per Activity, checking each.
struct PartialReader {
    BorrowingEndpoint* ep = nullptr;
    size_t per_call = 3;
    std::atomic<uint64_t> read{0}, bad{0};
    void take(size_t n) {
        for (; n > 0; --n) {
            if (!ep->settled.empty()) {
                bad += !intact(ep->settled.front());
                ep->settled.pop_front();
            } else if (!ep->views.empty()) {
                bad += !intact(ep->views.front());
                ep->views.pop_front();
            } else {
                return;
            }
            ++read;
        }
    }
    static void activity(Engine&, void* self) noexcept {
        auto* r = static_cast<PartialReader*>(self);
        r->take(r->per_call);
    }
};

}  // namespace

TEST_CASE("received bytes stay intact until on_batch_end; what the owner leaves is right after the scratch is reused") {
    EngineFixture f;
    sockaddr_in ha{};
    int hfd = udp_socket(&ha);
    int cfd = udp_socket();
    BorrowingEndpoint ep;
    PartialReader reader;
    reader.ep = &ep;
    UdpHost* h = nullptr;
    on_engine(*f.e, [&](Engine& en) {
        int err = 1;
        h = UdpHost::start(en, hfd, ep, {}, &PartialReader::activity, &reader, &err);
        CHECK(err == 0);
    });
    REQUIRE(h != nullptr);
    constexpr uint32_t kCount = 3000;
    for (uint32_t s = 0; s < kCount; ++s) {
        const auto m = numbered(s);
        REQUIRE(sendto(cfd, m.data(), m.size(), 0, reinterpret_cast<sockaddr*>(&ha), sizeof ha) ==
                static_cast<ssize_t>(m.size()));
    }
    // Everything sent has arrived (or was dropped by the kernel): the counts settle.
    uint64_t last = ~uint64_t{0};
    for (int quiet = 0; quiet < 5;) {
        usleep(20'000);
        uint64_t now = 0;
        on_engine(*f.e, [&](Engine&) { now = h->stats().rx_datagrams; });
        quiet = now == last ? quiet + 1 : 0;
        last = now;
    }
    on_engine(*f.e, [&](Engine& en) {
        CHECK(ep.got == h->stats().rx_datagrams);
        CHECK(ep.got > kCount / 2);
        CHECK(ep.views.empty());            // every batch ended
        CHECK(ep.batch_ends >= 2);          // more than one batch went through the scratch
        CHECK(ep.broken_at_end == 0);       // nothing overwrote a view before its on_batch_end
        CHECK(ep.settled_count > 0);        // the owner left some: they were copied
        reader.take(SIZE_MAX);              // the rest, long after the scratch was reused
        CHECK(reader.read.load() == ep.got);
        CHECK(reader.bad.load() == 0);
        h->close(en);
    });
    close(cfd);
}
