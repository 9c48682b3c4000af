// policy_match: how long Policy::match takes with many rules, beside a plain
// linear scan, and how many heap allocations matching makes (must be 0).
//
//   policy_match [--rules N] [--flows M] [--seed S]
//
// The policy is generated: rules keyed by dport lists and ranges, by v4 and v6
// destination CIDRs, by process names, some combined, and a few wide ones. The
// flows hit rules early in the file, late in the file, or none at all, one
// third each. Each decision is timed on its own (steady_clock); the median
// timer overhead is subtracted.
#include "policy/policy.h"

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

namespace gp = gs::policy;

// Every heap allocation in the process is counted; the matching loops check
// that the count does not move. Not inlined: see tests/policy/match_test.cpp.
static std::atomic<long> g_allocs{0};
__attribute__((noinline)) void* operator new(std::size_t n) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

constexpr const char* kUsage =
    "usage: policy_match [--rules N] [--flows M] [--seed S]\n"
    "\n"
    "Times Policy::match over M generated flows (default 1000000) against a generated\n"
    "policy of N rules (default 10000), and a linear scan of the rules on a sample of\n"
    "the same flows. Prints median and p99 nanoseconds per decision and the heap\n"
    "allocations made while matching (must be 0; exit 1 otherwise).\n";

struct Rng {
    std::mt19937_64 g;
    explicit Rng(uint64_t s) : g(s) {}
    uint64_t below(uint64_t n) { return g() % n; }
    bool pct(int p) { return below(100) < static_cast<uint64_t>(p); }
};

std::string v4(uint32_t a) {
    return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." +
           std::to_string((a >> 8) & 255) + "." + std::to_string(a & 255);
}

// Rules live in 10.0.0.0/8, 2001:db8::/32 and ports 1024-60999; flows that
// must miss use 198.18.0.0/15, 2001:db9::/32 and ports 61000-65535.
std::string make_policy(size_t n, Rng& r) {
    std::string t = "[general]\non_error = open\n";
    t.reserve(n * 80);
    size_t wide_every = 500;   // ~0.2% wide rules
    for (size_t i = 0; i < n; ++i) {
        t += "\n[flow r" + std::to_string(i) + "]\n";
        const char* proto = r.pct(70) ? "tcp" : "udp";
        if (i % wide_every == wide_every - 1) {
            // Wide: no dport, dst or process; only a direction and a source port range.
            t += "proto = tcp\ndirection = accept\nsport = " + std::to_string(1024 + r.below(20000)) +
                 "-" + std::to_string(40000 + r.below(20000)) + "\n";
            continue;
        }
        uint64_t kind = r.below(100);
        if (kind < 35) {   // dport list or range
            t += std::string("proto = ") + proto + "\n";
            uint64_t p = 1024 + r.below(59000);
            if (r.pct(60)) t += "dport = " + std::to_string(p) + "\n";
            else if (r.pct(50)) t += "dport = " + std::to_string(p) + ", " + std::to_string(p + 7) + ", " + std::to_string(p + 100) + "\n";
            else t += "dport = " + std::to_string(p) + "-" + std::to_string(p + r.below(40)) + "\n";
        } else if (kind < 60) {   // v4 destinations
            static const int prefixes[] = {16, 24, 24, 28, 32, 32};
            int pre = prefixes[r.below(6)];
            uint32_t a = (10u << 24) | static_cast<uint32_t>(r.below(1u << 24));
            a &= 0xffffffffu << (32 - pre);
            t += "dst = " + v4(a) + "/" + std::to_string(pre);
            if (r.pct(20)) t += ", " + v4(((10u << 24) | static_cast<uint32_t>(r.below(1u << 24))) & ~0xffu) + "/24";
            t += "\n";
        } else if (kind < 72) {   // v6 destinations
            static const int prefixes[] = {48, 64, 64, 128};
            int pre = prefixes[r.below(4)];
            char buf[80];
            if (pre == 48)
                snprintf(buf, sizeof buf, "2001:db8:%x::/48", static_cast<unsigned>(r.below(65536)));
            else if (pre == 64)
                snprintf(buf, sizeof buf, "2001:db8:%x:%x::/64", static_cast<unsigned>(r.below(65536)),
                         static_cast<unsigned>(r.below(65536)));
            else
                snprintf(buf, sizeof buf, "2001:db8:%x::%x/128", static_cast<unsigned>(r.below(65536)),
                         static_cast<unsigned>(1 + r.below(65535)));
            t += std::string("dst = ") + buf + "\n";
        } else if (kind < 85) {   // process names, some with ports
            t += "process = proc" + std::to_string(r.below(2000));
            if (r.pct(30)) t += " proc" + std::to_string(r.below(2000));
            t += "\n";
            if (r.pct(40)) t += "dport = " + std::to_string(1024 + r.below(59000)) + "\n";
        } else {   // destination and ports together
            uint32_t a = ((10u << 24) | static_cast<uint32_t>(r.below(1u << 24))) & ~0xffu;
            t += std::string("proto = ") + proto + "\ndst = " + v4(a) + "/24\n";
            uint64_t p = 1024 + r.below(59000);
            t += "dport = " + std::to_string(p) + ", " + std::to_string(p + 1) + "\n";
        }
        if (r.pct(10)) t += "dscp = AF41\n";
        if (r.pct(5)) t += "rate = 10mbit\n";
    }
    return t;
}

struct Flow {
    gp::FlowKey key;
    char process[16];
};

// A flow that the rule matches (unless an earlier rule takes it first).
void flow_for(const gp::Rule& rule, Rng& r, Flow& f) {
    gp::FlowKey& k = f.key;
    k = {};
    k.proto = rule.proto == gp::Proto::udp ? gp::Proto::udp : gp::Proto::tcp;
    k.direction = rule.direction == gp::Direction::any ? gp::Direction::connect : rule.direction;
    k.dport = rule.dport.empty() ? static_cast<uint16_t>(61000 + r.below(4000))
                                 : static_cast<uint16_t>(rule.dport[0].lo + r.below(rule.dport[0].hi - rule.dport[0].lo + 1u));
    if (!rule.sport.empty()) k.sport = rule.sport[0].lo;
    if (!rule.dst.empty()) {
        const gp::Cidr& c = rule.dst[r.below(rule.dst.size())];
        k.dst = c.addr;
        int total = c.addr.family == AF_INET ? 32 : 128;
        for (int bit = c.prefix; bit < total; ++bit)
            if (r.pct(50)) k.dst.bytes[bit / 8] = static_cast<uint8_t>(k.dst.bytes[bit / 8] | (0x80u >> (bit % 8)));
    } else {
        k.dst.family = AF_INET;
        uint32_t a = (198u << 24) | (18u << 16) | static_cast<uint32_t>(r.below(1u << 17));
        for (int i = 0; i < 4; ++i) k.dst.bytes[i] = static_cast<uint8_t>(a >> (24 - 8 * i));
    }
    snprintf(f.process, sizeof f.process, "%s", rule.process.empty() ? "app" : rule.process[0].c_str());
}

void flow_none(Rng& r, Flow& f) {
    gp::FlowKey& k = f.key;
    k = {};
    k.proto = r.pct(70) ? gp::Proto::tcp : gp::Proto::udp;
    k.direction = gp::Direction::connect;
    k.dport = static_cast<uint16_t>(61000 + r.below(4000));
    if (r.pct(70)) {
        k.dst.family = AF_INET;
        uint32_t a = (198u << 24) | (18u << 16) | static_cast<uint32_t>(r.below(1u << 17));
        for (int i = 0; i < 4; ++i) k.dst.bytes[i] = static_cast<uint8_t>(a >> (24 - 8 * i));
    } else {
        k.dst.family = AF_INET6;
        k.dst.bytes[0] = 0x20;
        k.dst.bytes[1] = 0x01;
        k.dst.bytes[2] = 0x0d;
        k.dst.bytes[3] = 0xb9;
        for (int i = 4; i < 16; ++i) k.dst.bytes[i] = static_cast<uint8_t>(r.below(256));
    }
    snprintf(f.process, sizeof f.process, "proc%u", static_cast<unsigned>(5000 + r.below(1000)));
}

using Clock = std::chrono::steady_clock;

inline int64_t ns_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
}

struct Stats {
    double median = 0, p99 = 0, mean = 0;
};

Stats summarise(std::vector<int64_t>& v, int64_t overhead) {
    Stats s;
    if (v.empty()) return s;
    double sum = 0;
    for (int64_t& x : v) {
        x = std::max<int64_t>(0, x - overhead);
        sum += static_cast<double>(x);
    }
    s.mean = sum / static_cast<double>(v.size());
    size_t mid = v.size() / 2, p = v.size() * 99 / 100;
    std::nth_element(v.begin(), v.begin() + static_cast<long>(mid), v.end());
    s.median = static_cast<double>(v[mid]);
    std::nth_element(v.begin(), v.begin() + static_cast<long>(p), v.end());
    s.p99 = static_cast<double>(v[p]);
    return s;
}

bool parse_count(const char* s, uint64_t& out) {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || *end || s[0] == '-' || s[0] == 0) return false;
    out = v;
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    uint64_t nrules = 10000, nflows = 1000000, seed = 1;
    for (int i = 1; i < argc; i += 2) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            fputs(kUsage, stdout);
            return 0;
        }
        uint64_t* target = a == "--rules" ? &nrules : a == "--flows" ? &nflows : a == "--seed" ? &seed : nullptr;
        if (!target) {
            fprintf(stderr, "policy_match: unknown option '%s'\n\n%s", a.c_str(), kUsage);
            return 2;
        }
        if (i + 1 >= argc || !parse_count(argv[i + 1], *target)) {
            fprintf(stderr, "policy_match: %s needs a number\n\n%s", a.c_str(), kUsage);
            return 2;
        }
    }
    if (nrules == 0 || nflows == 0) {
        fprintf(stderr, "policy_match: --rules and --flows must be at least 1\n");
        return 2;
    }

    Rng rng(seed);
    std::string text = make_policy(nrules, rng);
    auto t0 = Clock::now();
    gp::Policy p = gp::Policy::parse(text, "bench.ini");
    auto t1 = Clock::now();
    if (!p.ok()) {
        fprintf(stderr, "policy_match: generated policy is broken: %s\n", p.diagnostics()[0].text.c_str());
        return 1;
    }

    // Flows: a third hit rules in the first tenth, a third in the last tenth, a third none.
    std::vector<Flow> flows(nflows);
    const auto& rules = p.rules();
    size_t tenth = std::max<size_t>(1, rules.size() / 10);
    uint64_t early = 0, late = 0, none = 0;
    for (size_t i = 0; i < flows.size(); ++i) {
        switch (i % 3) {
        case 0: flow_for(rules[rng.below(tenth)], rng, flows[i]); ++early; break;
        case 1: flow_for(rules[rules.size() - 1 - rng.below(tenth)], rng, flows[i]); ++late; break;
        default: flow_none(rng, flows[i]); ++none; break;
        }
    }
    std::shuffle(flows.begin(), flows.end(), rng.g);
    for (Flow& f : flows) f.key.process = f.process;

    size_t nlinear = std::min<size_t>(flows.size(), 20000);
    std::vector<int64_t> t_index(flows.size()), t_linear(nlinear), t_empty(100000);
    std::vector<int> got(nlinear);

    // Warm up the caches and the branch predictors once.
    long sink = 0;
    for (size_t i = 0; i < std::min<size_t>(flows.size(), 100000); ++i) sink += p.match_index(flows[i].key);

    long allocs_before = g_allocs.load();
    for (size_t i = 0; i < t_empty.size(); ++i) {
        auto a = Clock::now();
        auto b = Clock::now();
        t_empty[i] = ns_between(a, b);
    }
    long hits = 0;
    for (size_t i = 0; i < flows.size(); ++i) {
        auto a = Clock::now();
        const gp::Decision& d = p.match(flows[i].key);
        auto b = Clock::now();
        t_index[i] = ns_between(a, b);
        hits += d.line != 0;
    }
    for (size_t i = 0; i < nlinear; ++i) {
        auto a = Clock::now();
        int r = p.match_index_linear(flows[i].key);
        auto b = Clock::now();
        t_linear[i] = ns_between(a, b);
        got[i] = r;
    }
    long allocs = g_allocs.load() - allocs_before;

    size_t mismatches = 0;
    for (size_t i = 0; i < nlinear; ++i) mismatches += p.match_index(flows[i].key) != got[i];

    std::vector<int64_t> empty_copy = t_empty;
    Stats overhead = summarise(empty_copy, 0);
    int64_t ov = static_cast<int64_t>(overhead.median);
    Stats si = summarise(t_index, ov), sl = summarise(t_linear, ov);

    printf("policy_match: %llu rules (parsed and indexed in %.1f ms), %llu flows "
           "(%llu hit an early rule, %llu a late one, %llu none; %ld matched), seed %llu\n",
           static_cast<unsigned long long>(rules.size()), static_cast<double>(ns_between(t0, t1)) / 1e6,
           static_cast<unsigned long long>(flows.size()), static_cast<unsigned long long>(early),
           static_cast<unsigned long long>(late), static_cast<unsigned long long>(none), hits,
           static_cast<unsigned long long>(seed));
    printf("ns per decision (timer overhead %lld ns subtracted):\n", static_cast<long long>(ov));
    printf("  %-22s %10s %10s %10s\n", "", "median", "p99", "mean");
    printf("  %-22s %10.0f %10.0f %10.0f\n", "index (match)", si.median, si.p99, si.mean);
    printf("  %-22s %10.0f %10.0f %10.0f   (first %zu flows)\n", "linear scan", sl.median, sl.p99, sl.mean, nlinear);
    printf("heap allocations while matching: %ld\n", allocs);
    printf("index and linear scan disagree on %zu of %zu flows\n", mismatches, nlinear);
    if (sink == 42) printf(" \n");
    return (allocs == 0 && mismatches == 0) ? 0 : 1;
}
