#include "core/mces/wire/packet.h"

#include <cerrno>

#include "core/mces/wire/crc32c.h"

namespace gs::mces::wire {

namespace {

constexpr std::uint8_t kLongBit = 0x80;
constexpr std::uint8_t kFixedBit = 0x40;
constexpr std::uint8_t kAuthBit = 0x20;
constexpr std::uint8_t kTypeShift = 3;
constexpr std::uint8_t kTypeMask = 0x18;
constexpr std::uint8_t kReservedLong = 0x04;
constexpr std::uint8_t kReservedShort = 0x1c;
constexpr std::uint8_t kPnLenMask = 0x03;

std::uint8_t pn_bits(std::uint8_t pn_len) noexcept {
    return static_cast<std::uint8_t>((pn_len - 1) & kPnLenMask);
}

bool read_cid(Reader& r, ConnectionId& cid, ParseError& err) noexcept {
    std::uint8_t len = 0;
    if (!r.u8(len)) {
        err = ParseError::truncated;
        return false;
    }
    if (len > kMaxCidLen) {
        err = ParseError::bad_cid_length;
        return false;
    }
    std::span<const std::uint8_t> b;
    if (!r.bytes(len, b)) {
        err = ParseError::truncated;
        return false;
    }
    cid = ConnectionId::from(b);
    return true;
}

void write_cid(Writer& w, const ConnectionId& cid) noexcept {
    if (cid.len > kMaxCidLen) return w.fail(-EINVAL);
    w.u8(cid.len);
    w.bytes(cid.view());
}

}  // namespace

const char* name(ParseError e) noexcept {
    switch (e) {
    case ParseError::ok: return "ok";
    case ParseError::truncated: return "truncated";
    case ParseError::bad_fixed_bit: return "bad_fixed_bit";
    case ParseError::reserved_bits: return "reserved_bits";
    case ParseError::unsupported_auth: return "unsupported_auth";
    case ParseError::bad_checksum: return "bad_checksum";
    case ParseError::bad_magic: return "bad_magic";
    case ParseError::bad_cid_length: return "bad_cid_length";
    case ParseError::bad_version_list: return "bad_version_list";
    case ParseError::unknown_frame: return "unknown_frame";
    case ParseError::frame_not_allowed: return "frame_not_allowed";
    case ParseError::too_many_ranges: return "too_many_ranges";
    case ParseError::bad_ack_range: return "bad_ack_range";
    case ParseError::bad_length: return "bad_length";
    case ParseError::bad_qos: return "bad_qos";
    case ParseError::bad_service_class: return "bad_service_class";
    case ParseError::bad_handshake: return "bad_handshake";
    case ParseError::missing_auth: return "missing_auth";
    case ParseError::count_: break;
    }
    return "?";
}

const char* name(PacketType t) noexcept {
    switch (t) {
    case PacketType::initial: return "INITIAL";
    case PacketType::retry: return "RETRY";
    case PacketType::accept: return "ACCEPT";
    case PacketType::refuse: return "REFUSE";
    case PacketType::version_negotiation: return "VERSION_NEGOTIATION";
    case PacketType::data: return "DATA";
    }
    return "?";
}

ConnectionId ConnectionId::from(std::span<const std::uint8_t> b) noexcept {
    ConnectionId c;
    c.len = static_cast<std::uint8_t>(b.size() < kMaxCidLen ? b.size() : kMaxCidLen);
    std::copy_n(b.begin(), c.len, c.bytes.begin());
    return c;
}

std::uint32_t PacketView::vn_version(std::size_t i) const noexcept {
    Reader r(payload.subspan(i * 4));
    std::uint32_t v = 0;
    r.u32(v);
    return v;
}

ParseError parse_packet(std::span<const std::uint8_t> bytes, std::size_t short_dcid_len,
                        PacketView& out, Checksum short_checksum, Auth auth) noexcept {
    if (short_dcid_len > kMaxCidLen) return ParseError::bad_cid_length;
    if (bytes.empty()) return ParseError::truncated;
    const std::uint8_t flags = bytes[0];
    // VERSION_NEGOTIATION (a long header with version 0) is never
    // authenticated: it looks the same to every version and every key.
    const bool vn = (flags & kLongBit) && bytes.size() >= 5 && bytes[1] == 0 && bytes[2] == 0 &&
                    bytes[3] == 0 && bytes[4] == 0;
    const bool authed = auth == Auth::on && !vn;
    // The handshake (long header) is always checked: it is what agrees to
    // leave the checksum off, so it cannot itself depend on that agreement.
    const bool checked = !authed && ((flags & kLongBit) || short_checksum == Checksum::crc32c);
    const std::size_t trailer = authed ? ((flags & kLongBit) ? kAuthProofLen : kAuthTagLen)
                                       : checked ? kChecksumLen : 0;
    // Bit 5 must say what the receiver expects: a keyless peer's packet to a
    // keyed endpoint, or the reverse, is dropped here (its trailer is not
    // what this receiver could check), and counted as such whatever its size.
    if ((flags & kAuthBit) && !authed) return ParseError::unsupported_auth;
    if (!(flags & kAuthBit) && authed) return ParseError::missing_auth;
    if (bytes.size() < 1 + trailer) return ParseError::truncated;
    if (!(flags & kFixedBit)) return ParseError::bad_fixed_bit;

    // The checksum first: a corrupted packet is reported as corrupted, not as
    // whichever field the corruption happened to land in.
    const std::size_t body_len = bytes.size() - trailer;
    if (checked) {
        Reader tail(bytes.subspan(body_len));
        std::uint32_t sent_crc = 0;
        tail.u32(sent_crc);
        if (crc32c(bytes.first(body_len)) != sent_crc) return ParseError::bad_checksum;
    }

    Reader r(bytes.first(body_len).subspan(1));
    PacketHeader& h = out.hdr;
    h = PacketHeader{};
    ParseError err = ParseError::ok;
    if (flags & kLongBit) {
        if (!r.u32(h.version)) return ParseError::truncated;
        if (h.version != 0 && !is_mces_version(h.version)) return ParseError::bad_magic;
        if (!read_cid(r, h.dcid, err) || !read_cid(r, h.scid, err)) return err;
        if (h.version == 0) {
            // VERSION_NEGOTIATION: no type, no packet number, a list of versions.
            if (flags & ~(kLongBit | kFixedBit)) return ParseError::reserved_bits;
            h.type = PacketType::version_negotiation;
            if (r.left() % 4 != 0) return ParseError::truncated;
            const std::size_t n = r.left() / 4;
            if (n == 0 || n > kMaxVnVersions) return ParseError::bad_version_list;
            r.bytes(r.left(), out.payload);
            return ParseError::ok;
        }
        if (flags & kReservedLong) return ParseError::reserved_bits;
        h.type = static_cast<PacketType>((flags & kTypeMask) >> kTypeShift);
    } else {
        if (flags & kReservedShort) return ParseError::reserved_bits;
        h.type = PacketType::data;
        std::span<const std::uint8_t> d;
        if (!r.bytes(short_dcid_len, d)) return ParseError::truncated;
        h.dcid = ConnectionId::from(d);
    }
    h.pn_len = static_cast<std::uint8_t>((flags & kPnLenMask) + 1);
    std::uint64_t pn = 0;
    if (!r.uint(h.pn_len, pn)) return ParseError::truncated;
    h.pn_truncated = static_cast<std::uint32_t>(pn);
    r.bytes(r.left(), out.payload);
    return ParseError::ok;
}

std::uint8_t packet_number_length(std::uint64_t pn, std::int64_t largest_acked) noexcept {
    // Enough bits for twice the distance to what the peer has acknowledged,
    // so the peer's decoding window holds pn.
    const std::uint64_t unacked =
        largest_acked < 0 ? pn + 1 : pn - static_cast<std::uint64_t>(largest_acked);
    const std::uint64_t range = unacked * 2;
    if (range < (std::uint64_t{1} << 8)) return 1;
    if (range < (std::uint64_t{1} << 16)) return 2;
    if (range < (std::uint64_t{1} << 24)) return 3;
    return 4;
}

std::uint64_t decode_packet_number(std::int64_t largest_received, std::uint32_t truncated,
                                   std::uint8_t pn_len) noexcept {
    if (pn_len < 1 || pn_len > 4) return truncated;
    const std::uint64_t expected = static_cast<std::uint64_t>(largest_received + 1);
    const std::uint64_t win = std::uint64_t{1} << (8 * pn_len);
    const std::uint64_t hwin = win / 2;
    const std::uint64_t mask = win - 1;
    const std::uint64_t candidate = (expected & ~mask) | truncated;
    if (candidate + hwin <= expected && candidate < (std::uint64_t{1} << 62) - win)
        return candidate + win;
    if (candidate > expected + hwin && candidate >= win) return candidate - win;
    return candidate;
}

void PacketWriter::begin_long(PacketType type, std::uint32_t version, const ConnectionId& dcid,
                              const ConnectionId& scid, std::uint64_t pn, std::uint8_t pn_len,
                              Auth auth) noexcept {
    auth_ = auth == Auth::on;
    trailer_ = auth_ ? kAuthProofLen : kChecksumLen;   // the handshake is always checked
    const auto t = static_cast<std::uint8_t>(type);
    if (t > 3 || pn_len < 1 || pn_len > 4 || !is_mces_version(version)) return w_.fail(-EINVAL);
    w_.u8(static_cast<std::uint8_t>(kLongBit | kFixedBit | (auth_ ? kAuthBit : 0) | (t << kTypeShift) |
                                    pn_bits(pn_len)));
    w_.u32(version);
    write_cid(w_, dcid);
    write_cid(w_, scid);
    w_.uint(pn_len, pn);
    header_len_ = w_.size();
}

void PacketWriter::begin_short(const ConnectionId& dcid, std::uint64_t pn, std::uint8_t pn_len,
                               Checksum checksum, Auth auth) noexcept {
    auth_ = auth == Auth::on;
    trailer_ = auth_ ? kAuthTagLen : checksum == Checksum::none ? 0 : kChecksumLen;
    if (pn_len < 1 || pn_len > 4) return w_.fail(-EINVAL);
    w_.u8(static_cast<std::uint8_t>(kFixedBit | (auth_ ? kAuthBit : 0) | pn_bits(pn_len)));
    w_.bytes(dcid.view());
    w_.uint(pn_len, pn);
    header_len_ = w_.size();
}

void PacketWriter::begin_version_negotiation(const ConnectionId& dcid, const ConnectionId& scid,
                                             std::span<const std::uint32_t> versions) noexcept {
    auth_ = false;
    trailer_ = kChecksumLen;
    if (versions.empty() || versions.size() > kMaxVnVersions) return w_.fail(-EINVAL);
    w_.u8(kLongBit | kFixedBit);
    w_.u32(0);
    write_cid(w_, dcid);
    write_cid(w_, scid);
    for (auto v : versions) w_.u32(v);
}

void PacketWriter::pad_to(std::size_t total) noexcept {
    const std::size_t have = w_.size() + trailer_;
    if (have < total) w_.zeros(total - have);
}

int PacketWriter::finish() noexcept {
    if (!w_.ok()) return w_.error();
    if (trailer_ == 0) return static_cast<int>(w_.size());
    if (auth_) {
        // Room for the tag or proof, filled by the caller's key.
        w_.zeros(trailer_);
        return w_.ok() ? static_cast<int>(w_.size()) : w_.error();
    }
    const std::uint32_t crc = crc32c(w_.written());
    w_.u32(crc);
    return w_.ok() ? static_cast<int>(w_.size()) : w_.error();
}

int PacketWriter::finish(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) noexcept {
    if (!w_.ok()) return w_.error();
    if (auth_) return -EINVAL;
    // No checksum: a and b are never read here, only sent.
    if (trailer_ == 0) return static_cast<int>(w_.size());
    const std::uint32_t crc = crc32c(b, crc32c(a, crc32c(w_.written())));
    w_.u32(crc);
    return w_.ok() ? static_cast<int>(w_.size()) : w_.error();
}

}  // namespace gs::mces::wire
