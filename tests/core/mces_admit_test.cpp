// The MCES server's reservations (core/engine/mces_admit.h) against a real
// ledger file: classes 2 and 3 with a rate reserve it down and are refused
// (host capacity, with what was available, one log line) when it does not
// fit; classes 0/1 and no rate reserve nothing; release gives it back once;
// downgrade grants what is left; no usable ledger admits as asked.
#include <doctest/doctest.h>

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/engine/mces_admit.h"

using namespace gs;
using engine::McesAdmission;
using mces::wire::Admission;
using mces::wire::AdmissionRequest;

namespace {

std::vector<std::string> g_lines;
void capture(const char* line) noexcept { g_lines.emplace_back(line); }

struct TempLedger {
    std::string dir;
    qos::Ledger ledger;
    explicit TempLedger(uint64_t capacity) {
        char t[] = "/tmp/gs-mces-admit-test.XXXXXX";
        REQUIRE(mkdtemp(t) != nullptr);
        dir = t;
        REQUIRE(ledger.open((dir + "/ledger").c_str(), capacity, capacity) == 0);
    }
    ~TempLedger() {
        ledger.close();
        std::filesystem::remove_all(dir);
    }
    std::vector<qos::LedgerItem> items() {
        std::vector<qos::LedgerItem> v;
        REQUIRE(ledger.snapshot(v) == 0);
        return v;
    }
};

AdmissionRequest request(uint8_t cls, uint64_t rate, uint16_t port = 40000) {
    AdmissionRequest r;
    r.from = sansio::Addr::v4(0x0a000001, port);   // 10.0.0.1
    r.service_class = cls;
    if (rate > 0) r.qos.rate = rate;
    r.qos.dscp = 34;
    return r;
}

const sansio::Addr kLocal = sansio::Addr::v4(0, 5000);

}  // namespace

TEST_CASE("classes 2 and 3 reserve down, a second that does not fit is refused; release gives it back") {
    TempLedger t(1'250'000);   // 10mbit
    McesAdmission adm(t.ledger, policy::OnReject::fail, &capture);
    g_lines.clear();

    const Admission a = adm.admit(request(2, 750'000), kLocal);   // 6mbit
    REQUIRE(a.admitted);
    CHECK(a.held != 0);
    CHECK(a.granted == request(2, 750'000).qos);   // everything as asked
    CHECK_FALSE(a.service_class.has_value());
    auto items = t.items();
    REQUIRE(items.size() == 1);
    CHECK(items[0].dir == qos::Dir::down);
    CHECK(items[0].rate == 750'000);
    CHECK(items[0].service == policy::ServiceClass::guaranteed);
    CHECK(items[0].description == "mces 10.0.0.1:40000 -> :5000");

    // Another 6mbit (realtime) does not fit in the 4mbit left: refused, and said why.
    const Admission b = adm.admit(request(3, 750'000, 40001), kLocal);
    CHECK_FALSE(b.admitted);
    CHECK(b.held == 0);
    CHECK(b.code == mces::kRefuseHostCapacity);
    CHECK(b.available.rate == std::optional<uint64_t>(500'000));
    CHECK(b.reason == "host capacity: available rate=500000B/s of 1250000B/s");
    REQUIRE(g_lines.size() == 1);
    MESSAGE(g_lines[0]);
    CHECK(g_lines[0].find("mces listener :5000: refused 10.0.0.1:40001, class realtime, asked 6 Mbit/s down, "
                          "4 Mbit/s free of 10 Mbit/s") == 0);
    CHECK(g_lines[0].find("ECONNREFUSED") != std::string::npos);
    CHECK(t.items().size() == 1);

    // Released once (a second release of the same handle changes nothing):
    // then the second fits.
    adm.release(a.held);
    adm.release(a.held);
    CHECK(t.items().empty());
    const Admission c = adm.admit(request(3, 750'000, 40001), kLocal);
    CHECK(c.admitted);
    CHECK(c.held != 0);
    CHECK(c.held != a.held);
    // A stale handle (its slot reserved again since) frees nothing.
    const Admission d = adm.admit(request(2, 375'000, 40002), kLocal);
    REQUIRE(d.admitted);
    CHECK(d.held != c.held);
    adm.release(c.held);
    CHECK(t.items().size() == 1);
    adm.release(d.held);
    CHECK(t.items().empty());
}

TEST_CASE("classes 0 and 1, or no rate: granted as asked, nothing reserved") {
    TempLedger t(1'000);
    McesAdmission adm(t.ledger, policy::OnReject::fail, &capture);
    g_lines.clear();
    for (const AdmissionRequest& r : {request(0, 1'000'000), request(1, 1'000'000), request(2, 0), request(3, 0)}) {
        const Admission a = adm.admit(r, kLocal);
        CHECK(a.admitted);
        CHECK(a.held == 0);
        CHECK(a.granted == r.qos);
    }
    CHECK(t.items().empty());
    CHECK(g_lines.empty());
    adm.release(0);   // holds nothing: nothing happens
}

TEST_CASE("on_reject = downgrade: granted what is left, and the client is told") {
    TempLedger t(1'000);
    McesAdmission adm(t.ledger, policy::OnReject::downgrade, &capture);
    g_lines.clear();
    const Admission a = adm.admit(request(2, 600), kLocal);
    const Admission b = adm.admit(request(2, 600, 40001), kLocal);
    REQUIRE(a.admitted);
    REQUIRE(b.admitted);
    CHECK(b.granted.rate == std::optional<uint64_t>(400));
    CHECK(b.granted.dscp == std::optional<uint8_t>(34));
    REQUIRE(g_lines.size() == 1);
    CHECK(g_lines[0].find("granted") != std::string::npos);
    // Nothing left at all: refused even with downgrade.
    const Admission c = adm.admit(request(2, 600, 40002), kLocal);
    CHECK_FALSE(c.admitted);
    CHECK(c.code == mces::kRefuseHostCapacity);
    adm.release(a.held);
    adm.release(b.held);
    CHECK(t.items().empty());
}

TEST_CASE("no usable ledger: admitted as asked without a reservation, logged once") {
    qos::Ledger closed;   // never opened: reserve() answers unavailable
    McesAdmission adm(closed, policy::OnReject::fail, &capture);
    g_lines.clear();
    for (int i = 0; i < 3; ++i) {
        const Admission a = adm.admit(request(2, 750'000), kLocal);
        CHECK(a.admitted);
        CHECK(a.held == 0);
        CHECK(a.granted.rate == std::optional<uint64_t>(750'000));
    }
    REQUIRE(g_lines.size() == 1);
    CHECK(g_lines[0].find("admitted without reserving") != std::string::npos);
}

TEST_CASE("an unproved source (no cookie yet) that would reserve is asked to prove its address first") {
    TempLedger t(1'250'000);
    McesAdmission adm(t.ledger, policy::OnReject::fail, &capture);
    g_lines.clear();
    AdmissionRequest r = request(2, 750'000);
    r.validated = false;   // admitted without a cookie (retry = under_load)
    const Admission a = adm.admit(r, kLocal);
    CHECK_FALSE(a.admitted);
    CHECK(a.prove_address);
    CHECK(a.held == 0);
    CHECK(t.items().empty());   // a spoofed INITIAL holds nothing
    CHECK(g_lines.empty());     // not a refusal: nothing to log
    // Without a reservation at stake, no proof is needed.
    AdmissionRequest plain = request(1, 0);
    plain.validated = false;
    const Admission b = adm.admit(plain, kLocal);
    CHECK(b.admitted);
    CHECK_FALSE(b.prove_address);
    // With the cookie, as before.
    const Admission c = adm.admit(request(2, 750'000), kLocal);
    CHECK(c.admitted);
    CHECK(t.items().size() == 1);
    adm.release(c.held);
}
