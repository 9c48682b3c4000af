// Packet protection (protect.h): round trips in both modes and both
// directions, wrong keys, every single-bit flip, replay, too-old and
// out-of-order packets, nonce reuse and key limits.
#include <doctest/doctest.h>

#include <cerrno>
#include <set>
#include <string>

#include "tests/mces/auth/util.h"

using namespace gs::mces::auth;
using namespace gs::mces::auth::test;

namespace {

std::vector<std::uint8_t> payload_of(const std::vector<std::uint8_t>& plain) {
    return {plain.begin() + kHeaderLen, plain.end() - kTagLen};
}

}  // namespace

TEST_CASE("round trip in both modes and both directions") {
    const Psk psk = psk_of(1);
    for (const Mode m : {Mode::encrypt, Mode::authenticate}) {
        CAPTURE(std::string(name(m)));
        Pair p = pair_of(psk, values(m));
        CHECK(p.client.send.mode() == m);
        CHECK(p.server.recv.mode() == m);
        for (std::uint64_t pn = 0; pn < 50; ++pn) {
            for (int dir = 0; dir < 2; ++dir) {
                Sealer& s = dir == 0 ? p.client.send : p.server.send;
                Opener& o = dir == 0 ? p.server.recv : p.client.recv;
                const std::size_t len = pn * 7 % 200;   // 0 included
                const auto plain = plain_packet(pn, len);
                const auto wire = sealed(s, pn, len);
                REQUIRE(wire.size() == plain.size());
                // The header is never changed; the payload is hidden only when encrypting.
                CHECK(std::equal(wire.begin(), wire.begin() + kHeaderLen, plain.begin()));
                if (len >= 8) CHECK((payload_of(wire) == payload_of(plain)) == (m == Mode::authenticate));
                std::vector<std::uint8_t> got;
                REQUIRE(open_copy(o, wire, pn, &got) == OpenStatus::ok);
                CHECK(got == payload_of(plain));
                CHECK(o.largest() == static_cast<std::int64_t>(pn));
            }
        }
        CHECK(p.client.send.counters().sealed == 50);
        CHECK(p.server.recv.counters().opened == 50);
        CHECK(p.server.recv.counters().dropped() == 0);
    }
}

TEST_CASE("authenticate mode hands back a view into the packet; encrypt mode opens in place") {
    const Psk psk = psk_of(2);
    Pair a = pair_of(psk, values(Mode::authenticate));
    const auto w = sealed(a.client.send, 0);
    std::span<const std::uint8_t> out;
    REQUIRE(a.server.recv.open(w, kHeaderLen, 0, {}, out) == OpenStatus::ok);
    CHECK(out.data() == w.data() + kHeaderLen);
    CHECK(out.size() == 40);

    Pair e = pair_of(psk, values(Mode::encrypt));
    auto we = sealed(e.client.send, 0);
    // scratch = the payload's own bytes: decrypted where it lies
    std::span<std::uint8_t> in_place(we.data() + kHeaderLen, we.size() - kHeaderLen - kTagLen);
    REQUIRE(e.server.recv.open(we, kHeaderLen, 0, in_place, out) == OpenStatus::ok);
    CHECK(out.data() == we.data() + kHeaderLen);
    CHECK(payload_of(we) == payload_of(plain_packet(0, 40)));
    // too small a scratch: refused, nothing counted, window unmoved
    const auto w1 = sealed(e.client.send, 1);
    std::vector<std::uint8_t> small(39);
    CHECK(e.server.recv.open(w1, kHeaderLen, 1, small, out) == OpenStatus::no_room);
    CHECK(out.empty());
    CHECK(e.server.recv.largest() == 0);
    CHECK(open_copy(e.server.recv, w1, 1) == OpenStatus::ok);
}

TEST_CASE("a peer with another key, nonce, identity or mode cannot inject") {
    const Psk psk = psk_of(3);
    for (const Mode m : {Mode::encrypt, Mode::authenticate}) {
        CAPTURE(std::string(name(m)));
        Pair good = pair_of(psk, values(m));
        struct Variant {
            const char* what;
            Psk psk;
            HandshakeValues hv;
        };
        std::vector<Variant> vs;
        vs.push_back({"other psk", psk_of(4), values(m)});
        vs.push_back({"other nonces", psk_of(3), values(m, 2)});
        HandshakeValues hv = values(m);
        hv.server_nonce[15] ^= 1;
        vs.push_back({"one bit of the server nonce", psk_of(3), hv});
        hv = values(m);
        hv.client_cid.bytes[0] ^= 0x80;
        vs.push_back({"client cid", psk_of(3), hv});
        hv = values(m);
        hv.version = gs::mces::wire::kVersion1 + 1;
        vs.push_back({"version", psk_of(3), hv});
        vs.push_back({"mode", psk_of(3),
                      values(m == Mode::encrypt ? Mode::authenticate : Mode::encrypt)});
        std::uint64_t pn = 0;
        for (auto& v : vs) {
            CAPTURE(v.what);
            Protection bad;
            REQUIRE(make_protection(v.psk, v.hv, Role::client, bad) == 0);
            const auto w = sealed(bad.send, pn);
            CHECK(open_copy(good.server.recv, w, pn) == OpenStatus::auth_failed);
            ++pn;
        }
        CHECK(good.server.recv.counters().auth_failures == vs.size());
        // Failures never moved the window: the genuine packets still open.
        CHECK(good.server.recv.largest() == -1);
        for (std::uint64_t i = 0; i < pn; ++i)
            CHECK(open_copy(good.server.recv, sealed(good.client.send, i), i) == OpenStatus::ok);
        // A packet of one direction does not open in the other (own send key != peer's).
        const auto mine = sealed(good.server.send, 0);
        CHECK(open_copy(good.server.recv, mine, 100) == OpenStatus::auth_failed);
    }
}

TEST_CASE("every single-bit flip of header, payload or tag is dropped") {
    const Psk psk = psk_of(5);
    for (const Mode m : {Mode::encrypt, Mode::authenticate}) {
        CAPTURE(std::string(name(m)));
        Pair p = pair_of(psk, values(m));
        const auto w = sealed(p.client.send, 7, 33);
        std::size_t flips = 0;
        for (std::size_t i = 0; i < w.size(); ++i) {
            for (int b = 0; b < 8; ++b) {
                auto t = w;
                t[i] = static_cast<std::uint8_t>(t[i] ^ (1u << b));
                CAPTURE(i);
                CAPTURE(b);
                CHECK(open_copy(p.server.recv, t, 7) == OpenStatus::auth_failed);
                ++flips;
            }
        }
        CHECK(flips == (kHeaderLen + 33 + kTagLen) * 8);
        CHECK(p.server.recv.counters().auth_failures == flips);
        // So is the right packet under another packet number.
        CHECK(open_copy(p.server.recv, w, 6) == OpenStatus::auth_failed);
        CHECK(open_copy(p.server.recv, w, 7 + (std::uint64_t{1} << 40)) == OpenStatus::auth_failed);
        // Encrypting, a byte moved from the AD to the ciphertext fails too.
        // Authenticating, the tag covers header and payload as one string,
        // so where the receiver splits them is its own parse, not a forgery.
        std::vector<std::uint8_t> scratch(w.size());
        std::span<const std::uint8_t> out;
        if (m == Mode::encrypt) {
            CHECK(p.server.recv.open(w, kHeaderLen - 1, 7, scratch, out) == OpenStatus::auth_failed);
            CHECK(p.server.recv.open(w, kHeaderLen + 1, 7, scratch, out) == OpenStatus::auth_failed);
        }
        // and dropping or adding a byte
        auto shorter = w;
        shorter.pop_back();
        CHECK(open_copy(p.server.recv, shorter, 7) == OpenStatus::auth_failed);
        auto longer = w;
        longer.push_back(0);
        CHECK(open_copy(p.server.recv, longer, 7) == OpenStatus::auth_failed);
        // the untouched packet still opens
        CHECK(open_copy(p.server.recv, w, 7) == OpenStatus::ok);
    }
}

TEST_CASE("replays and too-old packets are dropped; out-of-order within the window accepted") {
    const Psk psk = psk_of(6);
    Pair p = pair_of(psk, values(Mode::encrypt));
    std::vector<std::vector<std::uint8_t>> w;
    for (std::uint64_t pn = 0; pn < 1200; ++pn) w.push_back(sealed(p.client.send, pn, 8));
    Opener& o = p.server.recv;

    CHECK(open_copy(o, w[5], 5) == OpenStatus::ok);
    CHECK(open_copy(o, w[5], 5) == OpenStatus::replay);
    CHECK(open_copy(o, w[3], 3) == OpenStatus::ok);       // older, but within the window
    CHECK(open_copy(o, w[3], 3) == OpenStatus::replay);
    CHECK(o.largest() == 5);

    CHECK(open_copy(o, w[1099], 1099) == OpenStatus::ok);
    // The window holds 1024 numbers: 76..1099.
    CHECK(open_copy(o, w[76], 76) == OpenStatus::ok);
    CHECK(open_copy(o, w[75], 75) == OpenStatus::too_old);
    CHECK(open_copy(o, w[4], 4) == OpenStatus::too_old);
    CHECK(open_copy(o, w[5], 5) == OpenStatus::too_old);   // seen and too old: too_old
    // Everything between, in reverse, exactly once.
    for (std::uint64_t pn = 1098; pn > 76; --pn) CHECK(open_copy(o, w[pn], pn) == OpenStatus::ok);
    for (std::uint64_t pn = 76; pn < 1100; ++pn) CHECK(open_copy(o, w[pn], pn) == OpenStatus::replay);
    // 1100..1199 arrive after a gap, shuffled
    for (std::uint64_t i = 0; i < 100; ++i) {
        const std::uint64_t pn = 1100 + (i * 37) % 100;
        CHECK(open_copy(o, w[pn], pn) == OpenStatus::ok);
    }
    const auto& c = o.counters();
    CHECK(c.opened == 3 + 1 + 1022 + 100);
    CHECK(c.replays == 2 + 1024);
    CHECK(c.too_old == 3);
    CHECK(c.auth_failures == 0);
    CHECK(o.largest() == 1199);
}

TEST_CASE("a forged packet with a fresh number does not move the window") {
    const Psk psk = psk_of(7);
    Pair p = pair_of(psk, values(Mode::authenticate));
    auto forged = sealed(p.client.send, 5000);
    forged[kHeaderLen] ^= 1;
    CHECK(open_copy(p.server.recv, forged, 5000) == OpenStatus::auth_failed);
    CHECK(p.server.recv.largest() == -1);
    // Had it moved the window, 0 would now be too old.
    CHECK(open_copy(p.server.recv, sealed(p.client.send, 5001), 5001) == OpenStatus::ok);
    Pair q = pair_of(psk, values(Mode::authenticate, 9));
    CHECK(open_copy(q.server.recv, forged, 5000) == OpenStatus::auth_failed);
    CHECK(open_copy(q.server.recv, sealed(q.client.send, 0), 0) == OpenStatus::ok);
}

TEST_CASE("the sealer refuses to reuse a nonce") {
    const Psk psk = psk_of(8);
    Pair p = pair_of(psk, values(Mode::encrypt));
    Sealer& s = p.client.send;
    CHECK(s.last_sealed() == -1);
    auto a = plain_packet(5, 20);
    REQUIRE(s.seal(a, kHeaderLen, 5) == 0);
    CHECK(s.last_sealed() == 5);
    for (const std::uint64_t pn : {5, 4, 0}) {
        auto b = plain_packet(pn, 20);
        const auto before = b;
        CHECK(s.seal(b, kHeaderLen, pn) == -EALREADY);
        CHECK(b == before);   // untouched
    }
    auto c = plain_packet(0, 20);
    CHECK(s.seal(c, kHeaderLen, kMaxPacketNumber + 1) == -ERANGE);
    CHECK(s.counters().nonce_reuse == 4);
    CHECK(s.seal(c, kHeaderLen, 6) == 0);
    // The largest packet number is usable once.
    auto d = plain_packet(0, 20);
    CHECK(s.seal(d, kHeaderLen, kMaxPacketNumber) == 0);
    CHECK(open_copy(p.server.recv, d, kMaxPacketNumber) == OpenStatus::ok);
    CHECK(s.seal(d, kHeaderLen, kMaxPacketNumber) == -EALREADY);
    // Layout errors
    std::vector<std::uint8_t> tiny(kTagLen - 1);
    CHECK(s.seal(tiny, 0, 100) == -EINVAL);
    std::vector<std::uint8_t> hdr_only(kHeaderLen + kTagLen - 1);
    CHECK(s.seal(hdr_only, kHeaderLen, 100) == -EINVAL);
    CHECK(s.counters().sealed == 3);
}

TEST_CASE("two connections under one PSK never share a keystream") {
    // Same PSK, same packet number, same plaintext: different connections
    // (nonces) and different directions give different bytes.
    const Psk psk = psk_of(9);
    Pair a = pair_of(psk, values(Mode::encrypt, 1));
    Pair b = pair_of(psk, values(Mode::encrypt, 2));
    std::set<std::vector<std::uint8_t>> seen;
    std::vector<std::uint8_t> first;
    for (Sealer* s : {&a.client.send, &a.server.send, &b.client.send, &b.server.send}) {
        const auto w = sealed(*s, 0, 64);
        if (first.empty()) first = w;
        seen.insert(payload_of(w));
    }
    CHECK(seen.size() == 4);
    // The same handshake values give the same keys: that is how both sides agree.
    Pair a2 = pair_of(psk, values(Mode::encrypt, 1));
    CHECK(sealed(a2.client.send, 0, 64) == first);
}

TEST_CASE("key limits: sealing stops at max_packets, opening after max_auth_failures") {
    const Psk psk = psk_of(10);
    Limits lim;
    lim.max_packets = 3;
    lim.max_auth_failures = 2;
    Pair p = pair_of(psk, values(Mode::encrypt), lim);
    for (std::uint64_t pn = 0; pn < 3; ++pn) (void)sealed(p.client.send, pn);
    auto w = plain_packet(3, 10);
    CHECK(p.client.send.seal(w, kHeaderLen, 3) == -EKEYEXPIRED);
    CHECK(p.client.send.seal(w, kHeaderLen, 4) == -EKEYEXPIRED);
    CHECK(p.client.send.counters().key_limit == 2);
    CHECK(p.client.send.counters().sealed == 3);

    const auto good = sealed(p.server.send, 0);
    auto bad = good;
    bad.back() ^= 1;
    CHECK(open_copy(p.client.recv, bad, 0) == OpenStatus::auth_failed);
    CHECK(open_copy(p.client.recv, bad, 0) == OpenStatus::auth_failed);
    // Retired: even the genuine packet is dropped now.
    CHECK(open_copy(p.client.recv, good, 0) == OpenStatus::key_limit);
    CHECK(p.client.recv.counters().key_limit == 1);
    CHECK(p.client.recv.counters().auth_failures == 2);
}

TEST_CASE("malformed input and missing keys") {
    const Psk psk = psk_of(11);
    Pair p = pair_of(psk, values(Mode::encrypt));
    Opener& o = p.server.recv;
    std::vector<std::uint8_t> scratch(64);
    std::span<const std::uint8_t> out;
    for (std::size_t n = 0; n < kHeaderLen + kTagLen; ++n) {
        std::vector<std::uint8_t> b(n, 0x41);
        CHECK(o.open(b, kHeaderLen, 0, scratch, out) == OpenStatus::malformed);
        CHECK(out.empty());
    }
    const auto w = sealed(p.client.send, 0);
    CHECK(o.open(w, kHeaderLen, kMaxPacketNumber + 1, scratch, out) == OpenStatus::malformed);
    CHECK(o.open(w, w.size(), 0, scratch, out) == OpenStatus::malformed);
    CHECK(o.counters().malformed == kHeaderLen + kTagLen + 2);
    CHECK(o.largest() == -1);

    Sealer none;
    auto x = plain_packet(0, 4);
    CHECK(none.seal(x, kHeaderLen, 0) == -ENOKEY);
    Opener nobody;
    CHECK(nobody.open(w, kHeaderLen, 0, scratch, out) == OpenStatus::no_key);

    Psk empty;
    Protection prot;
    CHECK(make_protection(empty, values(Mode::encrypt), Role::client, prot) == -EINVAL);
    HandshakeValues hv = values(Mode::encrypt);
    hv.mode = static_cast<Mode>(7);
    CHECK(make_protection(psk, hv, Role::client, prot) == -EINVAL);
    CHECK(prot.send.seal(x, kHeaderLen, 0) == -ENOKEY);
    CHECK(std::string(name(OpenStatus::too_old)) == "too_old");
}
