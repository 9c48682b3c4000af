// libFuzzer target: the impairment option parsers and the model. The input is
// "name=value\n" lines (link options), then raw bytes that drive offers
// (size, time step). Checks that nothing crashes, refused values leave the
// parameters valid, and the counters balance.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tools/gsimpair/impair.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    gs::impair::LinkParams p;
    std::size_t pos = 0;
    while (pos < in.size()) {
        const std::size_t nl = in.find('\n', pos);
        if (nl == std::string_view::npos) break;
        const std::string_view line = in.substr(pos, nl - pos);
        pos = nl + 1;
        if (line.empty()) break;   // a blank line ends the options
        const std::size_t eq = line.find('=');
        if (eq == std::string_view::npos) continue;
        std::string err;
        const int rc = gs::impair::set_link_option(p, line.substr(0, eq), line.substr(eq + 1), &err);
        if (rc != 0 && err.empty()) std::abort();   // a refusal always says why
        if (!p.validate().empty()) std::abort();    // the parsers only store valid values
    }
    if (p.delay > gs::sansio::kSecond) p.delay = gs::sansio::kSecond;   // keep times far from overflow
    gs::impair::Link link(p, size);
    gs::sansio::Time now = 0;
    for (; pos + 3 <= in.size(); pos += 3) {
        const std::size_t len = static_cast<std::uint8_t>(in[pos]) | (static_cast<std::size_t>(in[pos + 1]) & 0x3f) << 8;
        now += static_cast<std::uint8_t>(in[pos + 2]) * gs::sansio::kMicrosecond;
        const gs::impair::Decision d = link.offer(len, now);
        if (d.count < 0 || d.count > 2 || (d.drop != gs::impair::Drop::none) != (d.count == 0)) std::abort();
        for (int k = 0; k < d.count; ++k) {
            if (d.d[k].at < now) std::abort();
            if (d.d[k].flip_bit >= static_cast<std::int64_t>(len) * 8) std::abort();
        }
    }
    const auto& c = link.counters();
    if (c.packets_in != c.delivered - c.duplicated + c.dropped()) std::abort();
    return 0;
}
