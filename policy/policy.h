// gsocket policy: parse an INI policy, validate it with file:line messages, and
// match a flow to a decision.
//
// Pure: no sockets, no threads, no clock, nothing from shim/ or core/ but
// MCES's chain rules and its key-file reader (auth_key files are read and
// checked when the policy is parsed: the only file I/O besides load_file).
//
// Contract that the shim relies on:
//  - Policy::load_file / Policy::parse may allocate and may throw std::bad_alloc
//    (callers at the C edge catch it). Everything else is noexcept.
//  - Policy::match() neither allocates nor locks nor throws: it is called from
//    connect()/sendto()/accept() hooks that a signal handler may reach.
//  - Policy objects are immutable after loading; match() is safe from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gs::mces::auth {
class Psk;   // core/mces/auth/secret.h: the pre-shared key, in guarded memory
}

namespace gs::policy {

// GSocket service classes (papers.md table 1, our reading). The numeric value is
// the class number users may write in the policy (0-4).
enum class ServiceClass : uint8_t { datagram = 0, reliable = 1, guaranteed = 2, realtime = 3, group = 4 };
enum class Transport : uint8_t { native, mces, overlay, automatic };
enum class Proto : uint8_t { any, tcp, udp };
// connect: the program connects out (TCP connect, UDP connect, TCP sendto+MSG_FASTOPEN).
// accept: the program accepted the flow (a TCP accept()).
// datagram: an unconnected UDP socket's first sendto/sendmsg with an address.
enum class Direction : uint8_t { any, connect, accept, datagram };
enum class OnError : uint8_t { open, fail };
enum class OnReject : uint8_t { fail, downgrade };
enum class LogLevel : uint8_t { off, error, warn, info, debug };
// MCES authentication of a flow (keys auth_key, auth): none without a key;
// encrypt (the default with a key) or authenticate (payload readable).
enum class Auth : uint8_t { none, encrypt, authenticate };

const char* name(ServiceClass c) noexcept;   // "reliable"
const char* name(Transport t) noexcept;      // "native", "mces", "overlay", "auto"
const char* name(Proto p) noexcept;          // "any", "tcp", "udp"
const char* name(Direction d) noexcept;      // "any", "connect", "accept", "datagram"
const char* name(LogLevel l) noexcept;       // "off", "error", ...
const char* name(Auth a) noexcept;           // "none", "encrypt", "authenticate"

// An IPv4 or IPv6 address. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are
// stored as IPv4 so a v4 rule matches a v4 peer reached through a v6 socket.
struct Address {
    uint8_t family = 0;        // AF_INET or AF_INET6 (from <sys/socket.h>), 0 = unknown
    uint8_t bytes[16] = {};    // network order; first 4 used for AF_INET
};

struct Cidr {
    Address addr;              // host bits are zero
    uint8_t prefix = 0;        // 0-32 for v4, 0-128 for v6
    bool contains(const Address& a) const noexcept;
};

struct PortRange {
    uint16_t lo = 0, hi = 65535;   // inclusive, lo <= hi
};

// QoS parameters. 0 / -1 / empty mean "not set". Units are fixed here so no
// caller ever converts: rates in bytes per second, sizes in bytes, times in
// microseconds, loss in parts per million.
struct Qos {
    uint64_t rate = 0;           // send rate, bytes/s            (key: rate)
    uint64_t rate_down = 0;      // receive rate, bytes/s         (key: rate_down)
    uint64_t burst = 0;          // bytes                         (key: burst)
    uint32_t latency_us = 0;     // latency bound                 (key: latency)
    uint32_t jitter_us = 0;      // jitter bound                  (key: jitter)
    uint32_t loss_ppm = 0;       // loss tolerance                (key: loss)
    int8_t priority = -1;        // SO_PRIORITY 0-6               (key: priority)
    int8_t dscp = -1;            // 0-63                          (key: dscp)
    uint8_t fec_data = 0;        // fec = data/parity             (key: fec)
    uint8_t fec_parity = 0;
    bool clock_symmetric = false;   // realtime deadline clock: symmetric, not strict (key: clock)
    uint32_t rcvbuf = 0;         // SO_RCVBUF bytes               (key: rcvbuf)
    uint32_t window = 0;         // TCP_WINDOW_CLAMP bytes        (key: window)
    uint32_t notsent_lowat = 0;  // TCP_NOTSENT_LOWAT bytes       (key: notsent_lowat)
    char congestion[16] = {};    // TCP_CONGESTION name, "" = unset (key: congestion)
    std::vector<std::string> elements;   // MCES element chain (key: elements), empty = class default
};

// What a matched rule decides for a flow.
struct Decision {
    std::string rule;            // the [flow NAME] section name, "default" for the built-in fallback
    int line = 0;                // line of the [flow] header, 0 for built-ins
    ServiceClass service = ServiceClass::reliable;
    Transport transport = Transport::native;
    Qos qos;
    // MCES authentication (keys auth_key, auth; docs/policy.md). auth_key is
    // the key file's path, resolved (a relative one is from the policy
    // file's directory); psk its key, read and checked once when the policy
    // was parsed and shared by every flow of the rule (the engine's MCES
    // endpoints hold it too). Set together: auth != none iff psk != null.
    Auth auth = Auth::none;
    std::string auth_key;
    std::shared_ptr<const mces::auth::Psk> psk;
};

// A flow rule: a section [flow NAME]. Empty vectors mean "any".
struct Rule {
    Decision decision;
    std::vector<std::string> process;   // program names (basename of argv[0])
    Proto proto = Proto::any;
    Direction direction = Direction::any;
    std::vector<Cidr> dst, src;
    std::vector<PortRange> dport, sport;
    // Added: whether `class` / `transport` were written. A rule that states
    // neither class nor proto classifies by the flow's protocol: `decision` for
    // TCP (reliable), `decision_udp` for UDP (datagram); match() picks.
    bool class_set = false;
    bool transport_set = false;
    Decision decision_udp;
};

// [overlay NAME] (used by the overlay issue; parsed and validated now).
struct Overlay {
    std::string name;
    int line = 0;
    uint64_t id = 0;
    std::string protocol;               // "DT" or "HC"
    Address group; uint16_t group_port = 0;   // legacy multicast group, family 0 = none
    std::string server;                 // host:port of gsoverlayd, "" = none
};

// Which flows the engine carries over a bridge (a socketpair on the
// program's fd, the engine holding the transport): never; the flows whose QoS
// the kernel cannot give (needed, the default); every TCP flow (always: for
// tests and diagnosis).
enum class Bridge : uint8_t { never, needed, always };
const char* name(Bridge b) noexcept;   // "never", "needed", "always"

struct General {
    Bridge bridge = Bridge::needed;
    OnError on_error = OnError::open;
    OnReject on_reject = OnReject::fail;
    LogLevel log = LogLevel::warn;
    uint64_t capacity = 0;               // bytes/s each direction, 0 = unset
    uint64_t rate_up = 0, rate_down = 0; // per-process aggregates, bytes/s, 0 = none
};

// One problem found in a policy. `text` is the whole human-readable line:
//   "app.ini:12: dport = 9000-8000: empty range, write LOW-HIGH with LOW <= HIGH"
struct Diagnostic {
    std::string file;
    int line = 0;
    std::string text;
};

// The flow being classified. Addresses/ports as seen by the policy:
//  connect/datagram: dst = the peer the program sends to, src = the local bound
//                    address (family 0 if unbound: rules with `src` then do not match);
//  accept:           dst = the local address the peer connected to (the service),
//                    src = the peer.
struct FlowKey {
    std::string_view process;
    Proto proto = Proto::tcp;
    Direction direction = Direction::connect;
    Address dst, src;
    uint16_t dport = 0, sport = 0;
};

class Matcher;   // the rule index (policy/matcher.cpp)

class Policy {
public:
    Policy();
    ~Policy();
    Policy(Policy&&) noexcept;
    Policy& operator=(Policy&&) noexcept;

    // Parse text; `file` names it in diagnostics. Never fails: problems are in
    // diagnostics(); a policy with problems still holds what parsed cleanly
    // (the shim decides what to do with it, see General::on_error).
    static Policy parse(std::string_view text, std::string_view file);
    // Read and parse a file; an unreadable file is one diagnostic
    // ("FILE:0: cannot read: <strerror>, check GSOCKET_POLICY").
    static Policy load_file(const std::string& path);
    // The documented built-in default policy (docs/policy.md), used when no file is found.
    static Policy builtin();
    static std::string_view builtin_text() noexcept;

    const std::string& source() const noexcept { return source_; }   // file name, or "<built-in>"
    const General& general() const noexcept { return general_; }
    const std::vector<Rule>& rules() const noexcept { return rules_; }
    const std::vector<Overlay>& overlays() const noexcept { return overlays_; }
    const std::vector<Diagnostic>& diagnostics() const noexcept { return diags_; }
    bool ok() const noexcept { return diags_.empty(); }

    // First rule (in file order) that matches, or the class fallback for the
    // protocol (tcp -> reliable, udp -> datagram, native, no QoS) when none does.
    // Never allocates. The returned reference lives as long as the Policy.
    const Decision& match(const FlowKey& flow) const noexcept;
    // Index of the matching rule in rules(), or -1 for the fallback.
    int match_index(const FlowKey& flow) const noexcept;
    // Added: the same answer by a plain scan of rules() in order, without the
    // index. The reference for tests and the benchmark's baseline.
    int match_index_linear(const FlowKey& flow) const noexcept;
    // Added: the index in rules() of the rule a Decision returned by match()
    // belongs to (either of its decisions), or -1 for the fallback.
    int rule_index(const Decision& d) const noexcept;

private:
    std::string source_;
    General general_;
    std::vector<Rule> rules_;
    std::vector<Overlay> overlays_;
    std::vector<Diagnostic> diags_;
    Decision fallback_tcp_, fallback_udp_;
    std::unique_ptr<Matcher> matcher_;
    friend class Parser;
};

// Where the shim looks for the policy when GSOCKET_POLICY is unset:
// $XDG_CONFIG_HOME/gsocket/policy.ini (or ~/.config/gsocket/policy.ini), then
// /etc/gsocket/policy.ini. Returns "" when none exists (use Policy::builtin()).
std::string find_policy_file();

// Unit parsers, exposed for tests and tools. Return false and set `why` to
// "what would be right" text on error.
bool parse_rate(std::string_view s, uint64_t& bytes_per_s, std::string& why);
bool parse_size(std::string_view s, uint64_t& bytes, std::string& why);
bool parse_duration(std::string_view s, uint32_t& us, std::string& why);
bool parse_percent(std::string_view s, uint32_t& ppm, std::string& why);
bool parse_dscp(std::string_view s, int& dscp, std::string& why);
bool parse_cidr(std::string_view s, Cidr& out, std::string& why);
bool parse_address(std::string_view s, Address& out);   // plain v4 / v6 literal

// ---- Additions (not in the first draft of this header) ----

// One port item: "443" or "8000-8099" (1-65535, LOW <= HIGH).
bool parse_port_range(std::string_view s, PortRange& out, std::string& why);

// Whether one rule's constraints all hold for the flow (v4-mapped addresses in
// the flow are normalised first). Policy::match_index_linear() is this in a loop.
bool rule_matches(const Rule& rule, const FlowKey& flow) noexcept;

// The MCES element catalogue, in the order a chain usually lists them (the
// same as core/mces/conn/chain.h kElementNames: elements.cpp checks it at
// compile time). `congestion` may be written `congestion:cubic` or
// `congestion:newreno`.
inline constexpr std::array<std::string_view, 14> mces_elements = {
    "framing", "checksum", "auth", "handshake", "sequencing", "sack", "ordering",
    "flowcontrol", "congestion", "pacing", "fec", "deadline", "keepalive", "close"};
// Whether `chain` is a chain an MCES connection of the class builds: this is
// the connection's own check (core/mces/conn/chain.h make_chain), so the
// policy and the connection never disagree. `class_known` false applies only
// the class-independent rules. An empty chain means the class's default chain
// (refused without a class, and for classes that have none: group).
// Elements that are not available in this version (auth) are refused. On false, `why` is make_chain's one-line reason. May throw
// std::bad_alloc. docs/policy.md lists the rules.
bool check_elements(const std::vector<std::string>& chain, ServiceClass service,
                    bool class_known, std::string& why);

// Canonical text for values, as the parser reads them back:
// format_rate(2500000) == "20mbit", format_rate(1000) == "8kbit", else "NB/s".
std::string format_rate(uint64_t bytes_per_s);
std::string format_size(uint64_t bytes);          // "64KiB", "1500" (bytes)
std::string format_duration(uint32_t us);         // "120ms", "1500us", "2s"
std::string format_percent(uint32_t ppm);         // "0.5%"
std::string format_dscp(int dscp);                // "AF41", "EF", "13"
std::string format_address(const Address& a);     // "10.0.0.1", "ff3e::1"
std::string format_cidr(const Cidr& c);           // "10.0.0.0/8", "::1/128"
// The policy as canonical INI text: parse(to_ini(p)) gives the same rules,
// overlays and general settings, with no diagnostics (for what parsed cleanly).
std::string to_ini(const Policy& p);

}  // namespace gs::policy
