// The policy parser: inih splits lines into key/value pairs; this file gives
// every line its number, checks every value and every combination of values,
// and reports each problem as one "FILE:LINE: key = value: why" diagnostic.
//
// inih is driven through ini_parse_stream with our own reader so that
//  - we know the line number of each handler call (Debian builds inih without
//    INI_HANDLER_LINENO),
//  - lines longer than inih's buffer are reported instead of split silently,
//  - section headers are seen (inih does not call the handler for them), and
//  - every syntax error is reported, not only the first one inih returns.
#include "policy/parser.h"
#include "policy/text.h"

#include "core/mces/conn/chain.h"   // the MCES chain rules (standard library only)
#include "core/mces/auth/key_file.h"   // auth_key: MCES's own key-file reader and its checks

#include <ini.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <new>

namespace gs::policy {
namespace {

using text::is_space;
using text::trim;
using text::lower;
using text::iequals;

constexpr size_t kMaxDiagnostics = 1000;
constexpr size_t kMaxNameLen = 64;       // [flow NAME], [overlay NAME]
constexpr size_t kMaxProcessLen = 128;   // a program name
constexpr size_t kMaxHostLen = 128;      // server host

// Splits a list on commas and whitespace; empty items are skipped.
std::vector<std::string_view> split_list(std::string_view s) {
    std::vector<std::string_view> out;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && (s[i] == ',' || is_space(s[i]))) ++i;
        size_t j = i;
        while (j < s.size() && s[j] != ',' && !is_space(s[j])) ++j;
        if (j > i) out.push_back(s.substr(i, j - i));
        i = j;
    }
    return out;
}

// Optimal string alignment distance: a swap of two neighbours counts as one
// edit, so "dprot" is next to "dport".
size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
    for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
    for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
    for (size_t i = 1; i <= a.size(); ++i)
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t cost = lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1;
            d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
            if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) && lower(a[i - 2]) == lower(b[j - 1]))
                d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
        }
    return d[a.size()][b.size()];
}

// The nearest candidate when it is close enough to be a typo, else "".
template <class Names>
std::string_view nearest(std::string_view word, const Names& names) {
    std::string_view best;
    size_t best_d = 99;
    if (word.size() > 32) return best;   // no key is that long: not a typo
    for (std::string_view n : names) {
        // The distance is at least the length difference: skip hopeless names.
        size_t diff = word.size() > n.size() ? word.size() - n.size() : n.size() - word.size();
        if (diff > 3) continue;
        size_t d = edit_distance(word, n);
        if (d < best_d) {
            best_d = d;
            best = n;
        }
    }
    size_t limit = word.size() <= 3 ? 1 : (word.size() <= 6 ? 2 : 3);
    return best_d <= limit ? best : std::string_view();
}

bool valid_name(std::string_view s) noexcept {
    if (s.empty() || s.size() > kMaxNameLen) return false;
    for (char c : s)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    return true;
}

// A host name as DNS writes it: letters, digits, '-' and '.', with a letter somewhere.
bool looks_like_host(std::string_view s) noexcept {
    if (s.empty() || s.size() > 253) return false;
    bool letter = false;
    for (char c : s) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) letter = true;
        else if (!((c >= '0' && c <= '9') || c == '-' || c == '.')) return false;
    }
    return letter;
}

enum class SecKind : uint8_t { none, general, flow, overlay, ignored };

// Keys and what they take. `list` keys accept indented continuation lines.
enum class K : uint8_t {
    // general
    on_error, on_reject, log, capacity, rate_up, g_rate_down, bridge,
    // flow
    process, proto, dst, src, dport, sport, direction, klass, transport, rate, rate_down, burst,
    latency, jitter, loss, priority, dscp, fec, rcvbuf, window, notsent_lowat, congestion,
    elements, auth_key, auth, clock,
    // overlay
    id, protocol, group, server,
};

struct KeySpec {
    std::string_view name;
    K key;
    bool list;
};

constexpr KeySpec kGeneralKeys[] = {
    {"on_error", K::on_error, false}, {"on_reject", K::on_reject, false},
    {"log", K::log, false},           {"capacity", K::capacity, false},
    {"rate_up", K::rate_up, false},   {"rate_down", K::g_rate_down, false},
    {"bridge", K::bridge, false},
};

constexpr KeySpec kFlowKeys[] = {
    {"process", K::process, true},     {"proto", K::proto, false},
    {"dst", K::dst, true},             {"src", K::src, true},
    {"dport", K::dport, true},         {"sport", K::sport, true},
    {"direction", K::direction, false}, {"class", K::klass, false},
    {"transport", K::transport, false}, {"rate", K::rate, false},
    {"rate_down", K::rate_down, false}, {"burst", K::burst, false},
    {"latency", K::latency, false},    {"jitter", K::jitter, false},
    {"loss", K::loss, false},          {"priority", K::priority, false},
    {"dscp", K::dscp, false},          {"fec", K::fec, false},
    {"clock", K::clock, false},        {"rcvbuf", K::rcvbuf, false},
    {"window", K::window, false},      {"notsent_lowat", K::notsent_lowat, false},
    {"congestion", K::congestion, false},
    {"elements", K::elements, true},   {"auth_key", K::auth_key, false},
    {"auth", K::auth, false},
};

constexpr KeySpec kOverlayKeys[] = {
    {"id", K::id, false},
    {"protocol", K::protocol, false},
    {"group", K::group, false},
    {"server", K::server, false},
};

template <size_t N>
const KeySpec* find_key(const KeySpec (&specs)[N], std::string_view k) noexcept {
    for (const KeySpec& s : specs)
        if (s.name == k) return &s;
    return nullptr;
}

template <size_t N>
std::vector<std::string_view> key_names(const KeySpec (&specs)[N]) {
    std::vector<std::string_view> v;
    for (const KeySpec& s : specs) v.push_back(s.name);
    return v;
}

template <size_t N>
std::string key_list(const KeySpec (&specs)[N]) {
    std::string s;
    for (const KeySpec& k : specs) {
        if (!s.empty()) s += ", ";
        s += k.name;
    }
    return s;
}

// "host:port" or "[v6]:port" → host, port. False when malformed.
bool split_host_port(std::string_view s, std::string_view& host, uint32_t& port, bool& bracketed) {
    bracketed = false;
    std::string_view p;
    if (!s.empty() && s[0] == '[') {
        size_t close = s.find(']');
        if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':')
            return false;
        host = s.substr(1, close - 1);
        p = s.substr(close + 2);
        bracketed = true;
    } else {
        size_t colon = s.rfind(':');
        if (colon == std::string_view::npos || s.find(':') != colon) return false;
        host = s.substr(0, colon);
        p = s.substr(colon + 1);
    }
    if (host.empty() || p.empty() || p.size() > 5) return false;
    port = 0;
    for (char c : p) {
        if (c < '0' || c > '9') return false;
        port = port * 10 + static_cast<uint32_t>(c - '0');
    }
    return true;
}

}  // namespace

struct Parser::KeyState {
    int line = 0;
    std::string value;    // as written on the key line
    bool list = false;
    bool items = false;   // a list got at least one item (key line or continuation)
    bool failed = false;  // a diagnostic named this key: cross-checks leave it alone
};

struct Parser::Section {
    SecKind kind = SecKind::none;
    std::string name;
    int line = 0;
    bool bad = false;   // a diagnostic was reported inside: the section is not kept
    std::map<std::string, KeyState, std::less<>> keys;
    Rule rule;
    Overlay overlay;
    ServiceClass klass = ServiceClass::reliable;
    Transport transport = Transport::native;
    Auth auth = Auth::encrypt;   // auth = ..., used with auth_key
};


Parser::Parser(Policy& p, std::string_view text, std::string_view file)
    : policy_(p), text_(text), file_(file), sec_(std::make_unique<Section>()) {}

Parser::~Parser() = default;

void Parser::diag(int line, std::string text) {
    if (policy_.diags_.size() >= kMaxDiagnostics) {
        too_many_ = true;
        return;
    }
    std::string t = file_ + ":" + std::to_string(line) + ": " + text;
    policy_.diags_.push_back(Diagnostic{file_, line, std::move(t)});
}

void Parser::key_diag(int line, std::string_view key, std::string_view value, std::string_view why) {
    std::string t(key);
    t += value.empty() ? " =: " : " = ";
    t += value;
    if (!value.empty()) t += ": ";
    t += why;
    diag(line, std::move(t));
    sec_->bad = true;
    auto it = sec_->keys.find(key);
    if (it != sec_->keys.end()) it->second.failed = true;
}

void Parser::section_diag(int line, std::string_view header, std::string_view why) {
    diag(line, "[" + std::string(header) + "]: " + std::string(why));
    sec_->bad = true;
}

char* Parser::reader(char* buf, int size, void* self) {
    return static_cast<Parser*>(self)->read_line(buf, size);
}

int Parser::handler(void* self, const char* section, const char* name, const char* value) {
    (void)section;   // we track sections ourselves: inih truncates long names
    static_cast<Parser*>(self)->on_pair(name ? name : "", value ? value : "");
    return 1;        // errors are ours to report; inih's return then means syntax only
}

// Feeds inih one line at a time and classifies it the way inih will, so
// sections and continuation lines are known with their numbers.
char* Parser::read_line(char* buf, int size) {
    if (pos_ >= text_.size() || size < 2) return nullptr;
    size_t eol = text_.find('\n', pos_);
    if (eol == std::string_view::npos) eol = text_.size();
    std::string_view line = text_.substr(pos_, eol - pos_);
    pos_ = eol + 1;
    ++line_;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    kind_ = LineKind::blank;
    size_t limit = static_cast<size_t>(size) - 1;
    if (line.find('\0') != std::string_view::npos) {
        diag(line_, "line contains a NUL byte, a policy is text: remove it");
        sec_->bad = true;
        buf[0] = 0;
        return buf;
    }
    if (line.size() > limit) {
        diag(line_, "line too long (" + std::to_string(line.size()) + " characters), the limit is " +
                        std::to_string(limit) +
                        ": split the list over several lines with indentation");
        sec_->bad = true;
        buf[0] = 0;
        return buf;
    }
    memcpy(buf, line.data(), line.size());
    buf[line.size()] = 0;
    classify(line);
    return buf;
}

void Parser::classify(std::string_view raw) {
    std::string_view line = raw;
    if (line_ == 1 && line.size() >= 3 && static_cast<unsigned char>(line[0]) == 0xEF &&
        static_cast<unsigned char>(line[1]) == 0xBB && static_cast<unsigned char>(line[2]) == 0xBF)
        line.remove_prefix(3);
    std::string_view t = trim(line);
    bool indented = !t.empty() && t.data() != raw.data();
    if (t.empty() || t[0] == ';' || t[0] == '#') return;
    if (have_key_ && indented) {
        kind_ = LineKind::continuation;
        return;
    }
    // inih ends a header or a key at an inline ';' that follows whitespace.
    auto find_stop = [](std::string_view s, std::string_view chars) {
        bool was_space = false;
        for (size_t i = 0; i < s.size(); ++i) {
            if (chars.find(s[i]) != std::string_view::npos) return i;
            if (was_space && s[i] == ';') return std::string_view::npos;
            was_space = is_space(s[i]);
        }
        return std::string_view::npos;
    };
    if (t[0] == '[') {
        size_t close = find_stop(t.substr(1), "]");
        if (close == std::string_view::npos) {
            finish_section();
            *sec_ = Section{};
            sec_->kind = SecKind::ignored;   // its keys would land in the wrong section
            syntax_lines_.push_back(line_);
            diag(line_, std::string(t) + ": missing ']', write [flow NAME]");
            return;
        }
        std::string_view header = t.substr(1, close);
        std::string_view after = trim(t.substr(close + 2));
        begin_section(trim(header), line_);
        have_key_ = false;
        if (!after.empty() && after[0] != ';' && after[0] != '#')
            section_diag(line_, trim(header),
                         "text after ']', put a comment after ';' or remove the text");
        return;
    }
    if (find_stop(t, "=:") == std::string_view::npos) {
        syntax_lines_.push_back(line_);
        diag(line_, std::string(t) + ": not a 'key = value' line, write KEY = VALUE");
        sec_->bad = true;
        return;
    }
    kind_ = LineKind::key;
    have_key_ = true;
}

void Parser::begin_section(std::string_view header, int line) {
    finish_section();
    *sec_ = Section{};
    Section& s = *sec_;
    s.line = line;
    size_t sp = header.find_first_of(" \t");
    std::string_view type = header.substr(0, sp);
    std::string_view name = sp == std::string_view::npos ? std::string_view() : trim(header.substr(sp));
    s.kind = SecKind::ignored;
    if (type == "general") {
        if (!name.empty()) {
            section_diag(line, header, "[general] takes no name, write [general]");
            return;
        }
        if (general_line_ != 0) {
            section_diag(line, header,
                         "duplicate section, first at line " + std::to_string(general_line_) +
                             ": merge the two into one [general]");
            return;
        }
        general_line_ = line;
        s.kind = SecKind::general;
        s.name = "general";
        return;
    }
    if (type == "flow" || type == "overlay") {
        bool flow = type == "flow";
        std::string what = flow ? "flow" : "overlay";
        std::string a_what = flow ? "a flow" : "an overlay";
        if (name.empty()) {
            section_diag(line, header, a_what + " needs a name, write [" + what + " NAME]");
            return;
        }
        if (!valid_name(name)) {
            section_diag(line, header,
                         "bad name, use up to 64 letters, digits, '_', '-' or '.', e.g. [" + what +
                             " web]");
            return;
        }
        if (flow && name == "default") {
            section_diag(line, header,
                         "the name default is reserved for the fallback, choose another name");
            return;
        }
        auto& seen = flow ? flow_names_ : overlay_names_;
        auto it = seen.find(name);
        if (it != seen.end()) {
            section_diag(line, header,
                         "duplicate section, first at line " + std::to_string(it->second) +
                             ": give each " + what + " its own name");
            return;
        }
        seen.emplace(std::string(name), line);
        s.kind = flow ? SecKind::flow : SecKind::overlay;
        s.name = std::string(name);
        if (flow) {
            s.rule.decision.rule = s.name;
            s.rule.decision.line = line;
        } else {
            s.overlay.name = s.name;
            s.overlay.line = line;
        }
        return;
    }
    static constexpr std::string_view kSections[] = {"general", "flow", "overlay"};
    std::string_view near = nearest(type, kSections);
    std::string fix = near.empty() ? std::string("the sections are [general], [flow NAME], [overlay NAME]")
                                   : "did you mean [" + std::string(near) +
                                         (near == "general" ? "]?" : " NAME]?");
    section_diag(line, header, "unknown section, " + fix);
}

void Parser::on_pair(std::string_view name, std::string_view value) {
    Section& s = *sec_;
    value = trim(value);
    if (kind_ == LineKind::continuation) {
        // inih r55 passes continuation lines without removing an inline comment.
        for (size_t i = 1; i < value.size(); ++i)
            if (value[i] == ';' && is_space(value[i - 1])) {
                value = trim(value.substr(0, i));
                break;
            }
        if (cur_key_.empty() || s.kind == SecKind::ignored || s.kind == SecKind::none) return;
        auto it = s.keys.find(cur_key_);
        if (it == s.keys.end()) return;
        if (!it->second.list) {
            key_diag(line_, cur_key_, value,
                     "an indented line continues a list, and " + cur_key_ +
                         " takes one value: remove the indentation or join the lines");
            return;
        }
        if (!value.empty()) it->second.items = true;
        set_list(cur_key_, value, line_);
        return;
    }
    if (kind_ != LineKind::key) return;   // cannot happen: inih and classify() agree
    std::string key(trim(name));
    cur_key_.clear();
    if (s.kind == SecKind::ignored) return;
    if (s.kind == SecKind::none) {
        key_diag(line_, key, value, "outside any section, put it under [general] or [flow NAME]");
        return;
    }
    const KeySpec* spec = nullptr;
    if (s.kind == SecKind::general) spec = find_key(kGeneralKeys, key);
    else if (s.kind == SecKind::flow) spec = find_key(kFlowKeys, key);
    else spec = find_key(kOverlayKeys, key);
    std::string where = s.kind == SecKind::general ? std::string("[general]")
                        : s.kind == SecKind::flow  ? "[flow " + s.name + "]"
                                                   : "[overlay " + s.name + "]";
    if (!spec) {
        std::string why = "unknown key in " + where;
        // A key from another kind of section says where it belongs.
        bool in_general = find_key(kGeneralKeys, key) != nullptr;
        bool in_flow = find_key(kFlowKeys, key) != nullptr;
        bool in_overlay = find_key(kOverlayKeys, key) != nullptr;
        std::string_view near;
        if (s.kind == SecKind::general) near = nearest(key, key_names(kGeneralKeys));
        else if (s.kind == SecKind::flow) near = nearest(key, key_names(kFlowKeys));
        else near = nearest(key, key_names(kOverlayKeys));
        if (in_flow && s.kind != SecKind::flow)
            why += ", " + key + " belongs in a [flow NAME] section";
        else if (in_general && s.kind != SecKind::general)
            why += ", " + key + " belongs in [general]";
        else if (in_overlay && s.kind != SecKind::overlay)
            why += ", " + key + " belongs in an [overlay NAME] section";
        else if (!near.empty())
            why += ", did you mean " + std::string(near) + "?";
        else if (s.kind == SecKind::general)
            why += ", the keys are: " + key_list(kGeneralKeys);
        else if (s.kind == SecKind::flow)
            why += ", the keys are: " + key_list(kFlowKeys);
        else
            why += ", the keys are: " + key_list(kOverlayKeys);
        if (s.kind == SecKind::general && near == "on_error")
            why += " (on_error could not be read: the policy is broken, and the shim leaves "
                   "flows native)";
        key_diag(line_, key, value, why);
        return;
    }
    auto it = s.keys.find(key);
    if (it != s.keys.end()) {
        std::string why = "duplicate key in " + where + ", first set at line " +
                          std::to_string(it->second.line);
        why += spec->list ? ": merge the values into one list" : ": keep one";
        key_diag(line_, key, value, why);
        return;
    }
    KeyState& ks = s.keys[key];
    ks.line = line_;
    ks.value = std::string(value);
    ks.list = spec->list;
    ks.items = !value.empty();
    cur_key_ = key;
    if (spec->list) {
        // An empty key line may be followed by indented items: checked at the end.
        set_list(key, value, line_);
        return;
    }
    if (value.empty()) {
        std::string why = "empty value, write a value or remove the line";
        if (key == "on_error")
            why += " (on_error could not be read: the policy is broken, and the shim "
                   "leaves flows native)";
        key_diag(line_, key, value, why);
        return;
    }
    set_scalar(static_cast<int>(spec->key), key, value, line_);
}

// One line's worth of items for a list key.
void Parser::set_list(const std::string& key, std::string_view value, int line) {
    Section& s = *sec_;
    Rule& r = s.rule;
    for (std::string_view item : split_list(value)) {
        std::string why;
        if (key == "process") {
            if (item.find('/') != std::string_view::npos) {
                key_diag(line, key, item,
                         "a path, write the program name (the basename of argv[0]), e.g. curl");
            } else if (item[0] == ';' || item[0] == '#') {
                // Written back as "a, ;b", or with '#' first on a continuation
                // line, it would read as a comment.
                key_diag(line, key, item,
                         "a program name cannot start with ';' or '#' (they start comments): "
                         "write the name without it");
            } else if (item.size() > kMaxProcessLen) {
                key_diag(line, key, item, "name too long, at most 128 characters");
            } else if (std::find(r.process.begin(), r.process.end(), item) == r.process.end()) {
                r.process.emplace_back(item);
            }
        } else if (key == "dst" || key == "src") {
            Cidr c;
            if (parse_cidr(item, c, why)) {
                (key == "dst" ? r.dst : r.src).push_back(c);
            } else if (item.find('/') == std::string_view::npos && looks_like_host(item)) {
                key_diag(line, key, item,
                         "host names are not supported in " + key + ", write an address or CIDR");
            } else {
                key_diag(line, key, item, why);
            }
        } else if (key == "dport" || key == "sport") {
            PortRange p;
            if (parse_port_range(item, p, why))
                (key == "dport" ? r.dport : r.sport).push_back(p);
            else
                key_diag(line, key, item, why);
        } else if (key == "elements") {
            // The name only (congestion:NAME's parameter is make_chain's to
            // check in finish_section, with the whole chain).
            std::string_view base = item.substr(0, item.find(':'));
            if (mces::element_from_name(base)) {
                r.decision.qos.elements.emplace_back(item);
            } else {
                std::string_view near = nearest(base, mces::kElementNames);
                std::string fix;
                if (!near.empty()) {
                    fix = "did you mean " + std::string(near) + "?";
                } else {
                    fix = "the elements are: ";
                    for (std::string_view e : mces::kElementNames)
                        fix += std::string(e) + (e == mces::kElementNames.back() ? "" : ", ");
                }
                key_diag(line, key, item, "unknown element, " + fix);
            }
        }
    }
}

void Parser::set_scalar(int key_id, const std::string& key, std::string_view v, int line) {
    Section& s = *sec_;
    General& g = policy_.general_;
    Qos& q = s.rule.decision.qos;
    std::string why;
    auto bad = [&](std::string_view w) { key_diag(line, key, v, w); };
    auto rate = [&](uint64_t& out) {
        if (!parse_rate(v, out, why)) bad(why);
    };
    switch (static_cast<K>(key_id)) {
    case K::on_error:
        if (v == "open") g.on_error = OnError::open;
        else if (v == "fail") g.on_error = OnError::fail;
        else
            bad("bad value, write open or fail (on_error could not be read: the policy is "
                "broken, and the shim leaves flows native)");
        return;
    case K::on_reject:
        if (v == "fail") g.on_reject = OnReject::fail;
        else if (v == "downgrade") g.on_reject = OnReject::downgrade;
        else bad("bad value, write fail or downgrade");
        return;
    case K::log:
        if (v == "off") g.log = LogLevel::off;
        else if (v == "error") g.log = LogLevel::error;
        else if (v == "warn") g.log = LogLevel::warn;
        else if (v == "info") g.log = LogLevel::info;
        else if (v == "debug") g.log = LogLevel::debug;
        else bad("bad value, write off, error, warn, info or debug");
        return;
    case K::bridge:
        if (v == "never") g.bridge = Bridge::never;
        else if (v == "needed") g.bridge = Bridge::needed;
        else if (v == "always") g.bridge = Bridge::always;
        else bad("bad value, write never, needed or always");
        return;
    case K::capacity: rate(g.capacity); return;
    case K::rate_up: rate(g.rate_up); return;
    case K::g_rate_down: rate(g.rate_down); return;
    case K::proto:
        if (v == "tcp") s.rule.proto = Proto::tcp;
        else if (v == "udp") s.rule.proto = Proto::udp;
        else bad("bad value, write tcp or udp (leave proto out for both)");
        return;
    case K::direction:
        if (v == "connect") s.rule.direction = Direction::connect;
        else if (v == "accept") s.rule.direction = Direction::accept;
        else if (v == "datagram") s.rule.direction = Direction::datagram;
        else if (v == "any") s.rule.direction = Direction::any;
        else bad("bad value, write connect, accept, datagram or any");
        return;
    case K::klass: {
        static constexpr std::string_view names[] = {"datagram", "reliable", "guaranteed",
                                                     "realtime", "group"};
        for (int i = 0; i < 5; ++i)
            if (v == names[i] || (v.size() == 1 && v[0] == '0' + i)) {
                s.rule.class_set = true;
                s.klass = static_cast<ServiceClass>(i);
                return;
            }
        bad("bad value, write datagram, reliable, guaranteed, realtime, group, or 0-4");
        return;
    }
    case K::transport:
        if (v == "native") s.transport = Transport::native;
        else if (v == "mces") s.transport = Transport::mces;
        else if (v == "overlay") s.transport = Transport::overlay;
        else if (v == "auto") s.transport = Transport::automatic;
        else {
            bad("bad value, write native, mces, overlay or auto");
            return;
        }
        s.rule.transport_set = true;
        return;
    case K::rate: rate(q.rate); return;
    case K::rate_down: rate(q.rate_down); return;
    case K::burst:
        if (!parse_size(v, q.burst, why)) bad(why);
        return;
    case K::latency:
        if (!parse_duration(v, q.latency_us, why)) bad(why);
        return;
    case K::jitter:
        if (!parse_duration(v, q.jitter_us, why)) bad(why);
        return;
    case K::loss:
        if (!parse_percent(v, q.loss_ppm, why)) bad(why);
        return;
    case K::priority: {
        if (v == "low") { q.priority = 2; return; }
        if (v == "normal") { q.priority = 0; return; }
        if (v == "high") { q.priority = 6; return; }
        int n = -1;
        if (v.size() <= 2 && std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            n = 0;
            for (char c : v) n = n * 10 + (c - '0');
        }
        if (n >= 0 && n <= 6) q.priority = static_cast<int8_t>(n);
        else if (n >= 7 && n <= 15)
            bad("priority 7-15 needs CAP_NET_ADMIN, use 0-6 (or low, normal, high)");
        else bad("bad value, write low, normal, high, or 0-6");
        return;
    }
    case K::dscp: {
        int d = 0;
        if (parse_dscp(v, d, why)) q.dscp = static_cast<int8_t>(d);
        else bad(why);
        return;
    }
    case K::fec: {
        size_t slash = v.find('/');
        auto num = [](std::string_view t, unsigned& out) {
            if (t.empty() || t.size() > 3) return false;
            out = 0;
            for (char c : t) {
                if (c < '0' || c > '9') return false;
                out = out * 10 + static_cast<unsigned>(c - '0');
            }
            return out >= 1 && out <= 255;
        };
        unsigned d = 0, p = 0;
        if (slash == std::string_view::npos || !num(trim(v.substr(0, slash)), d) ||
            !num(trim(v.substr(slash + 1)), p)) {
            bad("bad value, write DATA/PARITY with each 1-255, e.g. 10/2");
            return;
        }
        q.fec_data = static_cast<uint8_t>(d);
        q.fec_parity = static_cast<uint8_t>(p);
        return;
    }
    case K::rcvbuf:
    case K::window:
    case K::notsent_lowat: {
        uint64_t b = 0;
        if (!parse_size(v, b, why)) {
            bad(why);
            return;
        }
        if (b > 2147483647u) {
            bad("too large for the socket option (an int), the most is 2147483647 bytes");
            return;
        }
        uint32_t& out = key == "rcvbuf" ? q.rcvbuf : key == "window" ? q.window : q.notsent_lowat;
        out = static_cast<uint32_t>(b);
        return;
    }
    case K::congestion: {
        bool ok = !v.empty() && v.size() <= 15;
        for (char c : v)
            ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-');
        if (!ok) {
            bad("bad value, write a TCP congestion control name (up to 15 of a-z 0-9 _ -), "
                "e.g. cubic or bbr");
            return;
        }
        memcpy(q.congestion, v.data(), v.size());
        q.congestion[v.size()] = 0;
        return;
    }
    case K::auth_key:
        return;   // read in finish_section, once the transport is known
    case K::clock:
        if (v == "strict") q.clock_symmetric = false;
        else if (v == "symmetric") q.clock_symmetric = true;
        else
            bad("bad value, write strict (never after the deadline, the default) or symmetric (the whole "
                "latency where both directions of the path take the same time)");
        return;
    case K::auth:
        if (v == "encrypt") s.auth = Auth::encrypt;
        else if (v == "authenticate") s.auth = Auth::authenticate;
        else
            bad("bad value, write encrypt (packets authenticated and encrypted, the default) or "
                "authenticate (authenticated, payload readable)");
        return;
    case K::id: {
        // 1..2^63: ids travel as signed 64-bit in some peers.
        constexpr uint64_t kMax = 1ULL << 63;
        uint64_t n = 0;
        bool ok = !v.empty() && v.size() <= 19;
        for (char c : v) {
            ok = ok && c >= '0' && c <= '9';
            if (ok) n = n * 10 + static_cast<uint64_t>(c - '0');
        }
        if (!ok || n == 0 || n > kMax) {
            bad("bad value, write a number from 1 to 9223372036854775808");
            return;
        }
        s.overlay.id = n;
        return;
    }
    case K::protocol:
        if (iequals(v, "DT")) s.overlay.protocol = "DT";
        else if (iequals(v, "HC")) s.overlay.protocol = "HC";
        else bad("bad value, write DT (Delaunay triangulation) or HC (hypercube)");
        return;
    case K::group: {
        std::string_view host;
        uint32_t port = 0;
        bool br = false;
        Address a;
        if (!split_host_port(v, host, port, br) || !parse_address(host, a) ||
            (a.family == AF_INET6) != br) {
            bad("bad value, write a multicast ADDR:PORT such as 239.1.2.3:6000 or [ff3e::1]:6000");
            return;
        }
        if (port == 0 || port > 65535) {
            bad("port out of range, write 1-65535");
            return;
        }
        bool mcast = a.family == AF_INET ? (a.bytes[0] & 0xf0) == 0xe0 : a.bytes[0] == 0xff;
        if (!mcast) {
            bad(std::string(host) + " is not multicast, write a group in 224.0.0.0/4 or ff00::/8");
            return;
        }
        s.overlay.group = a;
        s.overlay.group_port = static_cast<uint16_t>(port);
        return;
    }
    case K::server: {
        std::string_view host;
        uint32_t port = 0;
        bool br = false;
        Address a;
        bool ok = split_host_port(v, host, port, br);
        if (ok) ok = br ? (parse_address(host, a) && a.family == AF_INET6)
                        : (parse_address(host, a) || looks_like_host(host));
        if (!ok || host.size() > kMaxHostLen) {
            bad("bad value, write HOST:PORT such as 127.0.0.1:8081, [::1]:8081 or "
                "overlay.example.net:8081");
            return;
        }
        if (port == 0 || port > 65535) {
            bad("port out of range, write 1-65535");
            return;
        }
        s.overlay.server = std::string(v);
        return;
    }
    default: return;
    }
}

// Cross-key checks and storing of a finished section.
void Parser::finish_section() {
    Section& s = *sec_;
    auto line_of = [&](std::string_view k) {
        auto it = s.keys.find(k);
        return it == s.keys.end() ? 0 : it->second.line;
    };
    auto value_of = [&](std::string_view k) -> std::string_view {
        auto it = s.keys.find(k);
        return it == s.keys.end() ? std::string_view() : std::string_view(it->second.value);
    };
    auto has = [&](std::string_view k) { return line_of(k) != 0; };
    auto failed = [&](std::string_view k) {
        auto it = s.keys.find(k);
        return it != s.keys.end() && it->second.failed;
    };
    auto at = [&](std::string_view k, const std::string& why) {
        key_diag(line_of(k), k, value_of(k), why);
    };
    auto ref = [&](std::string_view k) {
        return std::string(k) + " = " + std::string(value_of(k)) + " (line " +
               std::to_string(line_of(k)) + ")";
    };
    // A list key whose line and continuations gave no item.
    for (auto& [k, ks] : s.keys)
        if (ks.list && !ks.items)
            key_diag(ks.line, k, "", "empty value, write at least one item or remove the line");

    if (s.kind == SecKind::flow) {
        Rule& r = s.rule;
        const Qos& q = r.decision.qos;
        bool known = r.class_set || r.proto != Proto::any;
        ServiceClass c = r.class_set ? s.klass
                         : r.proto == Proto::udp ? ServiceClass::datagram
                                                 : ServiceClass::reliable;
        Transport t = s.transport;
        if (!r.transport_set) {
            // Classes the kernel cannot carry default to MCES with native fallback.
            t = !r.class_set                         ? Transport::native
                : c == ServiceClass::group          ? Transport::overlay
                : (c == ServiceClass::guaranteed ||
                   c == ServiceClass::realtime)      ? Transport::automatic
                                                     : Transport::native;
        }
        std::string tname = std::string("transport is ") + name(t) + (r.transport_set ? "" : " by default");
        if (r.class_set && c == ServiceClass::datagram && r.proto == Proto::tcp)
            at("class", "impossible with " + ref("proto") +
                            ", TCP is a byte stream: use class = reliable, or proto = udp");
        if (r.direction == Direction::accept && r.proto == Proto::udp)
            at("direction", "impossible with " + ref("proto") +
                                ", UDP has no accept(): use direction = connect or datagram");
        if (r.direction == Direction::datagram && r.proto == Proto::tcp)
            at("direction", "impossible with " + ref("proto") +
                                ", datagram means an unconnected UDP socket: use connect or accept");
        if (r.class_set && c == ServiceClass::group && r.transport_set &&
            t != Transport::overlay && t != Transport::automatic)
            at("transport", "class group is carried by an overlay, write transport = overlay or auto");
        if (r.transport_set && t == Transport::overlay && !(r.class_set && c == ServiceClass::group))
            at("transport", "an overlay carries group messages, add class = group or use "
                            "transport = mces or auto");
        if (r.class_set && (c == ServiceClass::reliable || c == ServiceClass::guaranteed) &&
            r.proto == Proto::udp && t == Transport::native)
            at("class", "impossible with proto = udp and transport native, the kernel's UDP is not "
                        "reliable: use transport = mces");
        if (r.class_set && c == ServiceClass::guaranteed && q.rate == 0 && !failed("rate"))
            at("class", "needs rate (the reserved rate), add rate = 10mbit");
        if (r.class_set && c == ServiceClass::realtime && q.latency_us == 0 && !failed("latency"))
            at("class", "needs latency (the delay bound), add latency = 100ms");
        if (has("burst") && q.burst != 0 && q.rate == 0 && !failed("rate"))
            at("burst", "needs rate (a burst above which rate?), add rate = 10mbit or remove burst");
        if (has("fec") && q.fec_data != 0) {
            if (!known || c != ServiceClass::realtime)   // MCES's fec element needs deadline: class realtime
                at("fec", std::string("applies to class realtime (class is ") +
                              (known ? name(c) : "unknown: set class") + ")");
            else if (t == Transport::native)
                at("fec", tname + ", the kernel has no FEC: write transport = mces or auto");
        }
        if (has("clock") && q.clock_symmetric) {   // the timing buffer is MCES's, class realtime's
            if (!known || c != ServiceClass::realtime)
                at("clock", std::string("applies to class realtime (class is ") +
                                (known ? name(c) : "unknown: set class") + ")");
            else if (t == Transport::native)
                at("clock", tname + ", the kernel has no deadline to map: write transport = mces or auto");
        }
        for (std::string_view k : {"congestion", "window", "notsent_lowat"})
            if (has(k) && r.proto == Proto::udp)
                at(k, "TCP only, impossible with " + ref("proto") + ": remove it or use proto = tcp");
        // The chain is checked by the connection's own rules (make_chain), so
        // what is accepted here is what connect() builds. A rule with neither
        // class nor proto gives its TCP flows class reliable, and only TCP
        // flows go over MCES: its chain must be a class reliable chain.
        if (has("elements") && !q.elements.empty() && !failed("elements")) {
            std::string why;
            if (t == Transport::native || t == Transport::overlay)
                at("elements", tname + ", the chain is for MCES flows: write transport = mces or auto");
            else if (!check_elements(q.elements, c, known, why))
                at("elements", why);
            else if (!known && !check_elements(q.elements, ServiceClass::reliable, true, why))
                at("elements", "the rule sets no class or proto, so its TCP flows are class reliable: " + why +
                                   "; or set class (or proto = udp for a datagram chain)");
        }
        // Without elements the class's default chain is used: written
        // transport = mces with a class that has none could only fail at
        // connect(). auto falls back by design.
        std::string no_default;
        if (r.class_set && t == Transport::mces && c != ServiceClass::group && !has("elements") &&
            !check_elements({}, c, true, no_default))
            at("class", "impossible with " + ref("transport") + ", " + no_default +
                            ": use class reliable, or transport = auto or native (the kernel carries the flow)");
        // A key authenticates MCES flows: the rule must send its flows over
        // MCES (the shim does only when transport = mces or auto is written).
        if (has("auth") && !has("auth_key") && !failed("auth"))
            at("auth", "needs auth_key (the pre-shared key file): add auth_key = PATH, or remove auth");
        if (has("auth_key") && !failed("auth_key") && !failed("transport")) {
            if (t == Transport::native || t == Transport::overlay || !r.transport_set)
                at("auth_key", (r.transport_set ? tname + ", and a key authenticates MCES flows"
                                                : std::string("transport is not written, and the shim carries flows "
                                                              "over MCES only when it is")) +
                                   ": write transport = mces (or auto: MCES, native when the peer does not "
                                   "answer), or remove auth_key");
            else if (const Key& k = key(value_of("auth_key")); !k.psk)
                at("auth_key", k.error);
            else {
                r.decision.auth = s.auth;
                r.decision.auth_key = key_path(value_of("auth_key"));
                r.decision.psk = k.psk;
            }
        }
        if (!s.bad) {
            r.decision.service = c;
            r.decision.transport = t;
            r.decision_udp = r.decision;
            if (!r.class_set && r.proto == Proto::any)
                r.decision_udp.service = ServiceClass::datagram;
            policy_.rules_.push_back(std::move(r));
        }
    } else if (s.kind == SecKind::overlay) {
        Overlay& o = s.overlay;
        if (!has("id") && !s.bad)
            section_diag(s.line, "overlay " + s.name, "id is required, add id = 1..9223372036854775808");
        if (!has("protocol") && !s.bad)
            section_diag(s.line, "overlay " + s.name, "protocol is required, add protocol = DT or HC");
        for (const Overlay& other : policy_.overlays_) {
            if (o.id != 0 && other.id == o.id)
                at("id", "already used by [overlay " + other.name + "] (line " +
                             std::to_string(other.line) + "), give each overlay its own id");
            if (o.group.family != 0 && other.group.family == o.group.family &&
                memcmp(other.group.bytes, o.group.bytes, 16) == 0 && other.group_port == o.group_port)
                at("group", "already carried by [overlay " + other.name + "] (line " +
                                std::to_string(other.line) + "), a group belongs to one overlay");
        }
        if (!s.bad) policy_.overlays_.push_back(std::move(o));
    }
    s.kind = SecKind::none;
}

// auth_key's path: absolute as written; relative, from the policy file's
// directory (the file as named: "policy.ini" is in the current directory).
std::string Parser::key_path(std::string_view written) const {
    if (!written.empty() && written[0] == '/') return std::string(written);
    size_t slash = file_.rfind('/');
    if (slash == std::string::npos) return std::string(written);
    return file_.substr(0, slash + 1) + std::string(written);
}

// The key file, read and checked by MCES's own loader (key_file.h: 64 hex
// digits, a regular file of this user with mode 600 or 400) once per parse.
// The error names the file and what to do; never a byte of it.
const Parser::Key& Parser::key(std::string_view written) {
    const std::string path = key_path(written);
    auto it = keys_.find(path);
    if (it != keys_.end()) return it->second;
    Key k;
    auto psk = std::make_shared<mces::auth::Psk>();
    const int rc = mces::auth::load_psk(path, *psk, k.error);
    if (rc == -ENOMEM) throw std::bad_alloc();
    if (rc == 0) k.psk = std::move(psk);
    else if (rc != -EPERM && rc != -EINVAL)   // could not open or read it
        k.error += ": check the path (a relative one is from the policy file's directory), or make a key: "
                   "(umask 077; head -c 32 /dev/urandom | od -An -vtx1 | tr -d ' \\n' > KEYFILE)";
    return keys_.emplace(path, std::move(k)).first->second;
}

void Parser::run() {
    int r = ini_parse_stream(&Parser::reader, this, &Parser::handler, this);
    finish_section();
    if (r == -2) throw std::bad_alloc();
    // Checks across sections: [general] may come before or after the flows.
    // A reservation is made against the host's budget, so a class that
    // reserves needs one.
    // Such a rule is left out, as any broken section is.
    if (policy_.general_.capacity == 0) {
        auto reserves_without_budget = [this](const Rule& rule) {
            if (!(rule.class_set && rule.decision.qos.rate > 0 &&
                  (rule.decision.service == ServiceClass::guaranteed ||
                   rule.decision.service == ServiceClass::realtime)))
                return false;
            section_diag(rule.decision.line, "flow " + rule.decision.rule,
                         std::string("class ") + name(rule.decision.service) +
                             " reserves its rate at connect against the host's budget, which is not set: "
                             "add capacity = 1gbit (each direction) to [general]");
            return true;
        };
        std::erase_if(policy_.rules_, reserves_without_budget);
    }
    // inih reports the first syntax error it saw; classify() should have seen it too.
    if (r > 0 && std::find(syntax_lines_.begin(), syntax_lines_.end(), r) == syntax_lines_.end())
        diag(r, "syntax error, write KEY = VALUE or [section]");
    std::stable_sort(policy_.diags_.begin(), policy_.diags_.end(),
                     [](const Diagnostic& a, const Diagnostic& b) { return a.line < b.line; });
    if (too_many_)
        policy_.diags_.push_back(Diagnostic{file_, line_,
                                            file_ + ":" + std::to_string(line_) +
                                                ": too many problems, stopped reporting after 1000"});
}

}  // namespace gs::policy
