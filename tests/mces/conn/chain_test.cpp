// Chain validation: every default chain is valid, every impossible
// combination is refused with a message naming the element and the rule.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/mces/conn/chain.h"

using namespace gs::mces;

namespace {

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : s) {
        if (c == ' ') {
            if (!cur.empty()) out.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    if (!cur.empty()) out.push_back(cur);
    return out;
}

}  // namespace

TEST_CASE("default chains are valid for their class and round-trip through make_chain") {
    for (std::uint8_t c : {kClassDatagram, kClassReliable, kClassGuaranteed, kClassRealtime}) {
        CAPTURE(int(c));
        const ChainResult d = default_chain(c);
        REQUIRE(d.ok());
        CHECK(d.chain->service_class == c);
        const auto names = split(d.chain->str());
        const ChainResult again = make_chain(names, c);
        REQUIRE(again.ok());
        CHECK(again.chain->elements == d.chain->elements);
        // Empty names mean the default.
        const ChainResult empty = make_chain({}, c);
        REQUIRE(empty.ok());
        CHECK(empty.chain->elements == d.chain->elements);
    }
    CHECK(default_chain(kClassDatagram).chain->str() == "framing checksum handshake sequencing keepalive close");
    CHECK(default_chain(kClassReliable).chain->str() ==
          "framing checksum handshake sequencing sack ordering flowcontrol congestion pacing keepalive close");
    CHECK(default_chain(kClassRealtime).chain->str() ==
          "framing handshake sequencing sack fec deadline pacing keepalive close");
    CHECK_FALSE(default_chain(kClassDatagram).chain->stream());
    CHECK(default_chain(kClassReliable).chain->stream());
    CHECK_FALSE(default_chain(kClassRealtime).chain->stream());
    CHECK(default_chain(kClassRealtime).chain->realtime());
    CHECK_FALSE(default_chain(kClassReliable).chain->realtime());
    CHECK(default_chain(kClassReliable).chain->cc == "cubic");
}

TEST_CASE("classes without a chain say why") {
    CHECK(default_chain(kClassGroup).error.find("overlay") != std::string::npos);
    CHECK(default_chain(9).error.find("does not exist") != std::string::npos);
    CHECK(make_chain({}, std::nullopt).error.find("empty") != std::string::npos);
}

TEST_CASE("congestion takes the algorithm as a parameter") {
    const auto names = split("framing checksum handshake sequencing sack ordering flowcontrol congestion:newreno");
    const ChainResult r = make_chain(names, kClassReliable);
    REQUIRE(r.ok());
    CHECK(r.chain->cc == "newreno");
    CHECK(r.chain->str().find("congestion:newreno") != std::string::npos);
    CHECK(r.chain->has(Element::congestion));
    CHECK_FALSE(r.chain->has(Element::pacing));
}

TEST_CASE("impossible chains are refused, each with its rule") {
    struct Case {
        const char* chain;
        int cls;                 // -1: no class given
        const char* message;     // a part of the expected message
    };
    const Case cases[] = {
        {"framing checksum handshake sequencing sack ordering flowcontrol tcp", 1,
         "'tcp' is not an MCES element"},
        {"framing checksum handshake sequencing sack sack ordering flowcontrol", 1, "sack appears twice"},
        {"framing checksum handshake sequencing sack ordering flowcontrol congestion:bbr", 1,
         "unknown congestion controller 'bbr'"},
        {"framing checksum handshake sequencing:x", 1, "only congestion takes a parameter"},
        {"framing checksum auth handshake", 0, "auth is not available in this version"},
        {"framing checksum handshake sequencing deadline", -1, "deadline needs sack before it"},
        {"framing checksum handshake sequencing sack fec", -1, "fec protects the messages of class realtime"},
        {"framing checksum handshake fec sequencing sack deadline", 3, "fec needs sequencing before it"},
        {"framing checksum handshake sequencing sack ordering deadline", -1,
         "deadline and ordering exclude each other"},
        {"framing checksum handshake sequencing sack flowcontrol deadline", 3,
         "deadline carries messages, flowcontrol credits a byte stream"},
        {"framing checksum handshake sequencing sack deadline", 0, "class datagram is unreliable"},
        {"framing checksum handshake sequencing sack ordering flowcontrol deadline", 1,
         "deadline and ordering exclude each other"},
        {"framing checksum handshake sequencing sack", 3, "class realtime needs deadline"},
        // Refused before the order rules: the first thing to fix is the element that does not exist.
        {"framing auth handshake", -1, "auth is not available in this version"},
        {"checksum framing handshake", 0, "must start with framing"},
        {"framing checksum sequencing", 0, "handshake is required"},
        {"framing checksum handshake sack", -1, "sack needs sequencing before it"},
        {"framing checksum handshake sack sequencing ordering", -1, "sack needs sequencing before it"},
        {"framing checksum handshake ordering sequencing sack", -1, "ordering needs sequencing before it"},
        {"framing checksum handshake sequencing ordering", -1, "ordering needs sack before it"},
        {"framing checksum handshake sequencing ordering sack", -1, "ordering needs sack before it"},
        {"framing checksum handshake sequencing congestion", -1, "congestion needs sack before it"},
        {"framing checksum handshake sequencing flowcontrol sack", -1, "flowcontrol needs sack before it"},
        {"framing checksum handshake close keepalive", 0, "close must be the last element"},
        {"framing checksum handshake sequencing sack", 0, "class datagram is unreliable and unordered: remove sack"},
        {"framing checksum handshake sequencing", 1, "class reliable needs sack"},
        {"framing checksum handshake sequencing sack flowcontrol", 1, "class reliable needs ordering"},
        {"framing checksum handshake sequencing sack ordering", 1, "class reliable needs flowcontrol"},
        {"framing checksum handshake sequencing sack ordering flowcontrol congestion", 2,
         "class guaranteed needs pacing"},
        {"framing checksum handshake sequencing", 3, "class realtime needs deadline"},
        {"framing checksum handshake", 4, "class group is carried by an overlay"},
        {"framing checksum handshake", 7, "service class 7 does not exist"},
    };
    for (const Case& c : cases) {
        CAPTURE(c.chain);
        CAPTURE(c.cls);
        const auto names = split(c.chain);
        const ChainResult r =
            make_chain(names, c.cls < 0 ? std::nullopt : std::optional<std::uint8_t>(std::uint8_t(c.cls)));
        CHECK_FALSE(r.ok());
        CHECK(r.error.find(c.message) != std::string::npos);
        MESSAGE(c.chain << " -> " << r.error);
    }
}

TEST_CASE("possible chains beyond the defaults are accepted") {
    const char* ok[] = {
        "framing checksum handshake",                                           // bare datagrams
        "framing checksum handshake pacing",                                    // datagrams at the granted rate
        "framing checksum handshake sequencing sack ordering flowcontrol",      // no cc: loopback
        "framing checksum handshake sequencing sack ordering flowcontrol congestion:newreno keepalive",
        // No checksum: short packets without the CRC32C if the peer agrees.
        "framing handshake sequencing keepalive close",
        "framing handshake sequencing sack ordering flowcontrol congestion pacing keepalive close",
    };
    for (const char* c : ok) {
        CAPTURE(c);
        const auto names = split(c);
        const bool stream = std::string(c).find("sack") != std::string::npos;
        const ChainResult r = make_chain(names, stream ? kClassReliable : kClassDatagram);
        CHECK(r.ok());
        CHECK(r.error.empty());
        // Without a class only the class-independent rules apply.
        CHECK(make_chain(names, std::nullopt).ok());
    }
    const char* realtime_ok[] = {
        "framing checksum handshake sequencing sack deadline",                  // no FEC
        "framing handshake sequencing sack fec deadline",                       // no CRC
        "framing checksum handshake sequencing sack fec deadline congestion pacing keepalive close",
    };
    for (const char* c : realtime_ok) {
        CAPTURE(c);
        const ChainResult r = make_chain(split(c), kClassRealtime);
        CHECK(r.ok());
        CHECK(r.chain->realtime());
        CHECK(make_chain(split(c), std::nullopt).ok());
    }
    CHECK(name(Element::flowcontrol) == "flowcontrol");
    for (std::size_t i = 0; i < kElementCount; ++i) {
        CAPTURE(i);
        CHECK(name(static_cast<Element>(i)) == kElementNames[i]);
        CHECK(element_from_name(kElementNames[i]) == static_cast<Element>(i));
    }
    CHECK(element_from_name("pacing") == Element::pacing);
    CHECK_FALSE(element_from_name("cc").has_value());
}
