// The engine's bridge on its own, without the shim (so TSan can watch the
// engine thread and the application thread share a BridgeState): connect,
// relay both ways, half-close, refused connects, the owner's callback.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>

#include "core/engine/bridge.h"

using namespace gs::engine;

namespace {

// A TCP echo server on 127.0.0.1 for one connection (echoes until EOF).
struct EchoServer {
    int fd = -1;
    sockaddr_in addr{};
    std::thread t;
    EchoServer() {
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
            char buf[65536];
            for (;;) {
                ssize_t n = recv(c, buf, sizeof buf, 0);
                if (n <= 0) break;
                for (ssize_t off = 0; off < n;) {
                    ssize_t w = send(c, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
                    if (w <= 0) break;
                    off += w;
                }
            }
            shutdown(c, SHUT_WR);
            close(c);
        });
    }
    ~EchoServer() {
        shutdown(fd, SHUT_RDWR);
        t.join();
        close(fd);
    }
};

struct Owner {
    BridgeState state;
    std::atomic<bool> done{false};
    static void on_done(BridgeState* s) noexcept {
        static_cast<Owner*>(s->owner)->done.store(true);
    }
};

// What the shim does at connect: a socketpair, the program keeps one end.
int prepare(Owner& o, const sockaddr_in& to, uint64_t rate_up = 0) {
    int sp[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
    o.state.transport = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    o.state.app_end = sp[1];
    memcpy(&o.state.peer, &to, sizeof to);
    o.state.peer_len = sizeof to;
    o.state.rate_up = rate_up;
    o.state.on_done = &Owner::on_done;
    o.state.owner = &o;
    return sp[0];
}

template <class F>
bool eventually(F pred) {
    for (int i = 0; i < 10000 && !pred(); ++i) usleep(1000);
    return pred();
}

}  // namespace

TEST_CASE("a bridge connects, relays both ways and ends when both sides have closed") {
    Engine* e = Engine::create(Options{}, nullptr);
    REQUIRE(e != nullptr);
    EchoServer srv;
    Owner o;
    std::atomic<uint64_t> out{0}, in{0};
    o.state.bytes_out = &out;
    o.state.bytes_in = &in;
    int prog = prepare(o, srv.addr);
    start_bridge(*e, o.state);
    CHECK(o.state.wait_connected() == 0);
    CHECK(o.state.phase.load() == BridgeState::connected);

    std::string sent(3 * 1024 * 1024 + 17, '\0');
    for (size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<char>(i * 131 + 7);
    std::thread writer([&] {
        for (size_t off = 0; off < sent.size();) {
            ssize_t w = send(prog, sent.data() + off, sent.size() - off, MSG_NOSIGNAL);
            if (w <= 0) return;
            off += static_cast<size_t>(w);
        }
        shutdown(prog, SHUT_WR);   // half-close: the echo server sees EOF and closes
    });
    std::string got;
    char buf[65536];
    for (;;) {
        ssize_t n = recv(prog, buf, sizeof buf, 0);
        if (n <= 0) break;
        got.append(buf, static_cast<size_t>(n));
    }
    writer.join();
    CHECK(got.size() == sent.size());
    CHECK(got == sent);
    close(prog);
    CHECK(eventually([&] { return o.done.load(); }));
    CHECK(out.load() == sent.size());
    CHECK(in.load() == sent.size());
    CHECK(o.state.error.load() == 0);
    close(o.state.transport);   // the owner's, once both sides are done
    Engine::destroy(e);
}

TEST_CASE("a refused connect is reported once, and the program's end sees the end") {
    Engine* e = Engine::create(Options{}, nullptr);
    REQUIRE(e != nullptr);
    sockaddr_in closed{};
    {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        closed.sin_family = AF_INET;
        closed.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof closed;
        REQUIRE(bind(s, reinterpret_cast<sockaddr*>(&closed), sizeof closed) == 0);
        REQUIRE(getsockname(s, reinterpret_cast<sockaddr*>(&closed), &len) == 0);
        close(s);   // nobody listens there now
    }
    Owner o;
    int prog = prepare(o, closed);
    start_bridge(*e, o.state);
    CHECK(o.state.wait_connected() == ECONNREFUSED);
    CHECK(o.state.phase.load() == BridgeState::failed);
    char c;
    CHECK(recv(prog, &c, 1, 0) == 0);   // EOF: the shim's hooks turn it into the error
    CHECK(eventually([&] { return o.done.load(); }));
    close(prog);
    close(o.state.transport);
    Engine::destroy(e);
}

namespace {
void on_alarm(int) {}
}  // namespace

TEST_CASE("a blocking connect's wait ends as the kernel's would: SO_SNDTIMEO and signals") {
    BridgeState s;   // never started: the answer never comes
    int64_t t0 = now_ns();
    CHECK(s.wait_connected(50'000'000) == EINPROGRESS);
    CHECK(now_ns() - t0 >= 50'000'000);

    struct sigaction sa{}, old{};
    sa.sa_handler = on_alarm;   // no SA_RESTART: the wait is interrupted
    sigemptyset(&sa.sa_mask);
    REQUIRE(sigaction(SIGALRM, &sa, &old) == 0);
    itimerval it{};
    it.it_value.tv_usec = 20'000;
    setitimer(ITIMER_REAL, &it, nullptr);
    CHECK(s.wait_connected() == EINTR);
    sigaction(SIGALRM, &old, nullptr);

    s.phase.store(BridgeState::failed);
    s.error.store(ETIMEDOUT);
    s.connect_done.store(1);
    CHECK(s.wait_connected() == ETIMEDOUT);   // an answer wins over everything
}
