#include "core/overlay/hc/wire.h"

#include <cstring>
#include <type_traits>

namespace gs::overlay::hc {

void View::add_move(Label label, std::uint32_t at_seq) {
    if (nmoves == kMaxMoves) {
        moves_floor = moves[0].seq;
        std::memmove(moves.data(), moves.data() + 1, (kMaxMoves - 1) * sizeof(Move));
        --nmoves;
    }
    moves[nmoves++] = Move{label, at_seq};
}

int compare_views(const View& a, const View& b) noexcept {
    if (a.epoch != b.epoch) return a.epoch < b.epoch ? -1 : 1;
    if (a.claim != b.claim) return a.claim < b.claim ? -1 : 1;
    if (a.seq != b.seq) return a.seq < b.seq ? -1 : 1;
    return 0;
}

namespace {

class Writer {
public:
    explicit Writer(std::vector<std::uint8_t>& out) : out_(out) {}
    void u8(std::uint8_t v) { out_.push_back(v); }
    void u16(std::uint16_t v) { u8(static_cast<std::uint8_t>(v >> 8)); u8(static_cast<std::uint8_t>(v)); }
    void u32(std::uint32_t v) { u16(static_cast<std::uint16_t>(v >> 16)); u16(static_cast<std::uint16_t>(v)); }
    void u64(std::uint64_t v) { u32(static_cast<std::uint32_t>(v >> 32)); u32(static_cast<std::uint32_t>(v)); }
    void addr(const Addr& a) { out_.insert(out_.end(), a.ip.begin(), a.ip.end()); u16(a.port); }
    void bytes(std::span<const std::uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
    void view(const View& v) {
        u32(v.epoch); u32(v.claim); u32(v.seq); u32(v.n);
        u64(v.cube);
        addr(v.head);
        u32(v.moves_floor);
        u8(v.nmoves);
        for (unsigned i = 0; i < v.nmoves && i < kMaxMoves; ++i) { u32(v.moves[i].label); u32(v.moves[i].seq); }
    }

private:
    std::vector<std::uint8_t>& out_;
};

// Reads big-endian fields; any read past the end sets bad_ and returns 0, so a
// parser checks once at the end.
class Reader {
public:
    explicit Reader(std::span<const std::uint8_t> b) : b_(b) {}
    bool bad() const { return bad_; }
    bool done() const { return !bad_ && pos_ == b_.size(); }
    std::size_t left() const { return bad_ ? 0 : b_.size() - pos_; }
    std::uint8_t u8() {
        if (pos_ + 1 > b_.size()) { bad_ = true; return 0; }
        return b_[pos_++];
    }
    std::uint16_t u16() { std::uint16_t h = u8(); return static_cast<std::uint16_t>((h << 8) | u8()); }
    std::uint32_t u32() { std::uint32_t h = u16(); return (h << 16) | u16(); }
    std::uint64_t u64() { std::uint64_t h = u32(); return (h << 32) | u32(); }
    Addr addr() {
        Addr a;
        if (pos_ + 16 > b_.size()) { bad_ = true; return a; }
        std::memcpy(a.ip.data(), b_.data() + pos_, 16);
        pos_ += 16;
        a.port = u16();
        return a;
    }
    Label label() {
        const std::uint32_t v = u32();
        if (v >= kMaxMembers) bad_ = true;
        return v;
    }
    std::span<const std::uint8_t> bytes(std::size_t n) {
        if (pos_ + n > b_.size()) { bad_ = true; return {}; }
        auto s = b_.subspan(pos_, n);
        pos_ += n;
        return s;
    }
    void fail() { bad_ = true; }
    View view() {
        View v;
        v.epoch = u32(); v.claim = u32(); v.seq = u32(); v.n = u32();
        v.cube = u64();
        v.head = addr();
        v.moves_floor = u32();
        v.nmoves = u8();
        if (v.n == 0 || v.n > kMaxMembers || v.claim >= kMaxMembers || v.nmoves > kMaxMoves) {
            fail();
            return v;
        }
        for (unsigned i = 0; i < v.nmoves; ++i) {
            v.moves[i].label = label();
            v.moves[i].seq = u32();
        }
        return v;
    }

private:
    std::span<const std::uint8_t> b_;
    std::size_t pos_ = 0;
    bool bad_ = false;
};

std::uint8_t ttl_ok(Reader& r) {
    const std::uint8_t t = r.u8();
    if (t > kMaxTtl) r.fail();
    return t;
}

}  // namespace

ParseResult parse(std::span<const std::uint8_t> bytes, std::uint64_t overlay, Message& out) {
    if (bytes.size() < kPrefixSize) return ParseResult::malformed;
    Reader r(bytes);
    const std::uint16_t magic = r.u16();
    const std::uint8_t version = r.u8();
    const std::uint8_t proto = r.u8();
    const std::uint64_t ov = r.u64();
    if (magic != kMagic || version != kVersion || proto != static_cast<std::uint8_t>(Protocol::hc) ||
        ov != overlay)
        return ParseResult::foreign;
    const std::uint8_t type = r.u8();
    switch (static_cast<Type>(type)) {
    case Type::join_req: {
        JoinReq m;
        m.joiner = r.addr(); m.nonce = r.u64(); m.ttl = ttl_ok(r);
        out = m;
        break;
    }
    case Type::join_ack: {
        JoinAck m;
        m.label = r.label(); m.sender = r.label(); m.nonce = r.u64(); m.view = r.view();
        out = m;
        break;
    }
    case Type::ping: {
        Ping m;
        m.sender = r.label(); m.flags = r.u8();
        if (m.flags & ~Ping::kReply) r.fail();
        m.view = r.view();
        out = m;
        break;
    }
    case Type::seek: {
        Seek m;
        m.target = r.label(); m.origin = r.label(); m.origin_addr = r.addr(); m.ttl = ttl_ok(r);
        out = m;
        break;
    }
    case Type::report: {
        Report m;
        m.missing = r.label(); m.reporter = r.label(); m.reporter_addr = r.addr();
        m.epoch = r.u32(); m.seq = r.u32(); m.flags = r.u8();
        if (m.flags & ~Report::kLeave) r.fail();
        m.ttl = ttl_ok(r);
        out = m;
        break;
    }
    case Type::leave: {
        Leave m;
        m.sender = r.label();
        out = m;
        break;
    }
    case Type::conflict: {
        Conflict m;
        m.label = r.label(); m.other = r.addr();
        out = m;
        break;
    }
    case Type::decline: {
        Decline m;
        m.label = r.label(); m.nonce = r.u64();
        out = m;
        break;
    }
    case Type::merge: {
        Merge m;
        m.cube = r.u64(); m.n = r.u32(); m.head = r.addr(); m.flags = r.u8();
        if (m.n == 0 || m.n > kMaxMembers || m.head.port == 0 || (m.flags & ~Merge::kOrder)) r.fail();
        m.ttl = ttl_ok(r);
        out = m;
        break;
    }
    case Type::dissolve: {
        Dissolve m;
        m.cube = r.u64(); m.target = r.addr();
        if (m.target.port == 0) r.fail();
        out = m;
        break;
    }
    case Type::data: {
        Data m;
        m.src = r.label(); m.incarnation = r.u32(); m.root = r.label();
        const std::uint8_t kind = r.u8();
        if (kind > static_cast<std::uint8_t>(Kind::node)) r.fail();
        m.kind = static_cast<Kind>(kind);
        m.dest = r.label(); m.seq = r.u32(); m.ttl = ttl_ok(r);
        const std::uint16_t len = r.u16();
        m.payload = r.bytes(len);
        out = m;
        break;
    }
    default:
        return ParseResult::malformed;
    }
    return r.done() ? ParseResult::ok : ParseResult::malformed;
}

void encode(const Message& m, std::uint64_t overlay, std::vector<std::uint8_t>& out) {
    out.clear();
    Writer w(out);
    w.u16(kMagic);
    w.u8(kVersion);
    w.u8(static_cast<std::uint8_t>(Protocol::hc));
    w.u64(overlay);
    std::visit(
        [&w](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, JoinReq>) {
                w.u8(static_cast<std::uint8_t>(Type::join_req));
                w.addr(v.joiner); w.u64(v.nonce); w.u8(v.ttl);
            } else if constexpr (std::is_same_v<T, JoinAck>) {
                w.u8(static_cast<std::uint8_t>(Type::join_ack));
                w.u32(v.label); w.u32(v.sender); w.u64(v.nonce); w.view(v.view);
            } else if constexpr (std::is_same_v<T, Ping>) {
                w.u8(static_cast<std::uint8_t>(Type::ping));
                w.u32(v.sender); w.u8(v.flags); w.view(v.view);
            } else if constexpr (std::is_same_v<T, Seek>) {
                w.u8(static_cast<std::uint8_t>(Type::seek));
                w.u32(v.target); w.u32(v.origin); w.addr(v.origin_addr); w.u8(v.ttl);
            } else if constexpr (std::is_same_v<T, Report>) {
                w.u8(static_cast<std::uint8_t>(Type::report));
                w.u32(v.missing); w.u32(v.reporter); w.addr(v.reporter_addr);
                w.u32(v.epoch); w.u32(v.seq); w.u8(v.flags); w.u8(v.ttl);
            } else if constexpr (std::is_same_v<T, Leave>) {
                w.u8(static_cast<std::uint8_t>(Type::leave));
                w.u32(v.sender);
            } else if constexpr (std::is_same_v<T, Conflict>) {
                w.u8(static_cast<std::uint8_t>(Type::conflict));
                w.u32(v.label); w.addr(v.other);
            } else if constexpr (std::is_same_v<T, Decline>) {
                w.u8(static_cast<std::uint8_t>(Type::decline));
                w.u32(v.label); w.u64(v.nonce);
            } else if constexpr (std::is_same_v<T, Merge>) {
                w.u8(static_cast<std::uint8_t>(Type::merge));
                w.u64(v.cube); w.u32(v.n); w.addr(v.head); w.u8(v.flags); w.u8(v.ttl);
            } else if constexpr (std::is_same_v<T, Dissolve>) {
                w.u8(static_cast<std::uint8_t>(Type::dissolve));
                w.u64(v.cube); w.addr(v.target);
            } else if constexpr (std::is_same_v<T, Data>) {
                w.u8(static_cast<std::uint8_t>(Type::data));
                w.u32(v.src); w.u32(v.incarnation); w.u32(v.root);
                w.u8(static_cast<std::uint8_t>(v.kind));
                w.u32(v.dest); w.u32(v.seq); w.u8(v.ttl);
                w.u16(static_cast<std::uint16_t>(v.payload.size()));
                w.bytes(v.payload);
            }
        },
        m);
}

}  // namespace gs::overlay::hc
