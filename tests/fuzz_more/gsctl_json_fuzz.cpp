// libFuzzer target: gsctl's JSON reader (tools/json.h, Json / JsonReader),
// which reads what other processes answer on their control sockets. Besides
// not crashing, for every input:
//  - what is accepted re-reads as the same tree after being written out again
//    (strings byte for byte, integers through `whole`/`u`, others through `n`
//    bit for bit), so an integer keeps every digit;
//  - what is accepted has, outside strings, only the literals true, false,
//    null and number characters [0-9+-.eE] between the structural characters
//    and JSON whitespace (no byte is read as something it is not);
//  - an input that is just decimal digits is read with whole == (its value
//    fits in 64 bits, whatever the leading zeros) and u exact; a 64-bit value taken from
//    the input, written in decimal inside an object, comes back exact;
//  - nesting is bounded: a million '[' is refused without recursing that deep
//    (ASan's stack check would stop a reader that did), and a shallow one read.
#include "tools/json.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

using gs::tools::Json;
using gs::tools::JsonReader;

namespace {

void put_string(std::string& o, const std::string& s) {
    o += '"';
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            o += '\\';
            o += c;
        } else if (u < 0x20) {
            char b[8];
            snprintf(b, sizeof b, "\\u%04x", u);
            o += b;
        } else {
            o += c;
        }
    }
    o += '"';
}

// Writes `v` so that JsonReader reads it back as it is: whole numbers by their
// u64 digits, the others in exponent form (so they stay not whole).
void put(std::string& o, const Json& v) {
    switch (v.type) {
    case Json::Type::null: o += "null"; return;
    case Json::Type::boolean: o += v.b ? "true" : "false"; return;
    case Json::Type::string: put_string(o, v.s); return;
    case Json::Type::number: {
        char b[64];
        if (v.whole) snprintf(b, sizeof b, "%llu", static_cast<unsigned long long>(v.u));
        else if (std::isinf(v.n)) snprintf(b, sizeof b, "%s", v.n < 0 ? "-1e999" : "1e999");
        else snprintf(b, sizeof b, "%.17e", v.n);
        o += b;
        return;
    }
    case Json::Type::array:
        o += '[';
        for (size_t i = 0; i < v.a.size(); ++i) {
            if (i) o += ',';
            put(o, v.a[i]);
        }
        o += ']';
        return;
    case Json::Type::object:
        o += '{';
        for (size_t i = 0; i < v.keys.size(); ++i) {
            if (i) o += ',';
            put_string(o, v.keys[i]);
            o += ':';
            put(o, v.values[i]);
        }
        o += '}';
        return;
    }
}

bool same(const Json& x, const Json& y) {
    if (x.type != y.type) return false;
    switch (x.type) {
    case Json::Type::null: return true;
    case Json::Type::boolean: return x.b == y.b;
    case Json::Type::string: return x.s == y.s;
    case Json::Type::number:
        if (x.whole != y.whole || (x.whole && x.u != y.u)) return false;
        return std::memcmp(&x.n, &y.n, sizeof x.n) == 0;
    case Json::Type::array:
        if (x.a.size() != y.a.size()) return false;
        for (size_t i = 0; i < x.a.size(); ++i)
            if (!same(x.a[i], y.a[i])) return false;
        return true;
    case Json::Type::object:
        if (x.keys != y.keys || x.values.size() != y.values.size()) return false;
        for (size_t i = 0; i < x.values.size(); ++i)
            if (!same(x.values[i], y.values[i])) return false;
        return true;
    }
    return false;
}

// Outside strings, an accepted text holds structural characters, whitespace,
// the three literals and runs of number characters, nothing else.
bool tokens_ok(std::string_view t) {
    size_t i = 0;
    while (i < t.size()) {
        const char c = t[i];
        if (c == '"') {
            for (++i; i < t.size() && t[i] != '"'; ++i)
                if (t[i] == '\\') ++i;
            ++i;
            continue;
        }
        if (std::strchr("{}[],: \t\r\n", c) != nullptr && c != '\0') {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < t.size() && (t[j] == '\0' || std::strchr("{}[],: \t\r\n\"", t[j]) == nullptr)) ++j;
        const std::string_view run = t.substr(i, j - i);
        if (run != "true" && run != "false" && run != "null") {
            for (char r : run)
                if (r == '\0' || std::strchr("0123456789+-.eE", r) == nullptr) return false;
        }
        i = j;
    }
    return true;
}

// A decimal integer (leading zeros too: the reader takes them): its value,
// and whether it fits in 64 bits.
bool plain_integer(std::string_view t, std::uint64_t& v, bool& fits) {
    if (t.empty()) return false;
    v = 0;
    fits = true;
    for (char c : t) {
        if (c < '0' || c > '9') return false;
        const std::uint64_t d = static_cast<std::uint64_t>(c - '0');
        if (v > (UINT64_MAX - d) / 10) fits = false;
        else v = v * 10 + d;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    // Nesting: refused far below a million, read when shallow.
    std::string deep(1'000'000, '[');
    Json j;
    if (JsonReader(deep).parse(j)) abort();
    Json k;
    if (!JsonReader("[[[[[[[[{\"a\":[1]}]]]]]]]]").parse(k)) abort();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    Json v;
    const bool ok = JsonReader(text).parse(v);
    if (ok) {
        if (!tokens_ok(text)) abort();
        std::string again;
        put(again, v);
        Json w;
        if (!JsonReader(again).parse(w) || !same(v, w)) abort();
    }

    std::uint64_t value = 0;
    bool fits = false;
    if (plain_integer(text, value, fits)) {
        if (!ok || v.type != Json::Type::number || v.whole != fits || (fits && v.u != value)) abort();
    }

    // A 64-bit value from the input, as a producer writes it (to_chars).
    std::uint64_t x = 0;
    if (size > 0) std::memcpy(&x, data, size < sizeof x ? size : sizeof x);
    char b[32];
    snprintf(b, sizeof b, "%llu", static_cast<unsigned long long>(x));
    Json o;
    const std::string doc = std::string("{\"address\":") + b + ",\"n\":[" + b + "]}";
    if (!JsonReader(doc).parse(o)) abort();
    const Json* a = o.get("address");
    const Json* n = o.get("n");
    if (!a || !a->whole || a->u != x || !n || n->a.size() != 1 || !n->a[0].whole || n->a[0].u != x) abort();
    return 0;
}
