// Counts heap allocations made through operator new in the test program that
// links alloc_counter.cpp (which replaces the global operator new/delete).
#pragma once

#include <cstddef>

namespace gs::mces::wire::test {
std::size_t alloc_count() noexcept;
}
