// libFuzzer target for the policy parser and matcher. Besides "no crash, no
// sanitizer report", it checks properties that must hold for any input:
//  - every diagnostic starts with "FILE:LINE: ";
//  - what parsed cleanly, written by to_ini(), parses again without problems
//    and gives the same text (the parser and the formatter agree);
//  - the index picks the same rule as a linear scan for flows made from the input;
//  - the unit parsers read their own formatting back.
#include "policy/policy.h"

#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

using namespace gs::policy;

namespace {

[[noreturn]] void fail(const char* what, const std::string& detail) {
    fprintf(stderr, "policy_fuzz: %s\n%s\n", what, detail.c_str());
    abort();
}

void check_units(std::string_view s) {
    std::string why;
    uint64_t u64 = 0, back64 = 0;
    uint32_t u32 = 0, back32 = 0;
    if (parse_rate(s, u64, why) && u64 != 0 && (!parse_rate(format_rate(u64), back64, why) || back64 != u64))
        fail("rate does not read back", format_rate(u64));
    if (parse_size(s, u64, why) && (!parse_size(format_size(u64), back64, why) || back64 != u64))
        fail("size does not read back", format_size(u64));
    if (parse_duration(s, u32, why) && (!parse_duration(format_duration(u32), back32, why) || back32 != u32))
        fail("duration does not read back", format_duration(u32));
    if (parse_percent(s, u32, why) && (!parse_percent(format_percent(u32), back32, why) || back32 != u32))
        fail("percent does not read back", format_percent(u32));
    Cidr c, c2;
    if (parse_cidr(s, c, why) && (!parse_cidr(format_cidr(c), c2, why) || c2.prefix != c.prefix ||
                                  memcmp(c2.addr.bytes, c.addr.bytes, 16) != 0))
        fail("cidr does not read back", format_cidr(c));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    Policy p = Policy::parse(text, "fuzz.ini");
    for (const Diagnostic& d : p.diagnostics())
        if (d.file != "fuzz.ini" || d.text.rfind("fuzz.ini:" + std::to_string(d.line) + ": ", 0) != 0)
            fail("diagnostic without FILE:LINE", d.text);

    std::string canon = to_ini(p);
    Policy q = Policy::parse(canon, "canon.ini");
    if (!q.ok()) fail("canonical form does not parse clean", q.diagnostics()[0].text + "\n" + canon);
    if (to_ini(q) != canon) fail("canonical form is not stable", canon + "\n----\n" + to_ini(q));

    // Flows from the input bytes, and a few from the rules themselves.
    const uint8_t* b = data;
    size_t left = size;
    static const char* names[] = {"", "curl", "wget", "nginx", "a"};
    for (int i = 0; i < 16; ++i) {
        uint8_t raw[24] = {};
        size_t n = left < sizeof raw ? left : sizeof raw;
        if (n) memcpy(raw, b + (size - left), n);
        left -= n;
        FlowKey f;
        f.proto = raw[0] & 1 ? Proto::udp : Proto::tcp;
        f.direction = static_cast<Direction>(1 + raw[1] % 3);
        f.dport = static_cast<uint16_t>(raw[2] | raw[3] << 8);
        f.sport = static_cast<uint16_t>(raw[4] | raw[5] << 8);
        f.process = names[raw[6] % 5];
        f.dst.family = raw[7] & 1 ? AF_INET6 : AF_INET;
        memcpy(f.dst.bytes, raw + 8, 16);
        if (f.dst.family == AF_INET) memset(f.dst.bytes + 4, 0, 12);
        if (i < static_cast<int>(p.rules().size())) {
            const Rule& r = p.rules()[static_cast<size_t>(i)];
            if (!r.dst.empty()) f.dst = r.dst[0].addr;
            if (!r.dport.empty()) f.dport = r.dport[0].hi;
            if (!r.process.empty()) f.process = r.process[0];
            if (!r.src.empty()) f.src = r.src[0].addr;
        }
        if (p.match_index(f) != p.match_index_linear(f))
            fail("index and linear scan disagree", canon);
        (void)p.match(f);
    }

    size_t nl = text.find('\n');
    check_units(text.substr(0, nl == std::string_view::npos ? 64 : nl));
    return 0;
}
