// Overlay members on the engine (core/engine/overlay_host.h): real UDP
// sockets on 127.0.0.1, HC and DT nodes, the program's side through the
// SOCK_SEQPACKET pair exactly as the API uses it: join, sendToAll, a
// delivery with its source, a refused request counted, close = leave.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tests/core/on_engine.h"
#include "core/engine/overlay_host.h"
#include "core/engine/overlay_status.h"
#include "core/overlay/dt/dt_node.h"
#include "core/overlay/hc/hc_node.h"

using namespace gs::engine;
using gs::engine::test::eventually;
using gs::engine::test::on_engine;
namespace ov = gs::overlay;
using gs::sansio::Addr;

namespace {


constexpr uint64_t kOverlay = 0x1234'5678'9abc'def0ull;

struct Member {
    int udp = -1, prog = -1, eng = -1;
    Addr addr;
    OverlayShared shared;
    OverlayHost* host = nullptr;
    Member() {
        udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(bind(udp, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        socklen_t len = sizeof a;
        getsockname(udp, reinterpret_cast<sockaddr*>(&a), &len);
        addr = Addr::v4(ntohl(a.sin_addr.s_addr), ntohs(a.sin_port));
        int sp[2];
        REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == 0);
        prog = sp[0];
        eng = sp[1];
    }
    void start(Engine& e, std::unique_ptr<ov::Node> node) {
        on_engine(e, [&](Engine& en) {
            int err = 1;
            host = OverlayHost::start(en, std::move(node), udp, eng, shared, &err);
            CHECK(err == 0);
        });
        REQUIRE(host != nullptr);
    }
    void request(OverlayRequest r, const std::string& payload = {}) {
        iovec iov[2] = {{&r, sizeof r}, {const_cast<char*>(payload.data()), payload.size()}};
        msghdr m{};
        m.msg_iov = iov;
        m.msg_iovlen = 2;
        REQUIRE(sendmsg(prog, &m, 0) == static_cast<ssize_t>(sizeof r + payload.size()));
    }
    // The next delivery within `ms`, or source kNoAddress.
    std::pair<uint64_t, std::string> receive(int ms = 5000) {
        pollfd p{prog, POLLIN, 0};
        if (poll(&p, 1, ms) != 1) return {ov::kNoAddress, {}};
        char buf[2048];
        ssize_t n = recv(prog, buf, sizeof buf, 0);
        if (n < static_cast<ssize_t>(sizeof(OverlayDelivery))) return {ov::kNoAddress, {}};
        OverlayDelivery d;
        memcpy(&d, buf, sizeof d);
        return {d.source, std::string(buf + sizeof d, static_cast<size_t>(n) - sizeof d)};
    }
};

using MakeNode = std::function<std::unique_ptr<ov::Node>(const Addr& self, int index, std::vector<Addr> boot)>;

void group_of_five(const MakeNode& make) {
    Engine* e = Engine::create(Options{}, nullptr);
    REQUIRE(e != nullptr);
    {
        Member m[5];
        for (int i = 0; i < 5; ++i) {
            std::vector<Addr> boot;
            if (i > 0) boot.push_back(m[0].addr);
            m[i].start(*e, make(m[i].addr, i, boot));
            m[i].request(OverlayRequest{OverlayRequest::join});
            REQUIRE(eventually([&] { return m[i].shared.joined.load() == 1; }, 15000));
        }
        // Every member knows its neighbours before the broadcast.
        REQUIRE(eventually([&] {
            bool all = true;
            on_engine(*e, [&](Engine&) {
                for (auto& x : m) all = all && !x.host->node().neighbors().empty();
            });
            return all;
        }, 15000));
        usleep(300'000);
        m[2].request(OverlayRequest{OverlayRequest::send, static_cast<uint8_t>(ov::SendTo::all)}, "hello, overlay");
        for (int i = 0; i < 5; ++i) {
            if (i == 2) continue;
            auto [src, msg] = m[i].receive();
            CHECK(src == m[2].shared.address.load());
            CHECK(msg == "hello, overlay");
        }
        CHECK(m[2].shared.sent.load() == 1);
        // Exactly once: nothing more comes.
        for (int i = 0; i < 5; ++i)
            if (i != 2) CHECK(m[i].receive(200).first == ov::kNoAddress);
        // A request the node refuses is counted with its errno (a payload
        // larger than the overlay carries).
        m[1].request(OverlayRequest{OverlayRequest::send, static_cast<uint8_t>(ov::SendTo::all)}, std::string(60000, 'x'));
        CHECK(eventually([&] { return m[1].shared.refused.load() == 1; }));
        CHECK(m[1].shared.last_refusal.load() == EINVAL);
        // What gsctl overlay members shows: every listed member with its
        // neighbours, parent and children for a root; a freed member is gone.
        const uint64_t root = m[0].shared.address.load();
        std::string all, tree;
        on_engine(*e, [&](Engine&) {
            for (auto& x : m) overlay_listed(x.host, 77, "XX");
            overlay_listed(m[0].host, 77, "XX");   // twice: listed once
            all = overlays_json("");
            tree = overlays_json(std::to_string(root));
        });
        auto count = [](const std::string& s, const std::string& what) {
            size_t n = 0;
            for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
            return n;
        };
        CHECK(count(all, "\"overlay\":77,\"protocol\":\"XX\",\"joined\":true") == 5);
        CHECK(count(all, "\"parent\"") == 0);
        CHECK(count(tree, "\"root\":" + std::to_string(root)) == 5);
        CHECK(count(tree, "\"parent\":null") == 1);   // the root alone has none
        for (auto& x : m) CHECK(count(all, "\"address\":" + std::to_string(x.shared.address.load()) + ",") == 1);
        // Closing the program's end leaves the overlay and frees the member.
        const uint64_t gone = m[4].shared.address.load();
        close(m[4].prog);
        CHECK(eventually([&] { return m[4].shared.closed.load() == 1; }));
        CHECK(m[4].shared.joined.load() == 0);
        on_engine(*e, [&](Engine&) { all = overlays_json(""); });
        CHECK(count(all, "\"overlay\":77") == 4);
        CHECK(count(all, "\"address\":" + std::to_string(gone) + ",") == 0);
        on_engine(*e, [&](Engine& en) {
            for (int i = 0; i < 4; ++i) m[i].host->close(en);
        });
        for (int i = 0; i < 4; ++i) {
            CHECK(eventually([&] { return m[i].shared.closed.load() == 1; }));
            close(m[i].prog);
        }
        on_engine(*e, [&](Engine&) { all = overlays_json(""); });
        CHECK(all == "{\"overlays\":[]}\n");
    }
    Engine::destroy(e);
}

}  // namespace

TEST_CASE("five HC members on the engine: join, sendToAll once to each, refusals counted, close leaves") {
    group_of_five([](const Addr& self, int i, std::vector<Addr> boot) -> std::unique_ptr<ov::Node> {
        ov::hc::HcConfig cfg;
        cfg.ping_interval = 100'000'000;
        cfg.join_retry = 200'000'000;
        return std::make_unique<ov::hc::HcNode>(self, kOverlay, static_cast<uint64_t>(i) + 1, cfg, std::move(boot));
    });
}

TEST_CASE("five DT members on the engine: join, sendToAll once to each, refusals counted, close leaves") {
    static const int32_t xy[5][2] = {{0, 0}, {1000, 50}, {300, 900}, {-700, 400}, {200, -800}};
    group_of_five([](const Addr& self, int i, std::vector<Addr> boot) -> std::unique_ptr<ov::Node> {
        ov::dt::DtConfig cfg;
        cfg.hello_fast = 50'000'000;
        ov::LogicalAddress coords = (static_cast<uint64_t>(static_cast<uint32_t>(xy[i][0])) << 32) |
                                    static_cast<uint32_t>(xy[i][1]);
        return std::make_unique<ov::dt::DtNode>(self, kOverlay, coords, static_cast<uint64_t>(i) + 1, cfg, std::move(boot));
    });
}
