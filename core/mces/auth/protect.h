// Packet protection: ChaCha20-Poly1305 (IETF, libsodium's
// crypto_aead_chacha20poly1305_ietf) over one packet, in place, with the
// nonce made from the packet number. Sans-IO, no allocation per packet.
//
// A protected packet, in the caller's buffer:
//
//     header (AD) | payload (ciphertext, or clear) | tag (16)
//
//   Mode::encrypt       payload encrypted; the tag covers header and payload
//                       (the header is the AEAD's associated data)
//   Mode::authenticate  payload left clear; the tag covers header and payload
//                       (the AEAD with an empty message and header|payload as
//                       the associated data: a Poly1305 tag under a one-time
//                       key, nothing home-made)
//
//   nonce = IV xor (0x00000000 | packet number as 8 big-endian bytes)
//
// The full 62-bit packet number goes into the nonce, not the 1-4 bytes on
// the wire, so the receiver must decode it first (wire::decode_packet_number
// with Opener::largest(): the largest packet that authenticated).
//
// Header protection (RFC 9001 5.4, masking the packet number and flag bits)
// is left out: every header bit is authenticated as AD already, so it would
// add privacy (packet numbers unlinkable by an observer) and resistance to
// ossification, not integrity, at the cost of a second cipher call per
// packet. Flags bit 2 (reserved, "kept for a key phase") stays free for it.
//
// Sealer refuses to reuse a nonce: packet numbers must strictly increase,
// stay below 2^62, and a key seals at most Limits::max_packets packets.
// Opener drops (and counts) packets that are malformed, replayed (replay
// window, replay_window.h), too old, or fail the tag; the window moves only
// for packets that authenticated. After Limits::max_auth_failures failed
// tags the key is retired (RFC 9001 6.6's integrity limit for this AEAD is
// 2^36): every later packet is dropped as key_limit, and the owner should
// close the connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/mces/auth/keys.h"
#include "core/mces/auth/replay_window.h"

namespace gs::mces::auth {

constexpr std::size_t kTagLen = 16;
constexpr std::uint64_t kMaxPacketNumber = (std::uint64_t{1} << 62) - 1;

struct Limits {
    std::uint64_t max_packets = kMaxPacketNumber + 1;        // seals per key
    std::uint64_t max_auth_failures = std::uint64_t{1} << 36; // failed opens per key
};

struct SealCounters {
    std::uint64_t sealed = 0;
    std::uint64_t nonce_reuse = 0;   // refused: packet number did not increase (or >= 2^62)
    std::uint64_t key_limit = 0;     // refused: max_packets reached
};

enum class OpenStatus : std::uint8_t {
    ok,
    malformed,     // shorter than header + tag, or packet number >= 2^62
    replay,        // within the window and already authenticated
    too_old,       // kReplayWindow or more below the largest authenticated
    auth_failed,   // tag mismatch: wrong key, tampered, forged
    key_limit,     // the key is retired (max_auth_failures reached)
    no_key,        // the Opener has no key (default-constructed)
    no_room,       // scratch smaller than the payload (a caller error; not counted)
};
const char* name(OpenStatus s) noexcept;

struct OpenCounters {
    std::uint64_t opened = 0;
    std::uint64_t malformed = 0;
    std::uint64_t replays = 0;
    std::uint64_t too_old = 0;
    std::uint64_t auth_failures = 0;
    std::uint64_t key_limit = 0;
    std::uint64_t dropped() const noexcept {
        return malformed + replays + too_old + auth_failures + key_limit;
    }
};

class Sealer {
public:
    Sealer() noexcept = default;   // no key: seal() returns -ENOKEY
    explicit Sealer(DirectionKey key, Limits limits = {}) noexcept;

    // packet = header (header_len bytes) | payload | kTagLen bytes that are
    // overwritten with the tag. Encrypts the payload in place (encrypt mode)
    // and writes the tag. Returns 0, or (packet untouched):
    //   -ENOKEY       no key
    //   -EINVAL       packet shorter than header_len + kTagLen
    //   -ERANGE       pn above 2^62 - 1
    //   -EALREADY     pn not above the last packet number sealed (nonce reuse)
    //   -EKEYEXPIRED  max_packets sealed with this key
    int seal(std::span<std::uint8_t> packet, std::size_t header_len, std::uint64_t pn) noexcept;

    // The last packet number sealed, or -1 before any.
    std::int64_t last_sealed() const noexcept { return last_; }
    Mode mode() const noexcept { return key_.mode(); }
    const SealCounters& counters() const noexcept { return counters_; }

private:
    DirectionKey key_;
    Limits limits_;
    std::int64_t last_ = -1;
    SealCounters counters_;
};

class Opener {
public:
    Opener() noexcept = default;   // no key: open() says no_key
    explicit Opener(DirectionKey key, Limits limits = {}) noexcept;

    // packet = header (header_len bytes) | payload | tag (16), as received
    // (never modified); pn its full packet number. On ok, payload views the
    // clear payload: in encrypt mode the plaintext written to scratch (which
    // must hold at least packet.size() - header_len - kTagLen bytes, and may
    // be exactly the payload's own bytes if the caller may overwrite them),
    // in authenticate mode the bytes inside packet (scratch unused). On any
    // other status payload is empty, the window is unchanged, and scratch
    // may have been overwritten (zeroed).
    OpenStatus open(std::span<const std::uint8_t> packet, std::size_t header_len,
                    std::uint64_t pn, std::span<std::uint8_t> scratch,
                    std::span<const std::uint8_t>& payload) noexcept;

    // The largest packet number that authenticated, or -1 before any.
    std::int64_t largest() const noexcept { return window_.largest(); }
    Mode mode() const noexcept { return key_.mode(); }
    const OpenCounters& counters() const noexcept { return counters_; }

private:
    DirectionKey key_;
    Limits limits_;
    ReplayWindow window_;
    OpenCounters counters_;
};

// Both directions of one connection.
struct Protection {
    Sealer send;
    Opener recv;
};

// derive_connection_keys (keys.h), then a Sealer and an Opener with limits.
// Returns 0, -EINVAL or -ENOMEM; on error out is left keyless.
int make_protection(const Psk& psk, const HandshakeValues& hv, Role role, Protection& out,
                    Limits limits = {}) noexcept;

}  // namespace gs::mces::auth
