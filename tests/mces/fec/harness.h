// Test helpers for the FEC element: deterministic packets, a sender that
// records what goes on the wire in order, and a receiver that checks every
// packet it gets (received or recovered) against what was sent.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "core/mces/fec/decoder.h"
#include "core/mces/fec/encoder.h"

namespace fectest {

inline std::uint64_t mix(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// The packet with sequence number `seq`: length in [0, max_len] (max_len
// exactly when `fixed`), bytes from seq and salt.
inline std::vector<std::uint8_t> packet(std::uint64_t seq, std::size_t max_len, std::uint64_t salt = 0,
                                        bool fixed = false) {
    const std::uint64_t h = mix(seq ^ salt);
    std::vector<std::uint8_t> p(fixed ? max_len : h % (max_len + 1));
    for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<std::uint8_t>(mix(h + i) >> 17);
    return p;
}

struct WirePacket {
    bool repair = false;
    std::uint64_t seq = 0;               // sources
    std::vector<std::uint8_t> bytes;     // source bytes or repair body
};

// Feeds `count` packets from seq `first` and drains the repairs after each,
// recording the wire order. Flushes at the end when `flush_end`.
inline std::vector<WirePacket> send(gs::mces::fec::Encoder& enc, std::uint64_t first, std::size_t count,
                                    std::size_t max_len, bool flush_end = true, std::uint64_t salt = 0) {
    std::vector<WirePacket> wire;
    std::vector<std::uint8_t> body;
    auto drain = [&] {
        while (enc.poll_repair(body)) wire.push_back({true, 0, body});
    };
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint64_t seq = first + i;
        auto p = packet(seq, max_len, salt);
        enc.add_source(seq, p, 0);
        wire.push_back({false, seq, std::move(p)});
        drain();
    }
    if (flush_end) enc.flush();
    drain();
    return wire;
}

// Delivers to a decoder; records what arrived and what was recovered, and
// counts recovered packets whose bytes differ from what was sent (`wrong`).
struct Receiver {
    explicit Receiver(const gs::mces::fec::DecoderConfig& c, std::size_t max_len, std::uint64_t salt = 0,
                      bool fixed = false)
        : dec(c), max_len_(max_len), salt_(salt), fixed_(fixed) {}

    void deliver(const WirePacket& w) {
        if (w.repair)
            dec.on_repair(w.bytes);
        else if (dec.on_source(w.seq, w.bytes) == gs::mces::fec::SourceResult::stored)
            got[w.seq] = false;
        drain();
    }
    void drain() {
        gs::mces::fec::Recovered r;
        while (dec.poll_recovered(r)) {
            const auto want = packet(r.seq, max_len_, salt_, fixed_);
            if (std::vector<std::uint8_t>(r.bytes.begin(), r.bytes.end()) != want) ++wrong;
            if (got.count(r.seq)) ++double_delivered;
            got[r.seq] = true;
        }
    }

    gs::mces::fec::Decoder dec;
    std::map<std::uint64_t, bool> got;   // seq -> recovered (true) or received (false)
    std::size_t wrong = 0;
    std::size_t double_delivered = 0;

private:
    std::size_t max_len_;
    std::uint64_t salt_;
    bool fixed_;
};

}  // namespace fectest
