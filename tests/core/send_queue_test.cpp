// Priority between a process's flows under its send aggregate ([general]
// rate_up): the engine's send queue (core/engine/send_queue.h) gives the
// aggregate's tokens to a realtime flow before a reliable one, and shares
// them between flows of one class. Own binary: the aggregate buckets are
// one per process.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "core/engine/bridge.h"

using namespace gs::engine;
using gs::policy::ServiceClass;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kAggregate = 2'000'000;   // bytes/s

// Counts what one connection brings; notes when `target` bytes were in.
struct Sink {
    int fd = -1;
    sockaddr_in addr{};
    std::thread t;
    std::atomic<uint64_t> got{0};
    std::atomic<int64_t> reached_ns{0};
    uint64_t target;
    explicit Sink(uint64_t target_bytes) : target(target_bytes) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr;
        REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        REQUIRE(listen(fd, 4) == 0);
        REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
        t = std::thread([this] {
            int c = accept(fd, nullptr, nullptr);
            if (c < 0) return;
            static thread_local char buf[65536];
            for (;;) {
                ssize_t n = recv(c, buf, sizeof buf, 0);
                if (n <= 0) break;
                if (got.fetch_add(static_cast<uint64_t>(n)) + static_cast<uint64_t>(n) >= target &&
                    reached_ns.load() == 0)
                    reached_ns.store(Clock::now().time_since_epoch().count());
            }
            close(c);
        });
    }
    ~Sink() {
        t.join();
        close(fd);
    }
};

struct Flow {
    BridgeState state;
    std::atomic<bool> done{false};
    int prog = -1;
    static void on_done(BridgeState* s) noexcept { static_cast<Flow*>(s->owner)->done.store(true); }
    Flow(Engine& e, const sockaddr_in& to, ServiceClass c) {
        int sp[2];
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
        prog = sp[0];
        state.transport = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        state.app_end = sp[1];
        memcpy(&state.peer, &to, sizeof to);
        state.peer_len = sizeof to;
        state.aggregate_up = kAggregate;
        state.service = c;
        state.on_done = &Flow::on_done;
        state.owner = this;
        start_bridge(e, state);
        REQUIRE(state.wait_connected() == 0);
    }
    void finish() {
        close(prog);
        for (int i = 0; i < 20000 && !done.load(); ++i) usleep(1000);
        CHECK(done.load());
        close(state.transport);
    }
};

bool write_all(int fd, size_t n) {
    std::vector<char> buf(65536, 'x');
    while (n > 0) {
        ssize_t w = send(fd, buf.data(), n < buf.size() ? n : buf.size(), MSG_NOSIGNAL);
        if (w <= 0) return false;
        n -= static_cast<size_t>(w);
    }
    return true;
}

// A reliable flow saturates the aggregate; 200 ms in, a flow of class `c`
// sends `size` bytes. Returns the seconds its peer took to have them all.
double second_flow_seconds(ServiceClass c, uint64_t size) {
    Engine* e = Engine::create(Options{}, nullptr);
    REQUIRE(e != nullptr);
    double secs = 0;
    {
        const uint64_t bulk_bytes = 2 * kAggregate;   // more than the test lasts
        Sink bulk_sink(bulk_bytes), second_sink(size);
        Flow bulk(*e, bulk_sink.addr, ServiceClass::reliable);
        Flow second(*e, second_sink.addr, c);
        std::thread writer([&] { write_all(bulk.prog, bulk_bytes); });
        usleep(200'000);
        CHECK(bulk_sink.got.load() > 0);   // the bulk flow is going
        int64_t start = Clock::now().time_since_epoch().count();
        REQUIRE(write_all(second.prog, size));
        for (int i = 0; i < 5000 && second_sink.reached_ns.load() == 0; ++i) usleep(1000);
        REQUIRE(second_sink.reached_ns.load() != 0);
        secs = static_cast<double>(second_sink.reached_ns.load() - start) / 1e9;
        // Let the bulk flow end: its peer stops reading nothing, the writer
        // is told by the half-close.
        shutdown(bulk.prog, SHUT_RDWR);
        writer.join();
        bulk.finish();
        second.finish();
    }
    Engine::destroy(e);
    return secs;
}

}  // namespace

TEST_CASE("under a send aggregate a realtime flow goes first; two reliable flows share") {
    const uint64_t size = kAggregate / 5;   // 0.2 s of the whole aggregate, 0.4 s of half of it
    double rt = second_flow_seconds(ServiceClass::realtime, size);
    double same = second_flow_seconds(ServiceClass::reliable, size);
    MESSAGE("400 kB beside a saturating reliable flow at 2 MB/s: realtime ", rt, " s, reliable ", same, " s");
    CHECK(rt < 0.3);     // the whole aggregate: 0.2 s
    CHECK(same > 0.32);  // half of it: 0.4 s
}
