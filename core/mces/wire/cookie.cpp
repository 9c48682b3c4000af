#include "core/mces/wire/cookie.h"

#include <sodium.h>

#include <cstring>

namespace gs::mces::wire {

namespace {

constexpr char kCookieLabel[] = "mces-cookie-v1";
constexpr char kCidLabel[] = "mces-server-cid-v1";
constexpr std::size_t kMacLen = 16;

// Seconds of the (monotonic) clock, as carried in the cookie.
std::uint32_t coarse(sansio::Time now) noexcept {
    return static_cast<std::uint32_t>(static_cast<std::uint64_t>(now < 0 ? 0 : now) /
                                      sansio::kSecond);
}

void be32(std::uint32_t v, std::uint8_t out[4]) noexcept {
    out[0] = static_cast<std::uint8_t>(v >> 24);
    out[1] = static_cast<std::uint8_t>(v >> 16);
    out[2] = static_cast<std::uint8_t>(v >> 8);
    out[3] = static_cast<std::uint8_t>(v);
}

}  // namespace

const char* name(CookieStatus s) noexcept {
    switch (s) {
    case CookieStatus::ok: return "ok";
    case CookieStatus::malformed: return "malformed";
    case CookieStatus::unknown_key: return "unknown_key";
    case CookieStatus::bad_mac: return "bad_mac";
    case CookieStatus::expired: return "expired";
    }
    return "?";
}

CookieJar::CookieJar(const Key& key, sansio::Time lifetime) noexcept
    : cur_(key), lifetime_(lifetime) {
    // Idempotent and thread-safe. Its result does not matter here: HMAC-SHA256
    // has no CPU-selected implementation and works without it.
    [[maybe_unused]] const int rc = sodium_init();
}

void CookieJar::rotate(const Key& next) noexcept {
    prev_ = cur_;
    has_prev_ = true;
    cur_ = next;
    cur_id_ = static_cast<std::uint8_t>(cur_id_ + 1);
}

const CookieJar::Key* CookieJar::key_for(std::uint8_t id) const noexcept {
    if (id == cur_id_) return &cur_;
    if (has_prev_ && id == static_cast<std::uint8_t>(cur_id_ - 1)) return &prev_;
    return nullptr;
}

void CookieJar::mac(const Key& key, std::uint8_t id, std::uint32_t ts, const sansio::Addr& from,
                    const ConnectionId& cid, std::uint8_t out[16]) const noexcept {
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key.data(), key.size());
    crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(kCookieLabel),
                                  sizeof kCookieLabel - 1);
    std::uint8_t fixed[1 + 4 + 16 + 2 + 1];
    fixed[0] = id;
    be32(ts, fixed + 1);
    std::memcpy(fixed + 5, from.ip.data(), 16);
    fixed[21] = static_cast<std::uint8_t>(from.port >> 8);
    fixed[22] = static_cast<std::uint8_t>(from.port);
    fixed[23] = cid.len;
    crypto_auth_hmacsha256_update(&st, fixed, sizeof fixed);
    crypto_auth_hmacsha256_update(&st, cid.bytes.data(), cid.len);
    std::uint8_t full[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_final(&st, full);
    std::memcpy(out, full, kMacLen);
    sodium_memzero(&st, sizeof st);
}

void CookieJar::issue(const sansio::Addr& from, const ConnectionId& client_cid,
                      sansio::Time now, std::span<std::uint8_t, kCookieLen> out) const noexcept {
    const std::uint32_t ts = coarse(now);
    out[0] = cur_id_;
    be32(ts, out.data() + 1);
    mac(cur_, cur_id_, ts, from, client_cid, out.data() + 5);
}

CookieStatus CookieJar::check(const sansio::Addr& from, const ConnectionId& client_cid,
                              std::span<const std::uint8_t> cookie,
                              sansio::Time now) const noexcept {
    if (cookie.size() != kCookieLen) return CookieStatus::malformed;
    const Key* key = key_for(cookie[0]);
    if (key == nullptr) return CookieStatus::unknown_key;
    const std::uint32_t ts = static_cast<std::uint32_t>(cookie[1]) << 24 |
                             static_cast<std::uint32_t>(cookie[2]) << 16 |
                             static_cast<std::uint32_t>(cookie[3]) << 8 | cookie[4];
    std::uint8_t want[kMacLen];
    mac(*key, cookie[0], ts, from, client_cid, want);
    // Constant time: a timing oracle would let an attacker forge byte by byte.
    if (sodium_memcmp(want, cookie.data() + 5, kMacLen) != 0) return CookieStatus::bad_mac;
    // Only now is the timestamp trusted; one from the future is as bad as an old one.
    const std::uint32_t now_s = coarse(now);
    const std::uint64_t life_s = static_cast<std::uint64_t>(lifetime_ / sansio::kSecond);
    if (ts > now_s || now_s - ts > life_s) return CookieStatus::expired;
    return CookieStatus::ok;
}

ConnectionId CookieJar::derive_cid(std::span<const std::uint8_t> cookie,
                                   std::size_t len) const noexcept {
    ConnectionId cid;
    const Key* key = cookie.empty() ? nullptr : key_for(cookie[0]);
    if (key == nullptr) key = &cur_;
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key->data(), key->size());
    crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(kCidLabel),
                                  sizeof kCidLabel - 1);
    crypto_auth_hmacsha256_update(&st, cookie.data(), cookie.size());
    std::uint8_t full[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_final(&st, full);
    sodium_memzero(&st, sizeof st);
    cid.len = static_cast<std::uint8_t>(len < kMaxCidLen ? len : kMaxCidLen);
    std::memcpy(cid.bytes.data(), full, cid.len);
    return cid;
}

ConnectionId CookieJar::derive_cid(const sansio::Addr& from, const ConnectionId& client_cid,
                                   std::size_t len) const noexcept {
    // The cookie this client would get at timestamp 0: fixed for the key,
    // secret like any cookie's MAC, and never sent (it only feeds the ID).
    std::uint8_t pseudo[kCookieLen];
    pseudo[0] = cur_id_;
    be32(0, pseudo + 1);
    mac(cur_, cur_id_, 0, from, client_cid, pseudo + 5);
    return derive_cid(pseudo, len);
}

}  // namespace gs::mces::wire
