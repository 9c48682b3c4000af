// HC wire format: the messages byte by byte (docs/overlay-hc.md has the table).
//
// Every datagram is the common 13-byte prefix of core/overlay/node.h
// (magic, version, proto = 2, overlay hash, type) followed by a fixed body
// per type; DATA alone ends with a length-prefixed payload. All integers are
// big-endian. Parsing is strict: a body of the wrong length, a label outside
// 2^kMaxDim, an unknown flag bit or enum value makes the whole datagram
// malformed. Nothing here allocates more than the datagram's own size.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <variant>
#include <vector>

#include "core/overlay/hc/label.h"
#include "core/overlay/node.h"

namespace gs::overlay::hc {

enum class Type : std::uint8_t {
    join_req = 0x01,   // a joiner asks for a label (forwarded to the head)
    join_ack = 0x02,   // the head hands out the label and the view
    ping = 0x03,       // liveness between neighbours; carries the view
    seek = 0x04,       // routed toward a label to find its holder's address
    report = 0x05,     // "label X is missing" (or "I leave"), to the head
    leave = 0x06,      // graceful leave, to the neighbours
    conflict = 0x07,   // two holders of one label were seen
    decline = 0x08,    // a member got a label it did not ask for
    merge = 0x09,      // partition merge: a head of another cube introduces itself (or orders)
    dissolve = 0x0a,   // partition merge: the cube is dissolving, rejoin through a target
    data = 0x80,       // application data
};

constexpr std::size_t kMaxMoves = 48;
constexpr std::uint8_t kMaxTtl = 64;

struct Move {
    Label label = 0;
    std::uint32_t seq = 0;
    friend bool operator==(const Move&, const Move&) = default;
};

// What the head disseminates: the cube's size and who the head is, ordered by
// (epoch, claim, seq). `cube` names the cube: a random id drawn by the first
// member and again by every head claim (a new epoch), so that two cubes (two
// partitions) can tell each other apart; it takes no part in the order. `moves` lists the labels that got a new holder (join or
// repair) at a given seq of this epoch; every move with seq > moves_floor is in
// the list (older ones fell out of it).
struct View {
    std::uint32_t epoch = 0;
    std::uint32_t claim = 0;   // rank of the member that opened this epoch
    std::uint32_t seq = 0;
    std::uint32_t n = 0;       // members, 1 .. kMaxMembers
    std::uint64_t cube = 0;    // the cube's id; 0 only in views no member drew
    Addr head;
    std::uint32_t moves_floor = 0;
    std::uint8_t nmoves = 0;
    std::array<Move, kMaxMoves> moves{};

    // Records a move, dropping the oldest when full (and raising moves_floor).
    void add_move(Label label, std::uint32_t at_seq);
    friend bool operator==(const View&, const View&) = default;
};

// Lexicographic (epoch, claim, seq): the larger view wins.
int compare_views(const View& a, const View& b) noexcept;

struct JoinReq { Addr joiner; std::uint64_t nonce = 0; std::uint8_t ttl = 0; };
struct JoinAck { Label label = 0; Label sender = 0; std::uint64_t nonce = 0; View view; };
struct Ping {
    static constexpr std::uint8_t kReply = 0x01;   // the receiver answers at once
    Label sender = 0;
    std::uint8_t flags = 0;
    View view;
};
struct Seek { Label target = 0; Label origin = 0; Addr origin_addr; std::uint8_t ttl = 0; };
struct Report {
    static constexpr std::uint8_t kLeave = 0x01;   // sent by the leaver itself
    Label missing = 0;
    Label reporter = 0;
    Addr reporter_addr;
    std::uint32_t epoch = 0, seq = 0;   // the reporter's view when it sent this
    std::uint8_t flags = 0;
    std::uint8_t ttl = 0;
};
struct Leave { Label sender = 0; };
struct Conflict { Label label = 0; Addr other; };
struct Decline { Label label = 0; std::uint64_t nonce = 0; };
// "The head of cube `cube`, of n members, is at `head`." Sent by a head on a
// hint, forwarded by members to their head. With kOrder: "dissolve your cube
// into mine" (only the cube with the larger id may order).
struct Merge {
    static constexpr std::uint8_t kOrder = 0x01;
    std::uint64_t cube = 0;
    std::uint32_t n = 0;   // 1 .. kMaxMembers
    Addr head;
    std::uint8_t flags = 0;
    std::uint8_t ttl = 0;
};
// "Cube `cube` dissolves: drop your label and join through `target`."
// Flooded from the yielding head over the cube's edges.
struct Dissolve { std::uint64_t cube = 0; Addr target; };

enum class Kind : std::uint8_t { all = 0, hop = 1, node = 2 };
struct Data {
    Label src = 0;
    std::uint32_t incarnation = 0;   // the source's random id: dedup key with src
    Label root = 0;                  // tree the message follows (kind all)
    Kind kind = Kind::all;
    Label dest = 0;                  // kind node
    std::uint32_t seq = 0;
    std::uint8_t ttl = 0;
    std::span<const std::uint8_t> payload;   // points into the parsed datagram
};

using Message =
    std::variant<JoinReq, JoinAck, Ping, Seek, Report, Leave, Conflict, Decline, Data, Merge, Dissolve>;

enum class ParseResult { ok, foreign, malformed };

// Parses one datagram of overlay `overlay`. A prefix with another magic,
// version, protocol or overlay is `foreign`; anything else wrong is
// `malformed`. On ok, a Data's payload points into `bytes`.
ParseResult parse(std::span<const std::uint8_t> bytes, std::uint64_t overlay, Message& out);

// Appends the encoded datagram to `out` (cleared first).
void encode(const Message& m, std::uint64_t overlay, std::vector<std::uint8_t>& out);

}  // namespace gs::overlay::hc
