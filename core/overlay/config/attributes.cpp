#include "core/overlay/config/attributes.h"

#include <cerrno>

namespace gs::overlay {

namespace {

bool is_blank(char c) noexcept { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
    return s;
}

// A line quoted in a message: printable ASCII only, shortened, so that a
// binary file cannot put control characters into a log line.
std::string quote(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 60)) {
        const auto u = static_cast<unsigned char>(c);
        out += (u >= 0x20 && u < 0x7f) ? c : '?';
    }
    if (s.size() > 60) out += "...";
    return out;
}

}  // namespace

std::string Origin::str() const {
    if (line > 0) return source + ":" + std::to_string(line);
    return source;
}

const Attribute* Attributes::find(std::string_view name) const noexcept {
    for (const Attribute& a : items_)
        if (a.name == name) return &a;
    return nullptr;
}

void Attributes::set(std::string_view name, std::string_view value, Origin origin) {
    for (Attribute& a : items_) {
        if (a.name == name) {
            a.value = std::string(value);
            a.origin = std::move(origin);
            return;
        }
    }
    items_.push_back(Attribute{std::string(name), std::string(value), std::move(origin)});
}

bool Attributes::erase(std::string_view name) {
    for (auto it = items_.begin(); it != items_.end(); ++it) {
        if (it->name == name) {
            items_.erase(it);
            return true;
        }
    }
    return false;
}

std::string Attributes::to_text() const {
    std::string s;
    for (const Attribute& a : items_) s += a.name + " = " + a.value + "\n";
    return s;
}

bool valid_name(std::string_view name) noexcept {
    if (name.empty() || name.size() > kMaxNameBytes) return false;
    for (std::size_t i = 0; i < name.size(); ++i) {
        const char c = name[i];
        const bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        const bool digit = c >= '0' && c <= '9';
        if (!alpha && !(digit && i > 0)) return false;
    }
    return true;
}

int parse_attributes(std::string_view text, std::string_view source, Attributes& out,
                     std::vector<std::string>& errors) {
    out = Attributes{};
    const std::string src(source);
    const std::size_t errors_before = errors.size();
    if (text.size() > kMaxFileBytes) {
        errors.push_back(src + ": " + std::to_string(text.size()) + " bytes, more than the " +
                         std::to_string(kMaxFileBytes) + " an attribute file may have");
        return -EINVAL;
    }
    int line_no = 0;
    while (!text.empty()) {
        ++line_no;
        const std::size_t nl = text.find('\n');
        std::string_view raw = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        const std::string where = src + ":" + std::to_string(line_no) + ": ";

        if (raw.size() > kMaxLineBytes) {
            errors.push_back(where + "line of " + std::to_string(raw.size()) +
                             " bytes, longer than " + std::to_string(kMaxLineBytes));
            continue;
        }
        const std::string_view line = trim(raw);
        if (line.empty() || line.front() == '#' || line.front() == ';') continue;
        if (line.find('\0') != std::string_view::npos) {
            errors.push_back(where + "NUL byte in the line");
            continue;
        }
        const std::size_t eq = line.find('=');
        if (eq == std::string_view::npos) {
            errors.push_back(where + "expected 'Attribute = value', got '" + quote(line) + "'");
            continue;
        }
        const std::string_view name = trim(line.substr(0, eq));
        const std::string_view value = trim(line.substr(eq + 1));
        if (!valid_name(name)) {
            errors.push_back(where + "'" + quote(name) +
                             "' is not an attribute name: letters and digits, starting with a "
                             "letter, at most " + std::to_string(kMaxNameBytes));
            continue;
        }
        if (value.size() > kMaxValueBytes) {
            errors.push_back(where + std::string(name) + ": value of " +
                             std::to_string(value.size()) + " bytes, longer than " +
                             std::to_string(kMaxValueBytes));
            continue;
        }
        if (const Attribute* prev = out.find(name)) {
            errors.push_back(where + std::string(name) + " given twice (first at line " +
                             std::to_string(prev->origin.line) + ")");
            continue;
        }
        if (out.size() >= kMaxAttributes) {
            errors.push_back(where + "more than " + std::to_string(kMaxAttributes) + " attributes");
            break;
        }
        out.set(name, value, Origin{src, line_no});
    }
    return errors.size() == errors_before ? 0 : -EINVAL;
}

}  // namespace gs::overlay
