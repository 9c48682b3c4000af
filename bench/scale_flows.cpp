// scale_flows: many concurrent idle TCP flows in one process, and what they cost
// in user memory (issue: 10,000 idle bridged flows, at most 16 KiB each).
//
//   scale_flows server PORT
//       accepts on 127.0.0.1:PORT forever (epoll), keeps every connection open,
//       reads and discards; SIGUSR1 prints one status line on stdout:
//       open=.. accepted=.. bytes_open=.. bytes_total=..
//   scale_flows client HOST PORT -n N [--hold SECONDS] [--settle SECONDS] [--bytes B]
//       opens N connections one after the other, sends 1 byte (B) on each, then
//       prints one line on stdout:
//       flows=N rss_before_kib=.. rss_kib=.. hwm_kib=.. vm_before_kib=.. vm_kib=..
//       heap_before_kib=.. heap_kib=.. fds_before=.. fds=..
//       and holds the flows open for --hold seconds (SIGTERM/SIGINT end the hold
//       early and exit normally, so atexit work such as GSOCKET_STATS happens).
// Run by bench/scale.sh.
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "net.h"

namespace {

using bench::parse_port;

void usage(FILE* f) {
    fprintf(f,
            "usage: scale_flows server PORT\n"
            "       scale_flows client HOST PORT -n N [--hold SECONDS] [--settle SECONDS] [--bytes B]\n"
            "\n"
            "Many concurrent idle TCP flows in one process, for bench/scale.sh.\n"
            "\n"
            "server: accepts on 127.0.0.1:PORT forever with epoll, keeps every connection\n"
            "  open, reads and discards what arrives. Prints 'listening on ...' on stderr\n"
            "  when ready. On SIGUSR1 prints one line on stdout:\n"
            "    open=N accepted=N bytes_open=N bytes_total=N\n"
            "  (bytes_open: bytes received on the connections open now).\n"
            "\n"
            "client: raises RLIMIT_NOFILE to the hard limit, opens N TCP connections to\n"
            "  HOST:PORT (IPv4) one after the other with a blocking connect (10 s timeout),\n"
            "  sends 1 byte on each (--bytes B: B bytes, to see what an idle flow keeps\n"
            "  after a burst), waits --settle seconds (default 0.5) for the process\n"
            "  to go idle, then prints one line on stdout:\n"
            "    flows=N rss_before_kib=.. rss_kib=.. hwm_kib=.. vm_before_kib=.. vm_kib=..\n"
            "    heap_before_kib=.. heap_kib=.. fds_before=.. fds=..\n"
            "  rss/hwm/vm: VmRSS, VmHWM, VmSize of /proc/self/status; heap: bytes malloc\n"
            "  has handed out (mallinfo2 uordblks + hblkhd), touched or not; fds: entries\n"
            "  of /proc/self/fd. *_before: measured before the first connect. Then it\n"
            "  holds the flows for --hold seconds (default 0); SIGTERM or SIGINT end the\n"
            "  hold early and the client exits normally (exit status 0).\n"
            "Progress goes to stderr every 1000 connections; any failure names the\n"
            "connection and the errno text, and exits 1.\n");
}

void raise_nofile() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            fprintf(stderr, "scale_flows: cannot raise RLIMIT_NOFILE to %llu: %s\n",
                    static_cast<unsigned long long>(rl.rlim_max), strerror(errno));
    }
}

unsigned long long nofile() {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    return static_cast<unsigned long long>(rl.rlim_cur);
}

// ---- server ----

int server(int port) {
    raise_nofile();
    const char* failed = nullptr;
    int l = bench::listen_loopback(port, 4096, SOCK_NONBLOCK | SOCK_CLOEXEC, &failed);
    if (l < 0 && strcmp(failed, "bind") == 0)
        return fprintf(stderr, "scale_flows server: bind 127.0.0.1:%d: %s\n", port, strerror(errno)), 1;
    if (l < 0) return fprintf(stderr, "scale_flows server: %s: %s\n", failed, strerror(errno)), 1;   // socket, listen

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (sfd < 0 || ep < 0)
        return fprintf(stderr, "scale_flows server: signalfd/epoll_create1: %s\n", strerror(errno)), 1;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = l;
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    ev.data.fd = sfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
    fprintf(stderr, "scale_flows server: listening on 127.0.0.1:%d (RLIMIT_NOFILE %llu)\n", port, nofile());

    std::vector<uint64_t> bytes;   // per fd, bytes received; only connection fds are used
    std::vector<char> live;
    uint64_t open = 0, accepted = 0, bytes_open = 0, bytes_total = 0;
    bool listening = true;   // paused for a moment when accept runs out of descriptors
    int64_t emfile_logged = 0;
    char buf[65536];
    epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, listening ? -1 : 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            return fprintf(stderr, "scale_flows server: epoll_wait: %s\n", strerror(errno)), 1;
        }
        if (!listening) {   // try again after the pause
            ev.events = EPOLLIN;
            ev.data.fd = l;
            epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
            listening = true;
        }
        for (int i = 0; i < n; ++i) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                for (;;) {
                    int c = accept4(l, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) break;
                        if (errno == EMFILE || errno == ENFILE) {
                            if (emfile_logged++ % 100 == 0)
                                fprintf(stderr,
                                        "scale_flows server: accept: %s after %llu open connections "
                                        "(RLIMIT_NOFILE %llu): raise ulimit -n\n",
                                        strerror(errno), static_cast<unsigned long long>(open), nofile());
                            epoll_ctl(ep, EPOLL_CTL_DEL, l, nullptr);
                            listening = false;
                            break;
                        }
                        fprintf(stderr, "scale_flows server: accept: %s\n", strerror(errno));
                        break;
                    }
                    if (static_cast<size_t>(c) >= bytes.size()) {
                        bytes.resize(static_cast<size_t>(c) * 2 + 64, 0);
                        live.resize(bytes.size(), 0);
                    }
                    bytes[c] = 0;
                    live[c] = 1;
                    ev.events = EPOLLIN | EPOLLRDHUP;
                    ev.data.fd = c;
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) != 0) {
                        fprintf(stderr, "scale_flows server: epoll_ctl: %s\n", strerror(errno));
                        close(c);
                        live[c] = 0;
                        continue;
                    }
                    ++open;
                    ++accepted;
                }
            } else if (fd == sfd) {
                signalfd_siginfo si;
                while (read(sfd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
                }
                printf("open=%llu accepted=%llu bytes_open=%llu bytes_total=%llu\n",
                       static_cast<unsigned long long>(open), static_cast<unsigned long long>(accepted),
                       static_cast<unsigned long long>(bytes_open), static_cast<unsigned long long>(bytes_total));
                fflush(stdout);
            } else {
                bool gone = false;
                for (;;) {
                    ssize_t r = recv(fd, buf, sizeof buf, 0);
                    if (r > 0) {
                        bytes[fd] += static_cast<uint64_t>(r);
                        bytes_open += static_cast<uint64_t>(r);
                        bytes_total += static_cast<uint64_t>(r);
                        continue;
                    }
                    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                    if (r < 0 && errno == EINTR) continue;
                    gone = true;   // end of file, or a reset
                    break;
                }
                if (gone && live[fd]) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
                    close(fd);
                    live[fd] = 0;
                    bytes_open -= bytes[fd];
                    bytes[fd] = 0;
                    --open;
                }
            }
        }
    }
}

// ---- client ----

struct Status {
    long rss = -1, hwm = -1, vm = -1;   // KiB
};

Status read_status() {
    Status s;
    FILE* f = fopen("/proc/self/status", "re");
    if (f == nullptr) return s;
    char line[256];
    while (fgets(line, sizeof line, f) != nullptr) {
        if (strncmp(line, "VmRSS:", 6) == 0) s.rss = strtol(line + 6, nullptr, 10);
        else if (strncmp(line, "VmHWM:", 6) == 0) s.hwm = strtol(line + 6, nullptr, 10);
        else if (strncmp(line, "VmSize:", 7) == 0) s.vm = strtol(line + 7, nullptr, 10);
    }
    fclose(f);
    return s;
}

long count_fds() {
    DIR* d = opendir("/proc/self/fd");
    if (d == nullptr) return -1;
    long n = 0;
    while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') ++n;
    closedir(d);
    return n - 1;   // the directory's own descriptor
}

long heap_kib() {
    struct mallinfo2 m = mallinfo2();
    return static_cast<long>((m.uordblks + m.hblkhd) / 1024);
}

volatile sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

void sleep_seconds(double s) {
    if (s <= 0) return;
    timespec now, end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += static_cast<time_t>(s);
    end.tv_nsec += static_cast<long>((s - static_cast<double>(static_cast<time_t>(s))) * 1e9);
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec += 1;
        end.tv_nsec -= 1000000000L;
    }
    while (!g_stop) {
        int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &end, nullptr);
        if (rc == 0) break;
        if (rc != EINTR) break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec)) break;
    }
}

int client(const char* host, int port, long n, double hold, double settle, size_t nbytes) {
    raise_nofile();
    struct sigaction sa{};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);

    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        return fprintf(stderr, "scale_flows client: bad IPv4 address '%s'\n", host), 2;
    if (static_cast<unsigned long long>(n) + 16 > nofile())
        fprintf(stderr,
                "scale_flows client: warning: RLIMIT_NOFILE is %llu for %ld flows; raise ulimit -n "
                "(a bridged flow takes more than one descriptor)\n",
                nofile(), n);

    std::vector<int> fds;
    fds.reserve(static_cast<size_t>(n));
    std::vector<char> payload(nbytes, 'x');   // allocated before the first measurement
    const Status before = read_status();
    const long fds_before = count_fds();
    const long heap_before = heap_kib();

    for (long i = 0; i < n; ++i) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return fprintf(stderr, "scale_flows client: connection %ld of %ld: socket: %s (RLIMIT_NOFILE %llu)\n",
                           i + 1, n, strerror(errno), nofile()),
                   1;
        timeval tv{10, 0};   // a connect that hangs (full backlog) fails after 10 s instead
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
            return fprintf(stderr, "scale_flows client: connection %ld of %ld: connect to %s:%d: %s\n", i + 1, n,
                           host, port, strerror(errno)),
                   1;
        size_t sent = 0;
        while (sent < nbytes) {
            ssize_t w = send(fd, payload.data() + sent, nbytes - sent, MSG_NOSIGNAL);
            if (w <= 0)
                return fprintf(stderr, "scale_flows client: connection %ld of %ld: send %zu bytes: %s after %zu\n",
                               i + 1, n, nbytes, w < 0 ? strerror(errno) : "sent nothing", sent),
                       1;
            sent += static_cast<size_t>(w);
        }
        fds.push_back(fd);
        if ((i + 1) % 1000 == 0 || i + 1 == n) fprintf(stderr, "scale_flows client: %ld/%ld connected\n", i + 1, n);
        if (g_stop) return fprintf(stderr, "scale_flows client: interrupted after %ld connections\n", i + 1), 1;
    }

    sleep_seconds(settle);   // let in-flight bytes go out (a bridge relays them on another thread)
    const Status after = read_status();
    const long fds_after = count_fds();
    const long heap_after = heap_kib();
    printf("flows=%ld rss_before_kib=%ld rss_kib=%ld hwm_kib=%ld vm_before_kib=%ld vm_kib=%ld "
           "heap_before_kib=%ld heap_kib=%ld fds_before=%ld fds=%ld\n",
           n, before.rss, after.rss, after.hwm, before.vm, after.vm, heap_before, heap_after, fds_before,
           fds_after);
    fflush(stdout);
    sleep_seconds(hold);
    return 0;   // exit() closes the flows (and runs atexit work, e.g. GSOCKET_STATS)
}

bool parse_seconds(const char* s, double* out) {
    char* end = nullptr;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v >= 0) || v > 1e7) return false;
    *out = v;
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) return usage(stdout), 0;
    if (argc == 3 && strcmp(argv[1], "server") == 0) {
        int port = parse_port(argv[2]);
        if (port < 0) return fprintf(stderr, "scale_flows: bad port '%s'\n", argv[2]), 2;
        return server(port);
    }
    if (argc >= 4 && strcmp(argv[1], "client") == 0) {
        int port = parse_port(argv[3]);
        if (port < 0) return fprintf(stderr, "scale_flows: bad port '%s'\n", argv[3]), 2;
        long n = -1;
        double hold = 0, settle = 0.5;
        long nbytes = 1;
        for (int i = 4; i < argc; ++i) {
            const std::string o = argv[i];
            if (i + 1 >= argc) return fprintf(stderr, "scale_flows: %s needs a value\n", o.c_str()), usage(stderr), 2;
            const char* v = argv[++i];
            if (o == "-n") {
                char* end = nullptr;
                n = strtol(v, &end, 10);
                if (end == v || *end != '\0' || n < 1 || n > 10000000)
                    return fprintf(stderr, "scale_flows: bad -n '%s'\n", v), 2;
            } else if (o == "--hold") {
                if (!parse_seconds(v, &hold)) return fprintf(stderr, "scale_flows: bad --hold '%s'\n", v), 2;
            } else if (o == "--bytes") {
                char* end = nullptr;
                nbytes = strtol(v, &end, 10);
                if (end == v || *end != '\0' || nbytes < 1 || nbytes > (64L << 20))
                    return fprintf(stderr, "scale_flows: bad --bytes '%s' (1 to 64 MiB)\n", v), 2;
            } else if (o == "--settle") {
                if (!parse_seconds(v, &settle)) return fprintf(stderr, "scale_flows: bad --settle '%s'\n", v), 2;
            } else {
                return fprintf(stderr, "scale_flows: unknown option %s\n", o.c_str()), usage(stderr), 2;
            }
        }
        if (n < 0) return fprintf(stderr, "scale_flows: client needs -n N\n"), usage(stderr), 2;
        return client(argv[2], port, n, hold, settle, static_cast<size_t>(nbytes));
    }
    usage(stderr);
    return 2;
}
