// The cookie: bound to address, port and connection ID; expires; survives
// one key rotation and not two.
#include <doctest/doctest.h>

#include <array>

#include "core/mces/wire/cookie.h"
#include "tests/mces/wire/samples.h"

using namespace gs::mces::wire;
using gs::sansio::Addr;
using gs::sansio::kSecond;
using gs::sansio::kMillisecond;
namespace t = gs::mces::wire::test;

namespace {

std::array<std::uint8_t, kCookieLen> issue(const CookieJar& jar, const Addr& a,
                                           const ConnectionId& c, gs::sansio::Time now) {
    std::array<std::uint8_t, kCookieLen> out{};
    jar.issue(a, c, now, out);
    return out;
}

}  // namespace

TEST_CASE("cookie: accepted from the same address, port and ID only") {
    CookieJar jar(t::test_key(1), 10 * kSecond);
    const Addr a = t::client_addr();
    const ConnectionId c = t::client_cid();
    const gs::sansio::Time t0 = 1000 * kSecond;
    const auto ck = issue(jar, a, c, t0);
    CHECK(jar.check(a, c, ck, t0) == CookieStatus::ok);
    CHECK(jar.check(a, c, ck, t0 + 3 * kSecond) == CookieStatus::ok);

    Addr other_ip = a;
    other_ip.ip[15] ^= 1;
    Addr other_port = a;
    other_port.port = static_cast<std::uint16_t>(a.port + 1);
    ConnectionId other_cid = c;
    other_cid.bytes[0] ^= 1;
    CHECK(jar.check(other_ip, c, ck, t0) == CookieStatus::bad_mac);
    CHECK(jar.check(other_port, c, ck, t0) == CookieStatus::bad_mac);
    CHECK(jar.check(a, other_cid, ck, t0) == CookieStatus::bad_mac);
    // an IPv6 client whose low bytes equal the IPv4 one is another address
    Addr v6 = a;
    v6.ip[10] = 0;
    CHECK(jar.check(v6, c, ck, t0) == CookieStatus::bad_mac);

    // every byte of the cookie matters
    for (std::size_t i = 0; i < kCookieLen; ++i) {
        auto bad = ck;
        bad[i] ^= 0x10;
        const CookieStatus s = jar.check(a, c, bad, t0);
        CHECK(s != CookieStatus::ok);
        if (i >= 1) CHECK(s == CookieStatus::bad_mac);   // byte 0 is the key id
    }
    CHECK(jar.check(a, c, std::span<const std::uint8_t>(ck).first(kCookieLen - 1), t0) ==
          CookieStatus::malformed);
    CHECK(jar.check(a, c, {}, t0) == CookieStatus::malformed);

    // another server's key
    CookieJar other(t::test_key(2), 10 * kSecond);
    CHECK(other.check(a, c, ck, t0) == CookieStatus::bad_mac);
}

TEST_CASE("cookie: expires after its lifetime, in whole seconds") {
    CookieJar jar(t::test_key(1), 10 * kSecond);
    const Addr a = t::client_addr();
    const ConnectionId c = t::client_cid();
    const gs::sansio::Time t0 = 500 * kSecond + 900 * kMillisecond;   // stamped 500
    const auto ck = issue(jar, a, c, t0);
    CHECK(jar.check(a, c, ck, 510 * kSecond + 999 * kMillisecond) == CookieStatus::ok);
    CHECK(jar.check(a, c, ck, 511 * kSecond) == CookieStatus::expired);
    CHECK(jar.check(a, c, ck, 5000 * kSecond) == CookieStatus::expired);
    // a cookie stamped later than now cannot be ours
    CHECK(jar.check(a, c, ck, 499 * kSecond) == CookieStatus::expired);
}

TEST_CASE("cookie: the previous key is accepted, older ones are not") {
    CookieJar jar(t::test_key(1), 3600 * kSecond);   // long life: only keys matter here
    const Addr a = t::client_addr();
    const ConnectionId c = t::client_cid();
    const gs::sansio::Time t0 = 100 * kSecond;
    const auto k1 = issue(jar, a, c, t0);
    jar.rotate(t::test_key(2));
    const auto k2 = issue(jar, a, c, t0);
    CHECK(k1 != k2);
    CHECK(jar.check(a, c, k1, t0) == CookieStatus::ok);   // previous key
    CHECK(jar.check(a, c, k2, t0) == CookieStatus::ok);   // current key
    jar.rotate(t::test_key(3));
    CHECK(jar.check(a, c, k1, t0) == CookieStatus::unknown_key);
    CHECK(jar.check(a, c, k2, t0) == CookieStatus::ok);
    // 256 rotations bring the key id back around, but not the key
    for (int i = 0; i < 255; ++i) jar.rotate(t::test_key(static_cast<std::uint8_t>(10 + i)));
    CHECK(jar.check(a, c, k2, t0) == CookieStatus::bad_mac);
}

TEST_CASE("cookie: the derived server ID is stable per cookie and differs across cookies") {
    CookieJar jar(t::test_key(1), 10 * kSecond);
    const auto k1 = issue(jar, t::client_addr(), t::client_cid(), 10 * kSecond);
    const auto k2 = issue(jar, t::client_addr(), t::client_cid(), 11 * kSecond);
    CHECK(jar.derive_cid(k1, 8) == jar.derive_cid(k1, 8));
    CHECK_FALSE(jar.derive_cid(k1, 8) == jar.derive_cid(k2, 8));
    CHECK(jar.derive_cid(k1, 8).len == 8);
    CHECK(jar.derive_cid(k1, 40).len == kMaxCidLen);
}
