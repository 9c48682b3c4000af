// Private: the rule index behind Policy::match (policy/matcher.cpp).
#pragma once

#include "policy/policy.h"

#include <array>
#include <string>
#include <unordered_map>
#include <vector>

namespace gs::policy {

// ::ffff:a.b.c.d becomes a.b.c.d; anything else is returned as is.
Address normalise(const Address& a) noexcept;
// rule_matches() for a flow whose addresses are already normalised.
bool matches_normalised(const Rule& r, const FlowKey& f, const Address& dst,
                        const Address& src) noexcept;

// Each rule is filed under one key kind (the one that keeps buckets smallest
// at the time it is added): exact dport, a 256-port block of dport, masked dst
// per prefix length, process name, exact sport; or, having none of these, in
// the wide list. A flow looks up its few buckets, which are sorted by rule
// index, merges them and tests the full predicate in rule order, so the first
// candidate that holds is the first rule in file order that holds.
class Matcher {
public:
    explicit Matcher(const std::vector<Rule>& rules);
    int match(const std::vector<Rule>& rules, const FlowKey& flow) const noexcept;

private:
    using List = std::vector<uint32_t>;
    struct V6Key {
        uint64_t hi = 0, lo = 0;
        bool operator==(const V6Key&) const = default;
    };
    struct V6Hash {
        size_t operator()(const V6Key& k) const noexcept {
            return std::hash<uint64_t>()(k.hi * 0x9E3779B97F4A7C15ULL ^ k.lo);
        }
    };
    struct StrHash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>()(s); }
    };
    struct Index {
        std::unordered_map<uint16_t, List> dport, sport;
        std::array<List, 256> dport_block;
        std::unordered_map<std::string, List, StrHash, std::equal_to<>> process;
        std::array<std::unordered_map<uint32_t, List>, 33> dst4;
        std::array<std::unordered_map<V6Key, List, V6Hash>, 129> dst6;
        std::vector<uint8_t> lens4, lens6;   // prefix lengths in use
        List wide;
    };

    static void add(Index& ix, const Rule& r, uint32_t i);
    static V6Key v6_key(const Address& a, int prefix) noexcept;
    static uint32_t v4_key(const Address& a, int prefix) noexcept;

    Index tcp_, udp_;
};

}  // namespace gs::policy
