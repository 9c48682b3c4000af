#include "core/engine/mces_peers.h"

#include <cstring>

namespace gs::engine {

namespace {
void split(const sansio::Addr& a, uint64_t& hi, uint64_t& lo) noexcept {
    memcpy(&hi, a.ip.data(), 8);
    memcpy(&lo, a.ip.data() + 8, 8);
}
}  // namespace

unsigned PeerTable::index(const sansio::Addr& a) noexcept {
    return static_cast<unsigned>(sansio::AddrHash{}(a) % kSlots);
}

PeerVerdict PeerTable::lookup(const sansio::Addr& peer, sansio::Time now) const noexcept {
    const Slot& s = slots_[index(peer)];
    uint64_t hi, lo;
    split(peer, hi, lo);
    for (int tries = 0; tries < 4; ++tries) {
        uint32_t q = s.seq.load(std::memory_order_acquire);
        if (q & 1) continue;
        // A seqlock without fences (TSan does not model them): data loads
        // are acquire, so the check of seq after them cannot move before
        // them, and a load that saw a new value also sees the odd seq.
        uint64_t h = s.ip_hi.load(std::memory_order_acquire);
        uint64_t l = s.ip_lo.load(std::memory_order_acquire);
        uint32_t pv = s.port_verdict.load(std::memory_order_acquire);
        int64_t until = s.until.load(std::memory_order_acquire);
        if (s.seq.load(std::memory_order_relaxed) != q) continue;
        if (h != hi || l != lo || (pv >> 8) != peer.port || now >= until) return PeerVerdict::unknown;
        return static_cast<PeerVerdict>(pv & 0xff);
    }
    return PeerVerdict::unknown;
}

void PeerTable::record(const sansio::Addr& peer, PeerVerdict v, sansio::Time now) noexcept {
    Slot& s = slots_[index(peer)];
    uint64_t hi, lo;
    split(peer, hi, lo);
    const sansio::Time ttl = v == PeerVerdict::mces ? kMcesTtl : v == PeerVerdict::native ? kNativeTtl : 0;
    uint32_t q = s.seq.load(std::memory_order_relaxed);
    s.seq.store(q + 1, std::memory_order_relaxed);
    // Release stores: whoever sees one of them also sees the odd seq above.
    s.ip_hi.store(hi, std::memory_order_release);
    s.ip_lo.store(lo, std::memory_order_release);
    s.port_verdict.store(uint32_t{peer.port} << 8 | static_cast<uint32_t>(v), std::memory_order_release);
    s.until.store(now + ttl, std::memory_order_release);
    s.seq.store(q + 2, std::memory_order_release);
}

void PeerTable::clear() noexcept {
    for (Slot& s : slots_) {
        uint32_t q = s.seq.load(std::memory_order_relaxed);
        s.seq.store(q + 1, std::memory_order_relaxed);
        s.until.store(0, std::memory_order_release);
        s.seq.store(q + 2, std::memory_order_release);
    }
}

PeerTable& PeerTable::process() noexcept {
    static PeerTable t;   // constant-initialised: atomics with initialisers, no dynamic init
    return t;
}

}  // namespace gs::engine
