#include "core/mces/auth/keys.h"

#include <sodium.h>

#include <cerrno>
#include <cstring>

namespace gs::mces::auth {

namespace {

constexpr char kPskCtx[crypto_kdf_CONTEXTBYTES + 1] = "MCESAUTH";
constexpr char kConnCtx[crypto_kdf_CONTEXTBYTES + 1] = "MCESCONN";
constexpr std::uint64_t kPskIdConn = 2;
constexpr char kConnLabel[] = "mces-auth-conn-v1";

static_assert(crypto_aead_chacha20poly1305_ietf_KEYBYTES == kAeadKeyLen);
static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == kAeadIvLen);
static_assert(crypto_kdf_KEYBYTES == kPskLen);

// Wipes a stack buffer on every way out of derive_connection_keys.
template <std::size_t N>
struct Scratch {
    std::uint8_t b[N]{};
    ~Scratch() { sodium_memzero(b, N); }
};

// key (32) and IV (the first 12 of a 16-byte subkey: kdf's minimum) of one
// direction from the connection secret.
bool fill(SecretBytes& s, std::uint64_t id, const std::uint8_t* secret) noexcept {
    Scratch<crypto_kdf_BYTES_MIN> iv;
    if (crypto_kdf_derive_from_key(s.data(), kAeadKeyLen, id, kConnCtx, secret) != 0) return false;
    if (crypto_kdf_derive_from_key(iv.b, sizeof iv.b, id + 1, kConnCtx, secret) != 0) return false;
    std::memcpy(s.data() + kAeadKeyLen, iv.b, kAeadIvLen);
    return true;
}

}  // namespace

const char* name(Mode m) noexcept {
    switch (m) {
    case Mode::encrypt: return "encrypt";
    case Mode::authenticate: return "authenticate";
    }
    return "?";
}

int derive_connection_keys(const Psk& psk, const HandshakeValues& hv, Role role,
                           ConnectionKeys& out) noexcept {
    out = ConnectionKeys{};
    if (!psk.valid()) return -EINVAL;
    if (hv.mode != Mode::encrypt && hv.mode != Mode::authenticate) return -EINVAL;
    if (hv.client_cid.len > wire::kMaxCidLen || hv.server_cid.len > wire::kMaxCidLen)
        return -EINVAL;

    Scratch<32> k_conn;
    Scratch<32> secret;
    if (crypto_kdf_derive_from_key(k_conn.b, sizeof k_conn.b, kPskIdConn, kPskCtx,
                                   psk.bytes().data()) != 0)
        return -EINVAL;
    crypto_generichash_state st;
    crypto_generichash_init(&st, k_conn.b, sizeof k_conn.b, sizeof secret.b);
    crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(kConnLabel),
                              sizeof kConnLabel - 1);
    const std::uint8_t fixed[5] = {
        static_cast<std::uint8_t>(hv.version >> 24), static_cast<std::uint8_t>(hv.version >> 16),
        static_cast<std::uint8_t>(hv.version >> 8), static_cast<std::uint8_t>(hv.version),
        static_cast<std::uint8_t>(hv.mode)};
    crypto_generichash_update(&st, fixed, sizeof fixed);
    crypto_generichash_update(&st, &hv.client_cid.len, 1);
    crypto_generichash_update(&st, hv.client_cid.bytes.data(), hv.client_cid.len);
    crypto_generichash_update(&st, &hv.server_cid.len, 1);
    crypto_generichash_update(&st, hv.server_cid.bytes.data(), hv.server_cid.len);
    crypto_generichash_update(&st, hv.client_nonce.data(), hv.client_nonce.size());
    crypto_generichash_update(&st, hv.server_nonce.data(), hv.server_nonce.size());
    crypto_generichash_final(&st, secret.b, sizeof secret.b);
    sodium_memzero(&st, sizeof st);

    SecretBytes c2s(kAeadKeyLen + kAeadIvLen);
    SecretBytes s2c(kAeadKeyLen + kAeadIvLen);
    if (!c2s.valid() || !s2c.valid()) return -ENOMEM;
    if (!fill(c2s, 1, secret.b) || !fill(s2c, 3, secret.b)) return -EINVAL;
    DirectionKey& mine = role == Role::client ? out.send : out.recv;
    DirectionKey& theirs = role == Role::client ? out.recv : out.send;
    mine.s_ = std::move(c2s);
    mine.mode_ = hv.mode;
    theirs.s_ = std::move(s2c);
    theirs.mode_ = hv.mode;
    return 0;
}

}  // namespace gs::mces::auth
