// The unit parsers: every unit, the edges, and that nothing wraps.
#include "policy/policy.h"

#include "core/mces/conn/chain.h"

#include <doctest/doctest.h>
#include <sys/socket.h>

#include <algorithm>

using namespace gs::policy;

namespace {

uint64_t rate(std::string_view s) {
    uint64_t v = 12345;
    std::string why;
    REQUIRE_MESSAGE(parse_rate(s, v, why), s, ": ", why);
    return v;
}

std::string rate_err(std::string_view s) {
    uint64_t v = 0;
    std::string why;
    CHECK_FALSE(parse_rate(s, v, why));
    return why;
}

uint64_t size(std::string_view s) {
    uint64_t v = 0;
    std::string why;
    REQUIRE_MESSAGE(parse_size(s, v, why), s, ": ", why);
    return v;
}

bool size_ok(std::string_view s) {
    uint64_t v = 0;
    std::string why;
    return parse_size(s, v, why);
}

uint32_t dur(std::string_view s) {
    uint32_t v = 0;
    std::string why;
    REQUIRE_MESSAGE(parse_duration(s, v, why), s, ": ", why);
    return v;
}

bool dur_ok(std::string_view s) {
    uint32_t v = 0;
    std::string why;
    return parse_duration(s, v, why);
}

}  // namespace

TEST_CASE("rates: bit units are decimal SI, divided by 8") {
    CHECK(rate("0") == 0);
    CHECK(rate("8bit") == 1);
    CHECK(rate("1kbit") == 125);
    CHECK(rate("20mbit") == 2500000);
    CHECK(rate("1.5mbit") == 187500);
    CHECK(rate("1gbit") == 125000000);
    CHECK(rate("1tbit") == 125000000000ULL);
    CHECK(rate("20Mbit") == 2500000);   // bit units are case-insensitive
    CHECK(rate(" 10 mbit ") == 1250000);
}

TEST_CASE("rates: byte units, decimal and binary") {
    CHECK(rate("1B/s") == 1);
    CHECK(rate("2kB/s") == 2000);
    CHECK(rate("2KB/s") == 2000);
    CHECK(rate("2MB/s") == 2000000);
    CHECK(rate("1GB/s") == 1000000000);
    CHECK(rate("1KiB/s") == 1024);
    CHECK(rate("1MiB/s") == 1048576);
    CHECK(rate("1.5GiB/s") == 1610612736);
}

TEST_CASE("rates: errors say what is right") {
    CHECK(rate_err("10") == "no unit: write 10mbit (bits/s) or 2MB/s (bytes/s)");
    CHECK(rate_err("10kbps").find("ambiguous") != std::string::npos);
    CHECK(rate_err("10Mbps").find("ambiguous") != std::string::npos);
    CHECK(rate_err("1gbps").find("tc reads kbps as kilobytes") != std::string::npos);
    CHECK(rate_err("10mb/s").find("unknown unit 'mb/s'") != std::string::npos);
    CHECK(rate_err("").find("empty") != std::string::npos);
    CHECK(rate_err("mbit").find("not a rate") != std::string::npos);
    CHECK(rate_err("-5mbit").find("negative") != std::string::npos);
    CHECK(rate_err("1.mbit").find("not a rate") != std::string::npos);
    CHECK(rate_err("1bit").find("below 1 B/s") != std::string::npos);
    CHECK(rate_err("1.0000000000001mbit").find("decimals") != std::string::npos);
}

TEST_CASE("rates: overflow is an error, never a wrap") {
    CHECK(rate("18446744073709551615B/s") == 18446744073709551615ULL);
    CHECK(rate_err("18446744073709551616B/s").find("too large") != std::string::npos);
    CHECK(rate_err("147573952589676412928bit").find("too large") != std::string::npos);
    CHECK(rate_err("99999999999tbit").find("too large") != std::string::npos);
    CHECK(rate_err("9999999999999999999999999999999999999999tbit").find("too large") != std::string::npos);
    CHECK(rate_err("17179869184GiB/s").find("too large") != std::string::npos);
}

TEST_CASE("sizes") {
    CHECK(size("0") == 0);
    CHECK(size("1500") == 1500);
    CHECK(size("1500B") == 1500);
    CHECK(size("64kB") == 64000);
    CHECK(size("64KB") == 64000);
    CHECK(size("1MB") == 1000000);
    CHECK(size("1GB") == 1000000000);
    CHECK(size("64KiB") == 65536);
    CHECK(size("1.5MiB") == 1572864);
    CHECK(size("2GiB") == 2147483648ULL);
    CHECK_FALSE(size_ok("1.5"));      // bytes are whole
    CHECK_FALSE(size_ok("10kb"));     // b is bits elsewhere: refused
    CHECK_FALSE(size_ok("1TB"));
    CHECK_FALSE(size_ok("-1"));
    CHECK_FALSE(size_ok(""));
    CHECK_FALSE(size_ok("18446744073709551616"));
    CHECK_FALSE(size_ok("17179869184GiB"));
}

TEST_CASE("durations") {
    CHECK(dur("0") == 0);
    CHECK(dur("1us") == 1);
    CHECK(dur("120ms") == 120000);
    CHECK(dur("1.5s") == 1500000);
    CHECK(dur("0.5ms") == 500);
    CHECK(dur("4294s") == 4294000000u);
    CHECK_FALSE(dur_ok("120"));       // no unit
    CHECK_FALSE(dur_ok("5min"));
    CHECK_FALSE(dur_ok("4295s"));     // past 32-bit microseconds
    CHECK_FALSE(dur_ok("0.1us"));     // rounds to nothing
    CHECK_FALSE(dur_ok("ms"));
    std::string why;
    uint32_t v = 0;
    CHECK_FALSE(parse_duration("120", v, why));
    CHECK(why == "no unit: write 120ms, 500us or 1.5s");
}

TEST_CASE("percent") {
    std::string why;
    uint32_t ppm = 0;
    CHECK((parse_percent("1%", ppm, why) && ppm == 10000));
    CHECK((parse_percent("0.5%", ppm, why) && ppm == 5000));
    CHECK((parse_percent("0.0001%", ppm, why) && ppm == 1));
    CHECK((parse_percent("100%", ppm, why) && ppm == 1000000));
    CHECK((parse_percent("0", ppm, why) && ppm == 0));
    CHECK_FALSE(parse_percent("1", ppm, why));
    CHECK_FALSE(parse_percent("100.0001%", ppm, why));
    CHECK_FALSE(parse_percent("0.00001%", ppm, why));
    CHECK_FALSE(parse_percent("-1%", ppm, why));
    CHECK_FALSE(parse_percent("%", ppm, why));
    CHECK_FALSE(parse_percent("99999999999999999999999999999999999%", ppm, why));
}

TEST_CASE("dscp names and numbers") {
    std::string why;
    int d = -1;
    auto ok = [&](std::string_view s, int want) {
        d = -1;
        CHECK_MESSAGE(parse_dscp(s, d, why), s);
        CHECK_MESSAGE(d == want, s);
    };
    ok("EF", 46);
    ok("ef", 46);
    ok("VA", 44);
    ok("LE", 1);
    ok("BE", 0);
    ok("default", 0);
    ok("CS0", 0);
    ok("cs7", 56);
    ok("AF11", 10);
    ok("AF41", 34);
    ok("af43", 38);
    ok("0", 0);
    ok("63", 63);
    CHECK_FALSE(parse_dscp("64", d, why));
    CHECK_FALSE(parse_dscp("AF44", d, why));
    CHECK_FALSE(parse_dscp("AF51", d, why));
    CHECK_FALSE(parse_dscp("CS8", d, why));
    CHECK_FALSE(parse_dscp("", d, why));
    CHECK_FALSE(parse_dscp("100", d, why));
    for (int i = 0; i < 64; ++i) {   // the formatter reads back
        CHECK(parse_dscp(format_dscp(i), d, why));
        CHECK(d == i);
    }
}

TEST_CASE("cidrs: v4, v6, bare addresses, mapped, host bits") {
    Cidr c;
    std::string why;
    REQUIRE(parse_cidr("10.0.0.0/8", c, why));
    CHECK(c.addr.family == AF_INET);
    CHECK(c.prefix == 8);
    REQUIRE(parse_cidr("192.0.2.7", c, why));
    CHECK(c.prefix == 32);
    REQUIRE(parse_cidr("2001:db8::/32", c, why));
    CHECK(c.addr.family == AF_INET6);
    CHECK(c.prefix == 32);
    REQUIRE(parse_cidr("::1", c, why));
    CHECK(c.prefix == 128);
    REQUIRE(parse_cidr("::ffff:10.0.0.0/104", c, why));
    CHECK(c.addr.family == AF_INET);
    CHECK(c.prefix == 8);
    CHECK(format_cidr(c) == "10.0.0.0/8");
    REQUIRE(parse_cidr("::ffff:0:0/96", c, why));
    CHECK(c.addr.family == AF_INET);
    CHECK(c.prefix == 0);
    REQUIRE(parse_cidr("0.0.0.0/0", c, why));
    CHECK_FALSE(parse_cidr("10.0.0.1/8", c, why));
    CHECK(why == "10.0.0.1/8 has host bits set, write 10.0.0.0/8");
    CHECK_FALSE(parse_cidr("fd00::1/8", c, why));
    CHECK(why == "fd00::1/8 has host bits set, write fd00::/8");
    CHECK_FALSE(parse_cidr("10.0.0.0/33", c, why));
    CHECK_FALSE(parse_cidr("::/129", c, why));
    CHECK_FALSE(parse_cidr("10.0.0.0/", c, why));
    CHECK_FALSE(parse_cidr("10.0.0.0/-1", c, why));
    CHECK_FALSE(parse_cidr("10.0.0.0/0008", c, why));
    CHECK_FALSE(parse_cidr("300.0.0.0", c, why));
    CHECK_FALSE(parse_cidr("example.com", c, why));
    CHECK_FALSE(parse_cidr("fe80::1%eth0", c, why));
}

TEST_CASE("cidr contains") {
    Cidr c;
    std::string why;
    Address a;
    REQUIRE(parse_cidr("10.1.0.0/17", c, why));
    REQUIRE(parse_address("10.1.127.255", a));
    CHECK(c.contains(a));
    REQUIRE(parse_address("10.1.128.0", a));
    CHECK_FALSE(c.contains(a));
    REQUIRE(parse_address("::ffff:10.1.2.3", a));   // mapped is stored as v4
    CHECK(a.family == AF_INET);
    CHECK(c.contains(a));
    CHECK_FALSE(c.contains(Address{}));
    REQUIRE(parse_cidr("0.0.0.0/0", c, why));
    CHECK(c.contains(a));
    REQUIRE(parse_address("::1", a));
    CHECK_FALSE(c.contains(a));                      // no cross-family match
}

TEST_CASE("port ranges") {
    PortRange r;
    std::string why;
    REQUIRE(parse_port_range("443", r, why));
    CHECK((r.lo == 443 && r.hi == 443));
    REQUIRE(parse_port_range("8000-8099", r, why));
    CHECK((r.lo == 8000 && r.hi == 8099));
    REQUIRE(parse_port_range("1-65535", r, why));
    CHECK_FALSE(parse_port_range("9000-8000", r, why));
    CHECK(why == "empty range, write LOW-HIGH with LOW <= HIGH");
    CHECK_FALSE(parse_port_range("0", r, why));
    CHECK_FALSE(parse_port_range("65536", r, why));
    CHECK_FALSE(parse_port_range("999999", r, why));
    CHECK_FALSE(parse_port_range("http", r, why));
    CHECK_FALSE(parse_port_range("1-", r, why));
    CHECK_FALSE(parse_port_range("-5", r, why));
}

TEST_CASE("formatters read back to the same value") {
    std::string why;
    for (uint64_t v : {1ULL, 125ULL, 187ULL, 1000ULL, 1024ULL, 2500000ULL, 1610612736ULL, 18446744073709551615ULL}) {
        uint64_t back = 0;
        CHECK_MESSAGE(parse_rate(format_rate(v), back, why), format_rate(v));
        CHECK(back == v);
        CHECK(parse_size(format_size(v), back, why));
        CHECK(back == v);
    }
    CHECK(format_rate(2500000) == "20mbit");
    CHECK(format_rate(2097152) == "2MiB/s");
    CHECK(format_rate(3) == "3B/s");
    for (uint32_t us : {1u, 999u, 1000u, 120000u, 1500000u, 4294967295u}) {
        uint32_t back = 0;
        CHECK(parse_duration(format_duration(us), back, why));
        CHECK(back == us);
    }
    for (uint32_t ppm : {1u, 5000u, 10000u, 123456u, 1000000u}) {
        uint32_t back = 0;
        CHECK(parse_percent(format_percent(ppm), back, why));
        CHECK(back == ppm);
    }
}

TEST_CASE("mces element chains: check_elements is the connection's make_chain") {
    std::string why;
    using V = std::vector<std::string>;
    const V reliable = {"framing", "checksum", "handshake", "sequencing", "sack", "ordering", "flowcontrol"};
    CHECK(check_elements(reliable, ServiceClass::reliable, true, why));
    V newreno = reliable;
    newreno.push_back("congestion:newreno");
    CHECK(check_elements(newreno, ServiceClass::reliable, true, why));
    V bogus = reliable;
    bogus.push_back("congestion:bogus");
    CHECK_FALSE(check_elements(bogus, ServiceClass::reliable, true, why));
    CHECK(why == "congestion:bogus: unknown congestion controller 'bogus' (known: cubic, newreno)");
    // checksum is optional: without it the connection offers short packets
    // without the CRC32C (docs/mces.md, "No checksum").
    CHECK(check_elements(V{"framing", "handshake", "sequencing", "sack", "ordering", "flowcontrol"},
                         ServiceClass::reliable, true, why));
    CHECK_FALSE(check_elements(V{"framing", "checksum", "handshake", "sequencing", "sack", "ordering"},
                               ServiceClass::reliable, true, why));
    CHECK(why.find("class reliable needs flowcontrol") == 0);
    CHECK_FALSE(check_elements(V{"framing", "checksum", "handshake", "sequencing", "ordering"},
                               ServiceClass::reliable, false, why));
    CHECK(why.find("ordering needs sack before it") == 0);
    {
        V c = {"framing", "checksum", "handshake", "sequencing", "auth"};
        CHECK_FALSE(check_elements(c, ServiceClass::datagram, false, why));
        CHECK(why.find("auth is not available in this version") == 0);
        CHECK(why.find("remove auth") != std::string::npos);
    }
    // fec and deadline: class realtime's elements, with their rules.
    CHECK_FALSE(check_elements(V{"framing", "checksum", "handshake", "sequencing", "fec"}, ServiceClass::datagram,
                               false, why));
    CHECK(why.find("fec protects the messages of class realtime") == 0);
    CHECK_FALSE(check_elements(V{"framing", "checksum", "handshake", "sequencing", "deadline"},
                               ServiceClass::realtime, true, why));
    CHECK(why.find("deadline needs sack before it") == 0);
    CHECK(check_elements(V{"framing", "checksum", "handshake", "sequencing", "sack", "fec", "deadline"},
                         ServiceClass::realtime, true, why));
    // Class realtime needs deadline; its default chain has it.
    CHECK_FALSE(check_elements(V{"framing", "checksum", "handshake", "sequencing"}, ServiceClass::realtime,
                               true, why));
    CHECK(why.find("class realtime needs deadline") == 0);
    CHECK(check_elements(V{}, ServiceClass::realtime, true, why));
    // Empty: the class's default chain; without a class there is none.
    CHECK(check_elements(V{}, ServiceClass::reliable, true, why));
    CHECK(check_elements(V{}, ServiceClass::datagram, true, why));
    CHECK_FALSE(check_elements(V{}, ServiceClass::datagram, false, why));
    CHECK(check_elements(V{"framing", "checksum", "handshake"}, ServiceClass::datagram, true, why));
    CHECK(check_elements(V{"framing", "checksum", "handshake", "sequencing", "sack"}, ServiceClass::datagram,
                         false, why));   // class unknown: only the order rules
    CHECK_FALSE(check_elements(V{"framing", "checksum", "handshake", "close", "keepalive"},
                               ServiceClass::datagram, false, why));
    CHECK(why == "close must be the last element");
}

// The property the policy relies on: for every chain of up to five catalogue
// names (each with or without a congestion parameter) and every class, a rule
// the parser keeps carries a chain make_chain builds for that class, and a
// chain make_chain refuses gives exactly one elements diagnostic.
TEST_CASE("the parser accepts exactly the chains a connection builds") {
    const std::vector<std::string> names = {"framing",  "checksum", "handshake",          "sequencing",
                                            "sack",     "ordering", "flowcontrol",        "congestion",
                                            "pacing",   "close",    "congestion:newreno", "deadline"};
    struct Cls {
        const char* text;   // the rule's class/proto lines
        ServiceClass c;
    };
    const Cls classes[] = {{"proto = tcp\nclass = reliable\n", ServiceClass::reliable},
                           {"proto = udp\nclass = datagram\n", ServiceClass::datagram},
                           {"proto = tcp\nclass = guaranteed\nrate = 1mbit\n", ServiceClass::guaranteed},
                           {"", ServiceClass::reliable}};   // no class, no proto: TCP flows are reliable
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    auto next = [&seed] {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        return seed;
    };
    int accepted = 0, refused = 0;
    for (int i = 0; i < 3000; ++i) {
        // A default chain of a class (reliable or datagram, so that many are
        // valid), then 0-2 edits: drop one, insert a random name, swap two.
        std::vector<std::string> chain =
            i % 2 ? std::vector<std::string>{"framing", "checksum", "handshake", "sequencing", "keepalive",
                                             "close"}
                  : std::vector<std::string>{"framing", "checksum", "handshake", "sequencing", "sack",
                                             "ordering", "flowcontrol", "congestion", "pacing", "close"};
        const size_t edits = next() % 3;
        for (size_t k = 0; k < edits && !chain.empty(); ++k) {
            const size_t at = next() % chain.size();
            switch (next() % 3) {
            case 0: chain.erase(chain.begin() + static_cast<long>(at)); break;
            case 1: chain.insert(chain.begin() + static_cast<long>(at), names[next() % names.size()]); break;
            default: std::swap(chain[at], chain[next() % chain.size()]); break;
            }
        }
        if (chain.empty()) continue;
        const Cls& cls = classes[next() % 4];
        std::string line;
        for (const std::string& n : chain) line += (line.empty() ? "" : " ") + n;
        const std::string text = std::string("[general]\ncapacity = 1gbit\n[flow a]\n") + cls.text +
                                 "transport = mces\nelements = " + line + "\n";
        Policy p = Policy::parse(text, "p.ini");
        // The connection's own call (endpoint.cpp connect()).
        const gs::mces::ChainResult built = gs::mces::make_chain(chain, static_cast<uint8_t>(cls.c));
        const bool builds = built.ok();
        const std::string& why = built.error;
        CAPTURE(text);
        CAPTURE(why);
        if (builds) {
            ++accepted;
            CHECK(p.ok());
            REQUIRE(p.rules().size() == 1);
            CHECK(p.rules()[0].decision.qos.elements == chain);
        } else {
            ++refused;
            REQUIRE(p.diagnostics().size() == 1);
            const auto lineno = std::count(text.begin(), text.end(), '\n');   // elements is the last line
            CHECK(p.diagnostics()[0].text.find("p.ini:" + std::to_string(lineno) + ": elements = " + line +
                                               ": ") == 0);
            CHECK(p.diagnostics()[0].text.find(why) != std::string::npos);
            CHECK(p.rules().empty());
        }
    }
    MESSAGE("chains accepted " << accepted << ", refused " << refused);
    CHECK(accepted > 200);
    CHECK(refused > 200);
}
