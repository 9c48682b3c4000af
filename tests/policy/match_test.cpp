// Matching: the semantics rule by rule, no allocation, and a seeded property
// test that the index answers exactly like a scan of the rules in order.
#include "policy/policy.h"

#include <doctest/doctest.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <random>

using namespace gs::policy;

// Counts heap allocations so a test can show match() makes none. Not inlined:
// GCC 12 otherwise pairs the malloc and free across the replaced operators and
// warns (-Wmismatched-new-delete) about its own inlining.
static std::atomic<long> g_allocs{0};
__attribute__((noinline)) void* operator new(std::size_t n) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

Address addr(const char* s) {
    Address a;
    REQUIRE(parse_address(s, a));
    return a;
}

// parse_address() normalises, so build a mapped address by hand.
Address mapped(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    Address x;
    x.family = AF_INET6;
    x.bytes[10] = x.bytes[11] = 0xff;
    x.bytes[12] = a;
    x.bytes[13] = b;
    x.bytes[14] = c;
    x.bytes[15] = d;
    return x;
}

FlowKey tcp(const char* dst, uint16_t dport) {
    FlowKey f;
    f.proto = Proto::tcp;
    f.direction = Direction::connect;
    f.dst = addr(dst);
    f.dport = dport;
    return f;
}

Policy load(const std::string& text) {
    Policy p = Policy::parse(text, "t.ini");
    std::string all;
    for (const Diagnostic& d : p.diagnostics()) all += d.text + "\n";
    REQUIRE_MESSAGE(p.ok(), all);
    return p;
}

}  // namespace

TEST_CASE("first match wins, in file order") {
    Policy p = load("[flow a]\ndport = 80\n[flow b]\ndport = 80\ndst = 10.0.0.0/8\n[flow c]\ndport = 1-65535\n");
    CHECK(p.match(tcp("10.1.1.1", 80)).rule == "a");
    CHECK(p.match(tcp("10.1.1.1", 81)).rule == "c");
    Policy q = load("[flow wide]\nproto = tcp\n[flow narrow]\ndport = 80\n");
    CHECK(q.match(tcp("10.1.1.1", 80)).rule == "wide");
}

TEST_CASE("fallback by protocol") {
    Policy p = load("[flow a]\ndport = 80\n");
    FlowKey f = tcp("10.0.0.1", 443);
    const Decision& d = p.match(f);
    CHECK(d.rule == "default");
    CHECK(d.line == 0);
    CHECK(d.service == ServiceClass::reliable);
    CHECK(d.transport == Transport::native);
    CHECK(p.match_index(f) == -1);
    CHECK(p.rule_index(d) == -1);
    f.proto = Proto::udp;
    CHECK(p.match(f).service == ServiceClass::datagram);
}

TEST_CASE("port ranges are inclusive") {
    Policy p = load("[flow r]\ndport = 8000-8099, 443\n");
    CHECK(p.match(tcp("1.2.3.4", 8000)).rule == "r");
    CHECK(p.match(tcp("1.2.3.4", 8099)).rule == "r");
    CHECK(p.match(tcp("1.2.3.4", 443)).rule == "r");
    CHECK(p.match(tcp("1.2.3.4", 7999)).rule == "default");
    CHECK(p.match(tcp("1.2.3.4", 8100)).rule == "default");
}

TEST_CASE("v4-mapped addresses match v4 rules, both ways") {
    Policy p = load("[flow v4]\ndst = 10.0.0.0/8\n[flow m]\ndst = ::ffff:192.0.2.0/120\n");
    FlowKey f = tcp("10.0.0.1", 1);
    f.dst = mapped(10, 9, 8, 7);
    CHECK(p.match(f).rule == "v4");
    f.dst = addr("192.0.2.9");
    CHECK(p.match(f).rule == "m");
    f.dst = mapped(192, 0, 2, 9);
    CHECK(p.match(f).rule == "m");
    f.dst = addr("::1");
    CHECK(p.match(f).rule == "default");
}

TEST_CASE("v6 prefixes") {
    Policy p = load("[flow doc]\ndst = 2001:db8::/32\n[flow lo]\ndst = ::1\n");
    CHECK(p.match(tcp("2001:db8:ffff::1", 1)).rule == "doc");
    CHECK(p.match(tcp("2001:db9::1", 1)).rule == "default");
    CHECK(p.match(tcp("::1", 1)).rule == "lo");
}

TEST_CASE("directions") {
    Policy p = load("[flow in]\ndirection = accept\ndport = 22\n[flow out]\ndirection = connect\ndport = 22\n"
                    "[flow dg]\ndirection = datagram\n");
    FlowKey f = tcp("10.0.0.1", 22);
    CHECK(p.match(f).rule == "out");
    f.direction = Direction::accept;
    CHECK(p.match(f).rule == "in");
    f.proto = Proto::udp;
    f.direction = Direction::datagram;
    CHECK(p.match(f).rule == "dg");
}

TEST_CASE("process: a rule with process never matches an unknown process") {
    Policy p = load("[flow curl]\nprocess = curl wget\n[flow rest]\nproto = tcp\n");
    FlowKey f = tcp("10.0.0.1", 80);
    CHECK(p.match(f).rule == "rest");
    f.process = "curl";
    CHECK(p.match(f).rule == "curl");
    f.process = "wget";
    CHECK(p.match(f).rule == "curl");
    f.process = "cur";
    CHECK(p.match(f).rule == "rest");
}

TEST_CASE("src: a rule with src never matches an unbound flow") {
    Policy p = load("[flow s]\nsrc = 10.0.0.0/8\n[flow sp]\nsport = 5000\n");
    FlowKey f = tcp("192.0.2.1", 80);
    CHECK(p.match(f).rule == "default");   // src.family == 0, sport 0
    f.src = addr("10.1.2.3");
    CHECK(p.match(f).rule == "s");
    f.src = addr("11.0.0.1");
    f.sport = 5000;
    CHECK(p.match(f).rule == "sp");
}

TEST_CASE("proto: absent matches both, and the class follows the flow when unset") {
    Policy p = load("[flow lan]\ndst = 10.0.0.0/8\ndscp = AF41\n");
    FlowKey f = tcp("10.0.0.1", 80);
    CHECK(p.match(f).service == ServiceClass::reliable);
    f.proto = Proto::udp;
    CHECK(p.match(f).rule == "lan");
    CHECK(p.match(f).service == ServiceClass::datagram);
    CHECK(p.match(f).qos.dscp == 34);
    CHECK(p.rule_index(p.match(f)) == 0);   // the UDP decision belongs to the rule too
    f.proto = Proto::tcp;
    CHECK(p.rule_index(p.match(f)) == 0);
    f.proto = Proto::udp;
    Policy q = load("[flow t]\nproto = tcp\n[flow u]\nproto = udp\n");
    CHECK(q.match(f).rule == "u");
    CHECK(q.match(f).service == ServiceClass::datagram);
    f.proto = Proto::tcp;
    CHECK(q.match(f).rule == "t");
}

TEST_CASE("a default-constructed policy matches nothing") {
    Policy p;
    CHECK(p.match(tcp("10.0.0.1", 80)).rule == "default");
    Policy moved = std::move(p);
    CHECK(moved.match(tcp("10.0.0.1", 80)).rule == "default");
}

TEST_CASE("match() does not allocate") {
    Policy p = load("[flow a]\nprocess = curl\n[flow b]\ndst = 10.0.0.0/8, 2001:db8::/32\n"
                    "[flow c]\ndport = 1000-5000\n[flow d]\nsport = 7\n");
    FlowKey flows[4] = {tcp("10.0.0.1", 80), tcp("2001:db8::1", 2000), tcp("192.0.2.1", 9), tcp("::1", 1)};
    flows[0].process = "curl";
    long before = g_allocs.load();
    int sum = 0;
    for (int i = 0; i < 1000; ++i)
        for (const FlowKey& f : flows) sum += p.match_index(f) + static_cast<int>(p.match(f).line);
    CHECK(g_allocs.load() == before);
    CHECK(sum != 0);
}

// ---- property: the index is exact ----

namespace {

struct Gen {
    std::mt19937_64 rng;
    uint64_t span;   // ports and address bytes come from pools this wide
    int wide;        // per mille: how often a constraint is wide (/0, 1-30000...)
    Gen(uint64_t seed, uint64_t span_, int wide_) : rng(seed), span(span_), wide(wide_) {}
    bool permille(int n) { return below(1000) < static_cast<uint64_t>(n); }
    uint64_t below(uint64_t n) { return rng() % n; }
    bool chance(int pct) { return below(100) < static_cast<uint64_t>(pct); }

    // Ports from a small pool so rules and flows meet, with some wide ranges.
    std::string port_item() {
        if (permille(wide)) return std::to_string(1 + below(30000)) + "-" + std::to_string(30000 + below(35000));
        switch (below(10)) {
        case 0: {
            uint64_t lo = 1 + below(span);
            return std::to_string(lo) + "-" + std::to_string(lo + below(40));
        }
        case 1: {
            uint64_t lo = 1 + below(span);
            return std::to_string(lo) + "-" + std::to_string(lo + 50 + below(200));
        }
        default: return std::to_string(1 + below(span));
        }
    }
    std::string cidr() {
        static const int v4_prefixes[] = {24, 28, 30, 32, 32, 16, 0, 4, 8, 12};
        static const int v6_prefixes[] = {64, 100, 128, 128, 32, 48, 0, 16};
        bool w = permille(wide);
        uint64_t b = span > 255 ? 255 : span;
        if (chance(65)) {
            int pre = v4_prefixes[w ? 5 + below(5) : below(5)];
            uint32_t a = (10u << 24) | (static_cast<uint32_t>(below(b)) << 16) |
                         (static_cast<uint32_t>(below(b)) << 8) | static_cast<uint32_t>(below(b));
            a = pre == 0 ? 0 : a & (0xffffffffu << (32 - pre));
            std::string s = std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." +
                            std::to_string((a >> 8) & 255) + "." + std::to_string(a & 255);
            if (chance(10) && pre >= 0) return "::ffff:" + s + "/" + std::to_string(pre + 96);
            return s + "/" + std::to_string(pre);
        }
        int pre = v6_prefixes[w ? 4 + below(4) : below(4)];
        Address a;
        a.family = AF_INET6;
        a.bytes[0] = 0x20;
        a.bytes[1] = 0x01;
        a.bytes[3] = static_cast<uint8_t>(below(b));
        a.bytes[7] = static_cast<uint8_t>(below(b));
        a.bytes[15] = static_cast<uint8_t>(below(b));
        for (int bit = pre; bit < 128; ++bit)
            a.bytes[bit / 8] = static_cast<uint8_t>(a.bytes[bit / 8] & ~(0x80u >> (bit % 8)));
        return format_address(a) + "/" + std::to_string(pre);
    }
    Address address() {
        uint64_t b = span > 255 ? 255 : span;
        if (chance(60)) {
            Address a;
            a.family = AF_INET;
            a.bytes[0] = chance(90) ? 10 : static_cast<uint8_t>(below(256));
            a.bytes[1] = static_cast<uint8_t>(below(b));
            a.bytes[2] = static_cast<uint8_t>(below(b));
            a.bytes[3] = static_cast<uint8_t>(below(b));
            if (chance(15)) return mapped(a.bytes[0], a.bytes[1], a.bytes[2], a.bytes[3]);
            return a;
        }
        Address a;
        a.family = AF_INET6;
        a.bytes[0] = 0x20;
        a.bytes[1] = chance(90) ? 0x01 : 0x02;
        a.bytes[3] = static_cast<uint8_t>(below(b));
        a.bytes[7] = static_cast<uint8_t>(below(b));
        a.bytes[15] = static_cast<uint8_t>(below(b));
        return a;
    }
    std::string list(int max, std::string (Gen::*item)()) {
        std::string s;
        int n = 1 + static_cast<int>(below(static_cast<uint64_t>(max)));
        for (int i = 0; i < n; ++i) s += (i ? ", " : "") + (this->*item)();
        return s;
    }
    std::string process_item() {
        static const char* names[] = {"curl", "wget", "nginx", "ssh"};
        return names[below(4)];
    }

    std::string rule(int i) {
        std::string r = "[flow r" + std::to_string(i) + "]\n";
        int proto = static_cast<int>(below(3));   // any, tcp, udp
        if (proto == 1) r += "proto = tcp\n";
        if (proto == 2) r += "proto = udp\n";
        if (chance(30)) {
            const char* dirs[] = {"connect", "any", proto == 2 ? "datagram" : "accept",
                                  proto == 1 ? "accept" : "datagram"};
            r += std::string("direction = ") + dirs[below(4)] + "\n";
        }
        if (chance(50)) r += "dport = " + list(3, &Gen::port_item) + "\n";
        if (chance(15)) r += "sport = " + list(2, &Gen::port_item) + "\n";
        if (chance(45)) r += "dst = " + list(3, &Gen::cidr) + "\n";
        if (chance(15)) r += "src = " + list(2, &Gen::cidr) + "\n";
        if (chance(25)) r += "process = " + list(2, &Gen::process_item) + "\n";
        // A few rules stay wide (no dport, no dst); most say something more.
        if (r.find("dport") == std::string::npos && r.find("dst") == std::string::npos && !permille(wide))
            r += "dport = " + port_item() + "\n";
        return r;
    }
    FlowKey flow() {
        static const char* names[] = {"", "curl", "wget", "nginx", "ssh", "other"};
        FlowKey f;
        f.proto = chance(50) ? Proto::tcp : Proto::udp;
        int d = static_cast<int>(below(3));
        f.direction = d == 0 ? Direction::connect
                      : f.proto == Proto::tcp ? Direction::accept
                                              : Direction::datagram;
        f.dport = static_cast<uint16_t>(chance(80) ? 1 + below(span) : 1 + below(65535));
        f.sport = static_cast<uint16_t>(chance(30) ? 0 : chance(50) ? 1 + below(span) : 1 + below(65535));
        f.dst = chance(3) ? Address{} : address();
        f.src = chance(30) ? Address{} : address();
        f.process = names[below(6)];
        return f;
    }
};

}  // namespace

TEST_CASE("property: the index gives the same rule as a linear scan") {
    long checked = 0, hits = 0, hits_big = 0;
    for (uint64_t seed = 1; seed <= 12; ++seed) {
        int nrules = seed <= 4 ? 20 : seed <= 8 ? 300 : 3000;
        Gen g(seed, nrules == 20 ? 20 : nrules == 300 ? 200 : 4000, nrules == 20 ? 60 : nrules == 300 ? 10 : 1);
        std::string text;
        for (int i = 0; i < nrules; ++i) text += g.rule(i);
        Policy p = Policy::parse(text, "prop.ini");
        REQUIRE_MESSAGE(p.ok(), (p.diagnostics().empty() ? "" : p.diagnostics()[0].text));
        REQUIRE(p.rules().size() == static_cast<size_t>(nrules));
        for (int i = 0; i < 4000; ++i) {
            FlowKey f = g.flow();
            int want = p.match_index_linear(f);
            int got = p.match_index(f);
            if (got != want) {
                FAIL("seed " << seed << " flow " << i << ": index says " << got << ", scan says "
                              << want << " (dport " << f.dport << ", dst "
                              << format_address(f.dst) << ")");
            }
            ++checked;
            hits += want >= 0;
            if (nrules == 3000) hits_big += want >= 0;
        }
    }
    CHECK(checked == 12 * 4000);
    // The generator must make both outcomes common, or the test shows little.
    MESSAGE("flows that hit a rule: " << hits << " of " << checked << ", with 3000 rules: " << hits_big
                                      << " of 16000");
    CHECK(hits > checked / 5);
    CHECK(hits_big < 16000 * 9 / 10);
}
