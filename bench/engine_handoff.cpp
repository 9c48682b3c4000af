// engine_handoff: what one round trip through the engine thread costs.
//
// An application thread submits a Command; the engine runs it and answers by
// writing one byte to a pipe the application thread blocks on: two wake-ups,
// as a bridged flow's request and answer will need. Printed beside a plain
// thread-to-thread pipe ping-pong (the same two wake-ups without the engine)
// for the CPU placements that matter on a 2-CPU machine.
//
//   engine_handoff [-n ROUNDS] [--placement free|same|split]
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "core/engine/engine.h"

using gs::engine::Engine;
using gs::engine::now_ns;

namespace {

void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

struct Reply final : gs::engine::Command {
    int fd = -1;
    void run(Engine&) noexcept override {
        char b = 1;
        if (write(fd, &b, 1) != 1) abort();
    }
};

struct PinEngine final : gs::engine::Command {
    int cpu = -1;
    void run(Engine&) noexcept override { pin(cpu); }
};

double median(std::vector<double>& v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}
double pct(std::vector<double>& v, double p) {
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

}  // namespace

int main(int argc, char** argv) {
    int rounds = 20000;
    std::string placement = "free";
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            printf("usage: engine_handoff [-n ROUNDS] [--placement free|same|split]\n"
                   "Round trip through the engine thread (submit -> run -> pipe write -> wake)\n"
                   "beside a plain two-thread pipe ping-pong, median and p99 in microseconds.\n");
            return 0;
        }
        if (a == "-n" && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (a == "--placement" && i + 1 < argc) placement = argv[++i];
        else return fprintf(stderr, "engine_handoff: unknown argument %s (see --help)\n", a.c_str()), 2;
    }
    if (rounds <= 0 || (placement != "free" && placement != "same" && placement != "split"))
        return fprintf(stderr, "engine_handoff: -n must be positive, --placement free|same|split\n"), 2;
    int app_cpu = placement == "free" ? -1 : 0;
    int other_cpu = placement == "free" ? -1 : placement == "same" ? 0 : 1;

    // The engine.
    int err = 0;
    Engine* e = Engine::create(gs::engine::Options{}, &err);
    if (e == nullptr) return fprintf(stderr, "engine_handoff: engine failed: %s\n", strerror(-err)), 1;
    PinEngine pe;
    pe.cpu = other_cpu;
    e->submit(pe);
    int p[2];
    if (pipe(p) != 0) return perror("pipe"), 1;
    pin(app_cpu);
    usleep(10000);
    std::vector<double> via_engine;
    via_engine.reserve(rounds);
    Reply r;
    r.fd = p[1];
    for (int i = 0; i < rounds + 1000; ++i) {
        int64_t t0 = now_ns();
        e->submit(r);
        char b;
        if (read(p[0], &b, 1) != 1) return perror("read"), 1;
        if (i >= 1000) via_engine.push_back(static_cast<double>(now_ns() - t0) / 1e3);
    }
    Engine::destroy(e);

    // The same two wake-ups between two plain threads.
    int q[2];
    if (pipe(q) != 0) return perror("pipe"), 1;
    std::thread peer([&] {
        pin(other_cpu);
        char b;
        while (read(q[0], &b, 1) == 1 && b == 1)
            if (write(p[1], &b, 1) != 1) break;
    });
    std::vector<double> plain;
    plain.reserve(rounds);
    for (int i = 0; i < rounds + 1000; ++i) {
        int64_t t0 = now_ns();
        char b = 1;
        if (write(q[1], &b, 1) != 1 || read(p[0], &b, 1) != 1) return perror("pipe"), 1;
        if (i >= 1000) plain.push_back(static_cast<double>(now_ns() - t0) / 1e3);
    }
    char stop = 0;
    if (write(q[1], &stop, 1) != 1) return 1;
    peer.join();
    printf("placement %-5s  via engine: median %.2f us p99 %.2f us   plain threads: median %.2f us p99 %.2f us\n",
           placement.c_str(), median(via_engine), pct(via_engine, 0.99), median(plain), pct(plain, 0.99));
    return 0;
}
