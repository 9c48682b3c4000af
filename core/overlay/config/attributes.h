// HyperCast-style overlay attributes: the `Attribute = value` lines of an
// overlay configuration file (docs/overlay.md), read without interpreting the
// values. config.h gives them meaning.
//
// Syntax, one attribute per line:
//     # a comment (also ';' as the first non-blank character)
//     OverlayID = 1234
//     KeyAttributes = Protocol,DataTransport
// Names are letters and digits, starting with a letter (case matters, as in
// HyperCast); the value is everything after the first '=', blanks around it
// trimmed; every value is a string. A name given twice is an error.
//
// Bounds (the parser sees untrusted text: files, the overlay server, the
// fuzzer): at most kMaxFileBytes of text, kMaxLineBytes per line,
// kMaxAttributes attributes, names of kMaxNameBytes, values of kMaxValueBytes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace gs::overlay {

constexpr std::size_t kMaxFileBytes = 64 * 1024;
constexpr std::size_t kMaxLineBytes = 1024;
constexpr std::size_t kMaxAttributes = 64;
constexpr std::size_t kMaxNameBytes = 32;
constexpr std::size_t kMaxValueBytes = 256;

// Where an attribute came from, for messages: "overlay.conf" and a line, or
// "server 127.0.0.1:8081" and line 0 (no line).
struct Origin {
    std::string source;
    int line = 0;
    // "overlay.conf:3", "server 127.0.0.1:8081", or "" when nothing is known.
    std::string str() const;
};

struct Attribute {
    std::string name;
    std::string value;
    Origin origin;
};

// An ordered set of attributes with unique names.
class Attributes {
public:
    // nullptr when absent. The pointer lives until the next set()/erase().
    const Attribute* find(std::string_view name) const noexcept;
    // Adds, or replaces the value and origin of the one with that name.
    void set(std::string_view name, std::string_view value, Origin origin = {});
    // true when it was there.
    bool erase(std::string_view name);
    const std::vector<Attribute>& items() const noexcept { return items_; }
    std::size_t size() const noexcept { return items_.size(); }
    bool empty() const noexcept { return items_.empty(); }

    // As an attribute file: "Name = value\n" per attribute, in order.
    std::string to_text() const;

private:
    std::vector<Attribute> items_;
};

// true for a well-formed attribute name (letters and digits, first a letter,
// at most kMaxNameBytes).
bool valid_name(std::string_view name) noexcept;

// Parses `text` (named `source` in messages) into `out` (cleared first).
// Returns 0, or -EINVAL with one message per problem appended to `errors`
// ("overlay.conf:3: ..."); on -EINVAL `out` holds the lines that parsed.
int parse_attributes(std::string_view text, std::string_view source, Attributes& out,
                     std::vector<std::string>& errors);

}  // namespace gs::overlay
