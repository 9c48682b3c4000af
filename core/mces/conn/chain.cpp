// Chain validation. Each rule comes from what an element needs from the ones
// before it on the send path; the messages say which element and why, so a
// policy author can fix the line without reading this file.
#include "core/mces/conn/chain.h"

#include <array>

namespace gs::mces {
namespace {

std::string catalogue() {
    std::string s;
    for (std::size_t i = 0; i < kElementNames.size(); ++i) {
        if (i) s += ", ";
        s += kElementNames[i];
    }
    return s;
}

int position(const std::vector<Element>& chain, Element e) noexcept {
    for (std::size_t i = 0; i < chain.size(); ++i)
        if (chain[i] == e) return static_cast<int>(i);
    return -1;
}

// "before" rules: `e`, when present, needs `need` earlier in the chain.
bool needs_before(const std::vector<Element>& chain, Element e, Element need) noexcept {
    const int p = position(chain, e);
    if (p < 0) return true;
    const int q = position(chain, need);
    return q >= 0 && q < p;
}

ChainResult fail(std::string why) {
    ChainResult r;
    r.error = std::move(why);
    return r;
}

}  // namespace

std::string_view name(Element e) noexcept {
    const auto i = static_cast<std::size_t>(e);
    return i < kElementNames.size() ? kElementNames[i] : std::string_view("?");
}

std::optional<Element> element_from_name(std::string_view n) noexcept {
    for (std::size_t i = 0; i < kElementNames.size(); ++i)
        if (kElementNames[i] == n) return static_cast<Element>(i);
    return std::nullopt;
}

std::string class_name(std::uint8_t c) {
    switch (c) {
    case kClassDatagram: return "datagram";
    case kClassReliable: return "reliable";
    case kClassGuaranteed: return "guaranteed";
    case kClassRealtime: return "realtime";
    case kClassGroup: return "group";
    default: return "class " + std::to_string(c);
    }
}

bool Chain::has(Element e) const noexcept { return position(elements, e) >= 0; }

std::string Chain::str() const {
    std::string s;
    for (Element e : elements) {
        if (!s.empty()) s += ' ';
        s += name(e);
        if (e == Element::congestion && cc != "cubic") s += ":" + cc;
    }
    return s;
}

ChainResult make_chain(std::span<const std::string> names, std::optional<std::uint8_t> cls) {
    if (names.empty()) {
        if (!cls) return fail("the chain is empty and no class is given to pick a default chain");
        return default_chain(*cls);
    }
    Chain c;
    c.service_class = cls.value_or(kClassReliable);
    for (const std::string& full : names) {
        std::string_view n = full;
        std::string_view param;
        if (const auto colon = n.find(':'); colon != std::string_view::npos) {
            param = n.substr(colon + 1);
            n = n.substr(0, colon);
        }
        const auto e = element_from_name(n);
        if (!e) return fail("'" + full + "' is not an MCES element (the elements are: " + catalogue() + ")");
        if (!param.empty() || full.find(':') != std::string::npos) {
            if (*e != Element::congestion)
                return fail(full + ": only congestion takes a parameter (congestion:cubic, congestion:newreno)");
            bool known = false;
            for (std::string_view k : kCongestionControllers) known = known || k == param;
            if (!known)
                return fail(full + ": unknown congestion controller '" + std::string(param) +
                            "' (known: cubic, newreno)");
            c.cc = std::string(param);
        }
        if (position(c.elements, *e) >= 0)
            return fail(std::string(n) + " appears twice, list each element once");
        c.elements.push_back(*e);
    }
    const auto& ch = c.elements;
    // Known names that have no code behind them: refused, never dropped from
    // the chain, so a flow never runs without what its chain asked for.
    if (c.has(Element::auth))
        return fail("auth is not available in this version (MCES version 1 has no AEAD; checksum guards "
                    "each packet): remove auth");
    if (ch.front() != Element::framing)
        return fail("the chain must start with framing (it carries the header every element reads)");
    // No rule for checksum: without it the connection offers short packets
    // without the CRC32C, and keeps the CRC when the peer does not agree.
    if (!c.has(Element::handshake))
        return fail("handshake is required (the cookie and the QoS offer ride on it), add it after framing");
    for (Element e : {Element::sack, Element::ordering})
        if (!needs_before(ch, e, Element::sequencing))
            return fail(std::string(name(e)) + " needs sequencing before it (it works on sequence numbers)");
    if (!needs_before(ch, Element::ordering, Element::sack))
        return fail("ordering needs sack before it (in-order delivery waits for the retransmission of what is "
                    "missing; without sack a gap would block the stream for ever)");
    for (Element e : {Element::congestion, Element::flowcontrol})
        if (!needs_before(ch, e, Element::sack))
            return fail(std::string(name(e)) + " needs sack before it (it reads the acknowledgements)");
    // Realtime messages (deadline) ride on sequence numbers and acknowledgements:
    // the receiver maps the sender's clock through acknowledged packets, and a
    // lost message is resent while it can still beat its deadline.
    if (!needs_before(ch, Element::deadline, Element::sack))
        return fail("deadline needs sack before it (the receiver maps the sender's clock through the "
                    "acknowledgements, and resends only what can still beat the deadline)");
    if (!needs_before(ch, Element::fec, Element::sequencing))
        return fail("fec needs sequencing before it (it protects messages by their sequence numbers)");
    if (c.has(Element::fec) && !c.has(Element::deadline))
        return fail("fec protects the messages of class realtime and needs deadline in the chain (add deadline "
                    "after fec)");
    if (c.has(Element::deadline) && c.has(Element::ordering))
        return fail("deadline and ordering exclude each other (ordering waits for every byte; deadline skips "
                    "what is late): remove ordering");
    if (c.has(Element::deadline) && c.has(Element::flowcontrol))
        return fail("deadline carries messages, flowcontrol credits a byte stream: remove flowcontrol");
    const int close = position(ch, Element::close);
    if (close >= 0 && close + 1 != static_cast<int>(ch.size())) return fail("close must be the last element");
    if (!cls) return ChainResult{std::move(c), {}};
    switch (*cls) {
    case kClassDatagram:
        if (c.has(Element::sack))
            return fail("class datagram is unreliable and unordered: remove sack (and what needs it: ordering, "
                        "flowcontrol, congestion)");
        if (c.has(Element::deadline))
            return fail("deadline belongs to class realtime (class datagram has no deadlines): remove deadline "
                        "and fec, or use class realtime");
        break;
    case kClassReliable:
    case kClassGuaranteed:
        for (Element e : {Element::sack, Element::ordering, Element::flowcontrol})
            if (!c.has(e))
                return fail("class " + class_name(*cls) + " needs " + std::string(name(e)) +
                            " (a reliable ordered stream into a bounded receive buffer needs sack, ordering "
                            "and flowcontrol)");
        if (*cls == kClassGuaranteed && !c.has(Element::pacing))
            return fail("class guaranteed needs pacing (it holds the flow to its reserved rate)");
        break;
    case kClassRealtime:
        if (!c.has(Element::deadline))
            return fail("class realtime needs deadline (it delivers each message by its send time plus the "
                        "latency, or drops it): add sack and deadline after sequencing");
        break;
    case kClassGroup:
        return fail("class group is carried by an overlay, elements apply to MCES flows");
    default:
        return fail("service class " + std::to_string(*cls) + " does not exist (0-4)");
    }
    return ChainResult{std::move(c), {}};
}

ChainResult default_chain(std::uint8_t cls) {
    using E = Element;
    Chain c;
    c.service_class = cls;
    switch (cls) {
    case kClassDatagram:
        c.elements = {E::framing, E::checksum, E::handshake, E::sequencing, E::keepalive, E::close};
        break;
    case kClassReliable:
    case kClassGuaranteed:
        c.elements = {E::framing,     E::checksum,   E::handshake, E::sequencing,
                      E::sack,        E::ordering,   E::flowcontrol, E::congestion,
                      E::pacing,      E::keepalive,  E::close};
        break;
    case kClassRealtime:
        // No checksum: a media stream relies on UDP's own checksum, as RTP
        // and SRT do, and keeps the 4 bytes a packet (0.3% of a 1316-byte
        // message) that put MCES above SRT's bandwidth. A chain that names
        // checksum keeps it.
        c.elements = {E::framing, E::handshake, E::sequencing, E::sack, E::fec,
                      E::deadline, E::pacing, E::keepalive, E::close};
        break;
    case kClassGroup:
        return fail("class group is carried by an overlay, it has no MCES chain");
    default:
        return fail("service class " + std::to_string(cls) + " does not exist (0-4)");
    }
    return ChainResult{std::move(c), {}};
}

}  // namespace gs::mces
