// How many nodes the large simulator scenarios run.
//
// The same scenarios run in every build; under AddressSanitizer each event
// costs 5-20x more (a 1,000-node HC run takes 180 s there against 9 s), so
// sanitizer builds run them on fewer nodes. They are there to find memory
// and undefined-behaviour errors, which the protocol code shows at 300 nodes
// as at 1,000; the 1,000-node figures and bounds are the plain build's.
#pragma once

#include <cstddef>

namespace gs::sim {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

// `n` in a plain build; under a sanitizer a third of it (at least `floor`).
constexpr std::size_t scaled(std::size_t n, std::size_t floor = 64) noexcept {
    return !kSanitized ? n : (n / 3 > floor ? n / 3 : floor);
}

}  // namespace gs::sim
