// Service-unit chains: which MCES elements a connection runs, in send-path
// order, and which chains are possible (docs/mces.md, "Service units").
//
// A chain is written as element names, e.g. the class 1 default
//     framing checksum handshake sequencing sack ordering flowcontrol
//     congestion pacing keepalive close
// The catalogue is kElementNames below (policy/policy.h mces_elements is
// checked against it at compile time), with one extension: `congestion:NAME`
// picks the algorithm (cubic, newreno); plain `congestion` means cubic.
//
// make_chain() is the one check: it takes the names and the service class and
// returns the chain or a one-line message naming the bad element and the rule
// it breaks. It depends on the standard library only: the policy library
// compiles this file in and validates `elements =` with it (policy/elements.cpp),
// so a chain a policy accepts is a chain a connection builds. Nothing here
// throws except std::bad_alloc.
//
// Integrity: `checksum` is optional. The handshake's packets always carry
// the CRC32C; a chain without `checksum` makes the connection offer, in the
// handshake, to send its short packets without it, and if the peer agrees
// (its chain lacks it too, or both ends are on loopback: endpoint.h) only
// UDP's own checksum (16-bit ones' complement, mandatory over IPv6, on by
// default over IPv4 on Linux) guards them: weaker than CRC32C, but what
// kernel UDP and TCP programs rely on. If the peer does not agree, the
// packets carry the CRC32C as always.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace gs::mces {

enum class Element : std::uint8_t {
    framing,      // the versioned header and connection IDs
    checksum,     // CRC32C over every packet (optional: see "Integrity" below)
    auth,         // AEAD instead of the checksum: not available yet
    handshake,    // stateless cookie, QoS offer and answer
    sequencing,   // packet numbers used for duplicate detection (class 0: drops copies)
    sack,         // selective ACKs, loss detection, retransmission
    ordering,     // in-order delivery of the byte stream
    flowcontrol,  // MAX_DATA credit: the receiver's buffer bounds the sender
    congestion,   // congestion window (cubic or newreno)
    pacing,       // spreads packets over the round trip / holds the granted rate
    fec,          // forward error correction of realtime messages (REPAIR frames)
    deadline,     // realtime messages: released at send time + latency, late ones dropped
    keepalive,    // PING when quiet, so the peer's idle timer does not fire
    close,        // graceful close (CLOSE after both sides' data is delivered)
    count_
};
constexpr std::size_t kElementCount = static_cast<std::size_t>(Element::count_);

// The names, indexed by Element (the policy's `elements =` catalogue).
inline constexpr std::array<std::string_view, kElementCount> kElementNames = {
    "framing",     "checksum",   "auth",   "handshake", "sequencing", "sack",      "ordering",
    "flowcontrol", "congestion", "pacing", "fec",       "deadline",   "keepalive", "close"};
// The algorithms `congestion:NAME` takes.
inline constexpr std::array<std::string_view, 2> kCongestionControllers = {"cubic", "newreno"};

// "framing", "sack", ... (the names the policy uses).
std::string_view name(Element e) noexcept;
// The element for a name (without a ":param" suffix); nullopt when unknown.
std::optional<Element> element_from_name(std::string_view n) noexcept;

// Service classes (the wire's numbering, 0-4).
constexpr std::uint8_t kClassDatagram = 0;
constexpr std::uint8_t kClassReliable = 1;
constexpr std::uint8_t kClassGuaranteed = 2;
constexpr std::uint8_t kClassRealtime = 3;
constexpr std::uint8_t kClassGroup = 4;
// "datagram", "reliable", ...; "class N" beyond 4.
std::string class_name(std::uint8_t service_class);

struct Chain {
    std::uint8_t service_class = kClassReliable;
    std::vector<Element> elements;      // send-path order, each once
    std::string cc = "cubic";           // the congestion algorithm, when `congestion` is in
    bool has(Element e) const noexcept;
    // Whether the chain delivers a reliable byte stream (class 1 and 2) or
    // messages (class 0, and class 3: realtime()).
    bool stream() const noexcept { return has(Element::sack) && !has(Element::deadline); }
    // Whether it carries realtime messages with deadlines (class 3).
    bool realtime() const noexcept { return has(Element::deadline); }
    // The names, space-separated ("congestion:newreno" when not the default).
    std::string str() const;
};

struct ChainResult {
    std::optional<Chain> chain;   // set when the names form a possible chain
    std::string error;            // otherwise one line: the element and the rule
    bool ok() const noexcept { return chain.has_value(); }
};

// Builds the chain for `names` (send-path order). service_class: the class
// the chain is for, or nullopt to check only the class-independent rules (the
// policy does this when a rule names no class). Empty names: the class's
// default chain (an error without a class).
//
// The rules, checked in this order (the first broken one is reported):
//   unknown name; a bad parameter; a name twice; auth not available in
//   this version (the message says to remove it);
//   framing first; handshake required; sack, ordering need sequencing before them;
//   ordering needs sack before it (in-order delivery waits for retransmits);
//   congestion, flowcontrol need sack before them; deadline needs sack
//   before it; fec needs sequencing before it and deadline in the chain;
//   deadline excludes ordering and flowcontrol; close last;
//   class datagram: no sack, ordering, flowcontrol, congestion, deadline;
//   class reliable/guaranteed: sack, ordering and flowcontrol (so no deadline);
//   class guaranteed: pacing; class realtime: deadline;
//   class group: carried by an overlay, no chain.
ChainResult make_chain(std::span<const std::string> names,
                       std::optional<std::uint8_t> service_class);

// The default chain of a class: 0 -> framing checksum handshake sequencing
// keepalive close; 1 -> framing checksum handshake sequencing sack ordering
// flowcontrol congestion pacing keepalive close; 2 -> the same as 1;
// 3 -> framing handshake sequencing sack fec deadline pacing keepalive
// close (no checksum: UDP's guards a media stream, as for RTP and SRT).
// Class 4 has none (error set).
ChainResult default_chain(std::uint8_t service_class);

}  // namespace gs::mces
