// MCES over real UDP on loopback, in the engine, beside TCP in the same run:
// one connection moves N bytes from a client endpoint to a server endpoint,
// each on its own UdpHost (GSO out, GRO in); the same N bytes over a TCP
// connection between two threads. Prints both rates and their ratio, and
// the UDP hosts' batching (datagrams per system call).
//
//   mces_loopback [--bytes N] [--datagram SIZE] [--rounds R]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/engine/engine.h"
#include "core/engine/udp_host.h"
#include "core/mces/conn/endpoint.h"

using namespace gs;
using Clock = std::chrono::steady_clock;

namespace {

void on_engine(engine::Engine& e, std::function<void(engine::Engine&)> fn) {
    struct Call final : engine::Command {
        std::function<void(engine::Engine&)> fn;
        std::atomic<bool> done{false};
        void run(engine::Engine& en) noexcept override {
            fn(en);
            done.store(true);
        }
    } c;
    c.fn = std::move(fn);
    e.submit(c);
    while (!c.done.load()) usleep(100);
}

int udp_socket(sansio::Addr& addr) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    int big = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    addr = sansio::Addr::v4(ntohl(a.sin_addr.s_addr), ntohs(a.sin_port));
    return fd;
}

struct Transfer {
    uint64_t total = 0, sent = 0, got = 0;
    bool fin_sent = false;
    std::atomic<bool> done{false};
    std::atomic<int> error{0};
    std::shared_ptr<mces::Connection> client, server;
    mces::Endpoint* cep = nullptr;
    mces::Endpoint* sep = nullptr;
    engine::UdpHost* ch = nullptr;
    engine::UdpHost* sh = nullptr;
    std::vector<uint8_t> chunk = std::vector<uint8_t>(256 * 1024, 'm');
    std::vector<uint8_t> sink = std::vector<uint8_t>(256 * 1024);

    void pump(engine::Engine& e) {
        if (!server) server = sep->accept();
        bool wrote = false;
        while (client && sent < total && client->state() == mces::Connection::State::established) {
            size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), total - sent));
            auto w = client->write({chunk.data(), n});
            if (w <= 0) break;
            sent += static_cast<uint64_t>(w);
            wrote = true;
        }
        if (client && sent == total && !fin_sent) {
            client->shutdown_write();
            fin_sent = wrote = true;
        }
        bool read = false;
        while (server) {
            auto r = server->read({sink.data(), sink.size()});
            if (r > 0) {
                got += static_cast<uint64_t>(r);
                read = true;
                continue;
            }
            if (r == 0) done.store(true);
            else if (r != -EAGAIN) error.store(static_cast<int>(-r));
            break;
        }
        if (client && client->state() == mces::Connection::State::closed && client->error()) error.store(client->error());
        if (wrote) ch->poke(e);
        if (read) sh->poke(e);   // the credit it gives back
    }
    static void activity(engine::Engine& e, void* self) noexcept { static_cast<Transfer*>(self)->pump(e); }
};

double mces_rate(engine::Engine& e, uint64_t bytes, size_t dgram, engine::UdpHostStats& cs, engine::UdpHostStats& ss) {
    sansio::Addr ca, sa;
    int cfd = udp_socket(ca), sfd = udp_socket(sa);
    mces::EndpointConfig ccfg, scfg;
    ccfg.local = ca;
    scfg.local = sa;
    ccfg.seed = 1;
    scfg.seed = 2;
    ccfg.conn.max_datagram_size = scfg.conn.max_datagram_size = dgram;
    ccfg.conn.send_buffer = scfg.conn.send_buffer = 8 << 20;
    ccfg.conn.recv_window = scfg.conn.recv_window = 4 << 20;
    ccfg.conn.recv_window_max = scfg.conn.recv_window_max = 16 << 20;
    auto cep = std::make_unique<mces::Endpoint>(ccfg);
    auto sep = std::make_unique<mces::Endpoint>(scfg);
    sep->listen(mces::wire::ServerConfig{});
    Transfer t;
    t.total = bytes;
    t.cep = cep.get();
    t.sep = sep.get();
    Clock::time_point start;
    on_engine(e, [&](engine::Engine& en) {
        int err = 0;
        t.sh = engine::UdpHost::start(en, sfd, *sep, {}, &Transfer::activity, &t, &err);
        t.ch = engine::UdpHost::start(en, cfd, *cep, {}, &Transfer::activity, &t, &err);
        start = Clock::now();
        cep->connect(sa, 1, mces::wire::Qos{}, engine::now_ns(), t.client);
        t.ch->poke(en);
    });
    auto deadline = Clock::now() + std::chrono::seconds(60);
    while (!t.done.load() && !t.error.load() && Clock::now() < deadline) usleep(200);
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    on_engine(e, [&](engine::Engine& en) {
        cs = t.ch->stats();
        ss = t.sh->stats();
        t.ch->close(en);
        t.sh->close(en);
        t.client.reset();
        t.server.reset();
    });
    if (!t.done.load() || t.got != bytes) {
        fprintf(stderr, "mces_loopback: transfer incomplete: %llu of %llu bytes, error %d\n",
                static_cast<unsigned long long>(t.got), static_cast<unsigned long long>(bytes), t.error.load());
        return 0;
    }
    return static_cast<double>(bytes) * 8 / secs / 1e9;
}

double tcp_rate(uint64_t bytes) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a);
    listen(l, 1);
    socklen_t len = sizeof a;
    getsockname(l, reinterpret_cast<sockaddr*>(&a), &len);
    std::thread rx([&] {
        int c = accept(l, nullptr, nullptr);
        std::vector<char> buf(256 * 1024);
        while (recv(c, buf.data(), buf.size(), 0) > 0) {
        }
        close(c);
    });
    int s = socket(AF_INET, SOCK_STREAM, 0);
    connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
    std::vector<char> buf(256 * 1024, 't');
    auto start = Clock::now();
    for (uint64_t left = bytes; left > 0;) {
        ssize_t n = send(s, buf.data(), std::min<uint64_t>(left, buf.size()), 0);
        if (n <= 0) break;
        left -= static_cast<uint64_t>(n);
    }
    shutdown(s, SHUT_WR);
    rx.join();
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    close(s);
    close(l);
    return static_cast<double>(bytes) * 8 / secs / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
    uint64_t bytes = 256ull << 20;
    size_t dgram = 1200;
    int rounds = 3;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            printf("usage: mces_loopback [--bytes N] [--datagram SIZE] [--rounds R]\n"
                   "Moves N bytes (256 MiB) over one MCES connection on loopback (two UDP hosts in the\n"
                   "engine, datagrams of SIZE bytes, 1200 by default, up to 65527) and over TCP, R rounds\n"
                   "(3) interleaved; prints Gbit/s, the ratio, and datagrams per system call.\n");
            return 0;
        } else if (a == "--bytes" && i + 1 < argc) {
            bytes = strtoull(argv[++i], nullptr, 10);
        } else if (a == "--datagram" && i + 1 < argc) {
            dgram = strtoul(argv[++i], nullptr, 10);
        } else if (a == "--rounds" && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else {
            fprintf(stderr, "mces_loopback: unknown argument %s (try --help)\n", argv[i]);
            return 2;
        }
    }
    engine::Engine* e = engine::Engine::create(engine::Options{}, nullptr);
    if (!e) {
        fprintf(stderr, "mces_loopback: the engine cannot start\n");
        return 1;
    }
    printf("round mces_gbps tcp_gbps ratio tx_dgrams_per_call rx_dgrams_per_call gso_batches\n");
    for (int r = 0; r < rounds; ++r) {
        engine::UdpHostStats cs, ss;
        double m = mces_rate(*e, bytes, dgram, cs, ss);
        double t = tcp_rate(bytes);
        printf("%d %.3f %.3f %.3f %.1f %.1f %llu\n", r + 1, m, t, t > 0 ? m / t : 0,
               cs.tx_calls ? static_cast<double>(cs.tx_datagrams) / static_cast<double>(cs.tx_calls) : 0,
               ss.rx_calls ? static_cast<double>(ss.rx_datagrams) / static_cast<double>(ss.rx_calls) : 0,
               static_cast<unsigned long long>(cs.tx_gso_batches));
        fflush(stdout);
    }
    engine::Engine::destroy(e);
    return 0;
}
