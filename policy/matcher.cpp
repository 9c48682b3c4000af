// The rule index: see matcher.h for the idea. match() runs inside socket
// hooks, so it reads prebuilt tables only: no allocation, no lock, no throw.
#include "policy/matcher.h"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace gs::policy {
namespace {

constexpr size_t kMaxExactPorts = 64;     // a rule with more ports is filed by block
constexpr size_t kMaxBlocks = 16;         // ... and with more blocks, elsewhere
constexpr size_t kMaxKeys = 64;           // CIDRs or process names per rule
constexpr int kMinPrefix4 = 8, kMinPrefix6 = 16;   // wider CIDRs say little about a flow

bool in_ranges(const std::vector<PortRange>& rs, uint16_t p) noexcept {
    for (const PortRange& r : rs)
        if (p >= r.lo && p <= r.hi) return true;
    return false;
}

bool in_cidrs(const std::vector<Cidr>& cs, const Address& a) noexcept {
    if (a.family == 0) return false;
    for (const Cidr& c : cs)
        if (c.contains(a)) return true;
    return false;
}

// The distinct ports a rule lists, or empty when there are more than `max`.
std::vector<uint16_t> expand_ports(const std::vector<PortRange>& rs, size_t max) {
    std::vector<uint16_t> out;
    size_t total = 0;
    for (const PortRange& r : rs) {
        total += static_cast<size_t>(r.hi - r.lo) + 1;
        if (total > max) return {};
    }
    for (const PortRange& r : rs)
        for (uint32_t p = r.lo; p <= r.hi; ++p) out.push_back(static_cast<uint16_t>(p));
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

std::vector<uint16_t> expand_blocks(const std::vector<PortRange>& rs, size_t max) {
    std::vector<uint16_t> out;
    for (const PortRange& r : rs)
        for (uint32_t b = r.lo >> 8; b <= static_cast<uint32_t>(r.hi >> 8); ++b) {
            out.push_back(static_cast<uint16_t>(b));
            if (out.size() > max * 4) return {};
        }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    if (out.size() > max) return {};
    return out;
}

void append(std::vector<uint32_t>& l, uint32_t i) {
    if (l.empty() || l.back() != i) l.push_back(i);
}

}  // namespace

Address normalise(const Address& a) noexcept {
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (a.family != AF_INET6 || memcmp(a.bytes, kMapped, 12) != 0) return a;
    Address v4;
    v4.family = AF_INET;
    memcpy(v4.bytes, a.bytes + 12, 4);
    return v4;
}

bool matches_normalised(const Rule& r, const FlowKey& f, const Address& dst,
                        const Address& src) noexcept {
    if (r.proto != Proto::any && r.proto != f.proto) return false;
    if (r.direction != Direction::any && r.direction != f.direction) return false;
    if (!r.dport.empty() && !in_ranges(r.dport, f.dport)) return false;
    if (!r.sport.empty() && !in_ranges(r.sport, f.sport)) return false;
    if (!r.process.empty()) {
        if (f.process.empty()) return false;
        bool found = false;
        for (const std::string& p : r.process)
            if (p == f.process) {
                found = true;
                break;
            }
        if (!found) return false;
    }
    if (!r.dst.empty() && !in_cidrs(r.dst, dst)) return false;
    if (!r.src.empty() && !in_cidrs(r.src, src)) return false;
    return true;
}

bool rule_matches(const Rule& rule, const FlowKey& flow) noexcept {
    return matches_normalised(rule, flow, normalise(flow.dst), normalise(flow.src));
}

uint32_t Matcher::v4_key(const Address& a, int prefix) noexcept {
    uint32_t v = (uint32_t(a.bytes[0]) << 24) | (uint32_t(a.bytes[1]) << 16) |
                 (uint32_t(a.bytes[2]) << 8) | uint32_t(a.bytes[3]);
    return prefix == 0 ? 0 : v & (0xffffffffu << (32 - prefix));
}

Matcher::V6Key Matcher::v6_key(const Address& a, int prefix) noexcept {
    uint64_t hi = 0, lo = 0;
    for (int i = 0; i < 8; ++i) hi = (hi << 8) | a.bytes[i];
    for (int i = 8; i < 16; ++i) lo = (lo << 8) | a.bytes[i];
    if (prefix <= 64) {
        lo = 0;
        hi = prefix == 0 ? 0 : hi & (~0ULL << (64 - prefix));
    } else if (prefix < 128) {
        lo &= ~0ULL << (128 - prefix);
    }
    return {hi, lo};
}

void Matcher::add(Index& ix, const Rule& r, uint32_t i) {
    // Score each way of filing the rule by the largest bucket it would join,
    // weighted by how many flows such a bucket typically sees.
    enum Kind { none, dport, dst, process, sport, block };
    Kind best = none;
    size_t best_score = SIZE_MAX;
    auto consider = [&](Kind k, size_t biggest, size_t weight) {
        size_t score = (biggest + 1) * weight;
        if (score < best_score) {
            best_score = score;
            best = k;
        }
    };
    std::vector<uint16_t> dports = expand_ports(r.dport, kMaxExactPorts);
    std::vector<uint16_t> blocks;
    if (dports.empty() && !r.dport.empty()) blocks = expand_blocks(r.dport, kMaxBlocks);
    std::vector<uint16_t> sports = expand_ports(r.sport, kMaxExactPorts);
    auto size_of = [](const auto& map, const auto& key) -> size_t {
        auto it = map.find(key);
        return it == map.end() ? 0 : it->second.size();
    };
    if (!dports.empty()) {
        size_t m = 0;
        for (uint16_t p : dports) m = std::max(m, size_of(ix.dport, p));
        consider(dport, m, 1);
    }
    bool dst_ok = !r.dst.empty() && r.dst.size() <= kMaxKeys;
    for (const Cidr& c : r.dst)
        dst_ok = dst_ok && c.prefix >= (c.addr.family == AF_INET ? kMinPrefix4 : kMinPrefix6);
    if (dst_ok) {
        size_t m = 0;
        for (const Cidr& c : r.dst)
            m = std::max(m, c.addr.family == AF_INET ? size_of(ix.dst4[c.prefix], v4_key(c.addr, c.prefix))
                                                     : size_of(ix.dst6[c.prefix], v6_key(c.addr, c.prefix)));
        consider(dst, m, 1);
    }
    if (!r.process.empty() && r.process.size() <= kMaxKeys) {
        size_t m = 0;
        for (const std::string& p : r.process) m = std::max(m, size_of(ix.process, p));
        consider(process, m, 2);
    }
    if (!sports.empty()) {
        size_t m = 0;
        for (uint16_t p : sports) m = std::max(m, size_of(ix.sport, p));
        consider(sport, m, 2);
    }
    if (!blocks.empty()) {
        size_t m = 0;
        for (uint16_t b : blocks) m = std::max(m, ix.dport_block[b].size());
        consider(block, m, 8);
    }
    switch (best) {
    case dport:
        for (uint16_t p : dports) append(ix.dport[p], i);
        break;
    case block:
        for (uint16_t b : blocks) append(ix.dport_block[b], i);
        break;
    case sport:
        for (uint16_t p : sports) append(ix.sport[p], i);
        break;
    case process:
        for (const std::string& p : r.process) {
            auto it = ix.process.find(p);
            if (it == ix.process.end()) it = ix.process.emplace(p, List{}).first;
            append(it->second, i);
        }
        break;
    case dst:
        for (const Cidr& c : r.dst) {
            if (c.addr.family == AF_INET) {
                append(ix.dst4[c.prefix][v4_key(c.addr, c.prefix)], i);
                if (std::find(ix.lens4.begin(), ix.lens4.end(), c.prefix) == ix.lens4.end())
                    ix.lens4.push_back(c.prefix);
            } else {
                append(ix.dst6[c.prefix][v6_key(c.addr, c.prefix)], i);
                if (std::find(ix.lens6.begin(), ix.lens6.end(), c.prefix) == ix.lens6.end())
                    ix.lens6.push_back(c.prefix);
            }
        }
        break;
    case none: append(ix.wide, i); break;
    }
}

Matcher::Matcher(const std::vector<Rule>& rules) {
    for (size_t i = 0; i < rules.size(); ++i) {
        const Rule& r = rules[i];
        if (r.proto != Proto::udp) add(tcp_, r, static_cast<uint32_t>(i));
        if (r.proto != Proto::tcp) add(udp_, r, static_cast<uint32_t>(i));
    }
}

int Matcher::match(const std::vector<Rule>& rules, const FlowKey& f) const noexcept {
    const Index& ix = f.proto == Proto::udp ? udp_ : tcp_;
    Address dst = normalise(f.dst), src = normalise(f.src);
    struct Span {
        const uint32_t* p;
        const uint32_t* e;
    };
    Span spans[5 + 129];
    int n = 0;
    auto push = [&](const List& l) {
        if (!l.empty()) spans[n++] = {l.data(), l.data() + l.size()};
    };
    auto lookup = [&](const auto& map, const auto& key) {
        auto it = map.find(key);
        if (it != map.end()) push(it->second);
    };
    lookup(ix.dport, f.dport);
    push(ix.dport_block[f.dport >> 8]);
    lookup(ix.sport, f.sport);
    if (!f.process.empty()) lookup(ix.process, f.process);
    push(ix.wide);
    if (dst.family == AF_INET) {
        for (uint8_t len : ix.lens4) lookup(ix.dst4[len], v4_key(dst, len));
    } else if (dst.family == AF_INET6) {
        for (uint8_t len : ix.lens6) lookup(ix.dst6[len], v6_key(dst, len));
    }
    // Merge the sorted candidate lists; the first candidate that holds wins.
    while (n > 0) {
        uint32_t best = *spans[0].p;
        for (int k = 1; k < n; ++k) best = std::min(best, *spans[k].p);
        for (int k = 0; k < n;) {
            if (*spans[k].p == best && ++spans[k].p == spans[k].e) {
                spans[k] = spans[--n];
                continue;
            }
            ++k;
        }
        if (matches_normalised(rules[best], f, dst, src)) return static_cast<int>(best);
    }
    return -1;
}

}  // namespace gs::policy
