// Unit parsers and formatters for policy values. Each parser accepts exactly one
// spelling per unit so a policy means the same thing to every reader, and
// refuses anything that would wrap or round to a different meaning.
#include "policy/policy.h"
#include "policy/text.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstring>
#include <limits>

namespace gs::policy {
namespace {

using text::is_space;
using text::trim;
using text::lower;
using text::iequals;

__extension__ typedef unsigned __int128 u128;

constexpr u128 kMantissaCap = static_cast<u128>(1000000000000000000ULL) * 1000000000000ULL;  // 1e30
constexpr int kMaxDecimals = 12;

enum class Num { ok, none, malformed, overflow, too_precise };

// A non-negative decimal "123" or "1.25": value = mant / 10^frac.
struct Decimal {
    u128 mant = 0;
    int frac = 0;
};

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// Reads the number at the start of s; `used` is how many characters it took.
Num read_decimal(std::string_view s, Decimal& d, size_t& used) noexcept {
    size_t i = 0;
    d = {};
    bool overflow = false;
    while (i < s.size() && is_digit(s[i])) {
        if (d.mant >= kMantissaCap)
            overflow = true;
        else
            d.mant = d.mant * 10 + static_cast<unsigned>(s[i] - '0');
        ++i;
    }
    if (i == 0) {
        used = 0;
        return (!s.empty() && s[0] == '.') ? Num::malformed : Num::none;
    }
    if (i < s.size() && s[i] == '.') {
        size_t j = i + 1;
        while (j < s.size() && is_digit(s[j])) {
            if (d.frac >= kMaxDecimals) {
                used = j;
                return Num::too_precise;
            }
            if (d.mant >= kMantissaCap)
                overflow = true;
            else
                d.mant = d.mant * 10 + static_cast<unsigned>(s[j] - '0');
            ++d.frac;
            ++j;
        }
        if (j == i + 1) {
            used = j;
            return Num::malformed;   // "1." has no decimals
        }
        i = j;
    }
    used = i;
    return overflow ? Num::overflow : Num::ok;
}

u128 pow10(int n) noexcept {
    u128 r = 1;
    while (n-- > 0) r *= 10;
    return r;
}

// value * mul / div, rounded to nearest; false on overflow past `max`.
bool scale(const Decimal& d, u128 mul, u128 div, u128 max, u128& out) noexcept {
    if (mul != 0 && d.mant > std::numeric_limits<u128>::max() / mul) return false;
    u128 num = d.mant * mul;
    u128 den = pow10(d.frac) * div;
    u128 q = num / den, r = num % den;
    if (r * 2 >= den) ++q;
    if (q > max) return false;
    out = q;
    return true;
}

struct Unit {
    std::string_view name;
    u128 mul, div;
    bool icase;
};

constexpr u128 k1e3 = 1000, k1e6 = 1000000, k1e9 = 1000000000, k1e12 = 1000000000000ULL;

constexpr Unit kRateUnits[] = {
    {"bit", 1, 8, true},         {"kbit", k1e3, 8, true},     {"mbit", k1e6, 8, true},
    {"gbit", k1e9, 8, true},     {"tbit", k1e12, 8, true},    {"B/s", 1, 1, false},
    {"kB/s", k1e3, 1, false},    {"KB/s", k1e3, 1, false},    {"MB/s", k1e6, 1, false},
    {"GB/s", k1e9, 1, false},    {"KiB/s", 1024, 1, false},   {"MiB/s", 1u << 20, 1, false},
    {"GiB/s", 1u << 30, 1, false},
};

constexpr Unit kSizeUnits[] = {
    {"B", 1, 1, false},          {"kB", k1e3, 1, false},      {"KB", k1e3, 1, false},
    {"MB", k1e6, 1, false},      {"GB", k1e9, 1, false},      {"KiB", 1024, 1, false},
    {"MiB", 1u << 20, 1, false}, {"GiB", 1u << 30, 1, false},
};

constexpr Unit kDurationUnits[] = {
    {"us", 1, 1, false}, {"ms", 1000, 1, false}, {"s", 1000000, 1, false},
};

template <size_t N>
const Unit* find_unit(const Unit (&units)[N], std::string_view u) noexcept {
    for (const Unit& x : units)
        if (x.icase ? iequals(x.name, u) : x.name == u) return &x;
    return nullptr;
}

// Shared shape of rate/size/duration: NUMBER [spaces] UNIT, or a lone "0".
enum class Shape { ok, zero, empty, not_number, overflow, too_precise, no_unit };

Shape split_number(std::string_view s, Decimal& d, std::string_view& unit) noexcept {
    s = trim(s);
    if (s.empty()) return Shape::empty;
    size_t used = 0;
    Num n = read_decimal(s, d, used);
    if (n == Num::none || n == Num::malformed) return Shape::not_number;
    if (n == Num::too_precise) return Shape::too_precise;
    if (n == Num::overflow) return Shape::overflow;
    unit = trim(s.substr(used));
    if (unit.empty()) return d.mant == 0 ? Shape::zero : Shape::no_unit;
    return Shape::ok;
}

std::string to_string_u128(u128 v) {
    char buf[48];
    int i = 47;
    buf[i] = 0;
    do {
        buf[--i] = static_cast<char>('0' + static_cast<int>(v % 10));
        v /= 10;
    } while (v != 0);
    return std::string(buf + i);
}

// "1.5" style text for mant/10^frac with trailing zeros trimmed.
std::string decimal_text(uint64_t whole, uint64_t part, int digits) {
    std::string s = std::to_string(whole);
    if (part == 0) return s;
    std::string p = std::to_string(part);
    while (static_cast<int>(p.size()) < digits) p.insert(p.begin(), '0');
    while (!p.empty() && p.back() == '0') p.pop_back();
    return s + "." + p;
}

}  // namespace

bool parse_rate(std::string_view s, uint64_t& bytes_per_s, std::string& why) {
    static constexpr const char* kHint = "write 10mbit (bits/s) or 2MB/s (bytes/s)";
    Decimal d;
    std::string_view unit;
    switch (split_number(s, d, unit)) {
    case Shape::zero: bytes_per_s = 0; return true;
    case Shape::empty: why = std::string("empty value, ") + kHint; return false;
    case Shape::not_number:
        why = (trim(s).substr(0, 1) == "-") ? std::string("a rate cannot be negative, ") + kHint
                                            : std::string("not a rate, ") + kHint;
        return false;
    case Shape::too_precise: why = "too many decimals (at most 12), write 1.5mbit"; return false;
    case Shape::overflow: why = "too large, the most is 18446744073709551615B/s"; return false;
    case Shape::no_unit: why = std::string("no unit: ") + kHint; return false;
    case Shape::ok: break;
    }
    if (iequals(unit, "bps") || iequals(unit, "kbps") || iequals(unit, "mbps") ||
        iequals(unit, "gbps") || iequals(unit, "tbps")) {
        why = "'" + std::string(unit) +
              "' is ambiguous (tc reads kbps as kilobytes per second), write kbit/mbit/gbit "
              "for bits/s or kB/s/MB/s/GB/s for bytes/s";
        return false;
    }
    const Unit* u = find_unit(kRateUnits, unit);
    if (!u) {
        why = "unknown unit '" + std::string(unit) +
              "', write bit, kbit, mbit, gbit, tbit (bits/s) or B/s, kB/s, MB/s, GB/s, KiB/s, "
              "MiB/s, GiB/s (bytes/s)";
        return false;
    }
    u128 out = 0;
    if (!scale(d, u->mul, u->div, std::numeric_limits<uint64_t>::max(), out)) {
        why = "too large, the most is 18446744073709551615B/s";
        return false;
    }
    if (out == 0 && d.mant != 0) {
        why = "below 1 B/s, write at least 8bit (or 0 for no limit)";
        return false;
    }
    bytes_per_s = static_cast<uint64_t>(out);
    return true;
}

bool parse_size(std::string_view s, uint64_t& bytes, std::string& why) {
    Decimal d;
    std::string_view unit;
    switch (split_number(s, d, unit)) {
    case Shape::zero: bytes = 0; return true;
    case Shape::empty: why = "empty value, write a size such as 65536, 64KiB or 1MB"; return false;
    case Shape::not_number: why = "not a size, write a size such as 65536, 64KiB or 1MB"; return false;
    case Shape::too_precise: why = "too many decimals (at most 12), write 1.5MiB"; return false;
    case Shape::overflow: why = "too large, the most is 18446744073709551615 bytes"; return false;
    case Shape::no_unit:
        if (d.frac != 0) {
            why = "a plain number is bytes and must be whole, write 1536 or 1.5KiB";
            return false;
        }
        unit = "B";
        break;
    case Shape::ok: break;
    }
    const Unit* u = find_unit(kSizeUnits, unit);
    if (!u) {
        why = "unknown unit '" + std::string(unit) +
              "', write bytes as a plain number or with B, kB, KB, MB, GB, KiB, MiB, GiB";
        return false;
    }
    u128 out = 0;
    if (!scale(d, u->mul, u->div, std::numeric_limits<uint64_t>::max(), out)) {
        why = "too large, the most is 18446744073709551615 bytes";
        return false;
    }
    if (out == 0 && d.mant != 0) {
        why = "below 1 byte, write a whole number of bytes";
        return false;
    }
    bytes = static_cast<uint64_t>(out);
    return true;
}

bool parse_duration(std::string_view s, uint32_t& us, std::string& why) {
    static constexpr const char* kHint = "write 120ms, 500us or 1.5s";
    Decimal d;
    std::string_view unit;
    switch (split_number(s, d, unit)) {
    case Shape::zero: us = 0; return true;
    case Shape::empty: why = std::string("empty value, ") + kHint; return false;
    case Shape::not_number: why = std::string("not a duration, ") + kHint; return false;
    case Shape::too_precise: why = "too many decimals (at most 12), write 1.5ms"; return false;
    case Shape::overflow: why = "too large, the most is 4294s"; return false;
    case Shape::no_unit: why = std::string("no unit: ") + kHint; return false;
    case Shape::ok: break;
    }
    const Unit* u = find_unit(kDurationUnits, unit);
    if (!u) {
        why = "unknown unit '" + std::string(unit) + "', " + kHint;
        return false;
    }
    u128 out = 0;
    if (!scale(d, u->mul, u->div, std::numeric_limits<uint32_t>::max(), out)) {
        why = "too large, the most is 4294s";
        return false;
    }
    if (out == 0 && d.mant != 0) {
        why = "below 1us, write at least 1us (or 0 for unset)";
        return false;
    }
    us = static_cast<uint32_t>(out);
    return true;
}

bool parse_percent(std::string_view s, uint32_t& ppm, std::string& why) {
    s = trim(s);
    if (s.empty()) {
        why = "empty value, write a percentage such as 1% or 0.5%";
        return false;
    }
    if (s == "0") {
        ppm = 0;
        return true;
    }
    if (s.back() != '%') {
        why = "no unit: write a percentage such as 1% or 0.5%";
        return false;
    }
    s.remove_suffix(1);
    s = trim(s);
    Decimal d;
    size_t used = 0;
    Num n = read_decimal(s, d, used);
    if (n == Num::too_precise || (n == Num::ok && d.frac > 4)) {
        why = "too many decimals, the finest is 0.0001%";
        return false;
    }
    if (n != Num::ok && n != Num::overflow) {
        why = "not a percentage, write 0% to 100%, e.g. 0.5%";
        return false;
    }
    if (used != s.size()) {
        why = "not a percentage, write 0% to 100%, e.g. 0.5%";
        return false;
    }
    u128 out = 0;
    if (n == Num::overflow || !scale(d, 10000, 1, 1000000, out)) {
        why = "more than 100%, write 0% to 100%";
        return false;
    }
    ppm = static_cast<uint32_t>(out);
    return true;
}

bool parse_dscp(std::string_view s, int& dscp, std::string& why) {
    s = trim(s);
    static constexpr const char* kHint =
        "write CS0-CS7, AF11-AF43, EF, VA, LE, BE (or default), or 0-63";
    if (s.empty()) {
        why = std::string("empty value, ") + kHint;
        return false;
    }
    if (is_digit(s[0])) {
        if (s.size() > 2) {
            why = std::string("out of range, ") + kHint;
            return false;
        }
        int v = 0;
        for (char c : s) {
            if (!is_digit(c)) {
                why = std::string("not a DSCP, ") + kHint;
                return false;
            }
            v = v * 10 + (c - '0');
        }
        if (v > 63) {
            why = std::string("out of range, ") + kHint;
            return false;
        }
        dscp = v;
        return true;
    }
    if (iequals(s, "EF")) { dscp = 46; return true; }
    if (iequals(s, "VA")) { dscp = 44; return true; }
    if (iequals(s, "LE")) { dscp = 1; return true; }
    if (iequals(s, "BE") || iequals(s, "default")) { dscp = 0; return true; }
    if (s.size() == 3 && iequals(s.substr(0, 2), "CS") && s[2] >= '0' && s[2] <= '7') {
        dscp = (s[2] - '0') * 8;
        return true;
    }
    if (s.size() == 4 && iequals(s.substr(0, 2), "AF") && s[2] >= '1' && s[2] <= '4' &&
        s[3] >= '1' && s[3] <= '3') {
        dscp = (s[2] - '0') * 8 + (s[3] - '0') * 2;
        return true;
    }
    why = std::string("not a DSCP, ") + kHint;
    return false;
}

bool parse_address(std::string_view s, Address& out) {
    char buf[INET6_ADDRSTRLEN + 1];
    if (s.empty() || s.size() >= sizeof buf) return false;
    memcpy(buf, s.data(), s.size());
    buf[s.size()] = 0;
    Address a;
    if (inet_pton(AF_INET, buf, a.bytes) == 1) {
        a.family = AF_INET;
    } else if (inet_pton(AF_INET6, buf, a.bytes) == 1) {
        a.family = AF_INET6;
        static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a.bytes, kMapped, 12) == 0) {
            memmove(a.bytes, a.bytes + 12, 4);
            memset(a.bytes + 4, 0, 12);
            a.family = AF_INET;
        }
    } else {
        return false;
    }
    out = a;
    return true;
}

std::string format_address(const Address& a) {
    char buf[INET6_ADDRSTRLEN];
    if (a.family != AF_INET && a.family != AF_INET6) return "(unknown)";
    if (!inet_ntop(a.family, a.bytes, buf, sizeof buf)) return "(unknown)";
    return buf;
}

std::string format_cidr(const Cidr& c) {
    return format_address(c.addr) + "/" + std::to_string(c.prefix);
}

namespace {

// Zeroes the bits past `prefix`; returns whether any were set.
bool mask_host_bits(Address& a, int prefix) noexcept {
    int total = a.family == AF_INET ? 32 : 128;
    bool had = false;
    for (int bit = prefix; bit < total; ++bit) {
        uint8_t m = static_cast<uint8_t>(0x80u >> (bit % 8));
        if (a.bytes[bit / 8] & m) {
            had = true;
            a.bytes[bit / 8] = static_cast<uint8_t>(a.bytes[bit / 8] & ~m);
        }
    }
    return had;
}

}  // namespace

bool parse_cidr(std::string_view s, Cidr& out, std::string& why) {
    s = trim(s);
    size_t slash = s.find('/');
    std::string_view addr_text = s.substr(0, slash);
    Address a;
    // Parse the literal as written so a v4-mapped prefix counts v6 bits.
    char buf[INET6_ADDRSTRLEN + 1];
    bool v6 = false;
    if (!addr_text.empty() && addr_text.size() < sizeof buf) {
        memcpy(buf, addr_text.data(), addr_text.size());
        buf[addr_text.size()] = 0;
        if (inet_pton(AF_INET, buf, a.bytes) == 1) {
            a.family = AF_INET;
        } else if (inet_pton(AF_INET6, buf, a.bytes) == 1) {
            a.family = AF_INET6;
            v6 = true;
        }
    }
    if (a.family == 0) {
        why = "not an address, write an IPv4 or IPv6 address or CIDR such as 10.0.0.0/8 or fd00::/8";
        return false;
    }
    int max = v6 ? 128 : 32;
    int prefix = max;
    if (slash != std::string_view::npos) {
        std::string_view p = s.substr(slash + 1);
        if (p.empty() || p.size() > 3) {
            why = "bad prefix length, write /0 to /" + std::to_string(max);
            return false;
        }
        prefix = 0;
        for (char c : p) {
            if (!is_digit(c)) {
                why = "bad prefix length, write /0 to /" + std::to_string(max);
                return false;
            }
            prefix = prefix * 10 + (c - '0');
        }
        if (prefix > max) {
            why = "prefix /" + std::string(p) + " is longer than " + std::to_string(max) +
                  " bits, write /0 to /" + std::to_string(max);
            return false;
        }
    }
    Address masked = a;
    if (mask_host_bits(masked, prefix)) {
        Cidr right{masked, static_cast<uint8_t>(prefix)};
        why = std::string(s) + " has host bits set, write " + format_cidr(right);
        return false;
    }
    // ::ffff:a.b.c.d/N with N >= 96 is the v4 network a.b.c.d/(N-96).
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (v6 && prefix >= 96 && memcmp(masked.bytes, kMapped, 12) == 0) {
        memmove(masked.bytes, masked.bytes + 12, 4);
        memset(masked.bytes + 4, 0, 12);
        masked.family = AF_INET;
        prefix -= 96;
    }
    out.addr = masked;
    out.prefix = static_cast<uint8_t>(prefix);
    return true;
}

bool Cidr::contains(const Address& a) const noexcept {
    if (a.family == 0 || a.family != addr.family) return false;
    int full = prefix / 8;
    if (memcmp(a.bytes, addr.bytes, static_cast<size_t>(full)) != 0) return false;
    int rest = prefix % 8;
    if (rest == 0) return true;
    uint8_t m = static_cast<uint8_t>(0xffu << (8 - rest));
    return (a.bytes[full] & m) == addr.bytes[full];
}

bool parse_port_range(std::string_view s, PortRange& out, std::string& why) {
    s = trim(s);
    auto one = [&](std::string_view t, uint32_t& v) {
        if (t.empty() || t.size() > 5) return false;
        v = 0;
        for (char c : t) {
            if (!is_digit(c)) return false;
            v = v * 10 + static_cast<uint32_t>(c - '0');
        }
        return true;
    };
    size_t dash = s.find('-');
    uint32_t lo = 0, hi = 0;
    bool ok = dash == std::string_view::npos ? one(s, lo) : (one(s.substr(0, dash), lo) &&
                                                            one(s.substr(dash + 1), hi));
    if (dash == std::string_view::npos) hi = lo;
    if (!ok) {
        // Tell a too-long number from a non-number: both are out of 1-65535.
        bool digits = !s.empty();
        for (char c : s) digits = digits && (is_digit(c) || c == '-');
        why = digits ? "port out of range, write 1-65535"
                     : "not a port, write a port such as 443 or a range such as 8000-8099";
        return false;
    }
    if (lo == 0 || hi == 0) {
        why = "port 0 is not a port, write 1-65535";
        return false;
    }
    if (lo > 65535 || hi > 65535) {
        why = "port out of range, write 1-65535";
        return false;
    }
    if (lo > hi) {
        why = "empty range, write LOW-HIGH with LOW <= HIGH";
        return false;
    }
    out.lo = static_cast<uint16_t>(lo);
    out.hi = static_cast<uint16_t>(hi);
    return true;
}

std::string format_rate(uint64_t b) {
    // Prefer an exact bit unit (what tc and most people write), then an exact
    // binary byte unit, else plain bytes: each reads back to the same value.
    u128 bits = static_cast<u128>(b) * 8;
    struct { u128 mul; const char* name; } bit_units[] = {
        {k1e12, "tbit"}, {k1e9, "gbit"}, {k1e6, "mbit"}, {k1e3, "kbit"}};
    for (const auto& u : bit_units)
        if (bits >= u.mul && bits % u.mul == 0) return to_string_u128(bits / u.mul) + u.name;
    struct { uint64_t mul; const char* name; } byte_units[] = {
        {1ULL << 30, "GiB/s"}, {1ULL << 20, "MiB/s"}, {1ULL << 10, "KiB/s"}};
    for (const auto& u : byte_units)
        if (b >= u.mul && b % u.mul == 0) return std::to_string(b / u.mul) + u.name;
    return std::to_string(b) + "B/s";
}

std::string format_size(uint64_t b) {
    if (b != 0 && b % (1u << 30) == 0) return std::to_string(b >> 30) + "GiB";
    if (b != 0 && b % (1u << 20) == 0) return std::to_string(b >> 20) + "MiB";
    if (b != 0 && b % 1024 == 0) return std::to_string(b >> 10) + "KiB";
    return std::to_string(b);
}

std::string format_duration(uint32_t us) {
    if (us != 0 && us % 1000000 == 0) return std::to_string(us / 1000000) + "s";
    if (us != 0 && us % 1000 == 0) return std::to_string(us / 1000) + "ms";
    return std::to_string(us) + "us";
}

std::string format_percent(uint32_t ppm) {
    return decimal_text(ppm / 10000, ppm % 10000, 4) + "%";
}

std::string format_dscp(int d) {
    if (d == 46) return "EF";
    if (d == 44) return "VA";
    if (d == 1) return "LE";
    if (d == 0) return "BE";
    if (d % 8 == 0 && d <= 56) return "CS" + std::to_string(d / 8);
    int x = d / 8, y = (d % 8) / 2;
    if (d % 2 == 0 && x >= 1 && x <= 4 && y >= 1 && y <= 3)
        return "AF" + std::to_string(x) + std::to_string(y);
    return std::to_string(d);
}

const char* name(ServiceClass c) noexcept {
    switch (c) {
    case ServiceClass::datagram: return "datagram";
    case ServiceClass::reliable: return "reliable";
    case ServiceClass::guaranteed: return "guaranteed";
    case ServiceClass::realtime: return "realtime";
    case ServiceClass::group: return "group";
    }
    return "?";
}

const char* name(Transport t) noexcept {
    switch (t) {
    case Transport::native: return "native";
    case Transport::mces: return "mces";
    case Transport::overlay: return "overlay";
    case Transport::automatic: return "auto";
    }
    return "?";
}

const char* name(Proto p) noexcept {
    switch (p) {
    case Proto::any: return "any";
    case Proto::tcp: return "tcp";
    case Proto::udp: return "udp";
    }
    return "?";
}

const char* name(Direction d) noexcept {
    switch (d) {
    case Direction::any: return "any";
    case Direction::connect: return "connect";
    case Direction::accept: return "accept";
    case Direction::datagram: return "datagram";
    }
    return "?";
}

const char* name(LogLevel l) noexcept {
    switch (l) {
    case LogLevel::off: return "off";
    case LogLevel::error: return "error";
    case LogLevel::warn: return "warn";
    case LogLevel::info: return "info";
    case LogLevel::debug: return "debug";
    }
    return "?";
}

const char* name(Auth a) noexcept {
    switch (a) {
    case Auth::none: return "none";
    case Auth::encrypt: return "encrypt";
    case Auth::authenticate: return "authenticate";
    }
    return "?";
}

const char* name(Bridge b) noexcept {
    switch (b) {
    case Bridge::never: return "never";
    case Bridge::needed: return "needed";
    case Bridge::always: return "always";
    }
    return "?";
}

}  // namespace gs::policy
