// Replaces the global operator new/delete to count allocations. Kept in its
// own translation unit: GCC flags malloc/free in replacements it can inline
// into allocator code (-Wmismatched-new-delete), which is a false positive.
#include "tests/mces/wire/alloc_counter.h"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<std::size_t> g_allocs{0};
}

void* operator new(std::size_t n) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace gs::mces::wire::test {
std::size_t alloc_count() noexcept { return g_allocs.load(std::memory_order_relaxed); }
}  // namespace gs::mces::wire::test
