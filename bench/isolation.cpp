// isolation: does a bulk TCP flow hurt a realtime flow of the same process?
// One client process holds two TCP flows: thread A times 64-byte ping-pongs
// on the realtime port while thread B (--bulk on) pushes 256 KiB writes to
// the bulk port as fast as it can. Run natively and under gsrun to compare
// the realtime flow's tail latency idle vs loaded (bench/isolation.sh).
//
//   isolation server PORT_RT PORT_BULK
//       on 127.0.0.1: echo 64-byte messages on PORT_RT (one connection at a
//       time, then the next), read and discard everything on PORT_BULK
//   isolation client HOST PORT_RT PORT_BULK [-n COUNT] [--bulk on|off] [--rate-limit none]
//       prints: rtt_us p50=.. p90=.. p99=.. max=.. count=.. bulk_gbit=..
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "net.h"

namespace {

using bench::full;
using bench::now_s;
using bench::parse_port;

constexpr size_t kMsg = 64;                 // realtime message size
constexpr size_t kBulkWrite = 256 * 1024;   // one bulk write
constexpr long kWarmup = 1000;              // untimed realtime rounds
constexpr double kBulkMaxSeconds = 60;      // the bulk sender stops after this
constexpr double kClientMaxSeconds = 600;   // the realtime thread gives up after this
constexpr int kServerMaxSeconds = 6 * 3600; // the server exits after this (SIGALRM)

void usage(FILE* f) {
    fprintf(f,
            "usage: isolation server PORT_RT PORT_BULK\n"
            "       isolation client HOST PORT_RT PORT_BULK [-n COUNT] [--bulk on|off] [--rate-limit none]\n"
            "\n"
            "server: on 127.0.0.1, echoes %zu-byte messages on PORT_RT (one connection at a\n"
            "  time, then accepts the next) and reads and discards everything sent to\n"
            "  PORT_BULK (one thread per connection). Exits after %d h at the latest.\n"
            "client: one process, two TCP flows. Thread A does COUNT (default 20000)\n"
            "  %zu-byte ping-pongs on PORT_RT (TCP_NODELAY, blocking) after %ld untimed\n"
            "  warm-up rounds and records each round trip. With --bulk on (the default),\n"
            "  thread B connects to PORT_BULK first and sends %zu KiB writes as fast as it\n"
            "  can until A is done (at most %.0f s). --rate-limit none (the only value\n"
            "  for now): B is not paced by the tool. Prints one line:\n"
            "  rtt_us p50=.. p90=.. p99=.. max=.. count=.. bulk_gbit=..\n"
            "  (bulk_gbit: B's rate while A was timing, 0 with --bulk off).\n",
            kMsg, kServerMaxSeconds / 3600, kMsg, kWarmup, kBulkWrite / 1024, kBulkMaxSeconds);
}

void set_timeout(int fd, int opt, double seconds) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(seconds);
    tv.tv_usec = static_cast<suseconds_t>((seconds - static_cast<double>(tv.tv_sec)) * 1e6);
    setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv);
}

int listen_on(int port) {
    int l = bench::listen_loopback(port, 16);
    if (l < 0) fprintf(stderr, "isolation server: bind/listen on port %d: %s\n", port, strerror(errno));
    return l;
}

// Echoes kMsg-byte messages on the realtime connection c until it ends, in
// the accepting thread: one connection at a time.
void serve_echo(int c) {
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[kMsg];
    while (full(c, buf, kMsg, false) && full(c, buf, kMsg, true)) {
    }
    close(c);
}

// Reads and discards everything on the bulk connection c, in a thread of its own.
void serve_sink(int c) {
    std::thread([c] {
        std::vector<char> buf(1 << 20);
        for (;;) {
            ssize_t r = recv(c, buf.data(), buf.size(), 0);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
        }
        close(c);
    }).detach();
}

// Accepts on l forever and hands every connection to serve; what ("realtime",
// "bulk") names the port in messages.
void accept_loop(int l, const char* what, void (*serve)(int)) {
    for (;;) {
        int c = accept(l, nullptr, nullptr);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            fprintf(stderr, "isolation server: accept (%s): %s\n", what, strerror(errno));
            usleep(100000);
            continue;
        }
        serve(c);
    }
}

int server(int port_rt, int port_bulk) {
    int lr = listen_on(port_rt), lb = listen_on(port_bulk);
    if (lr < 0 || lb < 0) return 1;
    alarm(kServerMaxSeconds);   // a forgotten server does not live forever
    std::thread sink(accept_loop, lb, "bulk", serve_sink);
    accept_loop(lr, "realtime", serve_echo);   // never returns
    sink.join();
    return 0;
}

// connect with retries while the server comes up: at most ~5 s.
int connect_to(const sockaddr_in& a, const char* what) {
    for (int i = 0;; ++i) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) return fd;
        int e = errno;
        if (fd >= 0) close(fd);
        if (i == 250) {
            fprintf(stderr, "isolation client: connect (%s): %s\n", what, strerror(e));
            return -1;
        }
        usleep(20000);
    }
}

struct Bulk {
    std::atomic<bool> stop{false};
    std::atomic<bool> started{false};   // connected and the first write went out (or failed)
    std::atomic<bool> failed{false};
    std::atomic<bool> timed_out{false}; // stopped by the 60 s bound before A finished
    std::atomic<uint64_t> bytes{0};
    std::atomic<int> fd{-1};
};

void bulk_sender(sockaddr_in a, Bulk* b) {
    int fd = connect_to(a, "bulk");
    if (fd < 0) {
        b->failed = true;
        b->started = true;
        return;
    }
    b->fd = fd;
    // A short send timeout so a full socket buffer cannot hide the stop flag for long.
    set_timeout(fd, SO_SNDTIMEO, 0.2);
    std::vector<char> buf(kBulkWrite, 'b');
    double t0 = now_s();
    while (!b->stop.load(std::memory_order_relaxed)) {
        if (now_s() - t0 > kBulkMaxSeconds) {
            b->timed_out = true;
            break;
        }
        ssize_t r = send(fd, buf.data(), buf.size(), MSG_NOSIGNAL);
        if (r > 0) {
            b->bytes.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
            b->started.store(true, std::memory_order_release);
        } else if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
            continue;
        } else {
            if (!b->stop) fprintf(stderr, "isolation client: bulk send: %s\n", r < 0 ? strerror(errno) : "0 bytes");
            b->failed = true;
            b->started = true;
            break;
        }
    }
}

int client(const char* host, int port_rt, int port_bulk, long count, bool bulk_on) {
    sockaddr_in rt{}, bk{};
    rt.sin_family = bk.sin_family = AF_INET;
    rt.sin_port = htons(static_cast<uint16_t>(port_rt));
    bk.sin_port = htons(static_cast<uint16_t>(port_bulk));
    if (inet_pton(AF_INET, host, &rt.sin_addr) != 1) return fprintf(stderr, "isolation: bad host %s\n", host), 2;
    bk.sin_addr = rt.sin_addr;

    Bulk b;
    std::thread sender;
    if (bulk_on) {
        // B first, and A only once bulk data flows: every timed round is loaded.
        sender = std::thread(bulk_sender, bk, &b);
        double t0 = now_s();
        while (!b.started.load(std::memory_order_acquire) && now_s() - t0 < 10) usleep(1000);
        if (!b.started || b.failed) {
            fprintf(stderr, "isolation client: the bulk flow did not start\n");
            b.stop = true;
            if (b.fd >= 0) shutdown(b.fd, SHUT_RDWR);
            sender.join();
            return 1;
        }
    }

    int rc = 0;
    std::vector<double> rtt;
    rtt.reserve(static_cast<size_t>(count));
    uint64_t bytes0 = 0, bytes1 = 0;
    double t_start = 0, t_end = 0;
    int fd = connect_to(rt, "realtime");
    if (fd < 0) {
        rc = 1;
    } else {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        set_timeout(fd, SO_RCVTIMEO, 10);   // one lost echo does not hang the run
        set_timeout(fd, SO_SNDTIMEO, 10);
        std::vector<char> buf(kMsg, 'r');
        double deadline = now_s() + kClientMaxSeconds;
        for (long i = 0; i < kWarmup + count; ++i) {
            if (i == kWarmup) {
                t_start = now_s();
                bytes0 = b.bytes.load();
            }
            double t0 = now_s();
            if (!full(fd, buf.data(), kMsg, true) || !full(fd, buf.data(), kMsg, false)) {
                fprintf(stderr, "isolation client: realtime connection lost after %ld rounds: %s\n", i,
                        strerror(errno));
                rc = 1;
                break;
            }
            double t1 = now_s();
            if (i >= kWarmup) rtt.push_back((t1 - t0) * 1e6);
            if (t1 > deadline) {
                fprintf(stderr, "isolation client: gave up after %.0f s (%ld rounds)\n", kClientMaxSeconds, i);
                rc = 1;
                break;
            }
        }
        t_end = now_s();
        bytes1 = b.bytes.load();
        close(fd);
    }

    if (bulk_on) {
        b.stop = true;
        if (b.fd >= 0) shutdown(b.fd, SHUT_RDWR);   // wake a blocked send
        sender.join();
        if (b.fd >= 0) close(b.fd);
        if (b.timed_out)
            fprintf(stderr, "isolation client: warning: the bulk flow stopped at its %.0f s bound before the "
                            "realtime thread finished\n", kBulkMaxSeconds);
        if (b.failed && rc == 0) fprintf(stderr, "isolation client: warning: the bulk flow failed during the run\n");
    }
    if (rc != 0 || rtt.empty()) return rc ? rc : 1;

    std::sort(rtt.begin(), rtt.end());
    auto pct = [&](double p) { return rtt[std::min(rtt.size() - 1, static_cast<size_t>(p * rtt.size()))]; };
    double secs = t_end - t_start;
    double gbit = secs > 0 ? static_cast<double>(bytes1 - bytes0) * 8 / secs / 1e9 : 0;
    printf("rtt_us p50=%.2f p90=%.2f p99=%.2f max=%.2f count=%zu bulk_gbit=%.3f\n", pct(0.5), pct(0.9), pct(0.99),
           rtt.back(), rtt.size(), gbit);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    signal(SIGPIPE, SIG_IGN);
    long count = 20000;
    bool bulk_on = true;
    std::string mode = argv[1];
    std::vector<const char*> pos;
    for (int i = 2; i < argc; ++i) {
        std::string a = argv[i];
        if ((a == "-n" || a == "--bulk" || a == "--rate-limit") && i + 1 < argc) {
            std::string v = argv[++i];
            if (a == "-n") {
                char* end = nullptr;
                count = strtol(v.c_str(), &end, 10);
                if (!end || *end || count <= 0 || count > 100000000)
                    return fprintf(stderr, "isolation: -n needs a positive number\n"), 2;
            } else if (a == "--bulk") {
                if (v != "on" && v != "off") return fprintf(stderr, "isolation: --bulk on or off\n"), 2;
                bulk_on = v == "on";
            } else if (v != "none") {
                return fprintf(stderr, "isolation: --rate-limit: only 'none' for now (the bulk flow is not paced)\n"), 2;
            }
        } else if (a.size() > 1 && a[0] == '-') {
            usage(stderr);
            return 2;
        } else {
            pos.push_back(argv[i]);
        }
    }
    if (mode == "server" && pos.size() == 2) {
        int pr = parse_port(pos[0]), pb = parse_port(pos[1]);
        if (pr < 0 || pb < 0 || pr == pb) return fprintf(stderr, "isolation: two different ports 1-65535\n"), 2;
        return server(pr, pb);
    }
    if (mode == "client" && pos.size() == 3) {
        int pr = parse_port(pos[1]), pb = parse_port(pos[2]);
        if (pr < 0 || pb < 0 || pr == pb) return fprintf(stderr, "isolation: two different ports 1-65535\n"), 2;
        return client(pos[0], pr, pb, count, bulk_on);
    }
    usage(stderr);
    return 2;
}
