// MCES frames: what a packet's payload is made of (docs/mces.md has the
// byte-by-byte tables). Every frame starts with a one-byte type; integers are
// varints unless stated.
//
//   0x00 PADDING      (a run of zero bytes)
//   0x01 PING
//   0x02 ACK          largest, ack_delay_us, extra_ranges, first_range, (gap, length)*
//   0x03 RESET        code, final_size                       (abortive close)
//   0x04 STREAM       offset, length, data                   (0x05: the same with FIN)
//   0x06 DATAGRAM     length, data                           (one class-0 message)
//   0x07 MAX_DATA     maximum                                (flow-control credit)
//   0x08 CLOSE        code, reason_len, reason               (graceful close)
//   0x09 MESSAGE      seq(2), length, stamp(4) data          (one realtime message, class 3)
//   0x0A REPAIR       length, body                            (an FEC repair symbol, fec/repair_frame.h)
//   0x0B TIMESTAMP    time_us                                 (the sender's clock when the packet was built)
//   0x0C MESSAGE_LAST seq(2), stamp(4) data                  (MESSAGE ending the payload: no length)
//   0x10 HELLO        n(1) version(4)*n, class(1), qos, token_len, token
//   0x11 RETRY_TOKEN  token_len, token
//   0x12 ACCEPT       class(1), qos                           (what was granted)
//   0x13 REFUSE       code, class(1), asked qos, available qos, reason_len, reason
//   0x14 PARAMS       flags                                   (in ACCEPT: offers agreed)
//
// FrameReader walks a payload and yields one Frame at a time; the frame's byte
// fields (data, reason, token) view the payload, so the payload must outlive
// the frame. Counts an attacker controls are bounded by the constants below:
// nothing is allocated.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "core/mces/types.h"
#include "core/mces/wire/codec.h"
#include "core/mces/wire/packet.h"

namespace gs::mces::wire {

constexpr std::size_t kMaxAckRanges = 32;     // ranges one ACK frame may carry
constexpr std::size_t kMaxReasonLen = 256;    // CLOSE and REFUSE reason text
constexpr std::size_t kMaxTokenLen = 64;      // HELLO and RETRY_TOKEN token
constexpr std::size_t kMaxHelloVersions = 8;  // versions a HELLO may list
constexpr std::uint8_t kMaxServiceClass = 4;  // 0 datagram .. 4 group
// MESSAGE carries what SRT's data header carries, in as few bytes (a
// realtime stream pays them on every packet; docs/mces.md, "Realtime class
// (class 3)"): the low 16 bits of the sequence number, decoded against the
// largest one received (decode_message_seq), and the low 32 bits of the send
// time (microseconds on the sender's clock, big-endian, leading the
// message's bytes), unwrapped against the receiver's estimate of the
// sender's clock (unwrap_stamp). MESSAGE_LAST, the form a packet's last frame
// takes, drops the length as well.
constexpr std::size_t kMessageSeqLen = 2;
constexpr std::size_t kMessageTimestampLen = 4;
// A MESSAGE's overhead at most beyond the message: type, seq, a 4-byte
// length varint, the stamp; a MESSAGE_LAST's: type, seq, the stamp.
constexpr std::size_t kMaxMessageOverhead = 1 + kMessageSeqLen + 4 + kMessageTimestampLen;
constexpr std::size_t kMessageLastOverhead = 1 + kMessageSeqLen + kMessageTimestampLen;
// The most sequence numbers a sender may have in flight (its queue's span)
// and a receiver may hold (its timing buffer's window), so that every copy
// that can still be delivered is within half the 2^16 sequence space of the
// largest received: decode_message_seq then names it right.
constexpr std::size_t kMaxMessageSpan = (std::size_t{1} << (8 * kMessageSeqLen - 1)) - 1;
// REPAIR: the overhead of its carrier, type and a 4-byte length varint.
constexpr std::size_t kMaxRepairCarrier = 1 + 4;

// PARAMS flags: which of the client's offers (packet.h, kOffer*) the server
// agreed to. A server sets only bits for offers the client made, so a client
// never sees a PARAMS frame it cannot read; any other bit is reserved_bits.
constexpr std::uint64_t kParamNoChecksum = 1u << 0;   // kOfferNoChecksum
constexpr std::uint64_t kParamsKnown = kParamNoChecksum;

enum class FrameType : std::uint8_t {
    padding = 0x00,
    ping = 0x01,
    ack = 0x02,
    reset = 0x03,
    stream = 0x04,
    stream_fin = 0x05,
    datagram = 0x06,
    max_data = 0x07,
    close = 0x08,
    message = 0x09,
    repair = 0x0a,
    timestamp = 0x0b,
    message_last = 0x0c,
    hello = 0x10,
    retry_token = 0x11,
    accept = 0x12,
    refuse = 0x13,
    params = 0x14,
};
const char* name(FrameType t) noexcept;

// Whether a packet of type p may carry a frame of type f: handshake frames
// only in their handshake packet, connection frames only in short packets.
bool frame_allowed(PacketType p, FrameType f) noexcept;

// A QoS request or grant. Every field is optional; units as in the policy:
// bytes per second, bytes, microseconds, parts per million.
// On the wire: a presence byte (bit 0 rate, 1 burst, 2 latency, 3 jitter,
// 4 loss, 5 priority, 6 dscp; bit 7 reserved 0), then each present field as
// a varint in that order.
struct Qos {
    std::optional<std::uint64_t> rate;        // bytes/s
    std::optional<std::uint64_t> burst;       // bytes
    std::optional<std::uint32_t> latency_us;  // latency bound
    std::optional<std::uint32_t> jitter_us;   // jitter bound
    std::optional<std::uint32_t> loss_ppm;    // loss tolerance, <= 1,000,000
    std::optional<std::uint8_t> priority;     // 0-7
    std::optional<std::uint8_t> dscp;         // 0-63
    friend bool operator==(const Qos&, const Qos&) = default;
};
// "rate=1000000B/s latency=20000us", "none" when nothing is set.
std::string describe(const Qos& q);

struct AckFrame {
    std::uint64_t largest = 0;
    std::uint64_t ack_delay_us = 0;
    // Descending, disjoint and not adjacent; ranges[0].last == largest.
    std::array<PacketRange, kMaxAckRanges> ranges{};
    std::size_t count = 0;
};

struct HelloFrame {
    std::array<std::uint32_t, kMaxHelloVersions> versions{};   // the client's, preferred first
    std::size_t version_count = 0;
    std::uint8_t service_class = 0;
    Qos qos;
    std::span<const std::uint8_t> token;   // empty before the server sent a cookie
};

struct RefuseFrame {
    std::uint64_t code = 0;
    std::uint8_t service_class = 0;        // asked
    Qos asked;
    Qos available;
    std::span<const std::uint8_t> reason;
};

// One decoded frame. Only the members that belong to `type` are meaningful.
struct Frame {
    FrameType type = FrameType::padding;
    std::size_t padding_len = 0;                 // PADDING: bytes in the run
    AckFrame ack;                                // ACK
    std::uint64_t offset = 0;                    // STREAM
    bool fin = false;                            // STREAM
    std::span<const std::uint8_t> data;          // STREAM, DATAGRAM; MESSAGE: the message
    std::uint64_t value = 0;                     // MAX_DATA maximum; CLOSE, RESET code; PARAMS flags;
                                                 // MESSAGE stamp (the low 32 bits, as sent);
                                                 // TIMESTAMP time (microseconds)
    std::uint64_t seq = 0;                       // MESSAGE seq: the low 16 bits, as sent
    // MESSAGE: timestamp and message (what FEC protects); REPAIR: the body.
    std::span<const std::uint8_t> body;
    std::uint64_t final_size = 0;                // RESET
    std::span<const std::uint8_t> reason;        // CLOSE
    HelloFrame hello;                            // HELLO
    std::span<const std::uint8_t> token;         // RETRY_TOKEN
    std::uint8_t service_class = 0;              // ACCEPT
    Qos qos;                                     // ACCEPT
    RefuseFrame refuse;                          // REFUSE
};

// Walks the frames of a payload received in a packet of type `in`:
//     FrameReader fr(view.hdr.type, view.payload);
//     Frame f;
//     while (fr.next(f) == ParseError::ok) use(f);
//     if (fr.error() != ParseError::ok) drop the packet;
// next() returns ok with a frame, or an error; at the end of the payload it
// returns ParseError::ok with done() true and leaves f untouched. After an
// error it keeps returning that error.
class FrameReader {
public:
    FrameReader(PacketType in, std::span<const std::uint8_t> payload) noexcept
        : in_(in), r_(payload) {}
    ParseError next(Frame& f) noexcept;
    bool done() const noexcept { return done_; }
    ParseError error() const noexcept { return err_; }

private:
    PacketType in_;
    Reader r_;
    ParseError err_ = ParseError::ok;
    bool done_ = false;
};

// Checks a whole payload: every frame well-formed and allowed in `in`.
// Returns the first error, or ok.
ParseError validate_payload(PacketType in, std::span<const std::uint8_t> payload) noexcept;

// Encoders. Each appends one frame; a value the format cannot carry (ranges
// out of order, a reason over kMaxReasonLen, ...) fails the writer with
// -EINVAL, a frame that does not fit with -EMSGSIZE.
void write_padding(Writer& w, std::size_t n) noexcept;
void write_ping(Writer& w) noexcept;
void write_ack(Writer& w, const AckFrame& a) noexcept;
void write_reset(Writer& w, std::uint64_t code, std::uint64_t final_size) noexcept;
void write_stream(Writer& w, std::uint64_t offset, std::span<const std::uint8_t> data,
                  bool fin) noexcept;
// A STREAM frame's type, offset and length only; the caller then writes
// exactly `len` payload bytes (Writer::take), so the payload is copied once,
// from the send buffer into the packet.
void write_stream_header(Writer& w, std::uint64_t offset, std::size_t len, bool fin) noexcept;
void write_datagram(Writer& w, std::span<const std::uint8_t> data) noexcept;
// MESSAGE from its body (the 4-byte stamp, then the message) and the low 16
// bits of seq; `last`: MESSAGE_LAST, without a length, for the frame that
// ends the packet's payload (the caller writes nothing after it). A body
// shorter than the stamp fails with -EINVAL.
void write_message(Writer& w, std::uint64_t seq, std::span<const std::uint8_t> body,
                   bool last = false) noexcept;
// The sequence number a MESSAGE's low 16 bits name: the one nearest the
// largest received so far (-1: none yet), as packet numbers are decoded.
std::uint64_t decode_message_seq(std::int64_t largest_received, std::uint64_t truncated) noexcept;
// A MESSAGE's stamp (the low 32 bits of a microsecond time) as a full time:
// the value nearest `reference` (reference + int32(stamp - uint32(reference))),
// never below 0. Right when the true time is within 2^31 us (35.8 minutes)
// of the reference.
std::uint64_t unwrap_stamp(std::uint64_t reference_us, std::uint64_t stamp32) noexcept;
// The 4 bytes a message's body starts with, from its full send time.
void put_stamp(std::span<std::uint8_t> body, std::uint64_t time_us) noexcept;
// The stamp (low 32 bits) a body (at least kMessageTimestampLen bytes) starts with.
std::uint32_t get_stamp(std::span<const std::uint8_t> body) noexcept;
// REPAIR carrying `body` (fec::Encoder's output; not checked here).
void write_repair(Writer& w, std::span<const std::uint8_t> body) noexcept;
void write_timestamp(Writer& w, std::uint64_t time_us) noexcept;
void write_max_data(Writer& w, std::uint64_t maximum) noexcept;
void write_close(Writer& w, std::uint64_t code, std::span<const std::uint8_t> reason) noexcept;
void write_hello(Writer& w, const HelloFrame& h) noexcept;
void write_retry_token(Writer& w, std::span<const std::uint8_t> token) noexcept;
void write_accept(Writer& w, std::uint8_t service_class, const Qos& granted) noexcept;
void write_refuse(Writer& w, const RefuseFrame& r) noexcept;
// flags: kParam* bits only (else -EINVAL).
void write_params(Writer& w, std::uint64_t flags) noexcept;
// Any frame, by its type (the inverse of FrameReader::next).
void write_frame(Writer& w, const Frame& f) noexcept;

// Bytes STREAM / DATAGRAM overhead takes for a payload of n bytes at offset.
std::size_t stream_overhead(std::uint64_t offset, std::size_t n) noexcept;
std::size_t datagram_overhead(std::size_t n) noexcept;
// Bytes MESSAGE (body of n bytes, the stamp included; `last`: MESSAGE_LAST)
// and REPAIR (body of n bytes) take beyond their body.
std::size_t message_overhead(std::size_t n, bool last = false) noexcept;
std::size_t repair_overhead(std::size_t n) noexcept;

}  // namespace gs::mces::wire
