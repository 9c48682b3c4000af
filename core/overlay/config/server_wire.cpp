#include "core/overlay/config/server_wire.h"

#include <algorithm>
#include <cerrno>

namespace gs::overlay::server {

namespace {

class Writer {
public:
    void u8(std::uint8_t v) { b_.push_back(v); }
    void u16(std::uint16_t v) {
        u8(static_cast<std::uint8_t>(v >> 8));
        u8(static_cast<std::uint8_t>(v));
    }
    void u32(std::uint32_t v) {
        u16(static_cast<std::uint16_t>(v >> 16));
        u16(static_cast<std::uint16_t>(v));
    }
    void u64(std::uint64_t v) {
        u32(static_cast<std::uint32_t>(v >> 32));
        u32(static_cast<std::uint32_t>(v));
    }
    void bytes(std::string_view s) { b_.insert(b_.end(), s.begin(), s.end()); }
    void addr(const sansio::Addr& a) {
        b_.insert(b_.end(), a.ip.begin(), a.ip.end());
        u16(a.port);
    }
    std::vector<std::uint8_t> take() { return std::move(b_); }

private:
    std::vector<std::uint8_t> b_;
};

// Reads never run past the end: a short read sets ok_ to false and returns 0.
class Reader {
public:
    explicit Reader(std::span<const std::uint8_t> b) : b_(b) {}
    bool ok() const { return ok_; }
    bool done() const { return ok_ && pos_ == b_.size(); }
    std::size_t left() const { return b_.size() - pos_; }
    std::uint8_t u8() {
        if (!need(1)) return 0;
        return b_[pos_++];
    }
    std::uint16_t u16() {
        const std::uint16_t hi = u8();
        return static_cast<std::uint16_t>((hi << 8) | u8());
    }
    std::uint32_t u32() {
        const std::uint32_t hi = u16();
        return (hi << 16) | u16();
    }
    std::uint64_t u64() {
        const std::uint64_t hi = u32();
        return (hi << 32) | u32();
    }
    std::string text(std::size_t n) {
        if (!need(n)) return {};
        std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
        pos_ += n;
        return s;
    }
    sansio::Addr addr() {
        sansio::Addr a;
        if (!need(18)) return a;
        for (auto& x : a.ip) x = b_[pos_++];
        a.port = u16();
        return a;
    }
    void fail() { ok_ = false; }

private:
    bool need(std::size_t n) {
        if (!ok_ || left() < n) {
            ok_ = false;
            return false;
        }
        return true;
    }
    std::span<const std::uint8_t> b_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

bool printable(std::string_view s) {
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) return false;
    }
    return true;
}

void put_attrs(Writer& w, const Attributes& a) {
    const std::size_t n = std::min(a.size(), kMaxAttributes);
    w.u8(static_cast<std::uint8_t>(n));
    for (std::size_t i = 0; i < n; ++i) {
        const Attribute& x = a.items()[i];
        const std::string_view name = std::string_view(x.name).substr(0, kMaxNameBytes);
        const std::string_view value = std::string_view(x.value).substr(0, kMaxValueBytes);
        w.u8(static_cast<std::uint8_t>(name.size()));
        w.bytes(name);
        w.u16(static_cast<std::uint16_t>(value.size()));
        w.bytes(value);
    }
}

bool get_attrs(Reader& r, Attributes& out) {
    const std::size_t n = r.u8();
    if (n > kMaxAttributes) return false;
    for (std::size_t i = 0; i < n && r.ok(); ++i) {
        const std::size_t nl = r.u8();
        const std::string name = r.text(nl);
        const std::size_t vl = r.u16();
        if (vl > kMaxValueBytes) return false;
        const std::string value = r.text(vl);
        if (!r.ok() || !valid_name(name) || !printable(value) || out.find(name)) return false;
        out.set(name, value);
    }
    return r.ok();
}

void put_message(Writer& w, const std::string& m) {
    const std::string_view s = std::string_view(m).substr(0, kMaxMessage);
    w.u16(static_cast<std::uint16_t>(s.size()));
    w.bytes(s);
}

bool valid_op(std::uint8_t op) { return op >= 1 && op <= 7; }

void put_header(Writer& w, std::uint8_t op, std::uint32_t txid, std::uint64_t overlay) {
    w.u16(kMagic);
    w.u8(kVersion);
    w.u8(op);
    w.u32(txid);
    w.u64(overlay);
}

}  // namespace

const char* name(Op op) noexcept {
    switch (op) {
    case Op::create: return "CREATE";
    case Op::get: return "GET";
    case Op::join: return "JOIN";
    case Op::renew: return "RENEW";
    case Op::leave: return "LEAVE";
    case Op::list: return "LIST";
    case Op::stats: return "STATS";
    }
    return "?";
}

const char* name(Status s) noexcept {
    switch (s) {
    case Status::ok: return "ok";
    case Status::malformed: return "malformed";
    case Status::version: return "version";
    case Status::unknown_overlay: return "unknown overlay";
    case Status::conflict: return "conflict";
    case Status::bad_attributes: return "bad attributes";
    case Status::full: return "full";
    }
    return "?";
}

int decode_request(std::span<const std::uint8_t> bytes, Request& out) {
    out = Request{};
    if (bytes.size() < kHeaderSize) return kNotOurs;
    Reader r(bytes);
    if (r.u16() != kMagic) return kNotOurs;
    const std::uint8_t version = r.u8();
    const std::uint8_t op = r.u8();
    if (op & kAnswerBit) return kNotOurs;   // never answer an answer (no loops)
    out.txid = r.u32();
    out.overlay = r.u64();
    if (valid_op(op)) out.op = static_cast<Op>(op);
    if (version != kVersion) return kBadVersion;
    if (!valid_op(op) || bytes.size() > kMaxDatagram) return kMalformed;
    switch (out.op) {
    case Op::create:
        if (!get_attrs(r, out.attrs)) return kMalformed;
        break;
    case Op::get:
    case Op::stats:
        break;
    case Op::join:
        out.member = r.addr();
        out.lease_ms = r.u32();
        out.want = r.u8();
        if (out.want > kMaxWant) return kMalformed;
        break;
    case Op::renew:
        out.member = r.addr();
        out.lease_ms = r.u32();
        break;
    case Op::leave:
        out.member = r.addr();
        break;
    case Op::list:
        if (out.overlay == 0) out.cursor = r.u64();
        break;
    }
    if (!r.done()) return kMalformed;
    if (out.op != Op::list && out.op != Op::stats && out.overlay == 0) return kMalformed;
    return 0;
}

std::vector<std::uint8_t> encode_request(const Request& q) {
    Writer w;
    put_header(w, static_cast<std::uint8_t>(q.op), q.txid, q.overlay);
    switch (q.op) {
    case Op::create: put_attrs(w, q.attrs); break;
    case Op::get:
    case Op::stats: break;
    case Op::join:
        w.addr(q.member);
        w.u32(q.lease_ms);
        w.u8(std::min(q.want, kMaxWant));
        break;
    case Op::renew:
        w.addr(q.member);
        w.u32(q.lease_ms);
        break;
    case Op::leave: w.addr(q.member); break;
    case Op::list:
        if (q.overlay == 0) w.u64(q.cursor);
        break;
    }
    return w.take();
}

std::vector<std::uint8_t> encode_response(const Response& a) {
    Writer w;
    put_header(w, static_cast<std::uint8_t>(static_cast<std::uint8_t>(a.op) | kAnswerBit), a.txid,
               a.overlay);
    w.u8(static_cast<std::uint8_t>(a.status));
    if (a.status != Status::ok) {
        put_message(w, a.message);
        return w.take();
    }
    switch (a.op) {
    case Op::create:
        w.u8(a.created ? 1 : 0);
        put_attrs(w, a.attrs);
        break;
    case Op::get: put_attrs(w, a.attrs); break;
    case Op::join: {
        w.u32(a.lease_ms);
        const std::size_t n = std::min<std::size_t>(a.members.size(), kMaxWant);
        w.u8(static_cast<std::uint8_t>(n));
        for (std::size_t i = 0; i < n; ++i) w.addr(a.members[i].addr);
        break;
    }
    case Op::renew: w.u32(a.lease_ms); break;
    case Op::leave: break;
    case Op::list:
        if (a.overlay == 0) {
            const std::size_t n = std::min(a.overlays.size(), kMaxListOverlays);
            w.u8(a.more || n < a.overlays.size() ? 1 : 0);
            w.u8(static_cast<std::uint8_t>(n));
            for (std::size_t i = 0; i < n; ++i) {
                w.u64(a.overlays[i].id);
                w.u32(a.overlays[i].members);
                w.u8(a.overlays[i].protocol);
            }
        } else {
            const std::size_t n = std::min(a.members.size(), kMaxListMembers);
            w.u8(static_cast<std::uint8_t>(n));
            for (std::size_t i = 0; i < n; ++i) {
                w.addr(a.members[i].addr);
                w.u32(a.members[i].remaining_ms);
            }
        }
        break;
    case Op::stats: {
        const std::size_t n = std::min(a.stats.size(), kMaxStats);
        w.u8(static_cast<std::uint8_t>(n));
        for (std::size_t i = 0; i < n; ++i) {
            const std::string_view s = std::string_view(a.stats[i].first).substr(0, 64);
            w.u8(static_cast<std::uint8_t>(s.size()));
            w.bytes(s);
            w.u64(a.stats[i].second);
        }
        break;
    }
    }
    return w.take();
}

int decode_response(std::span<const std::uint8_t> bytes, Response& out) {
    out = Response{};
    if (bytes.size() < kHeaderSize + 1 || bytes.size() > kMaxDatagram) return kNotOurs;
    Reader r(bytes);
    if (r.u16() != kMagic || r.u8() != kVersion) return kNotOurs;
    const std::uint8_t op = r.u8();
    if (!(op & kAnswerBit) || !valid_op(op & 0x7f)) return kNotOurs;
    out.op = static_cast<Op>(op & 0x7f);
    out.txid = r.u32();
    out.overlay = r.u64();
    const std::uint8_t status = r.u8();
    if (status > static_cast<std::uint8_t>(Status::full)) return kMalformed;
    out.status = static_cast<Status>(status);
    if (out.status != Status::ok) {
        const std::size_t n = r.u16();
        if (n > kMaxMessage) return kMalformed;
        out.message = r.text(n);
        if (!printable(out.message)) return kMalformed;
        return r.done() ? 0 : kMalformed;
    }
    switch (out.op) {
    case Op::create:
        out.created = r.u8() != 0;
        if (!get_attrs(r, out.attrs)) return kMalformed;
        break;
    case Op::get:
        if (!get_attrs(r, out.attrs)) return kMalformed;
        break;
    case Op::join: {
        out.lease_ms = r.u32();
        const std::size_t n = r.u8();
        if (n > kMaxWant) return kMalformed;
        for (std::size_t i = 0; i < n && r.ok(); ++i) out.members.push_back({r.addr(), 0});
        break;
    }
    case Op::renew: out.lease_ms = r.u32(); break;
    case Op::leave: break;
    case Op::list:
        if (out.overlay == 0) {
            out.more = r.u8() != 0;
            const std::size_t n = r.u8();
            if (n > kMaxListOverlays) return kMalformed;
            for (std::size_t i = 0; i < n && r.ok(); ++i) {
                OverlaySummary s;
                s.id = r.u64();
                s.members = r.u32();
                s.protocol = r.u8();
                out.overlays.push_back(s);
            }
        } else {
            const std::size_t n = r.u8();
            if (n > kMaxListMembers) return kMalformed;
            for (std::size_t i = 0; i < n && r.ok(); ++i) {
                MemberEntry m;
                m.addr = r.addr();
                m.remaining_ms = r.u32();
                out.members.push_back(m);
            }
        }
        break;
    case Op::stats: {
        const std::size_t n = r.u8();
        if (n > kMaxStats) return kMalformed;
        for (std::size_t i = 0; i < n && r.ok(); ++i) {
            std::string s = r.text(r.u8());
            const std::uint64_t v = r.u64();
            out.stats.emplace_back(std::move(s), v);
        }
        break;
    }
    }
    return r.done() ? 0 : kMalformed;
}

}  // namespace gs::overlay::server
