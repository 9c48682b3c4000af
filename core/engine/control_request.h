// The control socket's request line (docs/observability.md): pure
// functions, so that the server (control.cpp) and the fuzz target
// (tests/fuzz_more/control_request_fuzz) run the same code with nothing else
// linked in. Any local process of the user may send these bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string_view>

namespace gs::engine {

inline constexpr size_t kMaxRequest = 256;   // bytes of a request line, not counting its newline

enum class Request : uint8_t { ping, flows, overlays, unknown };

// A request line as the server reads it. `buf` (not null) holds the `len`
// bytes received; the line ends at the first '\n' or at `len`, and one
// trailing '\r' is dropped. *line is set to it (pointing into buf); for
// `overlays`, line->substr(8) is the ROOT argument for overlays_json().
inline Request parse_request(const char* buf, size_t len, std::string_view* line) noexcept {
    const char* nl = static_cast<const char*>(memchr(buf, '\n', len));
    size_t n = nl ? static_cast<size_t>(nl - buf) : len;
    if (n > 0 && buf[n - 1] == '\r') --n;   // netcat -C, telnet
    *line = std::string_view(buf, n);
    if (*line == "ping") return Request::ping;
    if (*line == "flows") return Request::flows;
    if (*line == "overlays" || line->starts_with("overlays ")) return Request::overlays;
    return Request::unknown;
}

// The answer to an unknown request, NUL-terminated in `out`: at most 32 bytes
// of the line echoed, each non-printable one as '?', "..." when cut.
inline void unknown_request_text(std::string_view line, char (&out)[128]) noexcept {
    // Echo a printable prefix only: the reply goes to somebody's terminal.
    char shown[33];   // the longest: 32 shown, "...", the text: 99 bytes
    size_t k = 0;
    for (size_t i = 0; i < line.size() && k < sizeof shown - 1; ++i)
        shown[k++] = (line[i] >= 0x20 && line[i] < 0x7f) ? line[i] : '?';
    shown[k] = '\0';
    snprintf(out, sizeof out, "error: unknown request '%s%s': send flows, overlays [ROOT] or ping\n", shown,
             line.size() > k ? "..." : "");
}

}  // namespace gs::engine
