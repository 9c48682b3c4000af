// What the DT tests check a set of members against: the reference Delaunay
// triangulation of their coordinates, and the trees it implies.
#pragma once

#include <algorithm>
#include <map>
#include <vector>

#include "core/overlay/dt/dt_node.h"
#include "core/overlay/dt/geometry.h"

namespace dt_test {

using gs::overlay::LogicalAddress;

// For each member (by logical address): its reference neighbours, sorted.
inline std::map<LogicalAddress, std::vector<LogicalAddress>> reference(
    const std::vector<const gs::overlay::dt::DtNode*>& members) {
    std::vector<gs::overlay::dt::Point> pts;
    for (auto* n : members) pts.push_back(gs::overlay::dt::unpack(n->address()));
    std::map<LogicalAddress, std::vector<LogicalAddress>> ref;
    for (auto* n : members) ref[n->address()];
    for (auto [a, b] : gs::overlay::dt::delaunay_edges(pts)) {
        ref[members[a]->address()].push_back(members[b]->address());
        ref[members[b]->address()].push_back(members[a]->address());
    }
    for (auto& [k, v] : ref) std::sort(v.begin(), v.end());
    return ref;
}

struct Accuracy {
    std::size_t members = 0;
    std::size_t exact = 0;          // members whose neighbour set is exactly right
    std::size_t missing = 0;        // reference edges (directed) a member lacks
    std::size_t extra = 0;          // neighbours a member has that are not Delaunay
    bool all_exact() const { return members > 0 && exact == members; }
};

inline Accuracy accuracy(const std::vector<const gs::overlay::dt::DtNode*>& members) {
    Accuracy acc;
    auto ref = reference(members);
    for (auto* n : members) {
        ++acc.members;
        const auto have = n->neighbors();
        const auto& want = ref[n->address()];
        std::vector<LogicalAddress> d;
        std::set_difference(want.begin(), want.end(), have.begin(), have.end(), std::back_inserter(d));
        acc.missing += d.size();
        const std::size_t miss = d.size();
        d.clear();
        std::set_difference(have.begin(), have.end(), want.begin(), want.end(), std::back_inserter(d));
        acc.extra += d.size();
        if (miss == 0 && d.empty()) ++acc.exact;
    }
    return acc;
}

// For root r: every member's parent() leads to r without a cycle, and
// children() is exactly the inverse of parent() across members.
inline bool trees_correct(const std::vector<const gs::overlay::dt::DtNode*>& members, LogicalAddress root) {
    std::map<LogicalAddress, const gs::overlay::dt::DtNode*> by;
    for (auto* n : members) by[n->address()] = n;
    std::map<LogicalAddress, std::vector<LogicalAddress>> kids;
    for (auto* n : members) {
        auto p = n->parent(root);
        if (n->address() == root) {
            if (p) return false;
            continue;
        }
        if (!p || !by.contains(*p)) return false;
        kids[*p].push_back(n->address());
    }
    for (auto* n : members) {
        auto c = n->children(root);
        auto& k = kids[n->address()];
        std::sort(c.begin(), c.end());
        std::sort(k.begin(), k.end());
        if (c != k) return false;
        // Walk to the root.
        LogicalAddress x = n->address();
        std::size_t steps = 0;
        while (x != root && steps <= members.size()) {
            x = *by[x]->parent(root);
            ++steps;
        }
        if (x != root) return false;
    }
    return true;
}

}  // namespace dt_test
