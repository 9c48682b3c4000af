// What `transport = auto` learnt about each peer: does it answer MCES?
// (docs/mces.md, "Through the shim".)
//
// A bounded table, remembered for a while: a peer that answered MCES (any
// datagram back: a RETRY, an ACCEPT, even a REFUSE) is `mces` for kMcesTtl;
// one that did not (ICMP unreachable, or silence for the handshake bound)
// is `native` for kNativeTtl, so later connects to it go to kernel TCP at
// once. The key is the peer's IP address and TCP port.
//
// kSlots entries, direct-mapped on a hash of the key: a new peer that lands
// on a slot in use replaces it (the table forgets, it never grows). Written
// by the engine thread, read by program threads in connect(): each slot is
// a seqlock of relaxed atomics; a reader that races a writer retries a few
// times and otherwise answers `unknown`, which is always safe (the connect
// tries MCES and falls back). No allocation, no lock: hooks may read it.
#pragma once

#include <atomic>
#include <cstdint>

#include "core/common/sansio.h"

namespace gs::engine {

enum class PeerVerdict : uint8_t { unknown = 0, mces = 1, native = 2 };

class PeerTable {
public:
    static constexpr unsigned kSlots = 256;
    static constexpr sansio::Time kMcesTtl = 300 * sansio::kSecond;
    static constexpr sansio::Time kNativeTtl = 30 * sansio::kSecond;

    // The verdict for `peer` at `now`: unknown when absent or expired.
    PeerVerdict lookup(const sansio::Addr& peer, sansio::Time now) const noexcept;
    // Remember `v` (mces or native) for `peer`, from `now` for its TTL.
    void record(const sansio::Addr& peer, PeerVerdict v, sansio::Time now) noexcept;
    // Forget everything (tests).
    void clear() noexcept;

    // The process's table (zero-initialised storage, no constructor to run).
    static PeerTable& process() noexcept;

private:
    struct Slot {
        std::atomic<uint32_t> seq{0};   // odd while being written
        std::atomic<uint64_t> ip_hi{0}, ip_lo{0};
        std::atomic<uint32_t> port_verdict{0};   // port << 8 | verdict
        std::atomic<int64_t> until{0};
    };
    static unsigned index(const sansio::Addr& a) noexcept;
    Slot slots_[kSlots];
};

}  // namespace gs::engine
