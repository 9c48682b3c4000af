// An overlay's configuration: the attributes of attributes.h checked,
// canonicalised and typed; the overlay's key hash; the merge of the overlay
// server's attributes with a member's own file. docs/overlay.md lists every
// attribute, its values and default, and whether it may be a key attribute.
//
// HyperCast's model: an overlay ID names the overlay and keys its
// attributes. Key attributes are fixed when the overlay is created and are
// the same in every member (OverlayID, KeyAttributes and Protocol always are,
// KeyAttributes names more); configurable attributes may differ per member.
// The key hash, which every overlay datagram carries (node.h's prefix), is a
// hash of the canonical key attributes, so members whose key attributes
// differ drop each other's traffic as foreign.
//
// Pure: no I/O, no clock; errors are messages naming where the attribute came
// from (file and line, or the server), the attribute, its value and what was
// expected, e.g.
//     overlay.conf:4: HelloFast = 2x: expected a duration such as 250ms or 1s
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/common/sansio.h"
#include "core/overlay/config/attributes.h"
#include "core/overlay/node.h"

namespace gs::overlay {

enum class DataTransport : std::uint8_t { udp, tcp };

// What the attribute is for; the documentation and error texts use it.
enum class Scope : std::uint8_t {
    overlay,   // the same for the whole overlay when key, tunable when not
    member,    // per member by nature (own address, own coordinates): never key
};

// One known attribute.
struct AttributeSpec {
    const char* name;
    const char* default_value;   // canonical; "" = none (OverlayID: required)
    Scope scope;
    const char* expected;        // "a duration such as 250ms or 1s"
};

// Every known attribute, in the order the documentation, the canonical text
// and merge() use.
const std::vector<AttributeSpec>& attribute_specs();
const AttributeSpec* find_spec(std::string_view name) noexcept;

// Attributes that are key whatever KeyAttributes says.
bool always_key(std::string_view name) noexcept;

struct Config {
    std::uint64_t overlay_id = 0;
    Protocol protocol = Protocol::dt;
    DataTransport data_transport = DataTransport::udp;
    sansio::Addr node_address;             // where the node binds; ip all-zero (v4-mapped) = any
    std::string server;                    // "HOST:PORT" of gsoverlayd, "" = none
    std::vector<sansio::Addr> bootstrap;   // static members to join through
    bool random_coordinates = true;        // DT: a point drawn from the node's seed
    std::int32_t x = 0, y = 0;             // DT: the point when not random
    sansio::Time lease = 30 * sansio::kSecond;   // asked of gsoverlayd at JOIN

    // DT
    sansio::Time hello_fast = 0, hello_slow = 0, neighbor_timeout = 0, memory = 0;
    int stable_ticks = 0;
    // HC
    sansio::Time ping_interval = 0, beacon_interval = 0, failure_timeout = 0, head_timeout = 0,
                 claim_step = 0;
    std::uint32_t max_members = 0;
    // both
    sansio::Time join_retry = 0;
    std::size_t max_payload = 0;

    // The key attributes, sorted by name (always-key ones included).
    std::vector<std::string> key_attributes;
    // Every known attribute's canonical value (defaults filled in), by name.
    std::map<std::string, std::string> values;
    // Where each attribute given explicitly came from (for messages).
    std::map<std::string, Origin> origins;

    // The overlay's key hash (see key_text()).
    std::uint64_t key_hash = 0;

    bool is_key(std::string_view name) const;
    // "Name=value\n" for each key attribute in key_attributes' order: the
    // bytes key_hash is computed from.
    std::string key_text() const;
    // The attributes an overlay server keeps for this overlay: every
    // attribute given explicitly or key, except the per-member ones, with
    // canonical values (what a creator sends in CREATE).
    Attributes overlay_attributes() const;
};

// Checks every attribute present in `attrs`: known name, well-formed value,
// a KeyAttributes that names known overlay-scope attributes. Completeness
// (OverlayID given) and cross-attribute rules are build_config's. Returns 0 or
// -EINVAL with one message per problem appended to `errors`.
int check_attributes(const Attributes& attrs, std::vector<std::string>& errors);

// Builds a configuration from one attribute set (a member's file alone, or
// the result of a merge): checks, fills in defaults, applies the
// cross-attribute rules (HelloFast <= HelloSlow < NeighborTimeout ...),
// computes the key hash. 0 or -EINVAL with messages appended to `errors`.
int build_config(const Attributes& attrs, Config& out, std::vector<std::string>& errors);

// parse_attributes() then build_config(): a member's file alone. 0, or
// -EINVAL with every message of the first stage that failed.
int parse_config(std::string_view text, std::string_view source, Config& out,
                 std::vector<std::string>& errors);

// The overlay's key hash: SipHash-2-4, key = the 16 ASCII bytes
// "gsocket-overlay1", of key_text(). Stable across builds and hosts.
std::uint64_t key_hash(std::string_view key_text) noexcept;

// SipHash-2-4 of `data` with a 16-byte key (exposed for the test vectors).
std::uint64_t siphash24(const std::uint8_t key[16], const void* data, std::size_t len) noexcept;

// Merges the overlay server's attributes for an overlay (authoritative for
// key attributes) with a member's own file (which may set configurable ones,
// and may repeat key ones only with the same value). On a key attribute that
// differs, returns -EACCES and one message naming the first such attribute
// (attribute_specs() order) and both values:
//     overlay.conf:3: key attribute Protocol = HC differs from the overlay's
//     Protocol = DT (server 127.0.0.1:8081): this member cannot join overlay 1234
// Other problems: -EINVAL (messages as build_config). 0 and `out` otherwise.
int merge_config(const Attributes& server, const Attributes& local, Config& out,
                 std::vector<std::string>& errors);

// Compares the key attributes of two configurations of one overlay; "" when
// equal, else the name of the first (attribute_specs() order) that differs.
std::string first_key_difference(const Config& a, const Config& b);

// Parses "ADDR:PORT" ("10.0.0.1:8081", "[::1]:8081", ":8081" = any IPv4
// address). false when malformed.
bool parse_addr(std::string_view s, sansio::Addr& out);

}  // namespace gs::overlay
