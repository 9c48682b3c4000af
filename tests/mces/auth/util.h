// Keys, handshake values and packets for the auth tests.
#pragma once

#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <vector>

#include "core/mces/auth/protect.h"

namespace gs::mces::auth::test {

inline Psk psk_of(std::uint8_t seed) {
    std::array<std::uint8_t, kPskLen> k{};
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(seed + 7 * i);
    Psk p;
    REQUIRE(p.set(k) == 0);
    return p;
}

inline HandshakeValues values(Mode m, std::uint8_t nonce_seed = 1) {
    HandshakeValues hv;
    hv.mode = m;
    const std::uint8_t c[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const std::uint8_t s[8] = {9, 10, 11, 12, 13, 14, 15, 16};
    hv.client_cid = wire::ConnectionId::from(c);
    hv.server_cid = wire::ConnectionId::from(s);
    for (std::size_t i = 0; i < kHandshakeNonceLen; ++i) {
        hv.client_nonce[i] = static_cast<std::uint8_t>(nonce_seed * 31 + i);
        hv.server_nonce[i] = static_cast<std::uint8_t>(nonce_seed * 17 + 100 + i);
    }
    return hv;
}

struct Pair {
    Protection client;
    Protection server;
};

inline Pair pair_of(const Psk& psk, const HandshakeValues& hv, Limits limits = {}) {
    Pair p;
    REQUIRE(make_protection(psk, hv, Role::client, p.client, limits) == 0);
    REQUIRE(make_protection(psk, hv, Role::server, p.server, limits) == 0);
    return p;
}

constexpr std::size_t kHeaderLen = 11;

// header (11: flags, 8-byte cid, 2-byte pn) | payload | room for the tag
inline std::vector<std::uint8_t> plain_packet(std::uint64_t pn, std::size_t payload_len) {
    std::vector<std::uint8_t> p = {0x61, 9, 10, 11, 12, 13, 14, 15, 16,
                                   static_cast<std::uint8_t>(pn >> 8),
                                   static_cast<std::uint8_t>(pn)};
    for (std::size_t i = 0; i < payload_len; ++i)
        p.push_back(static_cast<std::uint8_t>(i * 29 + pn * 3 + 1));
    p.resize(p.size() + kTagLen, 0);
    return p;
}

inline std::vector<std::uint8_t> sealed(Sealer& s, std::uint64_t pn, std::size_t payload_len = 40) {
    auto p = plain_packet(pn, payload_len);
    REQUIRE(s.seal(p, kHeaderLen, pn) == 0);
    return p;
}

// Opens into a fresh scratch buffer; the payload as a vector (empty on failure).
inline OpenStatus open_copy(Opener& o, const std::vector<std::uint8_t>& p, std::uint64_t pn,
                            std::vector<std::uint8_t>* payload = nullptr) {
    std::vector<std::uint8_t> scratch(p.size());
    std::span<const std::uint8_t> out;
    const OpenStatus s = o.open(p, kHeaderLen, pn, scratch, out);
    if (payload != nullptr) payload->assign(out.begin(), out.end());
    return s;
}

}  // namespace gs::mces::auth::test
