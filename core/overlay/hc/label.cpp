#include "core/overlay/hc/label.h"

namespace gs::overlay::hc {

std::vector<Label> neighbors_of(Label label, std::uint32_t n) {
    std::vector<Label> out;
    if (!in_cube(label, n)) return out;
    const unsigned d = dim_of(n);
    for (unsigned b = 0; b < d; ++b) {
        const Label other = label ^ (Label{1} << b);
        if (in_cube(other, n)) out.push_back(other);
    }
    return out;
}

std::optional<Label> tree_parent(Label label, Label root, std::uint32_t n) {
    if (label == root || !in_cube(label, n) || !in_cube(root, n)) return std::nullopt;
    const Label diff = label ^ root;
    for (int b = static_cast<int>(dim_of(n)) - 1; b >= 0; --b) {
        const Label bit = Label{1} << b;
        if ((diff & bit) && in_cube(label ^ bit, n)) return label ^ bit;
    }
    return std::nullopt;   // unreachable for a Gray-code prefix
}

std::vector<Label> tree_children(Label label, Label root, std::uint32_t n) {
    std::vector<Label> out;
    if (!in_cube(root, n)) return out;
    for (Label c : neighbors_of(label, n)) {
        auto p = tree_parent(c, root, n);
        if (p && *p == label) out.push_back(c);
    }
    return out;
}

}  // namespace gs::overlay::hc
