#include "core/mces/fec/decoder.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "core/mces/fec/gf256.h"

namespace gs::mces::fec {
namespace {

constexpr std::uint16_t kNoSlot = 0xffff;

bool config_ok(const DecoderConfig& c) noexcept {
    return c.max_packet <= kMaxPacket && c.source_window >= 1 && c.source_window <= (std::size_t{1} << 20) &&
           c.max_blocks >= 1 && c.max_blocks <= 4096 && c.repair_slots >= 1 && c.repair_slots < kNoSlot;
}

// Gives `v` its full capacity on first use, so it never grows again (and
// never past the bound a doubling growth would overshoot).
void fit(std::vector<std::uint8_t>& v, std::size_t full, std::size_t n) {
    if (v.capacity() < full) v.reserve(full);
    v.resize(n);
}

}  // namespace

Decoder::Decoder(const DecoderConfig& cfg) : cfg_(cfg) {
    valid_ = config_ok(cfg_);
    if (!valid_) return;
    store_.resize(cfg_.source_window);
    blocks_.resize(cfg_.max_blocks);
    repair_.resize(cfg_.repair_slots);
    free_repair_.reserve(cfg_.repair_slots);
    for (std::size_t i = cfg_.repair_slots; i-- > 0;) free_repair_.push_back(static_cast<std::uint16_t>(i));
    recovered_.resize(cfg_.source_window);
}

const Decoder::Slot* Decoder::find(std::uint64_t seq) const noexcept {
    if (store_.empty()) return nullptr;
    const Slot& s = store_[seq % store_.size()];
    return s.present && s.seq == seq ? &s : nullptr;
}

bool Decoder::has(std::uint64_t seq) const noexcept { return find(seq) != nullptr; }

void Decoder::advance_horizon(std::uint64_t seq) {
    if (!seen_ || seq > horizon_) {
        seen_ = true;
        horizon_ = seq;
    }
    if (active_ == 0) return;
    const std::uint64_t w = cfg_.source_window;
    for (Block& b : blocks_)
        if (b.active && horizon_ >= b.id && horizon_ - b.id >= w) give_up(b, counters_.blocks_expired);
}

void Decoder::release(Block& b) noexcept {
    if (!b.active) return;
    for (std::uint64_t m = b.mask; m != 0; m &= m - 1) {
        const auto i = static_cast<unsigned>(std::countr_zero(m));
        free_repair_.push_back(b.slot[i]);
    }
    b.active = false;
    b.mask = 0;
    --active_;
}

void Decoder::give_up(Block& b, std::uint64_t& counter) noexcept {
    unsigned missing = 0;
    for (unsigned j = 0; j < b.k; ++j)
        if (!find(b.id + std::uint64_t{j} * b.stride)) ++missing;
    counters_.unrecoverable += missing;
    ++counter;
    release(b);
}

Decoder::Block* Decoder::new_block() {
    Block* oldest = nullptr;
    for (Block& b : blocks_) {
        if (!b.active) return &b;
        if (!oldest || b.id < oldest->id) oldest = &b;
    }
    give_up(*oldest, counters_.blocks_evicted);
    return oldest;
}

int Decoder::take_repair_slot(const Block* keep) {
    if (free_repair_.empty()) {
        Block* oldest = nullptr;
        for (Block& b : blocks_)
            if (b.active && &b != keep && b.mask != 0 && (!oldest || b.id < oldest->id)) oldest = &b;
        if (!oldest) return -1;
        give_up(*oldest, counters_.blocks_evicted);
    }
    const std::uint16_t s = free_repair_.back();
    free_repair_.pop_back();
    return s;
}

void Decoder::push_recovered(std::uint64_t seq) noexcept {
    if (rec_count_ == recovered_.size()) {   // the caller did not drain: drop the oldest
        rec_head_ = (rec_head_ + 1) % recovered_.size();
        --rec_count_;
    }
    recovered_[(rec_head_ + rec_count_) % recovered_.size()] = seq;
    ++rec_count_;
}

bool Decoder::poll_recovered(Recovered& out) noexcept {
    while (rec_count_ > 0) {
        const std::uint64_t seq = recovered_[rec_head_];
        rec_head_ = (rec_head_ + 1) % recovered_.size();
        --rec_count_;
        if (const Slot* s = find(seq)) {   // not overwritten since
            out.seq = seq;
            out.bytes = {s->data.data(), s->len};
            return true;
        }
    }
    return false;
}

SourceResult Decoder::on_source(std::uint64_t seq, std::span<const std::uint8_t> bytes) {
    if (!valid_) return SourceResult::stale;
    if (bytes.size() > cfg_.max_packet) {
        ++counters_.source_too_long;
        return SourceResult::too_long;
    }
    const std::uint64_t w = cfg_.source_window;
    if (seen_ && seq < horizon_ && horizon_ - seq >= w) {
        ++counters_.source_stale;
        return SourceResult::stale;
    }
    if (find(seq)) {
        ++counters_.source_duplicates;
        return SourceResult::duplicate;
    }
    advance_horizon(seq);   // expires blocks whose sources this slot could overwrite
    Slot& s = slot_of(seq);
    fit(s.data, kLengthPrefix + cfg_.max_packet, bytes.size());
    if (!bytes.empty()) std::memcpy(s.data.data(), bytes.data(), bytes.size());
    s.seq = seq;
    s.len = static_cast<std::uint32_t>(bytes.size());
    s.present = true;
    ++counters_.sources;
    if (active_ > 0) {
        for (Block& b : blocks_) {
            if (!b.active || !b.contains(seq)) continue;
            ++b.have;
            if (b.have + static_cast<unsigned>(std::popcount(b.mask)) >= b.k) try_decode(b);
        }
    }
    return SourceResult::stored;
}

int Decoder::on_repair(std::span<const std::uint8_t> body) {
    if (!valid_) return -EINVAL;
    RepairView v;
    if (const ParseError e = parse_repair(body, v); e != ParseError::ok) {
        last_error_ = e;
        ++counters_.malformed;
        return -EBADMSG;
    }
    if (v.symbol.size() > kLengthPrefix + cfg_.max_packet) {
        ++counters_.too_long;
        return -EBADMSG;
    }
    const std::uint64_t w = cfg_.source_window;
    if (std::uint64_t{v.k - 1u} * v.stride >= w) {
        ++counters_.too_wide;
        return -ENOSPC;
    }
    const std::uint64_t last = v.last_seq();
    if (seen_ && ((horizon_ >= v.block_id && horizon_ - v.block_id >= w) ||
                  (last > horizon_ && last - horizon_ > w))) {
        ++counters_.repair_stale;
        return 0;
    }
    advance_horizon(last);

    Block* b = nullptr;
    if (active_ > 0)
        for (Block& x : blocks_)
            if (x.active && x.id == v.block_id && x.stride == v.stride) {
                b = &x;
                break;
            }
    if (b) {
        if (b->k != v.k || b->r != v.r || b->symbol != v.symbol.size()) {
            ++counters_.inconsistent;
            return 0;
        }
        if (b->mask >> v.index & 1) {
            ++counters_.repair_duplicates;
            return 0;
        }
    } else {
        unsigned have = 0;
        for (unsigned j = 0; j < v.k; ++j)
            if (find(v.block_id + std::uint64_t{j} * v.stride)) ++have;
        if (have == v.k) {
            ++counters_.repair_unneeded;
            return 0;
        }
        b = new_block();
        b->active = true;
        ++active_;
        b->id = v.block_id;
        b->stride = v.stride;
        b->k = v.k;
        b->r = v.r;
        b->symbol = static_cast<std::uint32_t>(v.symbol.size());
        b->have = have;
        b->mask = 0;
    }
    const int s = take_repair_slot(b);
    if (s < 0) {
        ++counters_.no_slot;
        if (b->mask == 0) release(*b);
        return -ENOSPC;
    }
    auto& buf = repair_[static_cast<std::size_t>(s)];
    fit(buf, kLengthPrefix + cfg_.max_packet, v.symbol.size());
    std::memcpy(buf.data(), v.symbol.data(), v.symbol.size());
    b->slot[v.index] = static_cast<std::uint16_t>(s);
    b->mask |= std::uint64_t{1} << v.index;
    ++counters_.repairs;
    if (b->have + static_cast<unsigned>(std::popcount(b->mask)) >= b->k) try_decode(*b);
    return 0;
}

// Solves for the missing sources: subtract the held sources from m held
// repair symbols (in place: the block is released after), then multiply by
// the inverse of the m x m Cauchy submatrix of the missing columns.
void Decoder::try_decode(Block& b) {
    unsigned missing[kMaxK];
    unsigned m = 0;
    for (unsigned j = 0; j < b.k; ++j)
        if (!find(b.id + std::uint64_t{j} * b.stride)) missing[m++] = j;
    b.have = b.k - m;
    if (m == 0) {
        release(b);
        return;
    }
    if (m > static_cast<unsigned>(std::popcount(b.mask))) return;

    const std::size_t L = b.symbol;
    unsigned rows[kMaxR];
    std::uint8_t* rep[kMaxR];
    {
        std::uint64_t mask = b.mask;
        for (unsigned a = 0; a < m; ++a, mask &= mask - 1) {
            rows[a] = static_cast<unsigned>(std::countr_zero(mask));
            rep[a] = repair_[b.slot[rows[a]]].data();
        }
    }
    for (unsigned j = 0, next = 0; j < b.k; ++j) {
        if (next < m && missing[next] == j) {
            ++next;
            continue;
        }
        const Slot* src = find(b.id + std::uint64_t{j} * b.stride);
        if (!src || src->len + kLengthPrefix > L) {   // a source the repairs cannot describe
            ++counters_.decode_failed;
            counters_.unrecoverable += m;
            release(b);
            return;
        }
        const std::uint8_t len[2] = {static_cast<std::uint8_t>(src->len >> 8), static_cast<std::uint8_t>(src->len)};
        for (unsigned a = 0; a < m; ++a) {
            const std::uint8_t c = coefficient(rows[a], j);
            gf::mul_add(rep[a], len, kLengthPrefix, c);
            gf::mul_add(rep[a] + kLengthPrefix, src->data.data(), src->len, c);
        }
    }
    std::uint8_t mat[kMaxR * kMaxR];
    std::uint8_t invm[kMaxR * kMaxR];
    for (unsigned a = 0; a < m; ++a)
        for (unsigned c = 0; c < m; ++c) mat[a * m + c] = coefficient(rows[a], missing[c]);
    if (invert(mat, m, invm) != 0) {   // cannot happen for a Cauchy submatrix
        ++counters_.decode_failed;
        counters_.unrecoverable += m;
        release(b);
        return;
    }
    for (unsigned c = 0; c < m; ++c) {
        const std::uint64_t seq = b.id + std::uint64_t{missing[c]} * b.stride;
        Slot& s = slot_of(seq);
        if (s.present && s.seq > seq) {   // a newer packet holds the slot: keep it
            ++counters_.unrecoverable;
            continue;
        }
        fit(s.data, kLengthPrefix + cfg_.max_packet, L);
        std::memset(s.data.data(), 0, L);
        for (unsigned a = 0; a < m; ++a) gf::mul_add(s.data.data(), rep[a], L, invm[c * m + a]);
        const std::size_t len = (std::size_t{s.data[0]} << 8) | s.data[1];
        const bool ok = len + kLengthPrefix <= L &&
                        std::all_of(s.data.begin() + static_cast<std::ptrdiff_t>(kLengthPrefix + len),
                                    s.data.begin() + static_cast<std::ptrdiff_t>(L),
                                    [](std::uint8_t x) { return x == 0; });
        if (!ok) {   // forged or mismatched repair symbols: deliver nothing
            ++counters_.decode_failed;
            ++counters_.unrecoverable;
            s.present = false;
            continue;
        }
        std::memmove(s.data.data(), s.data.data() + kLengthPrefix, len);
        s.data.resize(len);
        s.seq = seq;
        s.len = static_cast<std::uint32_t>(len);
        s.present = true;
        ++counters_.repaired;
        push_recovered(seq);
    }
    ++counters_.blocks_decoded;
    release(b);
}

std::size_t Decoder::memory_bound() const noexcept {
    const std::size_t sym = kLengthPrefix + cfg_.max_packet;
    return cfg_.source_window * (sizeof(Slot) + sym + sizeof(std::uint64_t)) + cfg_.max_blocks * sizeof(Block) +
           cfg_.repair_slots * (sizeof(std::vector<std::uint8_t>) + sizeof(std::uint16_t) + sym);
}

std::size_t Decoder::memory_in_use() const noexcept {
    std::size_t n = store_.capacity() * sizeof(Slot) + recovered_.capacity() * sizeof(std::uint64_t) +
                    blocks_.capacity() * sizeof(Block) + repair_.capacity() * sizeof(std::vector<std::uint8_t>) +
                    free_repair_.capacity() * sizeof(std::uint16_t);
    for (const Slot& s : store_) n += s.data.capacity();
    for (const auto& r : repair_) n += r.capacity();
    return n;
}

}  // namespace gs::mces::fec
