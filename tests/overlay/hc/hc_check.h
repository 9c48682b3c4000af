// Shared checks for HC protocol tests: is a set of nodes a converged,
// compact, consistent hypercube?
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/overlay/hc/hc_node.h"

namespace hctest {

using gs::overlay::hc::HcNode;
using gs::overlay::hc::Label;

// "" when the joined nodes among `nodes` hold ranks 0..N-1 once each, agree
// on n == N and the head, and every node knows (and hears) exactly its cube
// neighbours at their real addresses; otherwise the first problem found.
inline std::string cube_problem(const std::vector<HcNode*>& nodes, std::size_t expect_n) {
    using namespace gs::overlay::hc;
    std::map<Label, const HcNode*> by_label;
    std::size_t joined = 0;
    for (const HcNode* n : nodes) {
        if (!n->joined()) continue;
        ++joined;
        const Label l = static_cast<Label>(n->address());
        if (!by_label.emplace(l, n).second) return "label " + std::to_string(l) + " held twice";
    }
    if (joined != expect_n) return "joined " + std::to_string(joined) + " of " + std::to_string(expect_n);
    const auto N = static_cast<std::uint32_t>(expect_n);
    for (std::uint32_t r = 0; r < N; ++r)
        if (!by_label.count(gray(r))) return "rank " + std::to_string(r) + " not held";
    const HcNode* head = by_label.at(gray(N - 1));
    for (auto& [l, n] : by_label) {
        if (n->view().n != N) return "label " + std::to_string(l) + " sees n=" + std::to_string(n->view().n);
        if (n->view().head != head->self()) return "label " + std::to_string(l) + " has another head";
        auto expect = neighbors_of(l, N);
        auto got = n->neighbors();
        if (got.size() != expect.size())
            return "label " + std::to_string(l) + " knows " + std::to_string(got.size()) + " of " +
                   std::to_string(expect.size()) + " neighbours";
        for (Label nb : expect) {
            auto a = n->neighbor_addr(nb);
            if (!a || *a != by_label.at(nb)->self())
                return "label " + std::to_string(l) + " has a wrong address for " + std::to_string(nb);
        }
    }
    return "";
}

}  // namespace hctest
