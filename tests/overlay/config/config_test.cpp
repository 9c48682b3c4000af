// Overlay configuration: golden bad files with their exact messages, good
// files and their canonical values, the key hash (SipHash test vectors,
// stability, which changes move it), merge and its refusal, the node factory.
// GS_UPDATE_GOLDEN=1 rewrites the .expected files.
#include "core/overlay/config/config.h"
#include "core/overlay/config/factory.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace gs::overlay;
using gs::sansio::Addr;
using gs::sansio::Datagram;
using gs::sansio::kMillisecond;
using gs::sansio::kSecond;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::vector<fs::path> files(const char* sub) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(fs::path(GS_OVERLAY_CONFIG_TEST_DIR) / sub))
        if (e.path().extension() == ".conf") out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
}

Config must_parse(std::string_view text, std::string_view source = "t.conf") {
    Config c;
    std::vector<std::string> errors;
    const int rc = parse_config(text, source, c, errors);
    INFO(text);
    for (const auto& e : errors) INFO(e);
    REQUIRE(rc == 0);
    REQUIRE(errors.empty());
    return c;
}

std::vector<std::string> errors_of(std::string_view text) {
    Config c;
    std::vector<std::string> errors;
    CHECK(parse_config(text, "t.conf", c, errors) == -EINVAL);
    return errors;
}

Attributes attrs(std::string_view text, std::string_view source) {
    Attributes a;
    std::vector<std::string> errors;
    REQUIRE(parse_attributes(text, source, a, errors) == 0);
    if (source.rfind("server ", 0) != 0) return a;
    Attributes s;   // as the client hands them over: no line
    for (const Attribute& x : a.items()) s.set(x.name, x.value, Origin{x.origin.source, 0});
    return s;
}

}  // namespace

TEST_CASE("bad files: each gives exactly its expected messages") {
    const auto bad = files("bad");
    CHECK(bad.size() >= 20);
    const char* u = std::getenv("GS_UPDATE_GOLDEN");
    for (const fs::path& f : bad) {
        CAPTURE(f.filename().string());
        Config c;
        std::vector<std::string> errors;
        CHECK(parse_config(slurp(f), f.filename().string(), c, errors) == -EINVAL);
        std::string got;
        for (const auto& e : errors) got += e + "\n";
        fs::path exp = f;
        exp.replace_extension(".expected");
        if (u && std::string(u) == "1") std::ofstream(exp, std::ios::binary) << got;
        REQUIRE(fs::exists(exp));
        CHECK(got == slurp(exp));
    }
}

TEST_CASE("every message names the source, the line, the attribute and the value") {
    // The golden files hold the exact texts; this keeps the shape honest for
    // all of them: "file.conf:N: " and, for a bad value, "Name = value: expected".
    for (const fs::path& f : files("bad")) {
        const std::string exp = slurp(fs::path(f).replace_extension(".expected"));
        CAPTURE(f.filename().string());
        CHECK(!exp.empty());
        std::istringstream lines(exp);
        for (std::string l; std::getline(lines, l);) {
            CAPTURE(l);
            CHECK(l.rfind(f.filename().string() + ":", 0) == 0);
        }
    }
    const auto e = errors_of("OverlayID = 1\nHelloFast = 2x\n");
    REQUIRE(e.size() == 1);
    CHECK(e[0] == "t.conf:2: HelloFast = 2x: expected a duration such as 250ms, 1s or 500 (ms)");
    // Beyond 2^63 ns (found by overlay_config_fuzz: the product overflowed before the check).
    const auto big = errors_of("OverlayID = 1\nNeighborTimeout = 100000000000s\n");
    REQUIRE(big.size() == 1);
    CHECK(big[0] == "t.conf:2: NeighborTimeout = 100000000000s: expected a duration such as 250ms, 1s or 500 (ms)");
    const auto fits = errors_of("OverlayID = 1\nNeighborTimeout = 9223372036s\n");   // the largest whole seconds that fit
    for (const auto& m : fits) CHECK(m.find("expected a duration") == std::string::npos);   // parsed (range checked after)
}

TEST_CASE("good files parse clean and canonicalise") {
    const auto good = files("good");
    CHECK(good.size() >= 3);
    for (const fs::path& f : good) {
        CAPTURE(f.filename().string());
        must_parse(slurp(f), f.filename().string());
    }
    const Config h = must_parse(slurp(fs::path(GS_OVERLAY_CONFIG_TEST_DIR) / "good/hypercast.conf"));
    CHECK(h.overlay_id == 1234);
    CHECK(h.protocol == Protocol::dt);
    CHECK(h.values.at("NodeAddress") == "0.0.0.0:8081");
    CHECK(h.node_address == Addr::v4(0, 8081));
    CHECK(h.values.at("NeighborTimeout") == "4s");   // bare number: milliseconds
    CHECK(h.neighbor_timeout == 4 * kSecond);
    CHECK(h.values.at("KeyAttributes") == "DataTransport,KeyAttributes,OverlayID,Protocol");
    CHECK(h.key_attributes ==
          std::vector<std::string>{"DataTransport", "KeyAttributes", "OverlayID", "Protocol"});
    CHECK(h.server == "127.0.0.1:8081");
    CHECK(h.origins.at("Protocol").str() == "t.conf:4");

    const Config c = must_parse(slurp(fs::path(GS_OVERLAY_CONFIG_TEST_DIR) / "good/hc.conf"));
    CHECK(c.protocol == Protocol::hc);
    CHECK(c.values.at("Protocol") == "HC");
    CHECK(c.ping_interval == 500 * kMillisecond);
    CHECK(c.is_key("FailureTimeout"));
    CHECK(!c.is_key("HeadTimeout"));
    REQUIRE(c.bootstrap.size() == 2);
    CHECK(c.bootstrap[0] == Addr::v4(0x0a000001, 9000));
    CHECK(c.bootstrap[1].str() == "[::1]:9001");
    CHECK(c.values.at("NodeAddress") == "[::]:9000");

    const Config m = must_parse("OverlayID=9223372036854775808");
    CHECK(m.overlay_id == (std::uint64_t{1} << 63));
}

TEST_CASE("defaults are the DT and HC nodes' own defaults") {
    const Config c = must_parse("OverlayID = 1\n");
    const gs::overlay::dt::DtConfig d, dc = to_dt_config(c);
    CHECK(dc.hello_fast == d.hello_fast);
    CHECK(dc.hello_slow == d.hello_slow);
    CHECK(dc.neighbor_timeout == d.neighbor_timeout);
    CHECK(dc.memory == d.memory);
    CHECK(dc.join_retry == d.join_retry);
    CHECK(dc.max_payload == d.max_payload);
    CHECK(dc.stable_ticks == d.stable_ticks);
    const gs::overlay::hc::HcConfig h, hcc = to_hc_config(c);
    CHECK(hcc.ping_interval == h.ping_interval);
    CHECK(hcc.beacon_interval == h.beacon_interval);
    CHECK(hcc.failure_timeout == h.failure_timeout);
    CHECK(hcc.head_timeout == h.head_timeout);
    CHECK(hcc.claim_step == h.claim_step);
    CHECK(hcc.join_retry == h.join_retry);
    CHECK(hcc.max_payload == h.max_payload);
    CHECK(hcc.max_members == h.max_members);
    CHECK(c.protocol == Protocol::dt);
    CHECK(c.data_transport == DataTransport::udp);
    CHECK(c.random_coordinates);
    CHECK(c.lease == 30 * kSecond);
    CHECK(c.server.empty());
    // Every documented default is itself a valid value.
    for (const AttributeSpec& s : attribute_specs()) {
        if (std::string(s.name) == "OverlayID") continue;
        CAPTURE(s.name);
        must_parse(std::string("OverlayID = 1\n") + s.name + " = " + s.default_value + "\n");
    }
}

TEST_CASE("syntax: comments, blanks, '=' in values, bounds") {
    Attributes a = attrs("  # c\n\n; c\n\tServer = h:1 \r\nX = a=b\n", "f");
    REQUIRE(a.size() == 2);
    CHECK(a.find("Server")->value == "h:1");
    CHECK(a.find("Server")->origin.line == 4);
    CHECK(a.find("X")->value == "a=b");

    std::vector<std::string> e;
    Attributes out;
    CHECK(parse_attributes(std::string(kMaxFileBytes + 1, '#'), "big", out, e) == -EINVAL);
    REQUIRE(e.size() == 1);
    CHECK(e[0] == "big: 65537 bytes, more than the 65536 an attribute file may have");

    e.clear();
    CHECK(parse_attributes("A = " + std::string(kMaxLineBytes, 'x') + "\nB = 1\n", "f", out, e) == -EINVAL);
    REQUIRE(e.size() == 1);
    CHECK(e[0] == "f:1: line of 1028 bytes, longer than 1024");
    CHECK(out.find("B"));   // the rest still parses

    e.clear();
    CHECK(parse_attributes("A = " + std::string(kMaxValueBytes + 1, 'x') + "\n", "f", out, e) == -EINVAL);
    REQUIRE(e.size() == 1);
    CHECK(e[0] == "f:1: A: value of 257 bytes, longer than 256");

    std::string many;
    for (std::size_t i = 0; i <= kMaxAttributes; ++i) many += "A" + std::to_string(i) + " = 1\n";
    e.clear();
    CHECK(parse_attributes(many, "f", out, e) == -EINVAL);
    REQUIRE(e.size() == 1);
    CHECK(e[0] == "f:65: more than 64 attributes");
    CHECK(out.size() == kMaxAttributes);

    e.clear();
    CHECK(parse_attributes(std::string("A = 1\nbin\x01\x7f\xff\n", 13), "f", out, e) == -EINVAL);
    REQUIRE(e.size() == 1);
    CHECK(e[0] == "f:2: expected 'Attribute = value', got 'bin\x3f\x3f\x3f'");
    e.clear();
    CHECK(parse_attributes(std::string("A = 1\0\n", 7), "f", out, e) == -EINVAL);
    REQUIRE(e.size() == 1);
    CHECK(e[0] == "f:1: NUL byte in the line");
}

TEST_CASE("addresses") {
    struct Case { const char* text; bool ok; const char* canon; };
    const Case cases[] = {
        {"10.0.0.1:80", true, "10.0.0.1:80"},   {":8081", true, "0.0.0.0:8081"},
        {"[::1]:9", true, "[::1]:9"},           {"[::ffff:1.2.3.4]:5", true, "1.2.3.4:5"},
        {"0.0.0.0:0", true, "0.0.0.0:0"},       {"::1:80", false, ""},
        {"10.0.0.1", false, ""},                {"10.0.0.1:65536", false, ""},
        {"[::1]", false, ""},                   {"[::1]x80", false, ""},
        {"[10.0.0.1]:80", false, ""},           {"host:80", false, ""},
        {"10.0.0.1:-1", false, ""},             {"", false, ""},
    };
    for (const Case& c : cases) {
        CAPTURE(c.text);
        Addr a;
        CHECK(parse_addr(c.text, a) == c.ok);
        if (c.ok) CHECK(a.str() == c.canon);
    }
}

TEST_CASE("SipHash-2-4 reference vectors (key 00..0f, message 00..len-1)") {
    std::uint8_t key[16], msg[64];
    for (int i = 0; i < 16; ++i) key[i] = static_cast<std::uint8_t>(i);
    for (int i = 0; i < 64; ++i) msg[i] = static_cast<std::uint8_t>(i);
    // From the SipHash paper and libsodium's crypto_shorthash_siphash24.
    const std::pair<std::size_t, std::uint64_t> v[] = {
        {0, 0x726fdb47dd0e0e31ull}, {1, 0x74f839c593dc67fdull}, {7, 0xab0200f58b01d137ull},
        {8, 0x93f5f5799a932462ull}, {15, 0xa129ca6149be45e5ull}, {63, 0x958a324ceb064572ull},
    };
    for (const auto& [n, want] : v) {
        const std::size_t len = n;   // a structured binding cannot be captured in C++20
        CAPTURE(len);
        CHECK(siphash24(key, msg, len) == want);
    }
}

TEST_CASE("key hash: stable, over the canonical key attributes") {
    const Config c = must_parse("OverlayID = 1234\n");
    CHECK(c.key_text() == "KeyAttributes=KeyAttributes,OverlayID,Protocol\nOverlayID=1234\nProtocol=DT\n");
    // Computed independently (libsodium's crypto_shorthash_siphash24 with the
    // key "gsocket-overlay1"): a change here breaks every deployed overlay.
    CHECK(c.key_hash == 0xbb96ee369c306342ull);

    // Spellings that mean the same give the same hash.
    const char* same[] = {
        "OverlayID = 1234\nProtocol = dt\n",
        "OverlayID = 1234\nKeyAttributes = Protocol\n",
        "OverlayID = 1234\nKeyAttributes = OverlayID, Protocol, KeyAttributes\n",
        "OverlayID = 1234\nHelloFast = 100ms\nNodeAddress = :9\nServer = x:1\n",   // configurable
    };
    for (const char* s : same) {
        CAPTURE(s);
        CHECK(must_parse(s).key_hash == c.key_hash);
    }
    const Config k = must_parse("OverlayID = 1234\nKeyAttributes = HelloFast,Protocol\nHelloFast = 0250ms\n");
    CHECK(must_parse("OverlayID = 1234\nKeyAttributes = Protocol, HelloFast\nHelloFast = 250\n").key_hash ==
          k.key_hash);
}

TEST_CASE("key hash: every key attribute changes it") {
    // (base file, one changed line): each pair must hash differently.
    const std::string base = "OverlayID = 1234\nKeyAttributes = DataTransport,HelloFast,MaxPayload\n";
    const char* changes[] = {
        "OverlayID = 1235\nKeyAttributes = DataTransport,HelloFast,MaxPayload\n",
        "OverlayID = 1234\nKeyAttributes = DataTransport,HelloFast\n",
        "OverlayID = 1234\nKeyAttributes = DataTransport,HelloFast,MaxPayload,Memory\n",
        "OverlayID = 1234\nKeyAttributes = DataTransport,HelloFast,MaxPayload\nProtocol = HC\n",
        "OverlayID = 1234\nKeyAttributes = DataTransport,HelloFast,MaxPayload\nDataTransport = TCP\n",
        "OverlayID = 1234\nKeyAttributes = DataTransport,HelloFast,MaxPayload\nHelloFast = 251ms\n",
        "OverlayID = 1234\nKeyAttributes = DataTransport,HelloFast,MaxPayload\nMaxPayload = 1199\n",
    };
    const std::uint64_t h = must_parse(base).key_hash;
    std::vector<std::uint64_t> seen{h};
    for (const char* s : changes) {
        CAPTURE(s);
        const std::uint64_t x = must_parse(s).key_hash;
        CHECK(std::find(seen.begin(), seen.end(), x) == seen.end());
        seen.push_back(x);
    }
    // ... and a configurable one does not.
    CHECK(must_parse(base + "Memory = 3s\nBootstrap = 10.0.0.9:1\n").key_hash == h);
}

TEST_CASE("merge: the server decides key attributes, the member tunes the rest") {
    const Attributes server = attrs(
        "OverlayID = 1234\nKeyAttributes = Protocol,DataTransport\nProtocol = HC\n"
        "DataTransport = UDP\nPingInterval = 2s\nFailureTimeout = 8s\n",
        "server 127.0.0.1:8081");
    Config c;
    std::vector<std::string> e;
    // A member file with only its own choices.
    REQUIRE(merge_config(server, attrs("PingInterval = 1s\nNodeAddress = :9000\n", "m.conf"), c, e) == 0);
    CHECK(e.empty());
    CHECK(c.protocol == Protocol::hc);
    CHECK(c.ping_interval == 1 * kSecond);         // local wins for configurable
    CHECK(c.failure_timeout == 8 * kSecond);       // server's, not the default
    CHECK(c.node_address == Addr::v4(0, 9000));
    CHECK(c.origins.at("PingInterval").str() == "m.conf:1");
    // The same key attributes, written differently: accepted, same hash as the server's alone.
    Config alone;
    REQUIRE(build_config(server, alone, e) == 0);
    REQUIRE(merge_config(server, attrs("Protocol = hc\nOverlayID = 1234\n", "m.conf"), c, e) == 0);
    CHECK(c.key_hash == alone.key_hash);
}

TEST_CASE("merge: a key attribute that differs is refused, naming it and both values") {
    const Attributes server = attrs(
        "OverlayID = 1234\nKeyAttributes = Protocol,DataTransport,HelloFast\nProtocol = DT\n",
        "server 127.0.0.1:8081");
    struct Case { const char* local; const char* message; };
    const Case cases[] = {
        {"Protocol = HC\n",
         "m.conf:1: key attribute Protocol = HC differs from the overlay's Protocol = DT "
         "(server 127.0.0.1:8081): this member cannot join overlay 1234"},
        {"HelloSlow = 2s\nDataTransport = TCP\n",
         "m.conf:2: key attribute DataTransport = TCP differs from the overlay's DataTransport = UDP "
         "(the default): this member cannot join overlay 1234"},
        {"HelloFast = 100ms\nProtocol = HC\n",   // Protocol comes first in the attribute order
         "m.conf:2: key attribute Protocol = HC differs from the overlay's Protocol = DT "
         "(server 127.0.0.1:8081): this member cannot join overlay 1234"},
        {"HelloFast = 100ms\n",
         "m.conf:1: key attribute HelloFast = 100ms differs from the overlay's HelloFast = 250ms "
         "(the default): this member cannot join overlay 1234"},
        {"KeyAttributes = Protocol\n",
         "m.conf:1: key attribute KeyAttributes = KeyAttributes,OverlayID,Protocol differs from the "
         "overlay's KeyAttributes = DataTransport,HelloFast,KeyAttributes,OverlayID,Protocol "
         "(server 127.0.0.1:8081): this member cannot join overlay 1234"},
        {"OverlayID = 99\n",
         "m.conf:1: key attribute OverlayID = 99 differs from the overlay's OverlayID = 1234 "
         "(server 127.0.0.1:8081): this member cannot join overlay 1234"},
    };
    for (const Case& k : cases) {
        CAPTURE(k.local);
        Config c;
        std::vector<std::string> e;
        CHECK(merge_config(server, attrs(k.local, "m.conf"), c, e) == -EACCES);
        REQUIRE(e.size() == 1);
        CHECK(e[0] == k.message);
    }
    // Bad values on either side are -EINVAL with the usual message.
    Config c;
    std::vector<std::string> e;
    CHECK(merge_config(server, attrs("Memory = forever\n", "m.conf"), c, e) == -EINVAL);
    REQUIRE(e.size() == 1);
    CHECK(e[0] == "m.conf:1: Memory = forever: expected a duration such as 250ms, 1s or 500 (ms)");
}

TEST_CASE("first_key_difference and overlay_attributes") {
    const Config a = must_parse("OverlayID = 5\nKeyAttributes = MaxPayload\nHelloFast = 100ms\nNodeAddress = :1\n");
    const Config b = must_parse("OverlayID = 5\nKeyAttributes = MaxPayload\nMaxPayload = 100\n");
    const Config d = must_parse("OverlayID = 5\nProtocol = HC\nMaxPayload = 100\n");
    CHECK(first_key_difference(a, a).empty());
    CHECK(first_key_difference(a, b) == "MaxPayload");
    CHECK(first_key_difference(a, d) == "KeyAttributes");
    CHECK(first_key_difference(must_parse("OverlayID = 5\n"), d) == "Protocol");
    // Key and explicit overlay attributes, never per-member ones.
    CHECK(a.overlay_attributes().to_text() ==
          "OverlayID = 5\nKeyAttributes = KeyAttributes,MaxPayload,OverlayID,Protocol\n"
          "Protocol = DT\nHelloFast = 100ms\nMaxPayload = 1200\n");
}

TEST_CASE("factory: the node the configuration names, with its key hash") {
    const Addr self = Addr::v4(0x7f000001, 9000), peer = Addr::v4(0x7f000001, 9001);
    for (const char* proto : {"DT", "HC"}) {
        CAPTURE(proto);
        const Config c = must_parse(std::string("OverlayID = 42\nProtocol = ") + proto + "\n");
        std::string err;
        auto node = make_node(c, self, 7, {peer, self, peer}, err);
        REQUIRE(node);
        CHECK(err.empty());
        node->join(0);
        Datagram d;
        REQUIRE(node->poll_transmit(d));   // the join request goes to the bootstrap member
        CHECK(d.to == peer);
        REQUIRE(d.bytes.size() >= kPrefixSize);
        CHECK(d.bytes[3] == (std::string(proto) == "DT" ? 1 : 2));
        std::uint64_t h = 0;
        for (int i = 4; i < 12; ++i) h = (h << 8) | d.bytes[i];
        CHECK(h == c.key_hash);
    }
    const Config fixed = must_parse("OverlayID = 42\nCoordinates = 10,-20\n");
    CHECK(dt_coordinates(fixed, 1) == gs::overlay::dt::pack({10, -20}));
    const Config rnd = must_parse("OverlayID = 42\n");
    CHECK(dt_coordinates(rnd, 1) == dt_coordinates(rnd, 1));
    CHECK(dt_coordinates(rnd, 1) != dt_coordinates(rnd, 2));
    for (std::uint64_t s = 0; s < 1000; ++s) CHECK(dt_coordinates(rnd, s) != kNoAddress);
    std::string err;
    auto alone = make_node(fixed, self, 1, {}, err);
    REQUIRE(alone);
    alone->join(0);
    CHECK(alone->joined());   // no bootstrap: it starts the overlay
    CHECK(alone->address() == gs::overlay::dt::pack({10, -20}));

    const Config tcp = must_parse("OverlayID = 42\nDataTransport = TCP\n");
    CHECK(!make_node(tcp, self, 1, {}, err));
    CHECK(err == "overlay 42: DataTransport = TCP is not supported yet, the nodes carry data over "
                 "UDP (set DataTransport = UDP)");
}
