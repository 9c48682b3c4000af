// mces_dgram: MCES datagram service (class 0) against kernel UDP, packets per
// second on loopback, side by side in one run (issue 4: at least 0.5x).
//
// MCES: one class-0 connection between two endpoints, each on a UdpHost on
// its own engine thread (what two processes do); the sender queues messages
// with send_datagram as fast as the connection takes them, the receiver takes
// them with recv_datagram. UDP: one connected socket per side, a thread each,
// send() and recv(). Both carry the same number of same-size messages; a run
// ends 200 ms after the last message arrived. Neither is reliable: messages
// the receiver's socket had no room for are lost, and the delivered share is
// reported beside the rate.
#include <sys/utsname.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/net.h"
#include "core/engine/engine.h"
#include "core/engine/udp_host.h"
#include "core/mces/conn/endpoint.h"

namespace engine = gs::engine;
namespace mces = gs::mces;
namespace sansio = gs::sansio;

namespace {

constexpr const char* kUsage =
    "usage: mces_dgram [--count N] [--size B] [--rounds R] [--out PREFIX]\n"
    "N messages (1,000,000) of B bytes (1200; 16 to 1400) over an MCES class-0 (datagram) connection on\n"
    "loopback, one engine thread per end, and over a pair of connected UDP sockets with a thread per end,\n"
    "R rounds (3) interleaved. Prints one line per run (messages/s received, share delivered) and\n"
    "progress on stderr; --out PREFIX writes PREFIX.md and PREFIX.svg. Compare ratios from one run.\n";

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

struct Run {
    std::string what;
    int round = 0;
    uint64_t sent = 0, got = 0;
    double pps = 0;   // received per second, first send to last receive
    uint64_t tx_kernel = 0, tx_dropped = 0, rx_kernel = 0;   // MCES: what the hosts saw
};

struct Flow {
    uint64_t count = 0, sent = 0;
    size_t size = 0;
    std::atomic<uint64_t> got{0};
    std::atomic<int64_t> first_tx{0}, last_rx{0};
    std::atomic<int> error{0};
    std::shared_ptr<mces::Connection> client, server;
    mces::Endpoint* sep = nullptr;
    engine::UdpHost *ch = nullptr, *sh = nullptr;
    std::vector<uint8_t> msg, sink = std::vector<uint8_t>(2048);

    // Fills the connection's queue, has the host send it, and goes on while
    // the kernel takes everything; once the host holds a backlog (the socket
    // is full) it waits for the host's next activity (POLLOUT): backpressure,
    // as a blocking send() gives the UDP sender.
    void client_pump(engine::Engine& e) {
        if (!client || client->state() != mces::Connection::State::established) return;
        if (first_tx.load() == 0) first_tx.store(now_ns());
        while (sent < count) {
            uint64_t queued = 0;
            while (sent + queued < count) {
                std::ptrdiff_t r = client->send_datagram({msg.data(), size});
                if (r == -EAGAIN) break;
                if (r < 0) {
                    error.store(static_cast<int>(-r));
                    return;
                }
                ++queued;
            }
            sent += queued;
            if (queued == 0) return;
            const uint64_t before = ch->stats().tx_datagrams;
            ch->poke(e);
            if (ch->stats().tx_datagrams - before < queued) return;
        }
    }
    void server_pump(engine::Engine&) {
        if (!server) server = sep->accept();
        while (server) {
            std::ptrdiff_t r = server->recv_datagram({sink.data(), sink.size()});
            if (r < 0) break;
            got.fetch_add(1, std::memory_order_relaxed);
            last_rx.store(now_ns(), std::memory_order_relaxed);
        }
    }
    static void client_activity(engine::Engine& e, void* s) noexcept { static_cast<Flow*>(s)->client_pump(e); }
    static void server_activity(engine::Engine& e, void* s) noexcept { static_cast<Flow*>(s)->server_pump(e); }
};

// Waits until `got` has not moved for 200 ms after everything was sent (or 60 s).
template <class Sent>
void settle(std::atomic<uint64_t>& got, Sent all_sent) {
    const int64_t give_up = now_ns() + 60'000'000'000;
    uint64_t last = ~0ull;
    int64_t still_since = now_ns();
    while (now_ns() < give_up) {
        usleep(10'000);
        const uint64_t g = got.load();
        if (g != last) {
            last = g;
            still_since = now_ns();
        } else if (all_sent() && now_ns() - still_since > 200'000'000) {
            return;
        }
    }
}

Run mces_run(engine::Engine& ce, engine::Engine& se, uint64_t count, size_t size) {
    Run res;
    res.what = "mces";
    uint16_t cp = 0, sp = 0;
    int cfd = bench::loopback_udp(&cp), sfd = bench::loopback_udp(&sp);
    if (cfd < 0 || sfd < 0) {
        fprintf(stderr, "mces_dgram: no UDP socket: %s\n", strerror(errno));
        return res;
    }
    const sansio::Addr ca = sansio::Addr::v4(INADDR_LOOPBACK, cp), sa = sansio::Addr::v4(INADDR_LOOPBACK, sp);
    mces::EndpointConfig ccfg, scfg;
    ccfg.local = ca;
    scfg.local = sa;
    ccfg.seed = 1;
    scfg.seed = 2;
    // Packets up to an Ethernet MTU's UDP payload: a message of up to 1400 B
    // and MCES's header fit one, as the UDP run's message does.
    ccfg.conn.max_datagram_size = scfg.conn.max_datagram_size = 1472;
    auto cep = std::make_unique<mces::Endpoint>(ccfg);
    auto sep = std::make_unique<mces::Endpoint>(scfg);
    sep->listen(mces::wire::ServerConfig{});
    Flow f;
    f.count = count;
    f.size = size;
    f.msg.assign(size, 'd');
    f.sep = sep.get();
    engine::run_on_engine(se, [&](engine::Engine& en) {
        int err = 0;
        f.sh = engine::UdpHost::start(en, sfd, *sep, {}, &Flow::server_activity, &f, &err);
    });
    engine::run_on_engine(ce, [&](engine::Engine& en) {
        int err = 0;
        f.ch = engine::UdpHost::start(en, cfd, *cep, {}, &Flow::client_activity, &f, &err);
        cep->connect(sa, mces::kClassDatagram, mces::wire::Qos{}, engine::now_ns(), f.client);
        f.ch->poke(en);
    });
    std::atomic<bool> all{false};
    settle(f.got, [&] {
        engine::run_on_engine(ce, [&](engine::Engine&) { all.store(f.sent == count || f.error.load() != 0); });
        return all.load();
    });
    if (f.client && size > f.client->max_datagram_payload())
        fprintf(stderr, "mces_dgram: %zu B is above the connection's %zu B\n", size, f.client->max_datagram_payload());
    engine::run_on_engine(ce, [&](engine::Engine&) { res.tx_kernel = f.ch->stats().tx_datagrams; res.tx_dropped = f.ch->stats().tx_queue_full; });
    engine::run_on_engine(se, [&](engine::Engine&) { res.rx_kernel = f.sh->stats().rx_datagrams; });
    res.sent = f.sent;
    res.got = f.got.load();
    const double secs = static_cast<double>(f.last_rx.load() - f.first_tx.load()) / 1e9;
    res.pps = secs > 0 ? static_cast<double>(res.got) / secs : 0;
    engine::run_on_engine(ce, [&](engine::Engine& en) {
        f.ch->close(en);
        f.client.reset();
    });
    engine::run_on_engine(se, [&](engine::Engine& en) {
        f.sh->close(en);
        f.server.reset();
    });
    engine::run_on_engine(ce, [&](engine::Engine&) { cep.reset(); });
    engine::run_on_engine(se, [&](engine::Engine&) { sep.reset(); });
    if (f.error.load()) fprintf(stderr, "mces_dgram: send_datagram: %s\n", strerror(f.error.load()));
    return res;
}

Run udp_run(uint64_t count, size_t size) {
    Run res;
    res.what = "udp";
    uint16_t cp = 0, sp = 0;
    int c = bench::loopback_udp(&cp), s = bench::loopback_udp(&sp);
    sockaddr_in ca{}, sa{};
    ca.sin_family = sa.sin_family = AF_INET;
    ca.sin_addr.s_addr = sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ca.sin_port = htons(cp);
    sa.sin_port = htons(sp);
    if (c < 0 || s < 0 || connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
        connect(s, reinterpret_cast<sockaddr*>(&ca), sizeof ca) != 0) {
        fprintf(stderr, "mces_dgram: UDP sockets: %s\n", strerror(errno));
        return res;
    }
    std::atomic<uint64_t> got{0};
    std::atomic<int64_t> last_rx{0};
    std::atomic<bool> stop{false};
    std::thread rx([&] {
        timeval tv{0, 50'000};
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        std::vector<char> buf(2048);
        while (!stop.load()) {
            if (recv(s, buf.data(), buf.size(), 0) > 0) {
                got.fetch_add(1, std::memory_order_relaxed);
                last_rx.store(now_ns(), std::memory_order_relaxed);
            }
        }
    });
    std::vector<char> msg(size, 'u');
    const int64_t first_tx = now_ns();
    std::atomic<bool> done{false};
    for (uint64_t i = 0; i < count; ++i) {
        if (send(c, msg.data(), size, 0) == static_cast<ssize_t>(size)) ++res.sent;
        else if (errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED) break;
    }
    done.store(true);
    settle(got, [&] { return done.load(); });
    stop.store(true);
    rx.join();
    close(c);
    close(s);
    res.got = got.load();
    const double secs = static_cast<double>(last_rx.load() - first_tx) / 1e9;
    res.pps = secs > 0 ? static_cast<double>(res.got) / secs : 0;
    return res;
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

void write_report(const std::string& prefix, const std::vector<Run>& all, int argc, char** argv, uint64_t count,
                  size_t size) {
    utsname u{};
    uname(&u);
    char day[32];
    time_t t = time(nullptr);
    strftime(day, sizeof day, "%F", localtime(&t));
    std::string cmd;
    for (int i = 0; i < argc; ++i) cmd += (i ? " " : "") + std::string(argv[i]);
    std::vector<double> m, uu, md, ud;
    for (const Run& r : all) {
        (r.what == "mces" ? m : uu).push_back(r.pps);
        (r.what == "mces" ? md : ud).push_back(r.sent ? static_cast<double>(r.got) / static_cast<double>(r.sent) : 0);
    }
    const double mm = median(m), um = median(uu);
    FILE* f = fopen((prefix + ".md").c_str(), "w");
    if (!f) {
        fprintf(stderr, "mces_dgram: cannot write %s.md: %s\n", prefix.c_str(), strerror(errno));
        return;
    }
    fprintf(f, "# MCES datagram service (class 0) vs kernel UDP, messages per second on loopback\n\n");
    fprintf(f, "%s, %s, %ld CPUs, kernel %s. `%s`: %llu messages of %zu B per run.\n\n", day, u.nodename,
            sysconf(_SC_NPROCESSORS_ONLN), u.release, cmd.c_str(), static_cast<unsigned long long>(count), size);
    fprintf(f, "MCES: one class-0 connection (chain framing checksum handshake sequencing keepalive close; packets\n"
               "up to 1472 B, so each message is one packet), one engine thread per end, send_datagram as fast as the connection takes them, recv_datagram at the other end.\n"
               "UDP: connected sockets, a thread per end, send() and recv(). Rate: messages received per second from\n"
               "the first send to the last receive. Delivered: received / sent (neither is reliable: what the\n"
               "receiving socket had no room for is lost). Issue 4's target: MCES at least 0.5x UDP.\n\n");
    fprintf(f, "| | UDP | MCES | MCES / UDP |\n|---|---|---|---|\n");
    fprintf(f, "| messages/s received, median | %.0f | %.0f | %.2f |\n", um, mm, um > 0 ? mm / um : 0);
    fprintf(f, "| delivered, median | %.1f%% | %.1f%% | |\n", 100 * median(ud), 100 * median(md));
    fprintf(f, "\nThe UDP program sends with one send() per message, as most UDP programs do; MCES's host batches\n"
               "them (sendmmsg, GSO). Where MCES loses messages is in the last columns: to the kernel and dropped at\n"
               "the sending host, from the kernel at the receiving host (beyond that: the receiving connection's\n"
               "queue was full when the reader fell behind).\n");
    fprintf(f, "\n## Every run\n\n| round | what | sent | received | messages/s | MCES host: to the kernel | dropped at the sender | from the kernel |\n"
               "|---|---|---|---|---|---|---|---|\n");
    for (const Run& r : all)
        fprintf(f, "| %d | %s | %llu | %llu | %.0f | %llu | %llu | %llu |\n", r.round, r.what.c_str(),
                static_cast<unsigned long long>(r.sent), static_cast<unsigned long long>(r.got), r.pps,
                static_cast<unsigned long long>(r.tx_kernel), static_cast<unsigned long long>(r.tx_dropped),
                static_cast<unsigned long long>(r.rx_kernel));
    fclose(f);
    FILE* s = fopen((prefix + ".svg").c_str(), "w");
    if (!s) return;
    const double top = std::max({mm, um, 1.0}) * 1.15;
    fprintf(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"360\" height=\"240\" font-family=\"sans-serif\">"
               "<rect width=\"360\" height=\"240\" fill=\"white\"/>"
               "<text x=\"180\" y=\"18\" text-anchor=\"middle\" font-size=\"13\">%zu B messages received per second, loopback</text>",
            size);
    const struct { const char* name; double v; const char* colour; } bars[] = {{"UDP", um, "#777"}, {"MCES class 0", mm, "#26a"}};
    for (int i = 0; i < 2; ++i) {
        const double h = bars[i].v / top * 170;
        fprintf(s, "<rect x=\"%d\" y=\"%.1f\" width=\"90\" height=\"%.1f\" fill=\"%s\"/>", 60 + i * 150, 210 - h, h,
                bars[i].colour);
        fprintf(s, "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">%.0fk/s</text>", 105 + i * 150,
                205 - h, bars[i].v / 1e3);
        fprintf(s, "<text x=\"%d\" y=\"228\" font-size=\"11\" text-anchor=\"middle\">%s</text>", 105 + i * 150, bars[i].name);
    }
    const double y5 = 210 - 0.5 * um / top * 170;
    fprintf(s, "<line x1=\"40\" x2=\"340\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#c62\" stroke-dasharray=\"4 3\"/>"
               "<text x=\"300\" y=\"%.1f\" font-size=\"9\" fill=\"#c62\">0.5 x UDP</text></svg>",
            y5, y5, y5 - 3);
    fclose(s);
    fprintf(stderr, "wrote %s.md and %s.svg\n", prefix.c_str(), prefix.c_str());
}

}  // namespace

int main(int argc, char** argv) {
    uint64_t count = 1'000'000;
    size_t size = 1200;
    int rounds = 3;
    std::string out;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool more = i + 1 < argc;
        if (a == "--help" || a == "-h") {
            fputs(kUsage, stdout);
            return 0;
        } else if (a == "--count" && more) {
            count = strtoull(argv[++i], nullptr, 10);
        } else if (a == "--size" && more) {
            size = strtoul(argv[++i], nullptr, 10);
        } else if (a == "--rounds" && more) {
            rounds = atoi(argv[++i]);
        } else if (a == "--out" && more) {
            out = argv[++i];
        } else {
            fprintf(stderr, "mces_dgram: unknown argument %s (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (count == 0 || count > 100'000'000 || size < 16 || size > 1400 || rounds < 1) {
        fprintf(stderr, "mces_dgram: --count 1..100000000, --size 16..1400, --rounds >= 1 (try --help)\n");
        return 2;
    }
    engine::Engine* e1 = engine::Engine::create(engine::Options{}, nullptr);
    engine::Engine* e2 = engine::Engine::create(engine::Options{}, nullptr);
    if (!e1 || !e2) {
        fprintf(stderr, "mces_dgram: the engine cannot start\n");
        return 1;
    }
    std::vector<Run> all;
    printf("| round | what | sent | received | messages/s |\n|---|---|---|---|---|\n");
    for (int r = 1; r <= rounds; ++r) {
        for (const char* what : {"udp", "mces"}) {
            Run res = std::string(what) == "udp" ? udp_run(count, size) : mces_run(*e1, *e2, count, size);
            res.round = r;
            all.push_back(res);
            printf("| %d | %s | %llu | %llu | %.0f |\n", r, what, static_cast<unsigned long long>(res.sent),
                   static_cast<unsigned long long>(res.got), res.pps);
            fflush(stdout);
            fprintf(stderr, "[%zu/%d] round %d, %s: %.0f messages/s, %.1f%% delivered (hosts: %llu to the kernel, %llu dropped at the sender, %llu from the kernel)\n",
                    all.size(), 2 * rounds, r, what, res.pps,
                    res.sent ? 100.0 * static_cast<double>(res.got) / static_cast<double>(res.sent) : 0,
                    static_cast<unsigned long long>(res.tx_kernel), static_cast<unsigned long long>(res.tx_dropped),
                    static_cast<unsigned long long>(res.rx_kernel));
        }
    }
    engine::Engine::destroy(e1);
    engine::Engine::destroy(e2);
    if (!out.empty()) write_report(out, all, argc, argv, count, size);
    return 0;
}
