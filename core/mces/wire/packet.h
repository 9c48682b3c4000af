// MCES packets: the versioned header, the compact packet number and the
// CRC32C trailer (docs/mces.md has the byte-by-byte tables).
//
//   long header  (handshake: INITIAL, RETRY, ACCEPT, REFUSE)
//     flags(1) version(4) dcid_len(1) dcid scid_len(1) scid pn(1-4) frames.. crc32c(4)
//   version negotiation (a long header with version 0)
//     flags(1) 0x00000000 dcid_len(1) dcid scid_len(1) scid version(4)*n crc32c(4)
//   short header (after the handshake)
//     flags(1) dcid(the length the receiver chose) pn(1-4) frames.. [crc32c(4)]
//
// Long-header packets always end in the CRC32C. A short packet ends in it
// unless the connection agreed in its handshake to drop it (handshake.h,
// "no checksum"); nothing in the packet says which: the receiver knows from
// the connection its destination ID names, and tells parse_packet.
//
// flags: bit 7 long form, bit 6 fixed 1, bit 5 authenticated, bits 4-3 long
// packet type, bit 2 reserved 0, bits 1-0 packet number length - 1.
// Versions are 0x4D43xxxx ("MC" + a number); version 1 is 0x4D430001.
//
// Authenticated endpoints (a pre-shared key, core/mces/auth; the receiver
// says so with Auth::on, as it says Checksum): every packet but
// VERSION_NEGOTIATION has bit 5 set and ends in another trailer instead of
// the CRC32C:
//   long header    the 32-byte handshake proof (nonce 16 | tag 16, proof.h)
//   short header   the 16-byte AEAD tag (protect.h); the frames between
//                  header and tag are encrypted (Mode::encrypt) or clear
// parse_packet() only checks that the bit matches what the receiver expects
// (unsupported_auth: set for a keyless receiver; missing_auth: clear for a
// keyed one) and sets the trailer aside: the proof and the tag need the key,
// so the handshake and the connection check them. VERSION_NEGOTIATION is the
// same in every version and keyed or not: bit 5 clear, CRC32C.
//
// parse_packet() checks every length and the checksum and returns a view into
// the caller's bytes; it never allocates. PacketWriter encodes into a buffer
// the caller owns.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/mces/wire/codec.h"

namespace gs::mces::wire {

constexpr std::uint32_t kVersionMagic = 0x4D430000;   // "MC"
constexpr std::uint32_t kVersionMagicMask = 0xFFFF0000;
constexpr std::uint32_t kVersion1 = 0x4D430001;
constexpr std::size_t kMaxCidLen = 20;
constexpr std::size_t kChecksumLen = 4;
constexpr std::size_t kMinInitialSize = 1200;          // a client INITIAL datagram, at least
constexpr std::size_t kMaxPacketSize = 65527;          // the largest UDP payload over IPv4
constexpr std::size_t kMaxVnVersions = 16;             // versions a VERSION_NEGOTIATION may list

// Whether a short-header packet ends in the 4-byte CRC32C. Long-header
// packets always do, whatever is asked.
enum class Checksum : std::uint8_t {
    crc32c,   // the default, and every connection that did not agree otherwise
    none,     // agreed in the handshake: UDP's own checksum guards the datagram
};

// Whether the receiver (or the writer's packet) is authenticated: flags bit
// 5 set and the auth trailers above instead of the CRC32C (Checksum is then
// ignored). Off: bit 5 must be clear.
enum class Auth : std::uint8_t { off, on };
constexpr std::size_t kAuthTagLen = 16;        // short header: the AEAD tag (auth::kTagLen)
constexpr std::size_t kAuthProofLen = 32;      // long header: the proof (auth::kProofTrailerLen)

constexpr bool is_mces_version(std::uint32_t v) noexcept {
    return (v & kVersionMagicMask) == kVersionMagic;
}

// Offers a client makes in its HELLO's version list, after its versions
// (TLS's signalling cipher suite values). A server that does not know one
// finds no version it speaks in it and skips it (the downgrade check takes
// the first version it speaks), so an offer costs nothing against a version
// 1 server that predates it. 0x4D43FExx is reserved for offers: never a
// version, never used in a header.
constexpr std::uint32_t kOfferMask = 0xFFFFFF00;
constexpr std::uint32_t kOfferPrefix = 0x4D43FE00;
// "Short packets of this connection may go without the CRC32C."
constexpr std::uint32_t kOfferNoChecksum = 0x4D43FE01;
constexpr bool is_offer(std::uint32_t v) noexcept { return (v & kOfferMask) == kOfferPrefix; }

// Why a packet (or a frame in it) was dropped. Dense from 0, so counters can
// be an array indexed by it; kParseErrorCount is the number of values.
enum class ParseError : std::uint8_t {
    ok = 0,
    truncated,          // a field or a length runs past the end
    bad_fixed_bit,      // flags bit 6 is 0: not MCES
    reserved_bits,      // a reserved bit or field is not 0
    unsupported_auth,   // the authenticated flag (bit 5) set, but this receiver has no key
    bad_checksum,       // CRC32C mismatch: corrupted
    bad_magic,          // long header version is neither 0 nor 0x4D43xxxx
    bad_cid_length,     // connection ID longer than 20 (or not what the receiver expects)
    bad_version_list,   // VERSION_NEGOTIATION or HELLO listing 0 or too many versions
    unknown_frame,      // a frame type this version does not define
    frame_not_allowed,  // a frame that this packet type may not carry
    too_many_ranges,    // ACK with more ranges than kMaxAckRanges
    bad_ack_range,      // ACK ranges that run below packet number 0
    bad_length,         // offset + length beyond 2^62, or a length over a fixed bound
    bad_qos,            // QoS field out of range, or a reserved presence bit set
    bad_service_class,  // service class above 4
    bad_handshake,      // a handshake packet without exactly one handshake frame
    missing_auth,       // the authenticated flag clear, but this receiver has a key
    count_
};
constexpr std::size_t kParseErrorCount = static_cast<std::size_t>(ParseError::count_);
// "truncated", "bad_checksum", ... (stable: used as counter names)
const char* name(ParseError e) noexcept;

// Drop counts keyed by why.
struct ParseCounters {
    std::array<std::uint64_t, kParseErrorCount> by_error{};
    void count(ParseError e) noexcept { ++by_error[static_cast<std::size_t>(e)]; }
    std::uint64_t operator[](ParseError e) const noexcept {
        return by_error[static_cast<std::size_t>(e)];
    }
    std::uint64_t total() const noexcept {
        std::uint64_t t = 0;
        for (std::size_t i = 1; i < kParseErrorCount; ++i) t += by_error[i];
        return t;
    }
};

enum class PacketType : std::uint8_t {
    initial = 0,             // client -> server: HELLO (+ cookie)
    retry = 1,               // server -> client: RETRY_TOKEN (the cookie)
    accept = 2,              // server -> client: ACCEPT (what was granted)
    refuse = 3,              // server -> client: REFUSE (what was asked, what is available)
    version_negotiation = 4, // server -> client: the versions the server speaks
    data = 5,                // short header: everything after the handshake
};
const char* name(PacketType t) noexcept;

struct ConnectionId {
    std::uint8_t len = 0;
    std::array<std::uint8_t, kMaxCidLen> bytes{};

    // Copies at most kMaxCidLen bytes.
    static ConnectionId from(std::span<const std::uint8_t> b) noexcept;
    std::span<const std::uint8_t> view() const noexcept { return {bytes.data(), len}; }
    friend bool operator==(const ConnectionId& a, const ConnectionId& b) noexcept {
        return a.view().size() == b.view().size() &&
               std::equal(a.view().begin(), a.view().end(), b.view().begin());
    }
};

struct PacketHeader {
    PacketType type = PacketType::data;
    std::uint32_t version = 0;       // long header only; 0 for VERSION_NEGOTIATION
    ConnectionId dcid;
    ConnectionId scid;               // long header only
    std::uint8_t pn_len = 0;         // 1-4; 0 for VERSION_NEGOTIATION
    std::uint32_t pn_truncated = 0;  // the low pn_len bytes; see decode_packet_number
};

// A parsed packet. payload views the caller's bytes: the frames, or for
// VERSION_NEGOTIATION the list of 4-byte versions (see vn_version).
struct PacketView {
    PacketHeader hdr;
    std::span<const std::uint8_t> payload;
    std::size_t vn_count() const noexcept { return payload.size() / 4; }
    std::uint32_t vn_version(std::size_t i) const noexcept;
};

// Parses one datagram. short_dcid_len is the length of the connection IDs the
// receiver hands out (a short header does not carry it); short_checksum says
// whether a short packet ends in the CRC32C (Checksum::none: the whole rest
// is frames, nothing is verified; long packets are always verified). Checks,
// in order: the auth flag, size, fixed bit, checksum, then the header
// fields. On error `out` is unspecified. Never reads outside `bytes`,
// whatever they hold and whichever mode is asked.
// auth = Auth::on: bit 5 must be set (VERSION_NEGOTIATION: clear), and the
// trailer (tag or proof) is set aside unverified: payload ends before it.
// The caller must check it before trusting anything (a short packet's
// payload is still ciphertext in Mode::encrypt); payload.data() - bytes.data()
// is the header length the AEAD takes as associated data.
ParseError parse_packet(std::span<const std::uint8_t> bytes, std::size_t short_dcid_len,
                        PacketView& out, Checksum short_checksum = Checksum::crc32c,
                        Auth auth = Auth::off) noexcept;

// The smallest packet number length (1-4 bytes) that lets a receiver that has
// seen up to largest_acked (-1 = nothing yet) recover pn (RFC 9000 A.2).
std::uint8_t packet_number_length(std::uint64_t pn, std::int64_t largest_acked) noexcept;
// The full packet number closest to expected = largest received + 1 whose low
// pn_len bytes are truncated (RFC 9000 A.3). largest_received = -1 before any.
std::uint64_t decode_packet_number(std::int64_t largest_received, std::uint32_t truncated,
                                   std::uint8_t pn_len) noexcept;

// Builds one packet in a buffer the caller owns:
//     PacketWriter pw(buf);
//     pw.begin_long(PacketType::initial, kVersion1, dcid, scid, pn, len);
//     write_frame(pw.body(), frame);  ...                  (frame.h)
//     int n = pw.finish();   // packet length, or -EMSGSIZE / -EINVAL
class PacketWriter {
public:
    explicit PacketWriter(std::span<std::uint8_t> buf) noexcept : w_(buf) {}

    // type: initial, retry, accept or refuse. pn_len 1-4 (the low bytes of pn go out).
    // auth = Auth::on: bit 5 set, finish() appends kAuthProofLen zero bytes
    // that the caller then fills (auth::HandshakeProof::sign).
    void begin_long(PacketType type, std::uint32_t version, const ConnectionId& dcid,
                    const ConnectionId& scid, std::uint64_t pn, std::uint8_t pn_len,
                    Auth auth = Auth::off) noexcept;
    // checksum: Checksum::none leaves the CRC32C off (a connection that
    // agreed to it); finish() then appends nothing. auth = Auth::on: bit 5
    // set, checksum ignored, finish() appends kAuthTagLen zero bytes that
    // the caller then seals (auth::Sealer::seal with header_len()).
    void begin_short(const ConnectionId& dcid, std::uint64_t pn, std::uint8_t pn_len,
                     Checksum checksum = Checksum::crc32c, Auth auth = Auth::off) noexcept;
    // A whole VERSION_NEGOTIATION body; call finish() next.
    void begin_version_negotiation(const ConnectionId& dcid, const ConnectionId& scid,
                                   std::span<const std::uint32_t> versions) noexcept;

    Writer& body() noexcept { return w_; }
    // The trailer this packet ends in: kChecksumLen, 0 for a short packet
    // begun with Checksum::none, kAuthTagLen / kAuthProofLen with Auth::on.
    std::size_t trailer() const noexcept { return trailer_; }
    // The header's length (what begin_* wrote): the AEAD's associated data.
    std::size_t header_len() const noexcept { return header_len_; }
    // Bytes still free for frames, the trailer already set aside.
    std::size_t room() const noexcept {
        return w_.room() > trailer_ ? w_.room() - trailer_ : 0;
    }
    // PADDING frames so that the finished packet is at least total bytes.
    void pad_to(std::size_t total) noexcept;
    // Appends the checksum (if the packet has one). Returns the packet
    // length, or the writer's error.
    int finish() noexcept;
    // The same for a packet whose last bytes (a, then b) are sent from
    // elsewhere (zero-copy): the checksum covers what was written, a and b,
    // and is appended here; on the wire it follows b. Returns the length
    // written here (the checksum included, if any), or the writer's error.
    // Not for Auth::on packets (-EINVAL): sealing needs the whole packet in
    // one buffer.
    int finish(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) noexcept;

private:
    Writer w_;
    std::size_t trailer_ = kChecksumLen;
    std::size_t header_len_ = 0;
    bool auth_ = false;
};

}  // namespace gs::mces::wire
