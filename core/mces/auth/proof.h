// The handshake proof: lets a server reject an INITIAL from a peer without
// the pre-shared key before it creates any state (even before a RETRY), and
// a client reject a RETRY, ACCEPT or REFUSE not made with the key.
//
// An authenticated handshake packet (a long header with flags bit 5 set)
// ends in a 32-byte trailer instead of the CRC32C:
//
//     ... frames, padding | nonce (16) | tag (16)
//
//   k_hs = crypto_kdf_derive_from_key(32, id 1, ctx "MCESAUTH", psk)
//   tag  = crypto_generichash(16, key k_hs,                 (keyed BLAKE2b)
//            "mces-auth-proof-v1" | kind(1) | len(bind)(1) | bind |
//            every byte of the packet before the tag, the nonce included)
//
//   kind   INITIAL 1, RETRY 2, ACCEPT 3, REFUSE 4 (a tag made for one kind
//          never passes as another)
//   bind   INITIAL: nothing. RETRY, ACCEPT, REFUSE: the client nonce of the
//          INITIAL answered, so a reply is good for that handshake only and
//          an old one cannot be replayed into a new handshake.
//   nonce  INITIAL: the client nonce, fresh per connection attempt, the
//          same in every INITIAL of that attempt (retransmissions, after a
//          RETRY). ACCEPT: the server nonce, fresh per connection the
//          server creates (never derived from the INITIAL alone: a replayed
//          INITIAL must not give the same keys twice); the same in a
//          repeated ACCEPT of that connection. RETRY, REFUSE: anything (the
//          owner's choice; zeros do).
//
// Both nonces feed the connection keys (keys.h). check() is stateless and
// costs one keyed BLAKE2b pass over the packet and allocates nothing:
// the server checks it first, so a peer without the key gets no answer at
// all, not even a RETRY. Not covered: VERSION_NEGOTIATION (its layout is
// the same in every version, so it cannot carry a version's trailer; the
// downgrade check protects the version choice) and the UDP/IP addresses (the
// cookie binds those). A captured INITIAL can be replayed: from another
// address it only earns a RETRY; with its cookie, from its own address and
// within the cookie's lifetime, it can make the server create a connection
// that no one can use (the replayer has no keys) and that idles out.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/mces/auth/keys.h"
#include "core/mces/auth/secret.h"

namespace gs::mces::auth {

constexpr std::size_t kProofTagLen = 16;
constexpr std::size_t kProofTrailerLen = kHandshakeNonceLen + kProofTagLen;   // 32
constexpr std::size_t kMaxBindLen = 64;

enum class ProofKind : std::uint8_t { initial = 1, retry = 2, accept = 3, refuse = 4 };

enum class ProofStatus : std::uint8_t {
    ok,
    malformed,   // no room for the trailer, or bind longer than kMaxBindLen
    bad_tag,     // not made with this key, for this kind and bind, or altered
    no_key,      // init() has not succeeded
};
const char* name(ProofStatus s) noexcept;

struct ProofCounters {
    std::uint64_t made = 0;
    std::uint64_t accepted = 0;
    std::uint64_t malformed = 0;
    std::uint64_t bad_tag = 0;
};

class HandshakeProof {
public:
    // Derives k_hs from psk into guarded memory. Returns 0, -EINVAL (psk
    // empty) or -ENOMEM.
    int init(const Psk& psk, Mode mode = Mode::encrypt) noexcept;
    bool valid() const noexcept { return k_hs_.valid(); }

    // packet: the whole datagram, its last kProofTrailerLen bytes set aside
    // for the trailer. Writes nonce and tag there. Returns 0, -ENOKEY or
    // -EINVAL (packet shorter than the trailer + 1, bind too long).
    int sign(ProofKind kind, std::span<const std::uint8_t> bind, const HandshakeNonce& nonce,
             std::span<std::uint8_t> packet) noexcept;

    // Checks the trailer at the end of packet (constant time). On ok the
    // nonce it carries is copied to nonce_out (if given).
    ProofStatus check(ProofKind kind, std::span<const std::uint8_t> bind,
                      std::span<const std::uint8_t> packet,
                      HandshakeNonce* nonce_out = nullptr) noexcept;

    const ProofCounters& counters() const noexcept { return counters_; }

private:
    void tag(ProofKind kind, std::span<const std::uint8_t> bind,
             std::span<const std::uint8_t> covered, std::uint8_t out[kProofTagLen]) const noexcept;

    SecretBytes k_hs_;
    ProofCounters counters_;
};

// The nonce of a trailer, unchecked (e.g. to log which attempt a dropped
// packet belonged to); zeros when packet is too short.
HandshakeNonce proof_nonce(std::span<const std::uint8_t> packet) noexcept;

}  // namespace gs::mces::auth
