// libFuzzer target: the control socket's "overlays [ROOT]" argument, parsed by
// overlays_json() (core/engine/overlay_status.h). Any local process may
// connect to a gsocket process's control socket (core/engine/control.h) and
// send a request line; for "overlays ARGS" the server passes ARGS (at most
// kMaxRequest bytes, whatever they are) to overlays_json.
//
// This is the one pure piece of the request parser that can be called on its
// own: the line itself (newline, "\r", which request) is read inside
// Conn::answer, which also sends (see the report that added this target).
//
// With no overlay member listed (none is, in this process) the answer is
// decided by ARGS alone, and checked against the header's contract written
// out independently: ARGS with spaces trimmed either is empty or all decimal
// digits of a value that fits in 64 bits -> {"overlays":[]}; anything else ->
// the error object. Either one line ending in '\n'; nothing of ARGS echoed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/engine/control.h"
#include "core/engine/overlay_status.h"

namespace {

bool root_ok(std::string_view a) {
    while (!a.empty() && a.front() == ' ') a.remove_prefix(1);
    while (!a.empty() && a.back() == ' ') a.remove_suffix(1);
    if (a.empty()) return true;
    std::uint64_t v = 0;
    for (char c : a) {
        if (c < '0' || c > '9') return false;
        const std::uint64_t d = static_cast<std::uint64_t>(c - '0');
        if (v > (UINT64_MAX - d) / 10) return false;   // would not fit
        v = v * 10 + d;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // The server never passes more than a request line holds.
    if (size > gs::engine::kMaxRequest) return 0;
    const std::string_view args(reinterpret_cast<const char*>(data), size);
    const std::string got = gs::engine::overlays_json(args);
    if (root_ok(args)) {
        if (got != "{\"overlays\":[]}\n") abort();
    } else {
        if (got.rfind("{\"error\":\"", 0) != 0 || got.size() < 3 || got.substr(got.size() - 3) != "\"}\n") abort();
        if (got.find('\n') != got.size() - 1) abort();
    }
    return 0;
}
