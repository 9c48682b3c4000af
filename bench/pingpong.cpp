// pingpong: a TCP request/response round-trip benchmark (64-byte messages by
// default) for measuring what a shim adds to a small-message exchange.
//
//   pingpong server PORT              echo every message back (one client, then exit)
//   pingpong client HOST PORT [-n N] [-s SIZE] [-w WARMUP]
//       prints: rtt_us median=.. p90=.. p99=.. min=.. count=..
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "net.h"

namespace {

using bench::full;
using bench::now_s;

void usage(FILE* f) {
    fprintf(f,
            "usage: pingpong server PORT\n"
            "       pingpong client HOST PORT [-n COUNT] [-s SIZE] [-w WARMUP]\n"
            "TCP ping-pong: the client sends SIZE bytes (default 64), the server echoes\n"
            "them, COUNT times (default 100000) after WARMUP untimed rounds (default 1000).\n"
            "The client prints the round-trip time percentiles in microseconds.\n");
}

int server(int port, size_t size) {
    int l = bench::listen_loopback(port, 1);
    if (l < 0) {
        perror("pingpong server: bind/listen");
        return 1;
    }
    int c = accept(l, nullptr, nullptr);
    if (c < 0) return perror("accept"), 1;
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::vector<char> buf(size);
    while (full(c, buf.data(), size, false) && full(c, buf.data(), size, true)) {
    }
    close(c);
    close(l);
    return 0;
}

int client(const char* host, int port, long count, size_t size, long warmup) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) return fprintf(stderr, "pingpong: bad host %s\n", host), 2;
    for (int i = 0; connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0; ++i) {
        if (i == 100) return perror("pingpong client: connect"), 1;
        usleep(20000);
        close(fd);
        fd = socket(AF_INET, SOCK_STREAM, 0);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::vector<char> buf(size, 'x');
    std::vector<double> rtt;
    rtt.reserve(static_cast<size_t>(count));
    for (long i = 0; i < warmup + count; ++i) {
        double t0 = now_s();
        if (!full(fd, buf.data(), size, true) || !full(fd, buf.data(), size, false))
            return fprintf(stderr, "pingpong: connection lost\n"), 1;
        if (i >= warmup) rtt.push_back((now_s() - t0) * 1e6);
    }
    close(fd);
    std::sort(rtt.begin(), rtt.end());
    auto pct = [&](double p) { return rtt[std::min(rtt.size() - 1, static_cast<size_t>(p * rtt.size()))]; };
    printf("rtt_us median=%.2f p90=%.2f p99=%.2f min=%.2f count=%zu\n", pct(0.5), pct(0.9), pct(0.99), rtt.front(),
           rtt.size());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    long count = 100000, warmup = 1000;
    size_t size = 64;
    std::string mode = argv[1];
    std::vector<const char*> pos;
    for (int i = 2; i < argc; ++i) {
        std::string a = argv[i];
        if ((a == "-n" || a == "-s" || a == "-w") && i + 1 < argc) {
            long v = strtol(argv[++i], nullptr, 10);
            if (v <= 0 && a != "-w") return fprintf(stderr, "pingpong: %s needs a positive number\n", a.c_str()), 2;
            if (a == "-n") count = v;
            else if (a == "-w") warmup = v;
            else size = static_cast<size_t>(v);
        } else {
            pos.push_back(argv[i]);
        }
    }
    // The server must echo the same size the client sends: pass -s to both.
    if (mode == "server" && pos.size() == 1) return server(atoi(pos[0]), size);
    if (mode == "client" && pos.size() == 2) return client(pos[0], atoi(pos[1]), count, size, warmup);
    usage(stderr);
    return 2;
}
