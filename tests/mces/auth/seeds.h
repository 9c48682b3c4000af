// The seed corpus of mces_auth_fuzz (tests/fuzz/corpus/mces_auth_fuzz), made
// from the fixed keys of harness.h: genuine packets in both modes (in order,
// out of order, replayed, too old), genuine proofs of every kind, window
// moves, and malformed records. Deterministic: the corpus test checks the
// committed files equal this.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "tests/mces/auth/harness.h"

namespace gs::mces::auth::test {

struct Seed {
    std::string name;
    std::vector<std::uint8_t> bytes;
};

// header(11) = flags 0x61 | server cid (8) | pn (2 bytes)
inline std::vector<std::uint8_t> seed_packet(Sealer& s, std::uint64_t pn, std::size_t payload_len) {
    std::vector<std::uint8_t> p = {0x61, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58,
                                   static_cast<std::uint8_t>(pn >> 8),
                                   static_cast<std::uint8_t>(pn)};
    for (std::size_t i = 0; i < payload_len; ++i) p.push_back(static_cast<std::uint8_t>(i * 13 + pn));
    p.resize(p.size() + kTagLen);
    GS_AUTH_REQUIRE(s.seal(p, 11, pn) == 0);
    return p;
}

inline std::vector<Seed> seeds() {
    std::vector<Seed> out;
    const Psk psk = fuzz_psk();
    for (const Mode m : {Mode::encrypt, Mode::authenticate}) {
        Protection client;
        GS_AUTH_REQUIRE(make_protection(psk, fuzz_values(m), Role::client, client) == 0);
        const std::uint8_t op = m == Mode::encrypt ? 0 : 1;
        std::vector<std::uint8_t> in;
        std::vector<std::vector<std::uint8_t>> pk;
        const std::uint64_t pns[] = {0, 1, 2, 3, 1500};
        for (const std::uint64_t pn : pns) pk.push_back(seed_packet(client.send, pn, 24 + pn % 7));
        append_record(in, op, 0, 11, pk[0]);
        append_record(in, op, 2, 11, pk[2]);
        append_record(in, op, 1, 11, pk[1]);   // out of order, within the window
        append_record(in, op, 1, 11, pk[1]);   // replay
        append_record(in, op, 1500, 11, pk[4]);
        append_record(in, op, 3, 11, pk[3]);   // too old now
        out.push_back({std::string("open_") + name(m), in});
    }
    {
        HandshakeProof proof;
        GS_AUTH_REQUIRE(proof.init(psk) == 0);
        const HandshakeValues hv = fuzz_values(Mode::encrypt);
        std::vector<std::uint8_t> in;
        for (std::uint8_t k = 1; k <= 4; ++k) {
            // A long header: flags with bit 5 | version | dcid | scid | pn | frames | trailer
            std::vector<std::uint8_t> p = {static_cast<std::uint8_t>(0xE0 | ((k - 1) << 3)),
                                           0x4D, 0x43, 0x00, 0x01, 0x00, 0x08,
                                           0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0x00};
            p.resize(p.size() + 40 + k, 0);   // frames and padding stand-in
            p.resize(p.size() + kProofTrailerLen);
            const bool bound = k != 1;
            const std::span<const std::uint8_t> bind =
                bound ? std::span<const std::uint8_t>(hv.client_nonce)
                      : std::span<const std::uint8_t>();
            GS_AUTH_REQUIRE(proof.sign(static_cast<ProofKind>(k), bind,
                                       k == 1 ? hv.client_nonce : hv.server_nonce, p) == 0);
            append_record(in, static_cast<std::uint8_t>(2 | ((k - 1) << 2) | (bound ? 0x40 : 0)),
                          0, 0, p);
        }
        out.push_back({"proofs", in});
    }
    {
        std::vector<std::uint8_t> in;
        const std::uint64_t pns[] = {0, 5, 5, 64, 2000, 6, 977, 976, 100000, kMaxPacketNumber};
        for (const std::uint64_t pn : pns)
            append_record(in, 3, pn, 0, {});
        out.push_back({"window", in});
    }
    {
        // Malformed: too short for a tag, header longer than the packet,
        // a packet number over 2^62, a proof packet of 32 bytes.
        std::vector<std::uint8_t> in;
        const std::vector<std::uint8_t> junk(20, 0x5a);
        append_record(in, 0, 1, 11, std::span<const std::uint8_t>(junk).first(15));
        append_record(in, 1, 1, 200, junk);
        append_record(in, 0, kMaxPacketNumber + 1, 0, junk);
        append_record(in, 2, 0, 0, std::vector<std::uint8_t>(kProofTrailerLen, 0));
        out.push_back({"malformed", in});
    }
    return out;
}

}  // namespace gs::mces::auth::test
