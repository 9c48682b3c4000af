// The JSON gsctl reads: what gsocket processes answer on their control
// sockets (flows, overlays). Just enough JSON for that, and careful, because
// the input comes from another process: a depth bound, no read past the end,
// whole numbers kept exactly (a DT member's logical address exceeds 2^53).
// Fuzzed by tests/fuzz_more/gsctl_json_fuzz.
#pragma once

#include <cerrno>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace gs::tools {

// A JSON value, just enough to read the snapshots (objects keep their order).
struct Json {
    enum class Type : uint8_t { null, boolean, number, string, array, object } type = Type::null;
    bool b = false;
    double n = 0;
    bool whole = false;   // a non-negative integer that fits in u (exactly, unlike n)
    uint64_t u = 0;
    std::string s;
    std::vector<Json> a;
    // An object's members, in order. Two vectors: std::vector may hold the
    // incomplete Json, std::pair may not (clang's libstdc++ check).
    std::vector<std::string> keys;
    std::vector<Json> values;

    const Json* get(std::string_view key) const {
        for (size_t i = 0; i < keys.size(); ++i)
            if (keys[i] == key) return &values[i];
        return nullptr;
    }
    std::string str(std::string_view key, const char* def = "-") const {
        const Json* v = get(key);
        return v && v->type == Type::string ? v->s : def;
    }
    double num(std::string_view key, double def = 0) const {
        const Json* v = get(key);
        return v && v->type == Type::number ? v->n : def;
    }
    bool has(std::string_view key) const { return get(key) != nullptr; }
    bool flag(std::string_view key) const {
        const Json* v = get(key);
        return v && v->type == Type::boolean && v->b;
    }
};

// Recursive descent with a depth bound: the input comes from another process.
class JsonReader {
public:
    explicit JsonReader(std::string_view t) : p_(t.data()), end_(t.data() + t.size()) {}
    bool parse(Json& out) {
        if (!value(out, 0)) return false;
        ws();
        return p_ == end_;
    }

private:
    void ws() {
        while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
    }
    bool lit(const char* w) {
        size_t n = strlen(w);
        if (static_cast<size_t>(end_ - p_) < n || memcmp(p_, w, n) != 0) return false;
        p_ += n;
        return true;
    }
    bool string(std::string& s) {
        if (p_ >= end_ || *p_ != '"') return false;
        ++p_;
        while (p_ < end_ && *p_ != '"') {
            char c = *p_++;
            if (c != '\\') {
                s += c;
                continue;
            }
            if (p_ >= end_) return false;
            char e = *p_++;
            switch (e) {
            case '"': case '\\': case '/': s += e; break;
            case 'b': s += '\b'; break;
            case 'f': s += '\f'; break;
            case 'n': s += '\n'; break;
            case 'r': s += '\r'; break;
            case 't': s += '\t'; break;
            case 'u': {
                if (end_ - p_ < 4) return false;
                unsigned cp = 0;
                for (int i = 0; i < 4; ++i) {
                    char h = *p_++;
                    cp <<= 4;
                    if (h >= '0' && h <= '9') cp |= static_cast<unsigned>(h - '0');
                    else if (h >= 'a' && h <= 'f') cp |= static_cast<unsigned>(h - 'a' + 10);
                    else if (h >= 'A' && h <= 'F') cp |= static_cast<unsigned>(h - 'A' + 10);
                    else return false;
                }
                // Tables only: anything outside ASCII shows as '?'.
                s += cp < 0x80 ? static_cast<char>(cp) : '?';
                break;
            }
            default: return false;
            }
        }
        if (p_ >= end_) return false;
        ++p_;
        return true;
    }
    bool value(Json& v, int depth) {
        if (depth > 32) return false;
        ws();
        if (p_ >= end_) return false;
        char c = *p_;
        if (c == '{') {
            ++p_;
            v.type = Json::Type::object;
            ws();
            if (p_ < end_ && *p_ == '}') return ++p_, true;
            for (;;) {
                ws();
                std::string k;
                if (!string(k)) return false;
                ws();
                if (p_ >= end_ || *p_++ != ':') return false;
                Json x;
                if (!value(x, depth + 1)) return false;
                v.keys.push_back(std::move(k));
                v.values.push_back(std::move(x));
                ws();
                if (p_ < end_ && *p_ == ',') { ++p_; continue; }
                if (p_ < end_ && *p_ == '}') return ++p_, true;
                return false;
            }
        }
        if (c == '[') {
            ++p_;
            v.type = Json::Type::array;
            ws();
            if (p_ < end_ && *p_ == ']') return ++p_, true;
            for (;;) {
                Json x;
                if (!value(x, depth + 1)) return false;
                v.a.push_back(std::move(x));
                ws();
                if (p_ < end_ && *p_ == ',') { ++p_; continue; }
                if (p_ < end_ && *p_ == ']') return ++p_, true;
                return false;
            }
        }
        if (c == '"') return v.type = Json::Type::string, string(v.s);
        if (lit("true")) return v.type = Json::Type::boolean, v.b = true, true;
        if (lit("false")) return v.type = Json::Type::boolean, v.b = false, true;
        if (lit("null")) return v.type = Json::Type::null, true;
        std::string num;
        while (p_ < end_ && *p_ != '\0' && (isdigit(static_cast<unsigned char>(*p_)) || strchr("+-.eE", *p_))) num += *p_++;
        if (num.empty()) return false;
        char* e = nullptr;
        v.n = strtod(num.c_str(), &e);
        v.type = Json::Type::number;
        // Whole numbers beyond 2^53 (a DT member's logical address) keep every digit.
        if (num.find_first_not_of("0123456789") == std::string::npos) {
            errno = 0;
            unsigned long long u = strtoull(num.c_str(), nullptr, 10);
            v.whole = errno == 0;
            v.u = u;
        }
        return e && *e == '\0';
    }
    const char* p_;
    const char* end_;
};

}  // namespace gs::tools
