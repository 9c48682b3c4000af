#include "shim/real.h"

#include <dlfcn.h>
#include <atomic>

namespace gs::shim::real {
namespace {

void anchor() noexcept {}

// dlsym(RTLD_NEXT) skips this library, so other preloads and libc stay in
// the chain. Getting a function of our own object back (the library loaded
// twice, or linked into the program by mistake) would recurse forever: treat
// it as absent.
void* lookup(const char* sym) noexcept {
    void* p = dlsym(RTLD_NEXT, sym);
    if (p == nullptr) return nullptr;
    Dl_info mine{}, theirs{};
    if (dladdr(reinterpret_cast<void*>(&anchor), &mine) != 0 && dladdr(p, &theirs) != 0 &&
        mine.dli_fbase == theirs.dli_fbase)
        return nullptr;
    return p;
}

}  // namespace
}  // namespace gs::shim::real

namespace gs::shim::real {

// Each pointer is written at most once per value (every writer stores the
// same resolved address), so relaxed atomics are enough.
#define GS_DEFINE(name, ret, params)                                                     \
    std::atomic<name##_t> g_##name{nullptr};                                             \
    name##_t resolve_##name() noexcept {                                                 \
        auto p = reinterpret_cast<name##_t>(lookup(#name));                              \
        g_##name.store(p, std::memory_order_relaxed);                                    \
        return p;                                                                        \
    }
GS_REAL_FUNCTIONS(GS_DEFINE)
#undef GS_DEFINE

int resolve_all() noexcept {
    int missing = 0;
#define GS_RESOLVE(name, ret, params) missing += name() == nullptr;
    GS_REAL_FUNCTIONS(GS_RESOLVE)
#undef GS_RESOLVE
    return missing;
}

}  // namespace gs::shim::real
