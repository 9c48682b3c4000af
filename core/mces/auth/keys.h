// Per-connection packet keys, derived from the pre-shared key and both sides'
// handshake values with libsodium's KDF (BLAKE2b), one key per direction, so
// that one PSK never protects two connections (or two directions) with the
// same key: every (key, nonce) pair is used once as long as each side's
// packet numbers only increase (protect.h refuses anything else).
//
//   k_conn  = crypto_kdf_derive_from_key(32, id 2, ctx "MCESAUTH", psk)
//   secret  = crypto_generichash(32, key k_conn,
//               "mces-auth-conn-v1" | version(4) | mode(1) | client cid len(1) |
//               client cid | server cid len(1) | server cid | client nonce(16) |
//               server nonce(16))
//   client->server key = kdf(32, id 1, "MCESCONN", secret), IV = kdf(16, id 2)[0..12]
//   server->client key = kdf(32, id 3, "MCESCONN", secret), IV = kdf(16, id 4)[0..12]
//
// (id 1 under "MCESAUTH" is the handshake proof key: proof.h.) The client
// nonce comes from its INITIAL, the server nonce from its ACCEPT (proof.h);
// each side draws its own from its random source, per connection. The mode
// is an input, so peers that disagree on it share no key and every packet
// fails (fail closed). Intermediate values are wiped; keys live in guarded
// memory (secret.h). Sans-IO: no clock, no randomness of its own.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/mces/auth/secret.h"
#include "core/mces/wire/packet.h"

namespace gs::mces::auth {

constexpr std::size_t kHandshakeNonceLen = 16;
using HandshakeNonce = std::array<std::uint8_t, kHandshakeNonceLen>;

constexpr std::size_t kAeadKeyLen = 32;   // ChaCha20-Poly1305 (IETF)
constexpr std::size_t kAeadIvLen = 12;

// What a protected packet keeps secret.
enum class Mode : std::uint8_t {
    encrypt = 1,        // payload encrypted; header and payload authenticated
    authenticate = 2,   // payload in clear; header and payload authenticated
};
const char* name(Mode m) noexcept;

enum class Role : std::uint8_t { client, server };

// Everything both sides know once the handshake is done.
struct HandshakeValues {
    std::uint32_t version = wire::kVersion1;
    Mode mode = Mode::encrypt;
    wire::ConnectionId client_cid;
    wire::ConnectionId server_cid;
    HandshakeNonce client_nonce{};
    HandshakeNonce server_nonce{};
};

struct ConnectionKeys;

// One direction's AEAD key and IV in guarded memory. Move-only; empty
// (valid() false) until derive_connection_keys fills it.
class DirectionKey {
public:
    bool valid() const noexcept { return s_.valid(); }
    Mode mode() const noexcept { return mode_; }
    const std::uint8_t* key() const noexcept { return s_.data(); }
    const std::uint8_t* iv() const noexcept { return s_.data() + kAeadKeyLen; }

private:
    friend int derive_connection_keys(const Psk&, const HandshakeValues&, Role,
                                      ConnectionKeys&) noexcept;
    SecretBytes s_;
    Mode mode_ = Mode::encrypt;
};

struct ConnectionKeys {
    DirectionKey send;   // what this side seals with
    DirectionKey recv;   // what it opens with (the peer's send key)
};

// Fills out for role (the client's send key is the server's recv key and
// the other way round). Returns 0, -EINVAL (psk empty, or a mode that is
// neither value) or -ENOMEM; on error out is left empty.
int derive_connection_keys(const Psk& psk, const HandshakeValues& hv, Role role,
                           ConnectionKeys& out) noexcept;

}  // namespace gs::mces::auth
