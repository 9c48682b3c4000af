// libFuzzer target: the control socket's request parser, parse_request() and
// unknown_request_text() (core/engine/control_request.h). Any local process may send
// the request line; the server hands the parser what recv() put in its
// buffer (at most kMaxRequest + 1 bytes). Besides not crashing, checked
// against the protocol (docs/observability.md) written out independently:
//  - the line is the bytes before the first '\n' (all of them without one),
//    less one trailing '\r', pointing into the buffer;
//  - ping, flows, overlays and "overlays ..." are recognised, nothing else;
//  - the error for anything else is one line of printable ASCII that fits its
//    buffer, echoes at most 32 bytes of the request and says "..." when cut.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <memory>

#include "core/engine/control_request.h"

using gs::engine::Request;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > gs::engine::kMaxRequest + 1) return 0;
    // A buffer of exactly `size` bytes, never null, as the server's is: ASan
    // sees any read beyond it.
    std::unique_ptr<char[]> owned(new char[size]);
    char* const b = owned.get();
    if (size > 0) std::memcpy(b, data, size);
    const std::string_view buf(b, size);
    std::string_view line;
    const Request r = gs::engine::parse_request(buf.data(), buf.size(), &line);

    size_t n = 0;
    while (n < size && buf[n] != '\n') ++n;
    if (n > 0 && buf[n - 1] == '\r') --n;
    if (line.data() != buf.data() || line.size() != n) abort();

    const std::string_view want(buf.data(), n);
    Request expect = Request::unknown;
    if (want == "ping") expect = Request::ping;
    else if (want == "flows") expect = Request::flows;
    else if (want == "overlays" || (want.size() > 8 && want.substr(0, 9) == "overlays ")) expect = Request::overlays;
    if (r != expect) abort();

    char msg[128];
    std::memset(msg, 'x', sizeof msg);
    gs::engine::unknown_request_text(line, msg);
    const char* end = static_cast<const char*>(std::memchr(msg, '\0', sizeof msg));
    if (end == nullptr) abort();
    const std::string_view text(msg, static_cast<size_t>(end - msg));
    const std::string_view head = "error: unknown request '";
    if (text.substr(0, head.size()) != head || text.back() != '\n') abort();
    for (size_t i = 0; i + 1 < text.size(); ++i)
        if (text[i] < 0x20 || text[i] >= 0x7f) abort();
    const size_t shown = line.size() < 32 ? line.size() : 32;
    const bool cut = line.size() > 32;
    const std::string_view rest = text.substr(head.size() + shown);
    if (rest.substr(0, cut ? 5 : 2) != (cut ? "...':" : "':")) abort();
    for (size_t i = 0; i < shown; ++i) {
        const char c = line[i];
        if (text[head.size() + i] != ((c >= 0x20 && c < 0x7f) ? c : '?')) abort();
    }
    return 0;
}
