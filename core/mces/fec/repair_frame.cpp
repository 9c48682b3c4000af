#include "core/mces/fec/repair_frame.h"

#include <cerrno>
#include <limits>

#include "core/mces/fec/rs_code.h"

namespace gs::mces::fec {
namespace {

ParseError check_fields(std::uint64_t block_id, unsigned stride, unsigned k, unsigned r, unsigned index,
                        std::size_t symbol_length) noexcept {
    if (stride == 0 || stride > kMaxStride) return ParseError::bad_stride;
    if (k == 0 || k > kMaxK) return ParseError::bad_k;
    if (r == 0 || r > kMaxR) return ParseError::bad_r;
    if (index >= r) return ParseError::bad_index;
    if (symbol_length < kMinSymbol || symbol_length > kMaxSymbol) return ParseError::bad_length;
    const std::uint64_t span = std::uint64_t{k - 1} * stride;
    if (block_id > std::numeric_limits<std::uint64_t>::max() - span) return ParseError::bad_range;
    return ParseError::ok;
}

}  // namespace

const char* to_string(ParseError e) noexcept {
    switch (e) {
        case ParseError::ok: return "ok";
        case ParseError::truncated: return "truncated";
        case ParseError::unknown_scheme: return "unknown_scheme";
        case ParseError::bad_stride: return "bad_stride";
        case ParseError::bad_k: return "bad_k";
        case ParseError::bad_r: return "bad_r";
        case ParseError::bad_index: return "bad_index";
        case ParseError::bad_length: return "bad_length";
        case ParseError::trailing: return "trailing";
        case ParseError::bad_range: return "bad_range";
    }
    return "unknown";
}

ParseError parse_repair(std::span<const std::uint8_t> b, RepairView& out) noexcept {
    if (b.size() < kRepairHeaderSize) return ParseError::truncated;
    if (b[0] != kSchemeRsCauchy) return ParseError::unknown_scheme;
    std::uint64_t id = 0;
    for (int i = 1; i <= 8; ++i) id = (id << 8) | b[static_cast<std::size_t>(i)];
    const unsigned stride = b[9], k = b[10], r = b[11], index = b[12];
    const std::size_t len = (std::size_t{b[13]} << 8) | b[14];
    if (const ParseError e = check_fields(id, stride, k, r, index, len); e != ParseError::ok) return e;
    if (b.size() - kRepairHeaderSize < len) return ParseError::truncated;
    if (b.size() - kRepairHeaderSize > len) return ParseError::trailing;
    out.block_id = id;
    out.stride = static_cast<std::uint8_t>(stride);
    out.k = static_cast<std::uint8_t>(k);
    out.r = static_cast<std::uint8_t>(r);
    out.index = static_cast<std::uint8_t>(index);
    out.symbol = b.subspan(kRepairHeaderSize, len);
    return ParseError::ok;
}

int write_repair_header(std::span<std::uint8_t> out, std::uint64_t block_id, unsigned stride, unsigned k,
                        unsigned r, unsigned index, std::size_t symbol_length) noexcept {
    if (check_fields(block_id, stride, k, r, index, symbol_length) != ParseError::ok) return -EINVAL;
    if (out.size() < kRepairHeaderSize) return -EMSGSIZE;
    out[0] = kSchemeRsCauchy;
    for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(1 + i)] = static_cast<std::uint8_t>(block_id >> (56 - 8 * i));
    out[9] = static_cast<std::uint8_t>(stride);
    out[10] = static_cast<std::uint8_t>(k);
    out[11] = static_cast<std::uint8_t>(r);
    out[12] = static_cast<std::uint8_t>(index);
    out[13] = static_cast<std::uint8_t>(symbol_length >> 8);
    out[14] = static_cast<std::uint8_t>(symbol_length);
    return 0;
}

}  // namespace gs::mces::fec
