#include "core/mces/auth/proof.h"

#include <sodium.h>

#include <cerrno>
#include <cstring>

namespace gs::mces::auth {

namespace {

constexpr char kPskCtx[crypto_kdf_CONTEXTBYTES + 1] = "MCESAUTH";
constexpr std::uint64_t kPskIdProof = 1;
// The proof key of Mode::authenticate: a peer in the other mode (same key)
// fails the proof and gets no answer, at the handshake, instead of sharing
// no packet keys and idling out 30 s later.
constexpr std::uint64_t kPskIdProofAuthOnly = 3;
constexpr char kProofLabel[] = "mces-auth-proof-v1";
constexpr std::size_t kKeyLen = 32;

}  // namespace

const char* name(ProofStatus s) noexcept {
    switch (s) {
    case ProofStatus::ok: return "ok";
    case ProofStatus::malformed: return "malformed";
    case ProofStatus::bad_tag: return "bad_tag";
    case ProofStatus::no_key: return "no_key";
    }
    return "?";
}

int HandshakeProof::init(const Psk& psk, Mode mode) noexcept {
    k_hs_ = SecretBytes{};
    if (!psk.valid()) return -EINVAL;
    SecretBytes k(kKeyLen);
    if (!k.valid()) return -ENOMEM;
    if (crypto_kdf_derive_from_key(k.data(), kKeyLen, mode == Mode::authenticate ? kPskIdProofAuthOnly : kPskIdProof, kPskCtx,
                                   psk.bytes().data()) != 0)
        return -EINVAL;
    k_hs_ = std::move(k);
    return 0;
}

void HandshakeProof::tag(ProofKind kind, std::span<const std::uint8_t> bind,
                         std::span<const std::uint8_t> covered,
                         std::uint8_t out[kProofTagLen]) const noexcept {
    crypto_generichash_state st;
    crypto_generichash_init(&st, k_hs_.data(), kKeyLen, kProofTagLen);
    crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(kProofLabel),
                              sizeof kProofLabel - 1);
    const std::uint8_t fixed[2] = {static_cast<std::uint8_t>(kind),
                                   static_cast<std::uint8_t>(bind.size())};
    crypto_generichash_update(&st, fixed, sizeof fixed);
    crypto_generichash_update(&st, bind.data(), bind.size());
    crypto_generichash_update(&st, covered.data(), covered.size());
    crypto_generichash_final(&st, out, kProofTagLen);
    sodium_memzero(&st, sizeof st);
}

int HandshakeProof::sign(ProofKind kind, std::span<const std::uint8_t> bind,
                         const HandshakeNonce& nonce, std::span<std::uint8_t> packet) noexcept {
    if (!valid()) return -ENOKEY;
    if (packet.size() <= kProofTrailerLen || bind.size() > kMaxBindLen) return -EINVAL;
    const std::size_t at = packet.size() - kProofTrailerLen;
    std::memcpy(packet.data() + at, nonce.data(), nonce.size());
    tag(kind, bind, packet.first(packet.size() - kProofTagLen),
        packet.data() + packet.size() - kProofTagLen);
    ++counters_.made;
    return 0;
}

ProofStatus HandshakeProof::check(ProofKind kind, std::span<const std::uint8_t> bind,
                                  std::span<const std::uint8_t> packet,
                                  HandshakeNonce* nonce_out) noexcept {
    if (!valid()) return ProofStatus::no_key;
    if (packet.size() <= kProofTrailerLen || bind.size() > kMaxBindLen) {
        ++counters_.malformed;
        return ProofStatus::malformed;
    }
    std::uint8_t want[kProofTagLen];
    tag(kind, bind, packet.first(packet.size() - kProofTagLen), want);
    if (crypto_verify_16(want, packet.data() + packet.size() - kProofTagLen) != 0) {
        ++counters_.bad_tag;
        return ProofStatus::bad_tag;
    }
    if (nonce_out != nullptr) *nonce_out = proof_nonce(packet);
    ++counters_.accepted;
    return ProofStatus::ok;
}

HandshakeNonce proof_nonce(std::span<const std::uint8_t> packet) noexcept {
    HandshakeNonce n{};
    if (packet.size() >= kProofTrailerLen)
        std::memcpy(n.data(), packet.data() + packet.size() - kProofTrailerLen, n.size());
    return n;
}

}  // namespace gs::mces::auth
