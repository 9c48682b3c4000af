#include "core/mces/wire/frame.h"

#include <algorithm>
#include <cerrno>
#include <limits>

namespace gs::mces::wire {

namespace {

constexpr std::uint8_t kQosRate = 1u << 0;
constexpr std::uint8_t kQosBurst = 1u << 1;
constexpr std::uint8_t kQosLatency = 1u << 2;
constexpr std::uint8_t kQosJitter = 1u << 3;
constexpr std::uint8_t kQosLoss = 1u << 4;
constexpr std::uint8_t kQosPriority = 1u << 5;
constexpr std::uint8_t kQosDscp = 1u << 6;
constexpr std::uint8_t kQosReserved = 1u << 7;
constexpr std::uint32_t kMaxLossPpm = 1'000'000;
constexpr std::uint8_t kMaxPriority = 7;
constexpr std::uint8_t kMaxDscp = 63;

bool qos_valid(const Qos& q) noexcept {
    return (!q.loss_ppm || *q.loss_ppm <= kMaxLossPpm) &&
           (!q.priority || *q.priority <= kMaxPriority) && (!q.dscp || *q.dscp <= kMaxDscp) &&
           (!q.rate || *q.rate <= kVarintMax) && (!q.burst || *q.burst <= kVarintMax);
}

void write_qos(Writer& w, const Qos& q) noexcept {
    if (!qos_valid(q)) return w.fail(-EINVAL);
    std::uint8_t mask = 0;
    if (q.rate) mask |= kQosRate;
    if (q.burst) mask |= kQosBurst;
    if (q.latency_us) mask |= kQosLatency;
    if (q.jitter_us) mask |= kQosJitter;
    if (q.loss_ppm) mask |= kQosLoss;
    if (q.priority) mask |= kQosPriority;
    if (q.dscp) mask |= kQosDscp;
    w.u8(mask);
    if (q.rate) w.varint(*q.rate);
    if (q.burst) w.varint(*q.burst);
    if (q.latency_us) w.varint(*q.latency_us);
    if (q.jitter_us) w.varint(*q.jitter_us);
    if (q.loss_ppm) w.varint(*q.loss_ppm);
    if (q.priority) w.varint(*q.priority);
    if (q.dscp) w.varint(*q.dscp);
}

// Reads one optional field when its presence bit is set; false (and err set)
// on truncation or a value above max.
template <typename T>
bool read_field(Reader& r, std::uint8_t mask, std::uint8_t bit, std::uint64_t max,
                std::optional<T>& out, ParseError& err) noexcept {
    if (!(mask & bit)) return true;
    std::uint64_t v = 0;
    if (!r.varint(v)) {
        err = ParseError::truncated;
        return false;
    }
    if (v > max) {
        err = ParseError::bad_qos;
        return false;
    }
    out = static_cast<T>(v);
    return true;
}

ParseError read_qos(Reader& r, Qos& q) noexcept {
    q = Qos{};
    std::uint8_t mask = 0;
    if (!r.u8(mask)) return ParseError::truncated;
    if (mask & kQosReserved) return ParseError::bad_qos;
    constexpr std::uint64_t u32max = std::numeric_limits<std::uint32_t>::max();
    ParseError err = ParseError::ok;
    if (read_field(r, mask, kQosRate, kVarintMax, q.rate, err) &&
        read_field(r, mask, kQosBurst, kVarintMax, q.burst, err) &&
        read_field(r, mask, kQosLatency, u32max, q.latency_us, err) &&
        read_field(r, mask, kQosJitter, u32max, q.jitter_us, err) &&
        read_field(r, mask, kQosLoss, kMaxLossPpm, q.loss_ppm, err) &&
        read_field(r, mask, kQosPriority, kMaxPriority, q.priority, err) &&
        read_field(r, mask, kQosDscp, kMaxDscp, q.dscp, err))
        return ParseError::ok;
    return err;
}

// A varint length, bounded by max, then that many bytes.
ParseError read_blob(Reader& r, std::uint64_t max, std::span<const std::uint8_t>& out) noexcept {
    std::uint64_t n = 0;
    if (!r.varint(n)) return ParseError::truncated;
    if (n > max) return ParseError::bad_length;
    if (!r.bytes(static_cast<std::size_t>(n), out)) return ParseError::truncated;
    return ParseError::ok;
}

void write_blob(Writer& w, std::span<const std::uint8_t> b, std::size_t max) noexcept {
    if (b.size() > max) return w.fail(-EINVAL);
    w.varint(b.size());
    w.bytes(b);
}

bool read_service_class(Reader& r, std::uint8_t& c, ParseError& err) noexcept {
    if (!r.u8(c)) {
        err = ParseError::truncated;
        return false;
    }
    if (c > kMaxServiceClass) {
        err = ParseError::bad_service_class;
        return false;
    }
    return true;
}

ParseError read_ack(Reader& r, AckFrame& a) noexcept {
    std::uint64_t extra = 0, first_range = 0;
    if (!r.varint(a.largest) || !r.varint(a.ack_delay_us) || !r.varint(extra))
        return ParseError::truncated;
    // Bound the count before reading anything it governs.
    if (extra >= kMaxAckRanges) return ParseError::too_many_ranges;
    if (!r.varint(first_range)) return ParseError::truncated;
    if (first_range > a.largest) return ParseError::bad_ack_range;
    a.ranges[0] = {a.largest - first_range, a.largest};
    a.count = 1;
    for (std::uint64_t i = 0; i < extra; ++i) {
        std::uint64_t gap = 0, len = 0;
        if (!r.varint(gap) || !r.varint(len)) return ParseError::truncated;
        const std::uint64_t prev_first = a.ranges[a.count - 1].first;
        // The next range ends at least two below the previous one's start (a
        // gap of 0 means exactly one missing packet number).
        if (prev_first < gap + 2) return ParseError::bad_ack_range;
        const std::uint64_t last = prev_first - gap - 2;
        if (last < len) return ParseError::bad_ack_range;
        a.ranges[a.count++] = {last - len, last};
    }
    return ParseError::ok;
}

}  // namespace

const char* name(FrameType t) noexcept {
    switch (t) {
    case FrameType::padding: return "PADDING";
    case FrameType::ping: return "PING";
    case FrameType::ack: return "ACK";
    case FrameType::reset: return "RESET";
    case FrameType::stream: return "STREAM";
    case FrameType::stream_fin: return "STREAM_FIN";
    case FrameType::datagram: return "DATAGRAM";
    case FrameType::max_data: return "MAX_DATA";
    case FrameType::close: return "CLOSE";
    case FrameType::message: return "MESSAGE";
    case FrameType::repair: return "REPAIR";
    case FrameType::timestamp: return "TIMESTAMP";
    case FrameType::message_last: return "MESSAGE_LAST";
    case FrameType::hello: return "HELLO";
    case FrameType::retry_token: return "RETRY_TOKEN";
    case FrameType::accept: return "ACCEPT";
    case FrameType::refuse: return "REFUSE";
    case FrameType::params: return "PARAMS";
    }
    return "?";
}

bool frame_allowed(PacketType p, FrameType f) noexcept {
    if (f == FrameType::padding) return p != PacketType::version_negotiation;
    switch (p) {
    case PacketType::initial: return f == FrameType::hello || f == FrameType::ping;
    case PacketType::retry: return f == FrameType::retry_token;
    case PacketType::accept: return f == FrameType::accept || f == FrameType::params;
    case PacketType::refuse: return f == FrameType::refuse;
    case PacketType::version_negotiation: return false;
    case PacketType::data:
        return f == FrameType::ping || f == FrameType::ack || f == FrameType::reset ||
               f == FrameType::stream || f == FrameType::stream_fin ||
               f == FrameType::datagram || f == FrameType::max_data || f == FrameType::close ||
               f == FrameType::message || f == FrameType::message_last || f == FrameType::repair ||
               f == FrameType::timestamp;
    }
    return false;
}

std::string describe(const Qos& q) {
    std::string s;
    auto add = [&s](const char* key, std::uint64_t v, const char* unit) {
        if (!s.empty()) s += ' ';
        s += key;
        s += '=';
        s += std::to_string(v);
        s += unit;
    };
    if (q.rate) add("rate", *q.rate, "B/s");
    if (q.burst) add("burst", *q.burst, "B");
    if (q.latency_us) add("latency", *q.latency_us, "us");
    if (q.jitter_us) add("jitter", *q.jitter_us, "us");
    if (q.loss_ppm) add("loss", *q.loss_ppm, "ppm");
    if (q.priority) add("priority", *q.priority, "");
    if (q.dscp) add("dscp", *q.dscp, "");
    return s.empty() ? "none" : s;
}

ParseError FrameReader::next(Frame& f) noexcept {
    if (err_ != ParseError::ok) return err_;
    if (r_.empty()) {
        done_ = true;
        return ParseError::ok;
    }
    auto fail = [this](ParseError e) {
        err_ = e;
        return e;
    };
    std::uint8_t t = 0;
    r_.u8(t);
    switch (t) {
    case 0x00: case 0x01: case 0x02: case 0x03: case 0x04: case 0x05: case 0x06: case 0x07:
    case 0x08: case 0x09: case 0x0a: case 0x0b: case 0x0c: case 0x10: case 0x11: case 0x12: case 0x13: case 0x14: break;
    default: return fail(ParseError::unknown_frame);
    }
    const auto type = static_cast<FrameType>(t);
    if (!frame_allowed(in_, type)) return fail(ParseError::frame_not_allowed);
    f.type = type;
    ParseError e = ParseError::ok;
    switch (type) {
    case FrameType::padding: {
        std::size_t n = 1;
        while (!r_.empty() && *r_.pos() == 0) {
            r_.skip(1);
            ++n;
        }
        f.padding_len = n;
        break;
    }
    case FrameType::ping: break;
    case FrameType::ack: e = read_ack(r_, f.ack); break;
    case FrameType::reset:
        if (!r_.varint(f.value) || !r_.varint(f.final_size)) e = ParseError::truncated;
        break;
    case FrameType::stream:
    case FrameType::stream_fin: {
        f.fin = type == FrameType::stream_fin;
        std::uint64_t len = 0;
        if (!r_.varint(f.offset) || !r_.varint(len)) {
            e = ParseError::truncated;
        } else if (len > kVarintMax - f.offset) {
            e = ParseError::bad_length;
        } else if (!r_.bytes(static_cast<std::size_t>(len), f.data)) {
            e = ParseError::truncated;
        }
        break;
    }
    case FrameType::datagram: e = read_blob(r_, kMaxPacketSize, f.data); break;
    case FrameType::max_data:
        if (!r_.varint(f.value)) e = ParseError::truncated;
        break;
    case FrameType::message:
    case FrameType::message_last: {
        std::uint16_t seq = 0;
        if (!r_.u16(seq)) {
            e = ParseError::truncated;
            break;
        }
        f.seq = seq;
        // MESSAGE_LAST runs to the payload's end: the packet layer has cut
        // the CRC or AEAD tag off already (parse_packet), so what is left
        // is the body, exactly.
        if (type == FrameType::message) e = read_blob(r_, kMaxPacketSize, f.body);
        else r_.bytes(r_.left(), f.body);
        if (e != ParseError::ok) break;
        if (f.body.size() < kMessageTimestampLen) {
            e = ParseError::bad_length;
        } else {
            f.value = get_stamp(f.body);
            f.data = f.body.subspan(kMessageTimestampLen);
        }
        break;
    }
    case FrameType::repair: e = read_blob(r_, kMaxPacketSize, f.body); break;
    case FrameType::timestamp:
        if (!r_.varint(f.value)) e = ParseError::truncated;
        break;
    case FrameType::close:
        if (!r_.varint(f.value)) e = ParseError::truncated;
        else e = read_blob(r_, kMaxReasonLen, f.reason);
        break;
    case FrameType::hello: {
        HelloFrame& h = f.hello;
        std::uint8_t n = 0;
        if (!r_.u8(n)) {
            e = ParseError::truncated;
            break;
        }
        if (n == 0 || n > kMaxHelloVersions) {
            e = ParseError::bad_version_list;
            break;
        }
        h.version_count = n;
        for (std::size_t i = 0; i < n && e == ParseError::ok; ++i)
            if (!r_.u32(h.versions[i])) e = ParseError::truncated;
        if (e != ParseError::ok || !read_service_class(r_, h.service_class, e)) break;
        e = read_qos(r_, h.qos);
        if (e == ParseError::ok) e = read_blob(r_, kMaxTokenLen, h.token);
        break;
    }
    case FrameType::retry_token:
        e = read_blob(r_, kMaxTokenLen, f.token);
        if (e == ParseError::ok && f.token.empty()) e = ParseError::bad_length;
        break;
    case FrameType::accept:
        if (read_service_class(r_, f.service_class, e)) e = read_qos(r_, f.qos);
        break;
    case FrameType::refuse: {
        RefuseFrame& rf = f.refuse;
        if (!r_.varint(rf.code)) {
            e = ParseError::truncated;
            break;
        }
        if (!read_service_class(r_, rf.service_class, e)) break;
        e = read_qos(r_, rf.asked);
        if (e == ParseError::ok) e = read_qos(r_, rf.available);
        if (e == ParseError::ok) e = read_blob(r_, kMaxReasonLen, rf.reason);
        break;
    }
    case FrameType::params:
        if (!r_.varint(f.value)) e = ParseError::truncated;
        else if (f.value & ~kParamsKnown) e = ParseError::reserved_bits;
        break;
    }
    if (e != ParseError::ok) return fail(e);
    return ParseError::ok;
}

ParseError validate_payload(PacketType in, std::span<const std::uint8_t> payload) noexcept {
    FrameReader fr(in, payload);
    Frame f;
    while (fr.next(f) == ParseError::ok && !fr.done()) {
    }
    return fr.error();
}

void write_padding(Writer& w, std::size_t n) noexcept { w.zeros(n); }

void write_ping(Writer& w) noexcept { w.u8(static_cast<std::uint8_t>(FrameType::ping)); }

void write_ack(Writer& w, const AckFrame& a) noexcept {
    if (a.count == 0 || a.count > kMaxAckRanges || a.ranges[0].last != a.largest ||
        a.largest > kVarintMax)
        return w.fail(-EINVAL);
    for (std::size_t i = 0; i < a.count; ++i) {
        if (a.ranges[i].first > a.ranges[i].last) return w.fail(-EINVAL);
        if (i > 0 && (a.ranges[i].last >= a.ranges[i - 1].first ||
                      a.ranges[i - 1].first - a.ranges[i].last < 2))
            return w.fail(-EINVAL);
    }
    w.u8(static_cast<std::uint8_t>(FrameType::ack));
    w.varint(a.largest);
    w.varint(a.ack_delay_us);
    w.varint(a.count - 1);
    w.varint(a.ranges[0].last - a.ranges[0].first);
    for (std::size_t i = 1; i < a.count; ++i) {
        w.varint(a.ranges[i - 1].first - a.ranges[i].last - 2);
        w.varint(a.ranges[i].last - a.ranges[i].first);
    }
}

void write_reset(Writer& w, std::uint64_t code, std::uint64_t final_size) noexcept {
    w.u8(static_cast<std::uint8_t>(FrameType::reset));
    w.varint(code);
    w.varint(final_size);
}

void write_stream_header(Writer& w, std::uint64_t offset, std::size_t len, bool fin) noexcept {
    if (offset > kVarintMax || len > kVarintMax - offset) return w.fail(-EINVAL);
    w.u8(static_cast<std::uint8_t>(fin ? FrameType::stream_fin : FrameType::stream));
    w.varint(offset);
    w.varint(len);
}

void write_stream(Writer& w, std::uint64_t offset, std::span<const std::uint8_t> data,
                  bool fin) noexcept {
    write_stream_header(w, offset, data.size(), fin);
    w.bytes(data);
}

void write_datagram(Writer& w, std::span<const std::uint8_t> data) noexcept {
    w.u8(static_cast<std::uint8_t>(FrameType::datagram));
    write_blob(w, data, kMaxPacketSize);
}

void write_message(Writer& w, std::uint64_t seq, std::span<const std::uint8_t> body,
                   bool last) noexcept {
    if (body.size() < kMessageTimestampLen || body.size() > kMaxPacketSize) return w.fail(-EINVAL);
    w.u8(static_cast<std::uint8_t>(last ? FrameType::message_last : FrameType::message));
    w.u16(static_cast<std::uint16_t>(seq));
    if (!last) w.varint(body.size());
    w.bytes(body);
}

// The sequence space is 2^16, decoded like a 2-byte packet number: right
// for every seq from largest - 32766 to largest + 32769. Why every copy that
// can still be delivered is in that range: the sender keeps at most
// kMaxMessageSpan messages (Connection::send_datagram), so a copy it sends
// is at most kMaxMessageSpan - 1 = 32766 below the newest it sent, hence
// below the largest we received; the timing buffer holds at most
// kMaxMessageSpan sequence numbers from its next one, which is at most
// largest + 1 (timing_buffer.h). A copy older than that (it waited in the
// network while 32,767 newer messages were sent) decodes 2^16 too high, but
// it is past its deadline, which Connection checks before the seq is used:
// dropped as late, never delivered. Not covered: after more than 32,768
// consecutive messages lost (an outage that long at the stream's rate) the
// next ones decode 2^16 low, are taken for old copies (duplicates) until
// their numbers pass the largest again, and FEC, whose REPAIR frames name
// seqs in full, no longer matches them (docs/mces.md).
std::uint64_t decode_message_seq(std::int64_t largest_received, std::uint64_t truncated) noexcept {
    return decode_packet_number(largest_received, static_cast<std::uint32_t>(truncated & 0xffff),
                                static_cast<std::uint8_t>(kMessageSeqLen));
}

std::uint64_t unwrap_stamp(std::uint64_t reference_us, std::uint64_t stamp32) noexcept {
    constexpr std::int64_t kWrap = std::int64_t{1} << 32;
    const auto d = static_cast<std::int32_t>(static_cast<std::uint32_t>(stamp32) -
                                             static_cast<std::uint32_t>(reference_us));
    const std::int64_t ref = static_cast<std::int64_t>(std::min<std::uint64_t>(reference_us, kVarintMax));
    std::int64_t t = ref + d;
    // Near 0 (the connection's first 35 minutes, reference 0 before any
    // TIMESTAMP): times before the origin do not exist, the later candidate does.
    if (t < 0) t += kWrap;
    return static_cast<std::uint64_t>(t);
}

void put_stamp(std::span<std::uint8_t> body, std::uint64_t time_us) noexcept {
    for (std::size_t i = 0; i < kMessageTimestampLen; ++i)
        body[i] = static_cast<std::uint8_t>(time_us >> (8 * (kMessageTimestampLen - 1 - i)));
}

std::uint32_t get_stamp(std::span<const std::uint8_t> body) noexcept {
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < kMessageTimestampLen; ++i) v = (v << 8) | body[i];
    return v;
}

void write_repair(Writer& w, std::span<const std::uint8_t> body) noexcept {
    w.u8(static_cast<std::uint8_t>(FrameType::repair));
    write_blob(w, body, kMaxPacketSize);
}

void write_timestamp(Writer& w, std::uint64_t time_us) noexcept {
    if (time_us > kVarintMax) return w.fail(-EINVAL);
    w.u8(static_cast<std::uint8_t>(FrameType::timestamp));
    w.varint(time_us);
}

void write_max_data(Writer& w, std::uint64_t maximum) noexcept {
    w.u8(static_cast<std::uint8_t>(FrameType::max_data));
    w.varint(maximum);
}

void write_close(Writer& w, std::uint64_t code, std::span<const std::uint8_t> reason) noexcept {
    w.u8(static_cast<std::uint8_t>(FrameType::close));
    w.varint(code);
    write_blob(w, reason, kMaxReasonLen);
}

void write_hello(Writer& w, const HelloFrame& h) noexcept {
    if (h.version_count == 0 || h.version_count > kMaxHelloVersions ||
        h.service_class > kMaxServiceClass)
        return w.fail(-EINVAL);
    w.u8(static_cast<std::uint8_t>(FrameType::hello));
    w.u8(static_cast<std::uint8_t>(h.version_count));
    for (std::size_t i = 0; i < h.version_count; ++i) w.u32(h.versions[i]);
    w.u8(h.service_class);
    write_qos(w, h.qos);
    write_blob(w, h.token, kMaxTokenLen);
}

void write_retry_token(Writer& w, std::span<const std::uint8_t> token) noexcept {
    if (token.empty()) return w.fail(-EINVAL);
    w.u8(static_cast<std::uint8_t>(FrameType::retry_token));
    write_blob(w, token, kMaxTokenLen);
}

void write_accept(Writer& w, std::uint8_t service_class, const Qos& granted) noexcept {
    if (service_class > kMaxServiceClass) return w.fail(-EINVAL);
    w.u8(static_cast<std::uint8_t>(FrameType::accept));
    w.u8(service_class);
    write_qos(w, granted);
}

void write_refuse(Writer& w, const RefuseFrame& r) noexcept {
    if (r.service_class > kMaxServiceClass) return w.fail(-EINVAL);
    w.u8(static_cast<std::uint8_t>(FrameType::refuse));
    w.varint(r.code);
    w.u8(r.service_class);
    write_qos(w, r.asked);
    write_qos(w, r.available);
    write_blob(w, r.reason, kMaxReasonLen);
}

void write_params(Writer& w, std::uint64_t flags) noexcept {
    if (flags & ~kParamsKnown) return w.fail(-EINVAL);
    w.u8(static_cast<std::uint8_t>(FrameType::params));
    w.varint(flags);
}

void write_frame(Writer& w, const Frame& f) noexcept {
    switch (f.type) {
    case FrameType::padding: write_padding(w, f.padding_len); break;
    case FrameType::ping: write_ping(w); break;
    case FrameType::ack: write_ack(w, f.ack); break;
    case FrameType::reset: write_reset(w, f.value, f.final_size); break;
    case FrameType::stream:
    case FrameType::stream_fin:
        write_stream(w, f.offset, f.data, f.type == FrameType::stream_fin);
        break;
    case FrameType::datagram: write_datagram(w, f.data); break;
    case FrameType::max_data: write_max_data(w, f.value); break;
    case FrameType::message:
    case FrameType::message_last:
        write_message(w, f.seq, f.body, f.type == FrameType::message_last);
        break;
    case FrameType::repair: write_repair(w, f.body); break;
    case FrameType::timestamp: write_timestamp(w, f.value); break;
    case FrameType::close: write_close(w, f.value, f.reason); break;
    case FrameType::hello: write_hello(w, f.hello); break;
    case FrameType::retry_token: write_retry_token(w, f.token); break;
    case FrameType::accept: write_accept(w, f.service_class, f.qos); break;
    case FrameType::refuse: write_refuse(w, f.refuse); break;
    case FrameType::params: write_params(w, f.value); break;
    }
}

std::size_t stream_overhead(std::uint64_t offset, std::size_t n) noexcept {
    return 1 + varint_size(offset) + varint_size(n);
}

std::size_t datagram_overhead(std::size_t n) noexcept { return 1 + varint_size(n); }

std::size_t message_overhead(std::size_t n, bool last) noexcept {
    return 1 + kMessageSeqLen + (last ? 0 : varint_size(n));
}

std::size_t repair_overhead(std::size_t n) noexcept { return 1 + varint_size(n); }

}  // namespace gs::mces::wire
