// What the fuzz target (mces_auth_fuzz.cpp) does with one input, shared with
// the corpus generator and the corpus test so the committed seeds are known
// to reach the success paths.
//
// An input is a sequence of records:
//     op(1) pn(8, big-endian) header_len(1) len(2, big-endian) bytes(len)
// op & 3:  0  open with the encrypt-mode Opener (server side, fixed keys)
//          1  open with the authenticate-mode Opener
//          2  check a handshake proof: kind 1 + ((op >> 2) & 3), bound to
//             the fixed client nonce when op & 0x40
//          3  the replay window alone: check then mark pn
// A truncated last record is given as it is (len cut to what is left).
// State (the openers' windows) lasts for the whole input.
//
// Invariants (a violation traps): an opened packet's payload has the right
// length and sits where promised; opening it again is a replay; sealing its
// plaintext afresh with the client's keys gives the same bytes; a valid
// proof signs back to the same bytes; the window agrees with its marks.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "core/mces/auth/proof.h"
#include "core/mces/auth/protect.h"

namespace gs::mces::auth::test {

#define GS_AUTH_REQUIRE(c) \
    do {                   \
        if (!(c)) __builtin_trap(); \
    } while (0)

inline Psk fuzz_psk() {
    std::array<std::uint8_t, kPskLen> k{};
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(0xA0 + 3 * i);
    Psk p;
    GS_AUTH_REQUIRE(p.set(k) == 0);
    return p;
}

inline HandshakeValues fuzz_values(Mode m) {
    HandshakeValues hv;
    hv.mode = m;
    const std::uint8_t c[8] = {0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8};
    const std::uint8_t s[8] = {0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58};
    // By hand, not ConnectionId::from: the fuzz target links no wire code.
    hv.client_cid.len = hv.server_cid.len = 8;
    std::memcpy(hv.client_cid.bytes.data(), c, 8);
    std::memcpy(hv.server_cid.bytes.data(), s, 8);
    for (std::size_t i = 0; i < kHandshakeNonceLen; ++i) {
        hv.client_nonce[i] = static_cast<std::uint8_t>(0x10 + i);
        hv.server_nonce[i] = static_cast<std::uint8_t>(0x80 + i);
    }
    return hv;
}

struct HarnessStats {
    std::size_t records = 0;
    std::size_t opened[2] = {0, 0};   // by mode: encrypt, authenticate
    std::size_t replays = 0;
    std::size_t proofs_ok = 0;
    std::size_t window_ops = 0;
};

// One record as the generator writes it.
inline void append_record(std::vector<std::uint8_t>& out, std::uint8_t op, std::uint64_t pn,
                          std::uint8_t header_len, std::span<const std::uint8_t> bytes) {
    out.push_back(op);
    for (int i = 7; i >= 0; --i) out.push_back(static_cast<std::uint8_t>(pn >> (8 * i)));
    out.push_back(header_len);
    out.push_back(static_cast<std::uint8_t>(bytes.size() >> 8));
    out.push_back(static_cast<std::uint8_t>(bytes.size()));
    out.insert(out.end(), bytes.begin(), bytes.end());
}

inline HarnessStats run_input(const std::uint8_t* data, std::size_t size) {
    HarnessStats st;
    const Psk psk = fuzz_psk();
    Protection prot[2];
    GS_AUTH_REQUIRE(make_protection(psk, fuzz_values(Mode::encrypt), Role::server, prot[0]) == 0);
    GS_AUTH_REQUIRE(make_protection(psk, fuzz_values(Mode::authenticate), Role::server,
                                    prot[1]) == 0);
    HandshakeProof proof;
    GS_AUTH_REQUIRE(proof.init(psk) == 0);
    const HandshakeNonce client_nonce = fuzz_values(Mode::encrypt).client_nonce;
    ReplayWindow window;
    std::vector<std::uint8_t> scratch;

    std::size_t at = 0;
    while (size - at >= 12) {
        const std::uint8_t op = data[at];
        std::uint64_t pn = 0;
        for (std::size_t i = 0; i < 8; ++i) pn = (pn << 8) | data[at + 1 + i];
        const std::size_t header_len = data[at + 9];
        std::size_t len = (std::size_t{data[at + 10]} << 8) | data[at + 11];
        at += 12;
        if (len > size - at) len = size - at;
        const std::span<const std::uint8_t> bytes(data + at, len);
        at += len;
        ++st.records;

        switch (op & 3) {
        case 0:
        case 1: {
            const std::size_t m = op & 1;
            Opener& o = prot[m].recv;
            scratch.assign(len, 0);
            std::span<const std::uint8_t> payload;
            const OpenStatus s = o.open(bytes, header_len, pn, scratch, payload);
            if (s == OpenStatus::replay) ++st.replays;
            if (s != OpenStatus::ok) {
                GS_AUTH_REQUIRE(payload.empty());
                break;
            }
            ++st.opened[m];
            GS_AUTH_REQUIRE(payload.size() == len - header_len - kTagLen);
            GS_AUTH_REQUIRE(o.largest() >= static_cast<std::int64_t>(pn));
            if (m == 1) GS_AUTH_REQUIRE(payload.data() == bytes.data() + header_len);
            // Sealing the same plaintext with the client's key gives the same packet.
            Protection client;
            GS_AUTH_REQUIRE(make_protection(psk, fuzz_values(m == 0 ? Mode::encrypt
                                                                      : Mode::authenticate),
                                            Role::client, client) == 0);
            std::vector<std::uint8_t> again(bytes.begin(), bytes.end());
            std::memcpy(again.data() + header_len, payload.data(), payload.size());
            GS_AUTH_REQUIRE(client.send.seal(again, header_len, pn) == 0);
            GS_AUTH_REQUIRE(std::memcmp(again.data(), bytes.data(), len) == 0);
            std::span<const std::uint8_t> p2;
            GS_AUTH_REQUIRE(o.open(bytes, header_len, pn, scratch, p2) == OpenStatus::replay);
            break;
        }
        case 2: {
            const auto kind = static_cast<ProofKind>(1 + ((op >> 2) & 3));
            const std::span<const std::uint8_t> bind =
                (op & 0x40) != 0 ? std::span<const std::uint8_t>(client_nonce)
                                 : std::span<const std::uint8_t>();
            HandshakeNonce n{};
            if (proof.check(kind, bind, bytes, &n) != ProofStatus::ok) break;
            ++st.proofs_ok;
            std::vector<std::uint8_t> again(bytes.begin(), bytes.end());
            std::memset(again.data() + len - kProofTrailerLen, 0, kProofTrailerLen);
            GS_AUTH_REQUIRE(proof.sign(kind, bind, n, again) == 0);
            GS_AUTH_REQUIRE(std::memcmp(again.data(), bytes.data(), len) == 0);
            break;
        }
        case 3: {
            ++st.window_ops;
            pn &= kMaxPacketNumber;   // the window's domain, as open() guarantees
            const ReplayCheck c = window.check(pn);
            if (c == ReplayCheck::fresh) {
                window.mark(pn);
                GS_AUTH_REQUIRE(window.check(pn) == ReplayCheck::duplicate);
                GS_AUTH_REQUIRE(window.largest() >= static_cast<std::int64_t>(pn));
            } else if (c == ReplayCheck::too_old) {
                GS_AUTH_REQUIRE(window.largest() - static_cast<std::int64_t>(pn) >=
                                static_cast<std::int64_t>(kReplayWindow));
            }
            break;
        }
        }
    }
    return st;
}

}  // namespace gs::mces::auth::test
