// The stateless address-validation cookie a server hands out in RETRY and a
// client returns in its next INITIAL (docs/mces.md, "The cookie").
//
//   key_id(1) timestamp(4, seconds of the server's clock) mac(16)
//   mac = HMAC-SHA256(key, "mces-cookie-v1" | key_id | timestamp | client ip(16)
//                          | client port(2) | client cid_len(1) | client cid)[0..16]
//
// The server stores nothing per client: a cookie proves that whoever sends it
// received what the server sent to that address and port, for that
// connection ID, within the lifetime. Two keys are live: the current one
// (issues and checks) and the previous one (checks only), so rotating does
// not break handshakes in flight; any older cookie is refused. The owner
// supplies the keys (from its random source) and decides when to rotate.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/common/sansio.h"
#include "core/mces/wire/packet.h"

namespace gs::mces::wire {

constexpr std::size_t kCookieLen = 1 + 4 + 16;

enum class CookieStatus : std::uint8_t {
    ok,
    malformed,     // wrong length
    unknown_key,   // made with a key older than the previous one
    bad_mac,       // forged, or for another address, port or connection ID
    expired,       // older than the lifetime (or from the future)
};
const char* name(CookieStatus s) noexcept;

class CookieJar {
public:
    using Key = std::array<std::uint8_t, 32>;

    // lifetime: how long a cookie stays good, counted in whole seconds of
    // `now` (a cookie is accepted for at most lifetime + 1 s).
    CookieJar(const Key& key, sansio::Time lifetime) noexcept;

    // The current key becomes the previous one; the one before is forgotten.
    void rotate(const Key& next) noexcept;

    void issue(const sansio::Addr& from, const ConnectionId& client_cid, sansio::Time now,
               std::span<std::uint8_t, kCookieLen> out) const noexcept;

    CookieStatus check(const sansio::Addr& from, const ConnectionId& client_cid,
                       std::span<const std::uint8_t> cookie, sansio::Time now) const noexcept;

    // A connection ID of len bytes (<= kMaxCidLen) the server derives from a
    // valid cookie: the same cookie always gives the same ID, so a repeated
    // INITIAL gets the same answer without the server keeping anything.
    // Precondition: check() returned ok for this cookie.
    ConnectionId derive_cid(std::span<const std::uint8_t> cookie, std::size_t len) const noexcept;
    // The same for a client admitted without a cookie: from its address,
    // port and ID under the current key, so a repeated INITIAL gets the same
    // ID (until a rotation) and no one without the key can guess it (the ID
    // is what proves the client's first short packet genuine).
    ConnectionId derive_cid(const sansio::Addr& from, const ConnectionId& client_cid,
                            std::size_t len) const noexcept;

    sansio::Time lifetime() const noexcept { return lifetime_; }

private:
    const Key* key_for(std::uint8_t id) const noexcept;
    void mac(const Key& key, std::uint8_t id, std::uint32_t ts, const sansio::Addr& from,
             const ConnectionId& cid, std::uint8_t out[16]) const noexcept;

    Key cur_{};
    Key prev_{};
    std::uint8_t cur_id_ = 0;
    bool has_prev_ = false;
    sansio::Time lifetime_;
};

}  // namespace gs::mces::wire
