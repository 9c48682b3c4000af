#include "core/mces/auth/protect.h"

#include <sodium.h>

#include <cerrno>
#include <utility>

namespace gs::mces::auth {

namespace {

static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == kTagLen);

void make_nonce(const DirectionKey& k, std::uint64_t pn, std::uint8_t out[kAeadIvLen]) noexcept {
    const std::uint8_t* iv = k.iv();
    for (std::size_t i = 0; i < 4; ++i) out[i] = iv[i];
    for (std::size_t i = 0; i < 8; ++i)
        out[4 + i] = static_cast<std::uint8_t>(iv[4 + i] ^ (pn >> (56 - 8 * i)));
}

}  // namespace

const char* name(OpenStatus s) noexcept {
    switch (s) {
    case OpenStatus::ok: return "ok";
    case OpenStatus::malformed: return "malformed";
    case OpenStatus::replay: return "replay";
    case OpenStatus::too_old: return "too_old";
    case OpenStatus::auth_failed: return "auth_failed";
    case OpenStatus::key_limit: return "key_limit";
    case OpenStatus::no_key: return "no_key";
    case OpenStatus::no_room: return "no_room";
    }
    return "?";
}

Sealer::Sealer(DirectionKey key, Limits limits) noexcept
    : key_(std::move(key)), limits_(limits) {}

int Sealer::seal(std::span<std::uint8_t> packet, std::size_t header_len,
                 std::uint64_t pn) noexcept {
    if (!key_.valid()) return -ENOKEY;
    if (packet.size() < kTagLen || packet.size() - kTagLen < header_len) return -EINVAL;
    if (pn > kMaxPacketNumber || (last_ >= 0 && pn <= static_cast<std::uint64_t>(last_))) {
        ++counters_.nonce_reuse;
        return pn > kMaxPacketNumber ? -ERANGE : -EALREADY;
    }
    if (counters_.sealed >= limits_.max_packets) {
        ++counters_.key_limit;
        return -EKEYEXPIRED;
    }
    std::uint8_t nonce[kAeadIvLen];
    make_nonce(key_, pn, nonce);
    std::uint8_t* const p = packet.data();
    const std::size_t body = packet.size() - kTagLen;   // header + payload
    std::uint8_t* const tag = p + body;
    int rc;
    if (key_.mode() == Mode::encrypt) {
        // In place: libsodium's AEAD allows c == m.
        rc = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
            p + header_len, tag, nullptr, p + header_len, body - header_len, p, header_len,
            nullptr, nonce, key_.key());
    } else {
        rc = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
            p + body, tag, nullptr, p + body, 0, p, body, nullptr, nonce, key_.key());
    }
    if (rc != 0) return -EINVAL;   // not reached: only message-size limits fail
    last_ = static_cast<std::int64_t>(pn);
    ++counters_.sealed;
    return 0;
}

Opener::Opener(DirectionKey key, Limits limits) noexcept
    : key_(std::move(key)), limits_(limits) {}

OpenStatus Opener::open(std::span<const std::uint8_t> packet, std::size_t header_len,
                        std::uint64_t pn, std::span<std::uint8_t> scratch,
                        std::span<const std::uint8_t>& payload) noexcept {
    payload = {};
    if (!key_.valid()) return OpenStatus::no_key;
    if (counters_.auth_failures >= limits_.max_auth_failures) {
        ++counters_.key_limit;
        return OpenStatus::key_limit;
    }
    if (packet.size() < kTagLen || packet.size() - kTagLen < header_len ||
        pn > kMaxPacketNumber) {
        ++counters_.malformed;
        return OpenStatus::malformed;
    }
    // The window first: a duplicate costs no cryptography. It is marked
    // only below, once the tag proved the packet genuine, so forged
    // packets cannot move it.
    switch (window_.check(pn)) {
    case ReplayCheck::fresh: break;
    case ReplayCheck::duplicate: ++counters_.replays; return OpenStatus::replay;
    case ReplayCheck::too_old: ++counters_.too_old; return OpenStatus::too_old;
    }
    const std::uint8_t* const p = packet.data();
    const std::size_t body = packet.size() - kTagLen;
    const std::size_t len = body - header_len;
    if (key_.mode() == Mode::encrypt && scratch.size() < len) return OpenStatus::no_room;
    std::uint8_t nonce[kAeadIvLen];
    make_nonce(key_, pn, nonce);
    int rc;
    if (key_.mode() == Mode::encrypt) {
        rc = crypto_aead_chacha20poly1305_ietf_decrypt_detached(
            scratch.data(), nullptr, p + header_len, len, p + body, p, header_len, nonce,
            key_.key());
    } else {
        // No message: libsodium only checks the tag when m is null.
        rc = crypto_aead_chacha20poly1305_ietf_decrypt_detached(
            nullptr, nullptr, p + body, 0, p + body, p, body, nonce, key_.key());
    }
    if (rc != 0) {
        ++counters_.auth_failures;
        return OpenStatus::auth_failed;
    }
    window_.mark(pn);
    ++counters_.opened;
    payload = key_.mode() == Mode::encrypt
                  ? std::span<const std::uint8_t>(scratch.data(), len)
                  : packet.subspan(header_len, len);
    return OpenStatus::ok;
}

int make_protection(const Psk& psk, const HandshakeValues& hv, Role role, Protection& out,
                    Limits limits) noexcept {
    out = Protection{};
    ConnectionKeys keys;
    const int rc = derive_connection_keys(psk, hv, role, keys);
    if (rc != 0) return rc;
    out.send = Sealer(std::move(keys.send), limits);
    out.recv = Opener(std::move(keys.recv), limits);
    return 0;
}

}  // namespace gs::mces::auth
