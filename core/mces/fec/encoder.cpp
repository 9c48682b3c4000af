#include "core/mces/fec/encoder.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/mces/fec/gf256.h"

namespace gs::mces::fec {

int validate(const Layout& l) noexcept {
    if (l.k == 0 || l.k > kMaxK) return -EINVAL;
    if (l.r == 0 || l.r > kMaxR) return -EINVAL;
    if (l.depth == 0 || l.depth > kMaxStride) return -EINVAL;
    return 0;
}

Encoder::Encoder(const EncoderConfig& cfg) : cfg_(cfg) {
    valid_ = validate(cfg_.layout) == 0 && cfg_.max_packet <= kMaxPacket && cfg_.max_delay >= 0;
    if (!valid_) return;
    reset_buffers();
}

void Encoder::reset_buffers() {
    const Layout& l = cfg_.layout;
    blocks_.assign(l.depth, Block{});
    acc_.assign(std::size_t{l.depth} * l.r * (kLengthPrefix + cfg_.max_packet), 0);
    const std::size_t slots = cfg_.max_pending ? cfg_.max_pending : std::size_t{2} * l.depth * l.r;
    // Keep queued bodies across a layout change: move them into the new ring.
    std::vector<std::vector<std::uint8_t>> old;
    old.swap(out_);
    out_.resize(slots);
    for (auto& s : out_) s.reserve(kRepairHeaderSize + kLengthPrefix + cfg_.max_packet);
    std::size_t n = 0;
    for (std::size_t i = 0; i < out_count_; ++i) {
        auto& src = old[(out_head_ + i) % old.size()];
        if (n < slots) out_[n++].swap(src);
    }
    counters_.overrun += out_count_ - n;
    out_head_ = 0;
    out_count_ = n;
}

int Encoder::add_source(std::uint64_t seq, std::span<const std::uint8_t> bytes, sansio::Time now) noexcept {
    if (!valid_) return -EINVAL;
    if (bytes.size() > cfg_.max_packet) {
        ++counters_.too_long;
        return -EMSGSIZE;
    }
    const Layout& l = cfg_.layout;
    if (open_ && seq != next_seq_) {
        ++counters_.gaps;
        flush();
    }
    if (!open_) {
        open_ = true;
        group_first_ = seq;
        pos_ = 0;
        deadline_ = cfg_.max_delay == sansio::kNever || now > sansio::kNever - cfg_.max_delay
                        ? sansio::kNever
                        : now + cfg_.max_delay;
    }
    const auto d = static_cast<unsigned>(pos_ % l.depth);
    Block& b = blocks_[d];
    const unsigned j = b.count;
    const std::uint8_t len[2] = {static_cast<std::uint8_t>(bytes.size() >> 8),
                                 static_cast<std::uint8_t>(bytes.size())};
    for (unsigned i = 0; i < l.r; ++i) {
        const std::uint8_t c = coefficient(i, j);
        std::uint8_t* a = acc(d, i);
        gf::mul_add(a, len, kLengthPrefix, c);
        gf::mul_add(a + kLengthPrefix, bytes.data(), bytes.size(), c);
    }
    b.count = j + 1;
    b.symbol = std::max(b.symbol, kLengthPrefix + bytes.size());
    ++counters_.sources;
    counters_.source_bytes += bytes.size();
    ++pos_;
    next_seq_ = seq + 1;
    // The group is full (every block has k), or seq + 1 wrapped to 0 (a
    // group cannot continue past the largest seq): its repairs go out.
    if (pos_ == std::uint64_t{l.depth} * l.k || next_seq_ == 0) flush();
    return 0;
}

// Emits the repairs of every block of the open group, row by row across the
// blocks (repair 0 of each block, then repair 1 of each...): a block's
// repairs are then `depth` packets apart on the wire like its sources, and a
// run of losses over the repairs costs each block few of them too. (Block by
// block would put a block's r repairs back to back.) With depth 1 a group is
// one block and this is that block's repairs in order.
void Encoder::flush() noexcept {
    if (!valid_ || !open_) return;
    const Layout& l = cfg_.layout;
    for (unsigned i = 0; i < l.r; ++i)
        for (unsigned d = 0; d < l.depth; ++d)
            if (blocks_[d].count > 0) emit(d, i);
    for (unsigned d = 0; d < l.depth; ++d) {
        Block& b = blocks_[d];
        if (b.count == 0) continue;
        ++counters_.blocks;
        if (b.count < l.k) ++counters_.partial_blocks;
        b = Block{};
    }
    open_ = false;
    deadline_ = sansio::kNever;
}

void Encoder::emit(unsigned d, unsigned i) noexcept {
    const Layout& l = cfg_.layout;
    const Block& b = blocks_[d];
    if (out_count_ == out_.size()) {   // full: drop the oldest
        out_head_ = (out_head_ + 1) % out_.size();
        --out_count_;
        ++counters_.overrun;
    }
    auto& slot = out_[(out_head_ + out_count_) % out_.size()];
    slot.resize(kRepairHeaderSize + b.symbol);   // within the reserved capacity
    std::uint8_t* a = acc(d, i);
    (void)write_repair_header(slot, group_first_ + d, l.depth, b.count, l.r, i, b.symbol);
    std::memcpy(slot.data() + kRepairHeaderSize, a, b.symbol);
    std::memset(a, 0, b.symbol);
    ++out_count_;
    ++counters_.repairs;
    counters_.repair_bytes += slot.size();
}

sansio::Time Encoder::next_timeout() const noexcept { return open_ ? deadline_ : sansio::kNever; }

void Encoder::on_timeout(sansio::Time now) noexcept {
    if (open_ && now >= deadline_) {
        ++counters_.deadline_flushes;
        flush();
    }
}

int Encoder::set_layout(const Layout& l) {
    if (!valid_ || validate(l) != 0) return -EINVAL;
    if (l == cfg_.layout) return 0;
    flush();
    cfg_.layout = l;
    reset_buffers();
    return 0;
}

bool Encoder::poll_repair(std::vector<std::uint8_t>& out) {
    if (out_count_ == 0) return false;
    const auto& slot = out_[out_head_];
    out.assign(slot.begin(), slot.end());
    out_head_ = (out_head_ + 1) % out_.size();
    --out_count_;
    return true;
}

}  // namespace gs::mces::fec
