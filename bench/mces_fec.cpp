// mces_fec: throughput of the FEC element (core/mces/fec) alone, in memory.
// Encode: source packets folded into repair symbols (Encoder::add_source,
// poll_repair). Decode: the decoder fed every source but the r it must
// recover per block (the worst case it repairs: r erasures of sources per
// block), plus the repairs, recovering them. Rates are MB/s of source bytes,
// one thread, with the CPU's region multiply (AVX2 or the table loop).
// Allocations are not counted here: both halves allocate only in their
// constructors and on a slot's first use (the tests check memory stops
// growing).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/mces/fec/decoder.h"
#include "core/mces/fec/encoder.h"
#include "core/mces/fec/gf256.h"

using namespace gs::mces::fec;

namespace {

constexpr const char* kUsage =
    "usage: mces_fec [--size B] [--mb M] [--layouts K/R[/D],...]\n"
    "Encodes and decodes M MB (200) of B-byte packets (1200; 0 to 65533) with each layout\n"
    "(default 10/2,17/4,32/8,64/16,16/4/8: k sources, r repairs, interleaving depth D) and prints\n"
    "one line per layout: encode and decode MB/s of source bytes, packets recovered per second\n"
    "while decoding (r of every k + r lost, the most it repairs), and the byte overhead.\n";

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Row {
    Layout l;
    double enc_mbs = 0, dec_mbs = 0, rec_per_s = 0, overhead = 0;
    std::uint64_t recovered = 0;
};

Row run(Layout l, std::size_t size, std::size_t total) {
    Row row;
    row.l = l;
    const std::size_t count = std::max<std::size_t>(total / std::max<std::size_t>(size, 1), l.k * l.depth);
    EncoderConfig ec;
    ec.layout = l;
    ec.max_packet = size;
    DecoderConfig dc;
    dc.max_packet = size;
    dc.source_window = std::max<std::size_t>(1024, 4 * l.k * l.depth);
    std::vector<std::uint8_t> pkt(size);
    for (std::size_t i = 0; i < size; ++i) pkt[i] = static_cast<std::uint8_t>(i * 31 + 7);

    // Encode, keeping one group's worth of repairs for the decoder.
    std::vector<std::vector<std::uint8_t>> repairs;
    std::vector<std::uint8_t> body;
    {
        Encoder enc(ec);
        const double t0 = now_s();
        for (std::size_t s = 0; s < count; ++s) {
            pkt[0] = static_cast<std::uint8_t>(s);
            enc.add_source(s, pkt, 0);
            while (enc.poll_repair(body)) {}
        }
        enc.flush();
        while (enc.poll_repair(body)) {}
        row.enc_mbs = static_cast<double>(count * size) / (now_s() - t0) / 1e6;
        row.overhead = static_cast<double>(enc.counters().repair_bytes) /
                       static_cast<double>(std::max<std::uint64_t>(enc.counters().source_bytes, 1));
    }
    // Decode: a fresh encoder's stream, the first r sources of each block lost.
    Encoder enc(ec);
    Decoder dec(dc);
    const double t0 = now_s();
    Recovered rec;
    for (std::size_t s = 0; s < count; ++s) {
        pkt[0] = static_cast<std::uint8_t>(s);
        enc.add_source(s, pkt, 0);
        const std::size_t group_pos = s % (std::size_t{l.k} * l.depth);
        if (group_pos / l.depth >= l.r) (void)dec.on_source(s, pkt);   // source index j = pos / depth
        while (enc.poll_repair(body)) {
            (void)dec.on_repair(body);
            while (dec.poll_recovered(rec)) ++row.recovered;
        }
    }
    const double dt = now_s() - t0;
    row.dec_mbs = static_cast<double>(count * size) / dt / 1e6;   // includes encoding the stream
    row.rec_per_s = static_cast<double>(row.recovered) / dt;
    return row;
}

bool parse_layouts(const char* s, std::vector<Layout>& out) {
    out.clear();
    std::string str(s);
    std::size_t pos = 0;
    while (pos <= str.size()) {
        const std::size_t end = std::min(str.find(',', pos), str.size());
        Layout l;
        unsigned k = 0, r = 0, d = 1;
        const std::string item = str.substr(pos, end - pos);
        const int n = std::sscanf(item.c_str(), "%u/%u/%u", &k, &r, &d);
        if (n < 2) return false;
        l = {k, r, n == 3 ? d : 1};
        if (validate(l) != 0) return false;
        out.push_back(l);
        pos = end + 1;
    }
    return !out.empty();
}

}  // namespace

int main(int argc, char** argv) {
    std::size_t size = 1200, mb = 200;
    std::vector<Layout> layouts = {{10, 2, 1}, {17, 4, 1}, {32, 8, 1}, {64, 16, 1}, {16, 4, 8}};
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
        if (a == "--help" || a == "-h") {
            std::fputs(kUsage, stdout);
            return 0;
        } else if (a == "--size" && v) {
            size = std::strtoul(v, nullptr, 10);
            ++i;
        } else if (a == "--mb" && v) {
            mb = std::strtoul(v, nullptr, 10);
            ++i;
        } else if (a == "--layouts" && v) {
            if (!parse_layouts(v, layouts)) {
                std::fprintf(stderr, "mces_fec: bad --layouts '%s' (K/R[/D], k 1-%u, r 1-%u, D 1-%u)\n", v, kMaxK,
                             kMaxR, kMaxStride);
                return 2;
            }
            ++i;
        } else {
            std::fputs(kUsage, stderr);
            return 2;
        }
    }
    if (size > kMaxPacket || mb == 0) {
        std::fputs(kUsage, stderr);
        return 2;
    }
    std::printf("# mces_fec: %zu-byte packets, %zu MB per layout, region multiply: %s\n", size, mb,
                gf::simd_available() ? "avx2" : "table");
    std::printf("# %-9s %12s %12s %14s %9s\n", "k/r/D", "encode MB/s", "decode MB/s", "recovered/s", "overhead");
    for (const Layout& l : layouts) {
        const Row r = run(l, size, mb * 1000000);
        char name[32];
        std::snprintf(name, sizeof name, "%u/%u/%u", l.k, l.r, l.depth);
        std::printf("  %-9s %12.0f %12.0f %14.0f %8.1f%%\n", name, r.enc_mbs, r.dec_mbs, r.rec_per_s, r.overhead * 100);
    }
    return 0;
}
