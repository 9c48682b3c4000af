// MCES reliable bulk over real UDP on loopback, beside kernel TCP, in one
// run: one MCES class-1 connection moves N bytes from a client endpoint to a
// server endpoint, each on its own UdpHost (GSO out, GRO in), and the same N
// bytes go over one TCP connection between two threads. Rounds interleave
// every configuration, so the ratios compare runs made under the same load.
//
// Engines: "1" runs both MCES ends in one engine thread (one CPU carries the
// sender, the receiver and both applications); "2" gives each end its own
// engine (two threads, as the two TCP threads have, and as two processes on
// one host would). TCP always uses two threads.
//
// Placement: --cpus all/0 runs every configuration unpinned and with every
// thread of the process on CPU 0 (as taskset -c 0), interleaved.
//
// Figures per run: Gbit/s, the process's CPU seconds per GiB moved (user +
// system, both ends: TCP's include the kernel's protocol work), how busy
// each engine thread was, datagrams per system call, and the connection's
// counters (packets per ACK, losses, spurious losses and undos, PTOs).
// --out PREFIX writes PREFIX.md (every run, medians, ratios per placement)
// and PREFIX.svg (median Gbit/s per datagram size and configuration, one
// panel per placement, TCP's median and 0.8 of it as lines).
// bench/mces_loopback.sh runs the standard matrix.
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "bench/net.h"
#include "core/engine/engine.h"
#include "core/engine/udp_host.h"
#include "core/mces/conn/endpoint.h"

using namespace gs;
using Clock = std::chrono::steady_clock;

namespace {

const char* kUsage =
    "usage: mces_loopback [--bytes N] [--datagram LIST] [--engines LIST] [--rounds R]\n"
    "                     [--api copy,zc] [--mode both|mces|tcp] [--out PREFIX]\n"
    "                     [--cpus all/0] [--send-buffer LIST] [--recv-window B] [--recv-window-max B]\n"
    "                     [--crc auto,on] [--borrow on,off] [--fill once,each] [--max-unsent LIST]\n"
    "Moves N bytes (256 MiB) over one MCES class-1 connection on loopback (client and\n"
    "server endpoints each on a UdpHost, GSO out and GRO in) and over one TCP connection\n"
    "(two threads), R rounds (3) interleaved, for every datagram size in LIST (1200;\n"
    "comma-separated, up to 65527) and every engine count in LIST (1,2: 1 = both MCES\n"
    "ends in one engine thread, 2 = one engine thread per end). Prints one line per run\n"
    "(Gbit/s, CPU seconds per GiB, datagrams per system call, the connection's counters)\n"
    "and progress on stderr; --out PREFIX writes PREFIX.md and PREFIX.svg.\n"
    "--api: copy (default) moves bytes with write() and read(), as TCP's send() and\n"
    "recv() do; zc uses write_reserve/commit and read_peek/consume (not copied out),\n"
    "the calls a bridge between a socket and MCES would use (-zc).\n"
    "--fill (zc only): once (default) writes each byte of the send ring the first time\n"
    "it is reserved and never again, as TCP's sender sends one buffer filled once; each\n"
    "memsets every reserved span, a stand-in for a producer that writes every byte (the\n"
    "only zc mode before results -6) (-memset).\n"
    "--crc: auto (default) lets the endpoints decide (loopback: no CRC32C on short\n"
    "packets); on keeps the CRC (ConnConfig::loopback_no_checksum = false) (-crc).\n"
    "--borrow: on (default) lets the receiving connection read stream bytes from the\n"
    "received datagram (ConnConfig::borrow_receive); off copies each payload into the\n"
    "receive buffer on arrival, as before (-rxcopy).\n"
    "Buffers (ConnConfig): send buffer 8 MiB, receive window 4 MiB growing to 16 MiB;\n"
    "--send-buffer takes a list (several: label -sbN, N in KiB).\n"
    "--max-unsent LIST: ConnConfig::max_unsent, bytes written ahead of what was sent\n"
    "(at most max(it, bytes in flight)); 0 (default): no limit (several: label -muN, KiB).\n"
    "--cpus all/0: every configuration once unpinned and once with every thread on CPU\n"
    "0 (as taskset -c 0), interleaved. --mode mces or tcp runs one side only (for a\n"
    "profiler). Compare ratios from one run only: the machine's load changes.\n";

using engine::run_on_engine;

// The flow-control window (16 MiB) fits the socket buffers even in 1200-byte
// datagrams, whose kernel overhead doubles their size (bench/net.h).
int udp_socket(sansio::Addr& addr) {
    uint16_t port = 0;
    int fd = bench::loopback_udp(&port);
    if (fd >= 0) addr = sansio::Addr::v4(INADDR_LOOPBACK, port);
    return fd;
}

double cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// CPU seconds of each engine thread (comm "gsocket-engine"), by thread id:
// whether an end is saturated or waits.
std::map<long, double> engine_threads_cpu() {
    std::map<long, double> m;
    const long tick = sysconf(_SC_CLK_TCK);
    for (long tid = 0; auto* d = opendir("/proc/self/task");) {
        while (dirent* e = readdir(d)) {
            tid = strtol(e->d_name, nullptr, 10);
            if (tid <= 0) continue;
            char path[64], buf[512];
            snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
            FILE* f = fopen(path, "r");
            if (!f) continue;
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = 0;
            char* close_paren = strrchr(buf, ')');
            if (!strstr(buf, "(gsocket-engine)") || !close_paren) continue;
            // Fields after the name: state(3) ... utime(14) stime(15).
            unsigned long ut = 0, st = 0;
            if (sscanf(close_paren + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
                m[tid] = static_cast<double>(ut + st) / static_cast<double>(tick);
        }
        closedir(d);
        break;
    }
    return m;
}

struct Result {
    std::string what;      // "mces-1", "mces-2", "tcp"
    std::string pin = "all";   // CPUs the process ran on
    size_t dgram = 0;      // 0 for TCP
    int round = 0;
    double gbps = 0, cpu_per_gib = 0;
    double busy_max = 0, busy_min = 0;   // engine threads' CPU / wall time (the busier, the other)
    bool ok = false;
    engine::UdpHostStats cs, ss;
    mces::ConnCounters cc, sc;   // client (sender), server (receiver)
};

// One side each: the client writes (on its engine), the server reads (on its).
struct Transfer {
    uint64_t total = 0, sent = 0, got = 0;
    bool fin_sent = false;
    bool zc = false;   // write_reserve/write_commit and read_peek/read_consume
    bool fill_each = false;   // zc: memset every reserved span (else each ring byte once)
    // zc, fill once: the send ring's bytes [ring_lo, filled_hi) were written.
    // Reserved spans lie in the ring, which starts at the first span.
    uint8_t* ring_lo = nullptr;
    uint8_t* filled_hi = nullptr;
    std::atomic<bool> done{false};
    std::atomic<int> error{0};
    std::shared_ptr<mces::Connection> client, server;
    mces::Endpoint* sep = nullptr;
    engine::UdpHost* ch = nullptr;
    engine::UdpHost* sh = nullptr;
    std::vector<uint8_t> chunk = std::vector<uint8_t>(256 * 1024, 'm');
    std::vector<uint8_t> sink = std::vector<uint8_t>(256 * 1024);

    void client_pump(engine::Engine& e) {
        if (!client) return;
        bool wrote = false;
        while (sent < total && client->state() == mces::Connection::State::established) {
            std::ptrdiff_t w;
            if (zc) {
                // In place: a bridge would recv() from the program's socket
                // here. Fill each: a memset stands in for that producer.
                // Fill once: like TCP's sender, which sends from one buffer
                // filled once, only ring bytes never written get written.
                std::span<uint8_t> space;
                if (client->write_reserve(space) <= 0) break;
                const size_t n = static_cast<size_t>(std::min<uint64_t>(space.size(), total - sent));
                if (fill_each) {
                    memset(space.data(), 'z', n);
                } else {
                    uint8_t* p = space.data();
                    if (ring_lo == nullptr) ring_lo = filled_hi = p;
                    if (p < ring_lo) {   // cannot happen: the ring starts at the first span
                        memset(p, 'z', n);
                    } else if (p + n > filled_hi) {
                        uint8_t* from = std::max(p, filled_hi);
                        memset(from, 'z', static_cast<size_t>(p + n - from));
                        filled_hi = p + n;
                    }
                }
                w = client->write_commit(n);
            } else {
                size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), total - sent));
                w = client->write({chunk.data(), n});
            }
            if (w <= 0) break;
            sent += static_cast<uint64_t>(w);
            wrote = true;
        }
        if (sent == total && !fin_sent && client->state() == mces::Connection::State::established) {
            client->shutdown_write();
            fin_sent = wrote = true;
        }
        if (client->state() == mces::Connection::State::closed && client->error()) error.store(client->error());
        if (wrote) ch->poke(e);
    }
    void server_pump(engine::Engine& e) {
        if (!server) server = sep->accept();
        bool read = false;
        while (server) {
            std::ptrdiff_t r;
            if (zc) {
                // In place: a bridge would send() these bytes to the program.
                std::span<const uint8_t> view;
                r = server->read_peek(view);
                if (r > 0) server->read_consume(static_cast<size_t>(r));
            } else {
                r = server->read({sink.data(), sink.size()});
            }
            if (r > 0) {
                got += static_cast<uint64_t>(r);
                read = true;
                continue;
            }
            if (r == 0) done.store(true);
            else if (r != -EAGAIN) error.store(static_cast<int>(-r));
            break;
        }
        if (read) sh->poke(e);   // the credit it gives back
    }
    static void client_activity(engine::Engine& e, void* self) noexcept { static_cast<Transfer*>(self)->client_pump(e); }
    static void server_activity(engine::Engine& e, void* self) noexcept { static_cast<Transfer*>(self)->server_pump(e); }
};

struct Buffers {
    size_t send_buffer = 8 << 20;
    size_t max_unsent = 0;
    uint64_t recv_window = 4 << 20, recv_window_max = 16 << 20;
};

void mces_run(engine::Engine& ce, engine::Engine& se, uint64_t bytes, size_t dgram, bool zc, bool fill_each,
              bool crc, bool borrow, const Buffers& bufs, Result& res) {
    sansio::Addr ca, sa;
    int cfd = udp_socket(ca), sfd = udp_socket(sa);
    if (cfd < 0 || sfd < 0) {
        fprintf(stderr, "mces_loopback: no UDP socket: %s\n", strerror(errno));
        return;
    }
    mces::EndpointConfig ccfg, scfg;
    ccfg.local = ca;
    scfg.local = sa;
    ccfg.seed = 1;
    scfg.seed = 2;
    for (auto* c : {&ccfg.conn, &scfg.conn}) {
        c->max_datagram_size = dgram;
        c->send_buffer = bufs.send_buffer;
        c->max_unsent = bufs.max_unsent;
        c->recv_window = bufs.recv_window;
        c->recv_window_max = bufs.recv_window_max;
        c->loopback_no_checksum = !crc;
        c->borrow_receive = borrow;   // UdpHost keeps the contract (udp_host.h)
    }
    auto cep = std::make_unique<mces::Endpoint>(ccfg);
    auto sep = std::make_unique<mces::Endpoint>(scfg);
    sep->listen(mces::wire::ServerConfig{});
    Transfer t;
    t.total = bytes;
    t.zc = zc;
    t.fill_each = fill_each;
    t.sep = sep.get();
    const double cpu0 = cpu_seconds();
    const auto threads0 = engine_threads_cpu();
    Clock::time_point start = Clock::now();
    run_on_engine(se, [&](engine::Engine& en) {
        int err = 0;
        t.sh = engine::UdpHost::start(en, sfd, *sep, {}, &Transfer::server_activity, &t, &err);
    });
    run_on_engine(ce, [&](engine::Engine& en) {
        int err = 0;
        t.ch = engine::UdpHost::start(en, cfd, *cep, {}, &Transfer::client_activity, &t, &err);
        start = Clock::now();
        cep->connect(sa, 1, mces::wire::Qos{}, engine::now_ns(), t.client);
        t.ch->poke(en);
    });
    auto deadline = Clock::now() + std::chrono::seconds(60);
    while (!t.done.load() && !t.error.load() && Clock::now() < deadline) usleep(200);
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    const double cpu = cpu_seconds() - cpu0;
    std::vector<double> busy;
    for (const auto& [tid, c] : engine_threads_cpu())
        if (auto it = threads0.find(tid); it != threads0.end() && c - it->second > 0) busy.push_back((c - it->second) / secs);
    std::sort(busy.rbegin(), busy.rend());
    if (!busy.empty()) res.busy_max = busy[0];
    if (busy.size() > 1) res.busy_min = busy[1];
    run_on_engine(ce, [&](engine::Engine& en) {
        res.cs = t.ch->stats();
        res.cc = t.client->counters();
        t.ch->close(en);
        t.client.reset();
    });
    run_on_engine(se, [&](engine::Engine& en) {
        res.ss = t.sh->stats();
        if (t.server) res.sc = t.server->counters();
        t.sh->close(en);
        t.server.reset();
    });
    // Both hosts are closed on their engines: nothing reaches the endpoints any more.
    run_on_engine(ce, [&](engine::Engine&) { cep.reset(); });
    run_on_engine(se, [&](engine::Engine&) { sep.reset(); });
    if (!t.done.load() || t.got != bytes) {
        fprintf(stderr, "mces_loopback: transfer incomplete: %llu of %llu bytes, error %d\n",
                static_cast<unsigned long long>(t.got), static_cast<unsigned long long>(bytes), t.error.load());
        return;
    }
    res.ok = true;
    res.gbps = static_cast<double>(bytes) * 8 / secs / 1e9;
    res.cpu_per_gib = cpu / (static_cast<double>(bytes) / (1 << 30));
}

void tcp_run(uint64_t bytes, Result& res) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a);
    listen(l, 1);
    socklen_t len = sizeof a;
    getsockname(l, reinterpret_cast<sockaddr*>(&a), &len);
    uint64_t got = 0;
    const double cpu0 = cpu_seconds();
    std::thread rx([&] {
        int c = accept(l, nullptr, nullptr);
        std::vector<char> buf(256 * 1024);
        for (ssize_t n; (n = recv(c, buf.data(), buf.size(), 0)) > 0;) got += static_cast<uint64_t>(n);
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
    const double cpu = cpu_seconds() - cpu0;
    close(s);
    close(l);
    res.ok = got == bytes;
    res.gbps = static_cast<double>(bytes) * 8 / secs / 1e9;
    res.cpu_per_gib = cpu / (static_cast<double>(bytes) / (1 << 30));
}

std::vector<size_t> parse_list(const char* s) {
    std::vector<size_t> v;
    for (const char* p = s; *p;) {
        char* end = nullptr;
        v.push_back(strtoul(p, &end, 10));
        if (end == p) return {};
        p = *end == ',' ? end + 1 : end;
    }
    return v;
}

// "a,b,c" -> {"a", "b", "c"} (empty items kept, so "a,,b" is refused by the checks).
std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> v;
    for (size_t at = 0;;) {
        const size_t c = s.find(sep, at);
        v.push_back(s.substr(at, c == std::string::npos ? std::string::npos : c - at));
        if (c == std::string::npos) return v;
        at = c + 1;
    }
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

double per(uint64_t a, uint64_t b) { return b ? static_cast<double>(a) / static_cast<double>(b) : 0; }

std::string run_line(const Result& r) {
    char b[512];
    if (r.what == "tcp") {
        snprintf(b, sizeof b, "| %d | %s | tcp | - | %.2f | %.2f | | | | | | | | | |", r.round, r.pin.c_str(), r.gbps,
                 r.cpu_per_gib);
        return b;
    }
    snprintf(b, sizeof b,
             "| %d | %s | %s | %zu | %.2f | %.2f | %.0f%% / %.0f%% | %.1f / %.1f | %.1f | %llu | %llu | %llu | %llu | %llu | %lld / %lld |",
             r.round, r.pin.c_str(), r.what.c_str(), r.dgram, r.ok ? r.gbps : 0.0, r.cpu_per_gib, r.busy_max * 100,
             r.busy_min * 100, per(r.cs.tx_datagrams, r.cs.tx_calls), per(r.ss.rx_datagrams, r.ss.rx_calls),
             per(r.sc.packets_received, r.sc.acks_sent), static_cast<unsigned long long>(r.cc.lost),
             static_cast<unsigned long long>(r.cc.spurious), static_cast<unsigned long long>(r.cc.cc_undos),
             static_cast<unsigned long long>(r.cc.ptos), static_cast<unsigned long long>(r.cc.cwnd / 1024),
             static_cast<long long>(r.cc.srtt / 1000), static_cast<long long>(r.cc.min_rtt / 1000));
    return b;
}

const char* kRunHeader =
    "| round | CPUs | what | datagram | Gbit/s | CPU s/GiB | engine threads busy | dgrams per sendmmsg / recvmmsg | "
    "packets per ACK | lost | spurious | undone | PTOs | final cwnd KiB | srtt / min RTT us |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

void write_report(const std::string& prefix, const std::vector<Result>& all, const std::vector<std::string>& pins,
                  int argc, char** argv, uint64_t bytes) {
    utsname u{};
    uname(&u);
    char day[32];
    time_t now = time(nullptr);
    strftime(day, sizeof day, "%F", localtime(&now));
    std::string cmd;
    for (int i = 0; i < argc; ++i) cmd += (i ? " " : "") + std::string(argv[i]);
    std::string name = prefix.substr(prefix.find_last_of('/') + 1);
    FILE* f = fopen((prefix + ".md").c_str(), "w");
    if (!f) {
        fprintf(stderr, "mces_loopback: cannot write %s.md: %s\n", prefix.c_str(), strerror(errno));
        return;
    }
    fprintf(f, "# MCES reliable bulk on loopback, beside TCP — %s\n\n", name.c_str());
    fprintf(f, "%s, %s, %ld CPUs, kernel %s. `%s` (%llu MiB per run).\n\n", day, u.nodename,
            sysconf(_SC_NPROCESSORS_ONLN), u.release, cmd.c_str(), static_cast<unsigned long long>(bytes >> 20));
    fprintf(f, "mces-1: both MCES ends in one engine thread; mces-2: one engine thread per end; -zc: the zero-copy\n"
               "calls; tcp: one TCP connection between two threads. CPUs \"all\": unpinned; \"0\": every thread of the\n"
               "process on CPU 0 (sched_setaffinity, as taskset -c 0). CPU s/GiB: user + system CPU of the whole\n"
               "process per GiB moved. Ratios compare runs of the same CPU placement.\n\n");
    // Medians and ratios, per placement.
    std::map<std::tuple<std::string, size_t, std::string>, std::vector<double>> g, cpu;
    std::map<std::string, std::vector<double>> tcp, tcp_cpu;
    for (const auto& r : all) {
        if (r.what == "tcp") {
            tcp[r.pin].push_back(r.gbps);
            tcp_cpu[r.pin].push_back(r.cpu_per_gib);
        } else {
            g[{r.pin, r.dgram, r.what}].push_back(r.ok ? r.gbps : 0);
            cpu[{r.pin, r.dgram, r.what}].push_back(r.cpu_per_gib);
        }
    }
    fprintf(f, "## Medians\n\n| CPUs | datagram | what | runs | Gbit/s | CPU s/GiB | MCES / TCP (Gbit/s) | per round |\n"
               "|---|---|---|---|---|---|---|---|\n");
    for (const auto& [k, v] : g) {
        const auto& [pin, dgram, what] = k;
        const double tm = median(tcp[pin]);
        std::string rounds;
        for (const auto& r : all) {
            if (r.what != what || r.dgram != dgram || r.pin != pin) continue;
            for (const auto& t : all) {
                if (t.what != "tcp" || t.round != r.round || t.pin != pin || t.gbps <= 0) continue;
                char b[32];
                snprintf(b, sizeof b, "%s%.2f", rounds.empty() ? "" : " ", (r.ok ? r.gbps : 0) / t.gbps);
                rounds += b;
            }
        }
        fprintf(f, "| %s | %zu | %s | %zu | %.2f | %.2f | %.2f | %s |\n", pin.c_str(), dgram, what.c_str(), v.size(),
                median(v), median(cpu[k]), tm > 0 ? median(v) / tm : 0, rounds.c_str());
    }
    for (const auto& [pin, v] : tcp)
        fprintf(f, "| %s | - | tcp | %zu | %.2f | %.2f | 1 | |\n", pin.c_str(), v.size(), median(v), median(tcp_cpu[pin]));
    fprintf(f, "\n## Every run\n\n%s\n", kRunHeader);
    for (const auto& r : all) fprintf(f, "%s\n", run_line(r).c_str());
    fclose(f);

    // The plot: one panel per CPU placement; median Gbit/s per datagram size,
    // one bar per configuration; TCP's median as a line, 0.8 of it dashed
    // (the target).
    std::vector<size_t> sizes;
    std::vector<std::string> whats;
    double top = 0;
    for (const auto& [k, v] : g) {
        const auto& [pin, dgram, what] = k;
        if (std::find(sizes.begin(), sizes.end(), dgram) == sizes.end()) sizes.push_back(dgram);
        if (std::find(whats.begin(), whats.end(), what) == whats.end()) whats.push_back(what);
        top = std::max(top, median(v));
    }
    std::sort(sizes.begin(), sizes.end());
    for (const auto& [pin, v] : tcp) top = std::max(top, median(v));
    top = top > 0 ? top * 1.1 : 1;
    const int panel = 320, w = panel * static_cast<int>(std::max<size_t>(pins.size(), 1)), h = 250, base = 195,
              plot_h = 160;
    const int group = static_cast<int>((panel - 40) / std::max<size_t>(sizes.size(), 1));
    const int bar = std::max(6, std::min(22, group / static_cast<int>(whats.size() + 1) - 2));
    FILE* s = fopen((prefix + ".svg").c_str(), "w");
    if (!s) return;
    fprintf(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\">", w, h);
    const char* colors[] = {"#26a", "#6a2", "#a26", "#888"};
    for (size_t pi = 0; pi < pins.size(); ++pi) {
        const std::string& pin = pins[pi];
        const int px = static_cast<int>(pi) * panel;
        fprintf(s, "<text x=\"%d\" y=\"15\" font-size=\"12\">Gbit/s, CPUs %s (bar height: 0 to %.1f)</text>", px + 20,
                pin.c_str(), top);
        for (size_t i = 0; i < sizes.size(); ++i) {
            const int x0 = px + 30 + static_cast<int>(i) * group;
            for (size_t j = 0; j < whats.size(); ++j) {
                auto it = g.find({pin, sizes[i], whats[j]});
                if (it == g.end()) continue;
                const double v = median(it->second);
                const double hh = v / top * plot_h;
                const int x = x0 + static_cast<int>(j) * (bar + 2);
                fprintf(s, "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"%s\"/>", x, base - hh, bar, hh,
                        colors[j % 4]);
                fprintf(s, "<text x=\"%d\" y=\"%.1f\" font-size=\"8\">%.1f</text>", x, base - hh - 2, v);
            }
            fprintf(s, "<text x=\"%d\" y=\"%d\" font-size=\"10\">%zu B</text>", x0, base + 13, sizes[i]);
        }
        const double tm = median(tcp[pin]);
        if (tm > 0) {
            const double y = base - tm / top * plot_h, y8 = base - 0.8 * tm / top * plot_h;
            fprintf(s, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#c62\"/>", px + 25, px + panel - 10, y, y);
            fprintf(s, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#c62\" stroke-dasharray=\"4 3\"/>",
                    px + 25, px + panel - 10, y8, y8);
            fprintf(s, "<text x=\"%d\" y=\"%.1f\" font-size=\"9\" fill=\"#c62\">TCP %.1f</text>", px + panel - 60, y - 3, tm);
        }
    }
    std::string legend;
    for (size_t j = 0; j < whats.size(); ++j)
        legend += std::string(j ? ", " : "") + (j == 0 ? "blue" : j == 1 ? "green" : j == 2 ? "purple" : "grey") + ": " +
                  whats[j];
    fprintf(s, "<text x=\"20\" y=\"236\" font-size=\"10\">%s; orange line: TCP median, dashed: 0.8 x TCP</text></svg>",
            legend.c_str());
    fclose(s);
    fprintf(stderr, "wrote %s.md and %s.svg\n", prefix.c_str(), prefix.c_str());
}

// Every thread of the process on `cpus` ("all": every online CPU), as
// taskset would place it: the engine threads exist already.
bool place(const std::string& cpus) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (cpus == "all") {
        for (long c = 0; c < sysconf(_SC_NPROCESSORS_ONLN) && c < CPU_SETSIZE; ++c) CPU_SET(c, &set);
    } else {
        for (size_t c : parse_list(cpus.c_str())) CPU_SET(c, &set);
    }
    DIR* d = opendir("/proc/self/task");
    if (!d) return false;
    bool ok = true;
    while (dirent* e = readdir(d)) {
        const long tid = strtol(e->d_name, nullptr, 10);
        if (tid > 0) ok &= sched_setaffinity(static_cast<pid_t>(tid), sizeof set, &set) == 0;
    }
    closedir(d);
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    uint64_t bytes = 256ull << 20;
    std::vector<size_t> dgrams{1200}, engines{1, 2};
    int rounds = 3;
    std::string mode = "both", out;
    std::vector<std::string> apis{"copy"}, pins{"all"}, crcs{"auto"}, borrows{"on"}, fills{"once"};
    std::vector<size_t> send_buffers{Buffers{}.send_buffer}, unsents{Buffers{}.max_unsent};
    Buffers bufs;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        const bool more = i + 1 < argc;
        if (a == "--help" || a == "-h") {
            fputs(kUsage, stdout);
            return 0;
        } else if (a == "--bytes" && more) {
            bytes = strtoull(argv[++i], nullptr, 10);
        } else if (a == "--datagram" && more) {
            dgrams = parse_list(argv[++i]);
        } else if (a == "--engines" && more) {
            engines = parse_list(argv[++i]);
        } else if (a == "--rounds" && more) {
            rounds = atoi(argv[++i]);
        } else if (a == "--mode" && more) {
            mode = argv[++i];
        } else if (a == "--cpus" && more) {
            // "all" or a CPU list ("0", "0,1"), several separated by '/'
            pins = split(argv[++i], '/');
        } else if (a == "--api" && more) {
            apis = split(argv[++i], ',');
        } else if (a == "--crc" && more) {
            crcs = split(argv[++i], ',');
        } else if (a == "--borrow" && more) {
            borrows = split(argv[++i], ',');
        } else if (a == "--fill" && more) {
            fills = split(argv[++i], ',');
        } else if (a == "--max-unsent" && more) {
            unsents = parse_list(argv[++i]);
        } else if (a == "--send-buffer" && more) {
            send_buffers = parse_list(argv[++i]);
        } else if (a == "--recv-window" && more) {
            bufs.recv_window = strtoull(argv[++i], nullptr, 10);
        } else if (a == "--recv-window-max" && more) {
            bufs.recv_window_max = strtoull(argv[++i], nullptr, 10);
        } else if (a == "--out" && more) {
            out = argv[++i];
        } else {
            fprintf(stderr, "mces_loopback: unknown argument %s (try --help)\n", argv[i]);
            return 2;
        }
    }
    bool bad = dgrams.empty() || engines.empty() || rounds < 1 || bytes == 0 ||
               (mode != "both" && mode != "mces" && mode != "tcp");
    for (size_t d : dgrams) bad |= d < 1200 || d > 65527;
    for (size_t n : engines) bad |= n != 1 && n != 2;
    for (const auto& a : apis) bad |= a != "copy" && a != "zc";
    for (const auto& c : crcs) bad |= c != "auto" && c != "on";
    bad |= crcs.empty();
    for (const auto& b : borrows) bad |= b != "on" && b != "off";
    bad |= borrows.empty();
    for (const auto& f : fills) bad |= f != "once" && f != "each";
    bad |= fills.empty() || send_buffers.empty() || unsents.empty();
    for (size_t b : send_buffers) bad |= b == 0;
    for (const auto& p : pins) bad |= p.empty() || (p != "all" && parse_list(p.c_str()).empty());
    bad |= apis.empty();
    if (bad) {
        fprintf(stderr, "mces_loopback: bad arguments (try --help)\n");
        return 2;
    }
    engine::Engine* e1 = engine::Engine::create(engine::Options{}, nullptr);
    engine::Engine* e2 = engine::Engine::create(engine::Options{}, nullptr);
    if (!e1 || !e2) {
        fprintf(stderr, "mces_loopback: the engine cannot start\n");
        return 1;
    }
    std::vector<Result> all;
    // Fill modes apply to the zero-copy calls only.
    size_t api_runs = 0;
    for (const auto& a : apis) api_runs += a == "zc" ? fills.size() : 1;
    const size_t per_pin = (mode != "tcp" ? dgrams.size() * engines.size() * api_runs * crcs.size() * borrows.size() *
                                                send_buffers.size() * unsents.size()
                                          : 0) +
                           (mode != "mces" ? 1 : 0);
    const size_t runs = static_cast<size_t>(rounds) * pins.size() * per_pin;
    printf("%s\n", kRunHeader);
    for (int r = 1; r <= rounds; ++r) {
        for (const std::string& pin : pins) {
            if (!place(pin)) fprintf(stderr, "mces_loopback: cannot place threads on CPUs %s\n", pin.c_str());
            auto report = [&](Result& res) {
                res.round = r;
                res.pin = pin;
                all.push_back(res);
                printf("%s\n", run_line(res).c_str());
                fflush(stdout);
                fprintf(stderr, "[%zu/%zu] round %d, CPUs %s, %s %zu: %.2f Gbit/s\n", all.size(), runs, r, pin.c_str(),
                        res.what.c_str(), res.dgram, res.gbps);
            };
            if (mode != "tcp") {
                for (size_t d : dgrams) {
                    for (size_t n : engines) {
                        for (const std::string& api : apis) {
                            const bool zc = api == "zc";
                            for (const std::string& fill : zc ? fills : std::vector<std::string>{"-"}) {
                                for (const std::string& crc : crcs) {
                                    for (const std::string& borrow : borrows) {
                                        for (size_t sb : send_buffers) {
                                          for (size_t mu : unsents) {
                                            Result res;
                                            res.what = std::string(n == 1 ? "mces-1" : "mces-2") + (zc ? "-zc" : "") +
                                                       (fill == "each" ? "-memset" : "") +
                                                       (crc == "on" ? "-crc" : "") +
                                                       (borrow == "off" ? "-rxcopy" : "");
                                            if (send_buffers.size() > 1) res.what += "-sb" + std::to_string(sb >> 10);
                                            if (unsents.size() > 1) res.what += "-mu" + std::to_string(mu >> 10);
                                            res.dgram = d;
                                            Buffers b = bufs;
                                            b.send_buffer = sb;
                                            b.max_unsent = mu;
                                            mces_run(*e1, n == 1 ? *e1 : *e2, bytes, d, zc, fill == "each", crc == "on",
                                                     borrow == "on", b, res);
                                            report(res);
                                          }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if (mode != "mces") {
                Result res;
                res.what = "tcp";
                tcp_run(bytes, res);
                report(res);
            }
        }
    }
    place("all");
    engine::Engine::destroy(e1);
    engine::Engine::destroy(e2);
    if (!out.empty()) write_report(out, all, pins, argc, argv, bytes);
    return 0;
}
