// The overlay server protocol (gsoverlayd), version 1: the messages byte by
// byte, sans-IO, for both sides. docs/overlay.md has the same tables.
//
// One UDP datagram per request, one per answer. All integers big-endian.
//
// Request:
//    0 magic    u16  0x474f ("GO")
//    2 version  u8   1
//    3 op       u8   1 CREATE, 2 GET, 3 JOIN, 4 RENEW, 5 LEAVE, 6 LIST, 7 STATS
//    4 txid     u32  chosen by the client, echoed in the answer
//    8 overlay  u64  the overlay ID (0 for LIST of overlays and STATS)
//   16 body:
//      CREATE  attribute block (below)
//      GET     -
//      JOIN    member (ip[16] port u16) · lease_ms u32 (0: server default) · want u8 (<= 32)
//      RENEW   member · lease_ms u32
//      LEAVE   member
//      LIST    overlay 0: cursor u64 (overlays with a greater ID); else -
//      STATS   -
// Answer:
//    0 magic u16 · 2 version u8 · 3 op u8 (the request's | 0x80) · 4 txid u32 · 8 overlay u64
//   16 status  u8   0 ok, 1 malformed, 2 version, 3 unknown overlay, 4 conflict,
//                   5 bad attributes, 6 full
//   17 body: status != ok: message (len u16, <= 512 bytes of text); ok:
//      CREATE  created u8 (1 new, 0 existed with the same key attributes) · attribute block
//      GET     attribute block
//      JOIN    lease_ms u32 · count u8 · count × member (freshest first, not the joiner)
//      RENEW   lease_ms u32
//      LEAVE   -
//      LIST    overlay 0: more u8 · count u8 · count × {id u64, members u32, protocol u8}
//              else: count u8 · count × {member, remaining_ms u32}
//      STATS   count u8 · count × {name (len u8, text), value u64}
// Attribute block: count u8 (<= 64) · count × {name (len u8, text), value (len u16, text)};
// names as attributes.h, values <= 256 bytes, no name twice.
//
// Decoding is strict: a body of the wrong length, an unknown op or status,
// a bad name, a count over its bound make the datagram malformed. Nothing is
// allocated beyond the datagram's own size.
#pragma once

#include <cerrno>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/common/sansio.h"
#include "core/overlay/config/attributes.h"

namespace gs::overlay::server {

constexpr std::uint16_t kMagic = 0x474f;
constexpr std::uint8_t kVersion = 1;
constexpr std::size_t kHeaderSize = 16;
constexpr std::size_t kMaxDatagram = 1472;        // one Ethernet-sized UDP payload
constexpr std::size_t kMaxMessage = 512;
constexpr std::uint8_t kMaxWant = 32;             // members in a JOIN answer
constexpr std::size_t kMaxListOverlays = 64;
constexpr std::size_t kMaxListMembers = 60;
constexpr std::size_t kMaxStats = 32;
constexpr std::uint8_t kAnswerBit = 0x80;

enum class Op : std::uint8_t { create = 1, get = 2, join = 3, renew = 4, leave = 5, list = 6, stats = 7 };
enum class Status : std::uint8_t {
    ok = 0, malformed = 1, version = 2, unknown_overlay = 3, conflict = 4, bad_attributes = 5, full = 6
};
const char* name(Op op) noexcept;          // "CREATE" ...
const char* name(Status s) noexcept;       // "ok", "malformed" ...

struct Request {
    Op op = Op::get;
    std::uint32_t txid = 0;
    std::uint64_t overlay = 0;
    Attributes attrs;              // CREATE
    sansio::Addr member;           // JOIN, RENEW, LEAVE
    std::uint32_t lease_ms = 0;    // JOIN, RENEW
    std::uint8_t want = 0;         // JOIN
    std::uint64_t cursor = 0;      // LIST with overlay 0
};

struct MemberEntry {
    sansio::Addr addr;
    std::uint32_t remaining_ms = 0;   // LIST only
};

struct OverlaySummary {
    std::uint64_t id = 0;
    std::uint32_t members = 0;
    std::uint8_t protocol = 0;        // node.h Protocol: 1 DT, 2 HC
};

struct Response {
    Op op = Op::get;
    std::uint32_t txid = 0;
    std::uint64_t overlay = 0;
    Status status = Status::ok;
    std::string message;                       // status != ok
    bool created = false;                      // CREATE
    Attributes attrs;                          // CREATE, GET
    std::uint32_t lease_ms = 0;                // JOIN, RENEW
    std::vector<MemberEntry> members;          // JOIN, LIST of one overlay
    bool more = false;                         // LIST of overlays
    std::vector<OverlaySummary> overlays;      // LIST of overlays
    std::vector<std::pair<std::string, std::uint64_t>> stats;   // STATS
};

// decode_request results besides 0.
constexpr int kNotOurs = -ENOMSG;      // shorter than a header, wrong magic, an answer: drop
constexpr int kBadVersion = -EPROTO;   // header readable, version != 1: answer Status::version
constexpr int kMalformed = -EBADMSG;   // header readable, the rest is not: answer Status::malformed

// Fills `out` from `bytes`. 0, or kNotOurs / kBadVersion / kMalformed; for the
// last two out.op (when known), out.txid and out.overlay are set so that an
// error answer can be made.
int decode_request(std::span<const std::uint8_t> bytes, Request& out);
// 0, or kNotOurs (not an answer of version 1) / kMalformed.
int decode_response(std::span<const std::uint8_t> bytes, Response& out);

// The encoders write what the fields say; a caller that breaks a bound
// (more than 64 attributes, a message over 512 bytes) gets it truncated to
// the bound, so the output always decodes. Answers stay within kMaxDatagram.
std::vector<std::uint8_t> encode_request(const Request& r);
std::vector<std::uint8_t> encode_response(const Response& r);

}  // namespace gs::overlay::server
