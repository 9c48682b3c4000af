#include "core/mces/auth/replay_window.h"

namespace gs::mces::auth {

static_assert(kReplayWindow % 64 == 0, "the window is whole words");

ReplayCheck ReplayWindow::check(std::uint64_t pn) const noexcept {
    if (!any_ || pn > largest_) return ReplayCheck::fresh;
    if (largest_ - pn >= kReplayWindow) return ReplayCheck::too_old;
    const std::uint64_t word = bits_[(pn >> 6) % kWords];
    return ((word >> (pn & 63)) & 1) != 0 ? ReplayCheck::duplicate : ReplayCheck::fresh;
}

void ReplayWindow::mark(std::uint64_t pn) noexcept {
    if (!any_) {
        any_ = true;
        largest_ = pn;
        bits_.fill(0);
    } else if (pn > largest_) {
        // Clear the words the window slides into: those after the largest's
        // word, up to and including pn's (all of them if it jumps far).
        const std::uint64_t from = largest_ >> 6;
        const std::uint64_t steps = (pn >> 6) - from;
        const std::uint64_t n = steps < kWords ? steps : kWords;
        for (std::uint64_t i = 1; i <= n; ++i) bits_[(from + i) % kWords] = 0;
        largest_ = pn;
    } else if (largest_ - pn >= kReplayWindow) {
        return;   // too old: its word now belongs to newer numbers
    }
    bits_[(pn >> 6) % kWords] |= std::uint64_t{1} << (pn & 63);
}

}  // namespace gs::mces::auth
