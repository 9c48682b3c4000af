// libFuzzer target: the REPAIR parser and the decoder under hostile input.
//
// The first bytes choose a layout; an honest Encoder then produces a stream
// (sources and repairs), and each following input byte decides what the
// channel does with the next wire packet: deliver, drop, duplicate, deliver
// later (reorder), flip a byte, cut it short, or inject a body taken from the
// input. Traps when an invariant breaks:
//   - a parsed body has every field in range;
//   - the decoder never holds more than its bounds (blocks, memory);
//   - a recovered packet is never longer than max_packet;
//   - when nothing was tampered with, every recovered packet is the one sent.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "core/mces/fec/decoder.h"
#include "core/mces/fec/encoder.h"
#include "core/mces/fec/repair_frame.h"

using namespace gs::mces::fec;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

struct Input {
    const std::uint8_t* p;
    std::size_t n;
    std::uint8_t byte() {
        if (n == 0) return 0;
        --n;
        return *p++;
    }
};

constexpr std::size_t kMaxPacketFuzz = 96;

std::vector<std::uint8_t> source_bytes(std::uint64_t seq) {
    std::vector<std::uint8_t> b((seq * 37 + 11) % (kMaxPacketFuzz + 1));
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(seq * 131 + i * 7);
    return b;
}

struct Wire {
    bool repair;
    std::uint64_t seq;
    std::vector<std::uint8_t> bytes;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Input in{data, size};

    // Mode 0: the parser alone on the whole input.
    {
        RepairView v;
        if (parse_repair({data, size}, v) == ParseError::ok) {
            check(v.stride >= 1 && v.stride <= kMaxStride);
            check(v.k >= 1 && v.k <= kMaxK && v.r >= 1 && v.r <= kMaxR && v.index < v.r);
            check(v.symbol.size() >= kMinSymbol && v.symbol.size() + kRepairHeaderSize == size);
            check(v.last_seq() >= v.block_id);
        }
    }

    EncoderConfig ec;
    ec.layout.k = 1 + in.byte() % 24;
    ec.layout.r = 1 + in.byte() % 8;
    ec.layout.depth = 1 + in.byte() % 6;
    ec.max_packet = kMaxPacketFuzz;
    ec.max_pending = 1024;
    DecoderConfig dc;
    dc.max_packet = kMaxPacketFuzz;
    dc.source_window = 64 + in.byte() % 4 * 64;
    dc.max_blocks = 1 + in.byte() % 16;
    dc.repair_slots = 1 + in.byte() % 64;
    const std::uint64_t first = std::uint64_t{in.byte()} << 56 | std::uint64_t{in.byte()} << 8;

    Encoder enc(ec);
    Decoder dec(dc);
    check(enc.valid() && dec.valid());

    std::deque<Wire> pending;
    std::vector<Wire> late;
    std::uint64_t seq = first;
    bool tampered = false;
    std::vector<std::uint8_t> body;

    auto deliver = [&](const Wire& w) {
        if (w.repair)
            (void)dec.on_repair(w.bytes);
        else
            (void)dec.on_source(w.seq, w.bytes);
        Recovered r;
        while (dec.poll_recovered(r)) {
            check(r.bytes.size() <= kMaxPacketFuzz);
            check(dec.has(r.seq));
            if (!tampered) check(std::vector<std::uint8_t>(r.bytes.begin(), r.bytes.end()) == source_bytes(r.seq));
        }
        check(dec.active_blocks() <= dc.max_blocks);
    };

    for (int steps = 0; steps < 4000 && in.n > 0; ++steps) {
        if (pending.empty()) {
            auto b = source_bytes(seq);
            (void)enc.add_source(seq, b, 0);
            pending.push_back({false, seq, std::move(b)});
            ++seq;
            while (enc.poll_repair(body)) pending.push_back({true, 0, body});
        }
        Wire w = std::move(pending.front());
        pending.pop_front();
        const std::uint8_t op = in.byte();
        switch (op % 10) {
            case 0: break;   // lost
            case 1:          // duplicated
                deliver(w);
                deliver(w);
                break;
            case 2: late.push_back(std::move(w)); break;   // reordered: comes after later ones
            case 3:          // a byte flipped
                if (!w.bytes.empty()) {
                    w.bytes[in.byte() % w.bytes.size()] ^= static_cast<std::uint8_t>(1 + in.byte() % 255);
                    tampered = true;
                }
                deliver(w);
                break;
            case 4:          // cut short
                if (!w.bytes.empty()) {
                    w.bytes.resize(in.byte() % w.bytes.size());
                    tampered = true;
                }
                deliver(w);
                break;
            case 5: {        // a body from the input, instead
                std::vector<std::uint8_t> g(in.byte());
                for (auto& x : g) x = in.byte();
                tampered = true;
                deliver({true, 0, std::move(g)});
                break;
            }
            case 6:          // a flush, as at a deadline
                enc.flush();
                while (enc.poll_repair(body)) pending.push_back({true, 0, body});
                deliver(w);
                break;
            default: deliver(w); break;
        }
        if (!late.empty() && in.byte() % 4 == 0) {
            deliver(late.back());
            late.pop_back();
        }
    }
    for (const auto& w : late) deliver(w);
    check(dec.memory_in_use() <= dec.memory_bound());
    const DecoderCounters& c = dec.counters();
    check(c.repaired <= c.repairs * kMaxR);
    return 0;
}
