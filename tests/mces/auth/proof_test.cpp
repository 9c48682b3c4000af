// The handshake proof (proof.h): a server checks an INITIAL statelessly and
// rejects one made without the key; a client rejects a reply not made with
// the key or not bound to its nonce; then both derive the same packet keys.
#include <doctest/doctest.h>

#include <cerrno>
#include <string>

#include "core/mces/auth/proof.h"
#include "tests/mces/auth/util.h"

using namespace gs::mces::auth;
using namespace gs::mces::auth::test;

namespace {

// A 1200-byte INITIAL stand-in: long header with the auth bit, then bytes
// for the frames, then room for the trailer.
std::vector<std::uint8_t> initial_bytes(std::size_t size = 1200) {
    std::vector<std::uint8_t> p(size, 0);
    const std::uint8_t hdr[] = {0xE0, 0x4D, 0x43, 0x00, 0x01, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, 0x00};
    std::copy(std::begin(hdr), std::end(hdr), p.begin());
    for (std::size_t i = sizeof hdr; i < 60; ++i) p[i] = static_cast<std::uint8_t>(i);
    return p;
}

HandshakeProof prover(std::uint8_t seed) {
    HandshakeProof h;
    REQUIRE(h.init(psk_of(seed)) == 0);
    return h;
}

}  // namespace

TEST_CASE("INITIAL: made with the key passes; without it, or altered, it does not") {
    HandshakeProof client = prover(1);
    const HandshakeValues hv = values(Mode::encrypt);
    auto ini = initial_bytes();
    REQUIRE(client.sign(ProofKind::initial, {}, hv.client_nonce, ini) == 0);
    CHECK(proof_nonce(ini) == hv.client_nonce);

    // The server's checker holds no state: a fresh one agrees.
    HandshakeProof server = prover(1);
    HandshakeNonce n{};
    CHECK(server.check(ProofKind::initial, {}, ini, &n) == ProofStatus::ok);
    CHECK(n == hv.client_nonce);

    HandshakeProof stranger = prover(2);
    auto forged = initial_bytes();
    REQUIRE(stranger.sign(ProofKind::initial, {}, hv.client_nonce, forged) == 0);
    CHECK(server.check(ProofKind::initial, {}, forged) == ProofStatus::bad_tag);

    // Every single-bit flip anywhere in the datagram.
    std::size_t flips = 0;
    for (std::size_t i = 0; i < ini.size(); ++i) {
        for (int b = 0; b < 8; ++b) {
            auto t = ini;
            t[i] = static_cast<std::uint8_t>(t[i] ^ (1u << b));
            if (server.check(ProofKind::initial, {}, t) != ProofStatus::bad_tag) {
                FAIL("flip at byte " << i << " bit " << b << " passed");
            }
            ++flips;
        }
    }
    CHECK(flips == 9600);
    // Cut or extended
    CHECK(server.check(ProofKind::initial, {}, std::span(ini).first(ini.size() - 1)) ==
          ProofStatus::bad_tag);
    auto longer = ini;
    longer.push_back(0);
    CHECK(server.check(ProofKind::initial, {}, longer) == ProofStatus::bad_tag);
    // As another kind, or bound to something
    CHECK(server.check(ProofKind::accept, {}, ini) == ProofStatus::bad_tag);
    CHECK(server.check(ProofKind::initial, hv.client_nonce, ini) == ProofStatus::bad_tag);
    CHECK(server.counters().accepted == 1);
    CHECK(server.counters().bad_tag == 1 + 9600 + 4);
}

TEST_CASE("replies are bound to the client's nonce and to their kind") {
    HandshakeProof server = prover(3);
    HandshakeProof client = prover(3);
    const HandshakeValues hv = values(Mode::authenticate);
    for (const ProofKind k : {ProofKind::retry, ProofKind::accept, ProofKind::refuse}) {
        CAPTURE(static_cast<int>(k));
        std::vector<std::uint8_t> reply(90, 0xEE);
        REQUIRE(server.sign(k, hv.client_nonce, hv.server_nonce, reply) == 0);
        HandshakeNonce got{};
        CHECK(client.check(k, hv.client_nonce, reply, &got) == ProofStatus::ok);
        CHECK(got == hv.server_nonce);
        // an old reply, to an INITIAL with another nonce
        const HandshakeValues other = values(Mode::authenticate, 5);
        CHECK(client.check(k, other.client_nonce, reply) == ProofStatus::bad_tag);
        CHECK(client.check(k, {}, reply) == ProofStatus::bad_tag);
        for (const ProofKind j : {ProofKind::initial, ProofKind::retry, ProofKind::accept,
                                  ProofKind::refuse}) {
            if (j != k) CHECK(client.check(j, hv.client_nonce, reply) == ProofStatus::bad_tag);
        }
        // from a server without the key
        HandshakeProof stranger = prover(4);
        REQUIRE(stranger.sign(k, hv.client_nonce, hv.server_nonce, reply) == 0);
        CHECK(client.check(k, hv.client_nonce, reply) == ProofStatus::bad_tag);
    }
}

TEST_CASE("a handshake end to end: proofs, then both sides derive the same keys") {
    const Psk psk = psk_of(6);
    HandshakeProof client, server;
    REQUIRE(client.init(psk) == 0);
    REQUIRE(server.init(psk) == 0);
    HandshakeValues cv = values(Mode::encrypt, 3);   // the client's view
    // client -> server: INITIAL with its nonce
    auto ini = initial_bytes();
    REQUIRE(client.sign(ProofKind::initial, {}, cv.client_nonce, ini) == 0);
    HandshakeValues sv = values(Mode::encrypt, 3);   // the server's view, built from the wire
    sv.client_nonce = {};
    sv.server_nonce = {};
    REQUIRE(server.check(ProofKind::initial, {}, ini, &sv.client_nonce) == ProofStatus::ok);
    sv.server_nonce = cv.server_nonce;   // the server's fresh draw
    // server -> client: ACCEPT bound to the client nonce, carrying the server's
    std::vector<std::uint8_t> acc(80, 0x22);
    REQUIRE(server.sign(ProofKind::accept, sv.client_nonce, sv.server_nonce, acc) == 0);
    cv.server_nonce = {};
    REQUIRE(client.check(ProofKind::accept, cv.client_nonce, acc, &cv.server_nonce) == ProofStatus::ok);

    Protection c, s;
    REQUIRE(make_protection(psk, cv, Role::client, c) == 0);
    REQUIRE(make_protection(psk, sv, Role::server, s) == 0);
    for (std::uint64_t pn = 0; pn < 10; ++pn) {
        CHECK(open_copy(s.recv, sealed(c.send, pn), pn) == OpenStatus::ok);
        CHECK(open_copy(c.recv, sealed(s.send, pn), pn) == OpenStatus::ok);
    }
    // nothing was dropped on either side
    CHECK(s.recv.counters().dropped() + c.recv.counters().dropped() == 0);
}

TEST_CASE("proof errors") {
    HandshakeProof none;
    auto p = initial_bytes(100);
    const HandshakeNonce n{};
    CHECK(none.sign(ProofKind::initial, {}, n, p) == -ENOKEY);
    CHECK(none.check(ProofKind::initial, {}, p) == ProofStatus::no_key);
    Psk empty;
    CHECK(none.init(empty) == -EINVAL);
    CHECK(!none.valid());

    HandshakeProof h = prover(7);
    std::vector<std::uint8_t> tiny(kProofTrailerLen);
    CHECK(h.sign(ProofKind::initial, {}, n, tiny) == -EINVAL);
    for (std::size_t len = 0; len <= kProofTrailerLen; ++len)
        CHECK(h.check(ProofKind::initial, {}, std::span(tiny).first(len)) == ProofStatus::malformed);
    const std::vector<std::uint8_t> long_bind(kMaxBindLen + 1, 1);
    CHECK(h.sign(ProofKind::accept, long_bind, n, p) == -EINVAL);
    CHECK(h.check(ProofKind::accept, long_bind, p) == ProofStatus::malformed);
    CHECK(h.counters().malformed == kProofTrailerLen + 2);
    CHECK(proof_nonce(std::span(tiny).first(3)) == HandshakeNonce{});
    CHECK(std::string(name(ProofStatus::bad_tag)) == "bad_tag");
}

TEST_CASE("the mode is in the proof's key: the same key in the other mode does not pass") {
    HandshakeProof enc, auth_only;
    REQUIRE(enc.init(psk_of(5), Mode::encrypt) == 0);
    REQUIRE(auth_only.init(psk_of(5), Mode::authenticate) == 0);
    const HandshakeValues hv = values(Mode::encrypt);
    auto a = initial_bytes();
    REQUIRE(auth_only.sign(ProofKind::initial, {}, hv.client_nonce, a) == 0);
    CHECK(enc.check(ProofKind::initial, {}, a) == ProofStatus::bad_tag);
    CHECK(auth_only.check(ProofKind::initial, {}, a) == ProofStatus::ok);
    auto e = initial_bytes();
    REQUIRE(enc.sign(ProofKind::initial, {}, hv.client_nonce, e) == 0);
    CHECK(auth_only.check(ProofKind::initial, {}, e) == ProofStatus::bad_tag);
    CHECK(enc.check(ProofKind::initial, {}, e) == ProofStatus::ok);
}
