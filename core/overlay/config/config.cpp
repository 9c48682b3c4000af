#include "core/overlay/config/config.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>

namespace gs::overlay {

namespace {

using sansio::Addr;
using sansio::Time;

enum class Kind : std::uint8_t {
    id, key_list, protocol, transport, adapter, address, host_port, addr_list, coordinates,
    duration, count
};

struct Spec {
    AttributeSpec pub;
    Kind kind;
    std::uint64_t min = 0, max = 0;   // duration (ns) or count bounds
};

constexpr std::uint64_t kMaxOverlayId = std::uint64_t{1} << 63;   // as the policy's [overlay] id
constexpr std::size_t kMaxBootstrap = 16;
constexpr const char* kDuration = "a duration such as 250ms, 1s or 500 (ms)";

// The order here is the documentation's and merge_config's "first".
const std::vector<Spec>& specs() {
    static const std::vector<Spec> s = {
        {{"OverlayID", "", Scope::overlay, "a number from 1 to 9223372036854775808"}, Kind::id},
        {{"KeyAttributes", "KeyAttributes,OverlayID,Protocol", Scope::overlay,
          "a comma-separated list of attribute names such as Protocol,DataTransport"},
         Kind::key_list},
        {{"Protocol", "DT", Scope::overlay, "DT or HC"}, Kind::protocol},
        {{"DataTransport", "UDP", Scope::overlay, "UDP or TCP"}, Kind::transport},
        {{"NodeAdapter", "UDP", Scope::overlay, "UDP"}, Kind::adapter},
        {{"NodeAddress", "0.0.0.0:0", Scope::member,
          "ADDR:PORT such as 0.0.0.0:8081, [::]:8081 or :8081"},
         Kind::address},
        {{"Server", "", Scope::overlay,
          "HOST:PORT such as 127.0.0.1:8081, [::1]:8081 or overlay.example:8081"},
         Kind::host_port},
        {{"Bootstrap", "", Scope::member,
          "a comma-separated list of up to 16 ADDR:PORT such as 10.0.0.1:8081,[::1]:8082"},
         Kind::addr_list},
        {{"Coordinates", "random", Scope::member,
          "random, or X,Y with 32-bit integers (not -1,-1)"},
         Kind::coordinates},
        {{"Lease", "30s", Scope::overlay, "a duration from 1s to 1h such as 30s"}, Kind::duration,
         1 * sansio::kSecond, 3600 * sansio::kSecond},
        {{"HelloFast", "250ms", Scope::overlay, kDuration}, Kind::duration, sansio::kMillisecond,
         3600 * sansio::kSecond},
        {{"HelloSlow", "1s", Scope::overlay, kDuration}, Kind::duration, sansio::kMillisecond,
         3600 * sansio::kSecond},
        {{"NeighborTimeout", "4s", Scope::overlay, kDuration}, Kind::duration,
         sansio::kMillisecond, 3600 * sansio::kSecond},
        {{"Memory", "10s", Scope::overlay, kDuration}, Kind::duration, sansio::kMillisecond,
         3600 * sansio::kSecond},
        {{"StableTicks", "4", Scope::overlay, "a number from 1 to 100"}, Kind::count, 1, 100},
        {{"PingInterval", "1s", Scope::overlay, kDuration}, Kind::duration, sansio::kMillisecond,
         3600 * sansio::kSecond},
        {{"BeaconInterval", "1s", Scope::overlay, kDuration}, Kind::duration,
         sansio::kMillisecond, 3600 * sansio::kSecond},
        {{"FailureTimeout", "4s", Scope::overlay, kDuration}, Kind::duration, sansio::kMillisecond,
         3600 * sansio::kSecond},
        {{"HeadTimeout", "6s", Scope::overlay, kDuration}, Kind::duration, sansio::kMillisecond,
         3600 * sansio::kSecond},
        {{"ClaimStep", "500ms", Scope::overlay, kDuration}, Kind::duration, sansio::kMillisecond,
         3600 * sansio::kSecond},
        {{"MaxMembers", "65536", Scope::overlay, "a number from 1 to 1048576"}, Kind::count, 1,
         1u << 20},
        {{"JoinRetry", "1s", Scope::overlay, kDuration}, Kind::duration, sansio::kMillisecond,
         3600 * sansio::kSecond},
        {{"MaxPayload", "1200", Scope::overlay, "a number of bytes from 1 to 65000"}, Kind::count,
         1, 65000},
    };
    return s;
}

const Spec* spec_of(std::string_view name) noexcept {
    for (const Spec& s : specs())
        if (name == s.pub.name) return &s;
    return nullptr;
}

bool is_digits(std::string_view s) noexcept {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool parse_u64(std::string_view s, std::uint64_t& out) noexcept {
    if (!is_digits(s) || s.size() > 20) return false;
    auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    return r.ec == std::errc{} && r.ptr == s.data() + s.size();
}

bool parse_i32(std::string_view s, std::int32_t& out) noexcept {
    if (s.empty() || s.size() > 11) return false;
    auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    return r.ec == std::errc{} && r.ptr == s.data() + s.size();
}

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

std::vector<std::string_view> split_commas(std::string_view s) {
    std::vector<std::string_view> out;
    while (true) {
        const std::size_t c = s.find(',');
        out.push_back(trim(s.substr(0, c)));
        if (c == std::string_view::npos) break;
        s.remove_prefix(c + 1);
    }
    return out;
}

std::string upper(std::string_view s) {
    std::string u(s);
    for (char& c : u)
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    return u;
}

std::string lower(std::string_view s) {
    std::string u(s);
    for (char& c : u)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return u;
}

// "250ms", "1s", "100us", "500" (ms) -> ns.
bool parse_duration(std::string_view s, Time& out) noexcept {
    std::size_t d = 0;
    while (d < s.size() && s[d] >= '0' && s[d] <= '9') ++d;
    std::uint64_t n = 0;
    if (d == 0 || d > 12 || !parse_u64(s.substr(0, d), n)) return false;
    const std::string_view unit = s.substr(d);
    Time mul = 0;
    if (unit.empty() || unit == "ms") mul = sansio::kMillisecond;
    else if (unit == "s") mul = sansio::kSecond;
    else if (unit == "us") mul = sansio::kMicrosecond;
    else return false;
    // n < 10^12 and mul <= 10^9 can exceed 63 bits: check before multiplying.
    if (n > static_cast<std::uint64_t>(std::numeric_limits<Time>::max() / mul)) return false;
    out = static_cast<Time>(n) * mul;
    return true;
}

std::string format_duration(Time t) {
    if (t % sansio::kSecond == 0) return std::to_string(t / sansio::kSecond) + "s";
    if (t % sansio::kMillisecond == 0) return std::to_string(t / sansio::kMillisecond) + "ms";
    return std::to_string(t / sansio::kMicrosecond) + "us";
}

bool valid_host(std::string_view h) noexcept {
    if (h.empty() || h.size() > 253) return false;
    return std::all_of(h.begin(), h.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '.';
    });
}

char fold(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Edit distance, case-insensitive, for "did you mean": a typo of one or two
// letters. Names are at most kMaxNameBytes, so two short rows suffice.
std::size_t distance(std::string_view a, std::string_view b) {
    if (a.size() > kMaxNameBytes || b.size() > kMaxNameBytes) return kMaxNameBytes;
    std::size_t prev[kMaxNameBytes + 1], cur[kMaxNameBytes + 1];
    for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t sub = prev[j - 1] + (fold(a[i - 1]) == fold(b[j - 1]) ? 0 : 1);
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
        }
        std::copy(cur, cur + b.size() + 1, prev);
    }
    return prev[b.size()];
}

std::string unknown_name(std::string_view name) {
    std::string msg = "unknown attribute " + std::string(name);
    for (const Spec& s : specs()) {
        if (distance(name, s.pub.name) <= 2) return msg + " (did you mean " + s.pub.name + "?)";
    }
    return msg + " (docs/overlay.md lists the attributes)";
}

std::string at(const Origin& o) {
    const std::string s = o.str();
    return s.empty() ? std::string() : s + ": ";
}

// The canonical form of `v` for attribute `s`, or false with `why` saying
// what is wrong ("expected ..." or something more precise).
bool canonical(const Spec& s, std::string_view v, std::string& out, std::string& why) {
    why = std::string("expected ") + s.pub.expected;
    switch (s.kind) {
    case Kind::id: {
        std::uint64_t n = 0;
        if (!parse_u64(v, n) || n == 0 || n > kMaxOverlayId) return false;
        out = std::to_string(n);
        return true;
    }
    case Kind::key_list: {
        std::vector<std::string> names = {"KeyAttributes", "OverlayID", "Protocol"};
        for (std::string_view n : split_commas(v)) {
            if (n.empty()) return false;
            const Spec* k = spec_of(n);
            if (!k) {
                why = unknown_name(n);
                return false;
            }
            if (k->pub.scope == Scope::member) {
                why = std::string(n) + " is set per member and cannot be a key attribute";
                return false;
            }
            names.emplace_back(n);
        }
        std::sort(names.begin(), names.end());
        names.erase(std::unique(names.begin(), names.end()), names.end());
        out.clear();
        for (const std::string& n : names) out += (out.empty() ? "" : ",") + n;
        return true;
    }
    case Kind::protocol: {
        const std::string u = upper(v);
        if (u != "DT" && u != "HC") return false;
        out = u;
        return true;
    }
    case Kind::transport: {
        const std::string u = upper(v);
        if (u != "UDP" && u != "TCP") return false;
        out = u;
        return true;
    }
    case Kind::adapter:
        if (upper(v) != "UDP") return false;
        out = "UDP";
        return true;
    case Kind::address: {
        Addr a;
        if (!parse_addr(v, a)) return false;
        out = a.str();
        return true;
    }
    case Kind::host_port: {
        if (v.empty()) {   // no server
            out.clear();
            return true;
        }
        Addr a;
        if (parse_addr(v, a)) {
            if (a.port == 0 || v.front() == ':') return false;
            out = a.str();
            return true;
        }
        const std::size_t c = v.rfind(':');
        std::uint64_t port = 0;
        if (c == std::string_view::npos || !valid_host(v.substr(0, c)) ||
            !parse_u64(v.substr(c + 1), port) || port == 0 || port > 65535)
            return false;
        out = lower(v.substr(0, c)) + ":" + std::to_string(port);
        return true;
    }
    case Kind::addr_list: {
        out.clear();
        if (v.empty()) return true;
        const auto items = split_commas(v);
        if (items.size() > kMaxBootstrap) return false;
        for (std::string_view i : items) {
            Addr a;
            if (!parse_addr(i, a) || a.port == 0 || i.front() == ':') return false;
            out += (out.empty() ? "" : ",") + a.str();
        }
        return true;
    }
    case Kind::coordinates: {
        if (lower(v) == "random") {
            out = "random";
            return true;
        }
        const auto xy = split_commas(v);
        std::int32_t x = 0, y = 0;
        if (xy.size() != 2 || !parse_i32(xy[0], x) || !parse_i32(xy[1], y) || (x == -1 && y == -1))
            return false;
        out = std::to_string(x) + "," + std::to_string(y);
        return true;
    }
    case Kind::duration: {
        Time t = 0;
        if (!parse_duration(v, t)) return false;
        if (static_cast<std::uint64_t>(t) < s.min || static_cast<std::uint64_t>(t) > s.max) {
            why = "out of range: expected " + format_duration(static_cast<Time>(s.min)) +
                  " to " + format_duration(static_cast<Time>(s.max));
            return false;
        }
        out = format_duration(t);
        return true;
    }
    case Kind::count: {
        std::uint64_t n = 0;
        if (!parse_u64(v, n) || n < s.min || n > s.max) return false;
        out = std::to_string(n);
        return true;
    }
    }
    return false;
}

std::string bad_value(const Attribute& a, const std::string& why) {
    return at(a.origin) + a.name + " = " + a.value + ": " + why;
}

Time duration_of(const std::map<std::string, std::string>& v, const char* name) {
    Time t = 0;
    parse_duration(v.at(name), t);
    return t;
}

std::uint64_t count_of(const std::map<std::string, std::string>& v, const char* name) {
    std::uint64_t n = 0;
    parse_u64(v.at(name), n);
    return n;
}

// The key attribute set an attribute set declares (canonical names).
std::vector<std::string> key_names(const std::string& canonical_list) {
    std::vector<std::string> out;
    for (std::string_view n : split_commas(canonical_list)) out.emplace_back(n);
    return out;
}

std::string canonical_or_default(const Spec& s, const Attributes& attrs) {
    const Attribute* a = attrs.find(s.pub.name);
    if (!a) return s.pub.default_value;
    std::string out, why;
    canonical(s, a->value, out, why);   // checked by the caller
    return out;
}

std::uint64_t rotl(std::uint64_t x, int b) noexcept { return (x << b) | (x >> (64 - b)); }

std::uint64_t load_le64(const std::uint8_t* p) noexcept {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

}  // namespace

const std::vector<AttributeSpec>& attribute_specs() {
    static const std::vector<AttributeSpec> v = [] {
        std::vector<AttributeSpec> out;
        for (const Spec& s : specs()) out.push_back(s.pub);
        return out;
    }();
    return v;
}

const AttributeSpec* find_spec(std::string_view name) noexcept {
    const Spec* s = spec_of(name);
    return s ? &s->pub : nullptr;
}

bool always_key(std::string_view name) noexcept {
    return name == "OverlayID" || name == "KeyAttributes" || name == "Protocol";
}

bool parse_addr(std::string_view s, Addr& out) {
    std::string_view host, port;
    if (!s.empty() && s.front() == '[') {
        const std::size_t close = s.find(']');
        if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':')
            return false;
        host = s.substr(1, close - 1);
        port = s.substr(close + 2);
    } else {
        const std::size_t c = s.rfind(':');
        if (c == std::string_view::npos) return false;
        host = s.substr(0, c);
        port = s.substr(c + 1);
        if (host.find(':') != std::string_view::npos) return false;   // bare IPv6 needs []
    }
    std::uint64_t p = 0;
    if (!parse_u64(port, p) || p > 65535 || host.size() > 45) return false;
    Addr a;
    a.port = static_cast<std::uint16_t>(p);
    if (host.empty()) {   // ":8081": any IPv4 address, HyperCast's form
        a.ip[10] = a.ip[11] = 0xff;
        out = a;
        return true;
    }
    const std::string h(host);
    in_addr v4{};
    if (s.front() != '[' && inet_pton(AF_INET, h.c_str(), &v4) == 1) {
        a.ip[10] = a.ip[11] = 0xff;
        std::memcpy(a.ip.data() + 12, &v4, 4);
        out = a;
        return true;
    }
    in6_addr v6{};
    if (s.front() == '[' && inet_pton(AF_INET6, h.c_str(), &v6) == 1) {
        std::memcpy(a.ip.data(), &v6, 16);
        out = a;
        return true;
    }
    return false;
}

bool Config::is_key(std::string_view name) const {
    return std::find(key_attributes.begin(), key_attributes.end(), name) != key_attributes.end();
}

std::string Config::key_text() const {
    std::string s;
    for (const std::string& n : key_attributes) s += n + "=" + values.at(n) + "\n";
    return s;
}

Attributes Config::overlay_attributes() const {
    Attributes out;
    for (const Spec& s : specs()) {
        if (s.pub.scope == Scope::member) continue;
        const auto o = origins.find(s.pub.name);
        if (!is_key(s.pub.name) && o == origins.end()) continue;
        out.set(s.pub.name, values.at(s.pub.name), o == origins.end() ? Origin{} : o->second);
    }
    return out;
}

int check_attributes(const Attributes& attrs, std::vector<std::string>& errors) {
    const std::size_t before = errors.size();
    for (const Attribute& a : attrs.items()) {
        const Spec* s = spec_of(a.name);
        if (!s) {
            errors.push_back(at(a.origin) + unknown_name(a.name));
            continue;
        }
        std::string out, why;
        if (!canonical(*s, a.value, out, why)) errors.push_back(bad_value(a, why));
    }
    return errors.size() == before ? 0 : -EINVAL;
}

int build_config(const Attributes& attrs, Config& out, std::vector<std::string>& errors) {
    if (check_attributes(attrs, errors) != 0) return -EINVAL;
    const std::size_t before = errors.size();
    Config c;
    for (const Spec& s : specs()) {
        c.values[s.pub.name] = canonical_or_default(s, attrs);
        if (const Attribute* a = attrs.find(s.pub.name)) c.origins[s.pub.name] = a->origin;
    }
    if (!attrs.find("OverlayID")) {
        std::string src;
        if (!attrs.empty()) src = attrs.items().front().origin.source;
        errors.push_back((src.empty() ? std::string() : src + ": ") +
                         "OverlayID is required: add OverlayID = 1..9223372036854775808");
        return -EINVAL;
    }
    const auto& v = c.values;
    parse_u64(v.at("OverlayID"), c.overlay_id);
    c.key_attributes = key_names(v.at("KeyAttributes"));
    c.protocol = v.at("Protocol") == "HC" ? Protocol::hc : Protocol::dt;
    c.data_transport = v.at("DataTransport") == "TCP" ? DataTransport::tcp : DataTransport::udp;
    parse_addr(v.at("NodeAddress"), c.node_address);
    c.server = v.at("Server");
    if (!v.at("Bootstrap").empty()) {
        for (std::string_view i : split_commas(v.at("Bootstrap"))) {
            Addr a;
            parse_addr(i, a);
            c.bootstrap.push_back(a);
        }
    }
    if (v.at("Coordinates") != "random") {
        const auto xy = split_commas(v.at("Coordinates"));
        c.random_coordinates = false;
        parse_i32(xy[0], c.x);
        parse_i32(xy[1], c.y);
    }
    c.lease = duration_of(v, "Lease");
    c.hello_fast = duration_of(v, "HelloFast");
    c.hello_slow = duration_of(v, "HelloSlow");
    c.neighbor_timeout = duration_of(v, "NeighborTimeout");
    c.memory = duration_of(v, "Memory");
    c.stable_ticks = static_cast<int>(count_of(v, "StableTicks"));
    c.ping_interval = duration_of(v, "PingInterval");
    c.beacon_interval = duration_of(v, "BeaconInterval");
    c.failure_timeout = duration_of(v, "FailureTimeout");
    c.head_timeout = duration_of(v, "HeadTimeout");
    c.claim_step = duration_of(v, "ClaimStep");
    c.max_members = static_cast<std::uint32_t>(count_of(v, "MaxMembers"));
    c.join_retry = duration_of(v, "JoinRetry");
    c.max_payload = static_cast<std::size_t>(count_of(v, "MaxPayload"));

    // Cross-attribute rules: a timeout shorter than the interval of the
    // messages that keep it from firing would drop live neighbours.
    auto longer = [&](const char* later, const char* earlier, bool strict, const char* why) {
        const Time a = duration_of(v, later), b = duration_of(v, earlier);
        if (strict ? a > b : a >= b) return;
        // Name the attribute the file gave (the other may be a default).
        const auto o = c.origins.find(later);
        if (o != c.origins.end()) {
            errors.push_back(at(o->second) + later + " = " + v.at(later) + ": must be " +
                             (strict ? "longer than " : "at least ") + earlier + " (" +
                             v.at(earlier) + "), " + why);
        } else {
            errors.push_back(at(c.origins[earlier]) + earlier + " = " + v.at(earlier) +
                             ": must be " + (strict ? "shorter than " : "at most ") + later +
                             " (" + v.at(later) + "), " + why);
        }
    };
    if (c.protocol == Protocol::dt) {
        longer("HelloSlow", "HelloFast", false, "the stable Hello period cannot be the faster one");
        longer("NeighborTimeout", "HelloSlow", true, "or neighbours time out between Hellos");
    } else {
        longer("FailureTimeout", "PingInterval", true, "or neighbours time out between pings");
        longer("HeadTimeout", "BeaconInterval", true, "or the head times out between beacons");
    }
    if (errors.size() != before) return -EINVAL;

    c.key_hash = key_hash(c.key_text());
    out = std::move(c);
    return 0;
}

int parse_config(std::string_view text, std::string_view source, Config& out,
                 std::vector<std::string>& errors) {
    Attributes attrs;
    if (parse_attributes(text, source, attrs, errors) != 0) return -EINVAL;
    return build_config(attrs, out, errors);
}

std::uint64_t siphash24(const std::uint8_t key[16], const void* data, std::size_t len) noexcept {
    const auto* in = static_cast<const std::uint8_t*>(data);
    const std::uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    std::uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
    std::uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
    auto round = [&] {
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);
    };
    const std::size_t full = len - len % 8;
    for (std::size_t i = 0; i < full; i += 8) {
        const std::uint64_t m = load_le64(in + i);
        v3 ^= m;
        round();
        round();
        v0 ^= m;
    }
    std::uint64_t b = static_cast<std::uint64_t>(len) << 56;
    for (std::size_t i = 0; i < len % 8; ++i) b |= std::uint64_t{in[full + i]} << (8 * i);
    v3 ^= b;
    round();
    round();
    v0 ^= b;
    v2 ^= 0xff;
    for (int i = 0; i < 4; ++i) round();
    return v0 ^ v1 ^ v2 ^ v3;
}

std::uint64_t key_hash(std::string_view key_text) noexcept {
    static constexpr std::uint8_t kKey[16] = {'g', 's', 'o', 'c', 'k', 'e', 't', '-',
                                              'o', 'v', 'e', 'r', 'l', 'a', 'y', '1'};
    return siphash24(kKey, key_text.data(), key_text.size());
}

int merge_config(const Attributes& server, const Attributes& local, Config& out,
                 std::vector<std::string>& errors) {
    const std::size_t before = errors.size();
    check_attributes(server, errors);
    check_attributes(local, errors);
    if (errors.size() != before) return -EINVAL;

    // The server decides which attributes are key.
    const std::vector<std::string> keys =
        key_names(canonical_or_default(*spec_of("KeyAttributes"), server));
    for (const Spec& s : specs()) {
        if (std::find(keys.begin(), keys.end(), s.pub.name) == keys.end()) continue;
        const Attribute* l = local.find(s.pub.name);
        if (!l) continue;
        const std::string lv = canonical_or_default(s, local);
        const std::string sv = canonical_or_default(s, server);
        if (lv == sv) continue;
        const Attribute* sa = server.find(s.pub.name);
        const std::string from = sa ? sa->origin.str() : std::string("the default");
        const Attribute* id = server.find("OverlayID");
        errors.push_back(at(l->origin) + "key attribute " + s.pub.name + " = " + lv +
                         " differs from the overlay's " + s.pub.name + " = " +
                         (sv.empty() ? std::string("(none)") : sv) +
                         (from.empty() ? std::string() : " (" + from + ")") +
                         ": this member cannot join overlay " +
                         (id ? id->value : std::string("?")));
        return -EACCES;
    }

    Attributes merged;
    for (const Attribute& a : server.items()) {
        const Spec* s = spec_of(a.name);
        if (s && s->pub.scope != Scope::member) merged.set(a.name, a.value, a.origin);
    }
    for (const Attribute& a : local.items()) {
        if (std::find(keys.begin(), keys.end(), a.name) != keys.end()) continue;
        merged.set(a.name, a.value, a.origin);
    }
    return build_config(merged, out, errors);
}

std::string first_key_difference(const Config& a, const Config& b) {
    for (const Spec& s : specs()) {
        const std::string n = s.pub.name;
        if (!a.is_key(n) && !b.is_key(n)) continue;
        if (a.values.at(n) != b.values.at(n)) return n;
    }
    return {};
}

}  // namespace gs::overlay
