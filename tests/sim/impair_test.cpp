// The impairment model (tools/gsimpair/impair.h): statistics with fixed
// seeds, exact serialization and queueing, and the option-string parsers.
//
// Statistical tolerances: with n draws of probability p the standard
// deviation of the observed rate is sqrt(p(1-p)/n); the bounds below are at
// least 4 of those, and the seeds are fixed, so a failure means the model
// changed, not bad luck.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tools/gsimpair/impair.h"

using namespace gs::impair;
using gs::sansio::kMicrosecond;
using gs::sansio::kMillisecond;
using gs::sansio::kSecond;

namespace {

double sigma(double p, double n) { return std::sqrt(p * (1 - p) / n); }

}  // namespace

TEST_CASE("rng: same seed same sequence, another seed another, ranges hold") {
    Rng a(42), b(42), c(43);
    int differ = 0;
    for (int i = 0; i < 1000; ++i) {
        const auto x = a.next();
        CHECK(x == b.next());
        if (x != c.next()) ++differ;
    }
    CHECK(differ > 990);
    double sum = 0;
    for (int i = 0; i < 100000; ++i) {
        const double u = a.uniform();
        REQUIRE(u >= 0.0);
        REQUIRE(u < 1.0);
        sum += u;
        REQUIRE(a.below(7) < 7);
    }
    CHECK(std::abs(sum / 100000 - 0.5) < 0.005);
    CHECK(a.below(0) == 0);
    CHECK(a.below(1) == 0);
}

TEST_CASE("loss: observed rate within 4.5 sigma of the set rate") {
    const double rates[] = {0.0, 0.01, 0.05, 0.10, 0.50, 1.0};
    const int n = 100000;
    for (double p : rates) {
        CAPTURE(p);
        LinkParams lp;
        lp.loss = p;
        Link link(lp, 7);
        int lost = 0;
        for (int i = 0; i < n; ++i) {
            const Decision d = link.offer(100, i * kMicrosecond);
            if (d.drop != Drop::none) {
                CHECK(d.drop == Drop::loss);
                CHECK(d.count == 0);
                ++lost;
            } else {
                CHECK(d.count == 1);
            }
        }
        const double rate = static_cast<double>(lost) / n;
        CHECK(std::abs(rate - p) <= 4.5 * sigma(p, n) + 1e-12);
        CHECK(link.counters().dropped_loss == static_cast<std::uint64_t>(lost));
        CHECK(link.counters().packets_in == static_cast<std::uint64_t>(n));
        CHECK(link.counters().delivered + link.counters().dropped() == static_cast<std::uint64_t>(n));
    }
}

TEST_CASE("burst loss: Gilbert-Elliott stationary loss and mean burst length") {
    LinkParams lp;
    lp.burst = {true, 0.01, 0.30, 1.0};
    Link link(lp, 11);
    const int n = 200000;
    int lost = 0, bursts = 0, run = 0;
    for (int i = 0; i < n; ++i) {
        const bool drop = link.offer(100, i).drop != Drop::none;
        if (drop) {
            ++lost;
            if (run == 0) ++bursts;
            ++run;
        } else {
            run = 0;
        }
    }
    // Stationary P(bad) = p_gb / (p_gb + p_bg) = 0.01 / 0.31; every bad packet is lost.
    const double expect = 0.01 / 0.31;
    const double rate = static_cast<double>(lost) / n;
    // Bursts make losses correlated, so allow 15% relative error instead of a binomial bound.
    CHECK(std::abs(rate - expect) < 0.15 * expect);
    // Mean sojourn in bad = 1 / p_bg = 3.33 packets.
    const double mean_burst = static_cast<double>(lost) / bursts;
    CHECK(mean_burst > 3.0);
    CHECK(mean_burst < 3.7);
    CHECK(link.counters().dropped_burst == static_cast<std::uint64_t>(lost));
    CHECK(link.counters().dropped_loss == 0);
}

TEST_CASE("delay: exact without jitter, within +-jitter with it, FIFO order kept") {
    SUBCASE("no jitter: every packet exactly the delay") {
        LinkParams lp;
        lp.delay = 20 * kMillisecond;
        Link link(lp, 1);
        for (int i = 0; i < 1000; ++i) {
            const Time now = i * 137 * kMicrosecond;
            const Decision d = link.offer(500, now);
            REQUIRE(d.count == 1);
            CHECK(d.d[0].at == now + 20 * kMillisecond);
        }
    }
    SUBCASE("jitter that may reorder: uniform in [delay-jitter, delay+jitter]") {
        LinkParams lp;
        lp.delay = 20 * kMillisecond;
        lp.jitter = 5 * kMillisecond;
        lp.jitter_reorders = true;
        Link link(lp, 2);
        const int n = 50000;
        double sum = 0;
        Time lo = kSecond, hi = 0;
        int low_quarter = 0;
        for (int i = 0; i < n; ++i) {
            const Time now = i * kMillisecond;
            const Decision d = link.offer(100, now);
            REQUIRE(d.count == 1);
            const Time owd = d.d[0].at - now;
            REQUIRE(owd >= 15 * kMillisecond);
            REQUIRE(owd <= 25 * kMillisecond);
            lo = std::min(lo, owd);
            hi = std::max(hi, owd);
            if (owd < 17500 * kMicrosecond) ++low_quarter;
            sum += static_cast<double>(owd);
        }
        // Mean 20 ms: sd of one draw 5/sqrt(3) ms, of the mean that / sqrt(n) = 13 us.
        CHECK(std::abs(sum / n - 20e6) < 60e3);
        CHECK(lo < 15100 * kMicrosecond);
        CHECK(hi > 24900 * kMicrosecond);
        CHECK(std::abs(static_cast<double>(low_quarter) / n - 0.25) < 4.5 * sigma(0.25, n));
    }
    SUBCASE("jitter on a FIFO link: never below delay-jitter, never above delay+jitter, in order") {
        LinkParams lp;
        lp.delay = 20 * kMillisecond;
        lp.jitter = 5 * kMillisecond;
        Link link(lp, 3);
        Time last = 0;
        for (int i = 0; i < 20000; ++i) {
            const Time now = i * 500 * kMicrosecond;
            const Decision d = link.offer(100, now);
            REQUIRE(d.count == 1);
            const Time owd = d.d[0].at - now;
            CHECK(owd >= 15 * kMillisecond);
            CHECK(owd <= 25 * kMillisecond);
            CHECK(d.d[0].at >= last);
            last = d.d[0].at;
        }
    }
}

TEST_CASE("reorder: the set share of packets is held back and overtaken") {
    LinkParams lp;
    lp.delay = 5 * kMillisecond;
    lp.reorder_prob = 0.02;
    lp.reorder_delay = 10 * kMillisecond;
    Link link(lp, 5);
    const int n = 50000;
    struct Arrival { Time at; int seq; };
    std::vector<Arrival> arr;
    for (int i = 0; i < n; ++i) {
        const Decision d = link.offer(100, i * kMillisecond);
        REQUIRE(d.count == 1);
        arr.push_back({d.d[0].at, i});
    }
    std::stable_sort(arr.begin(), arr.end(), [](const Arrival& a, const Arrival& b) { return a.at < b.at; });
    // A packet is late when one sent after it has already arrived.
    int late = 0, highest = -1;
    for (const auto& a : arr) {
        if (a.seq < highest) ++late;
        highest = std::max(highest, a.seq);
    }
    const auto reordered = static_cast<int>(link.counters().reordered);
    CHECK(std::abs(static_cast<double>(reordered) / n - 0.02) < 4.5 * sigma(0.02, n));
    // Each held-back packet (10 ms extra, 1 ms spacing) is overtaken; two in
    // a row can hide nothing since the next unreordered one passes both.
    CHECK(late == reordered);
}

TEST_CASE("duplicate: about the set rate, two deliveries at one time") {
    LinkParams lp;
    lp.delay = kMillisecond;
    lp.dup_prob = 0.01;
    Link link(lp, 9);
    const int n = 100000;
    int dups = 0;
    for (int i = 0; i < n; ++i) {
        const Decision d = link.offer(64, i * kMicrosecond);
        REQUIRE(d.count >= 1);
        if (d.count == 2) {
            ++dups;
            CHECK(d.d[1].at == d.d[0].at);
            CHECK(d.d[1].flip_bit == -1);
        }
    }
    CHECK(std::abs(static_cast<double>(dups) / n - 0.01) < 4.5 * sigma(0.01, n));
    CHECK(link.counters().duplicated == static_cast<std::uint64_t>(dups));
    CHECK(link.counters().delivered == static_cast<std::uint64_t>(n + dups));
}

TEST_CASE("corrupt: exactly one bit changes, about the set rate") {
    SUBCASE("always: one bit, anywhere in the packet") {
        LinkParams lp;
        lp.corrupt_prob = 1.0;
        Link link(lp, 13);
        std::vector<int> hits_per_byte(37, 0);
        for (int i = 0; i < 20000; ++i) {
            std::vector<std::uint8_t> orig(37);
            for (std::size_t k = 0; k < orig.size(); ++k) orig[k] = static_cast<std::uint8_t>(i * 31 + k);
            std::vector<std::uint8_t> copy = orig;
            const Decision d = link.offer(copy.size(), i);
            REQUIRE(d.count == 1);
            REQUIRE(d.d[0].flip_bit >= 0);
            REQUIRE(d.d[0].flip_bit < 37 * 8);
            apply_flip(copy, d.d[0].flip_bit);
            int bits = 0;
            for (std::size_t k = 0; k < orig.size(); ++k) {
                const int diff = std::popcount(static_cast<unsigned>(orig[k] ^ copy[k]));
                bits += diff;
                if (diff) ++hits_per_byte[k];
            }
            REQUIRE(bits == 1);
        }
        for (int h : hits_per_byte) CHECK(h > 0);
    }
    SUBCASE("rate") {
        LinkParams lp;
        lp.corrupt_prob = 0.001;
        Link link(lp, 17);
        const int n = 200000;
        for (int i = 0; i < n; ++i) link.offer(1200, i);
        const double r = static_cast<double>(link.counters().corrupted) / n;
        CHECK(std::abs(r - 0.001) < 4.5 * sigma(0.001, n));
    }
    SUBCASE("an empty datagram cannot be corrupted") {
        LinkParams lp;
        lp.corrupt_prob = 1.0;
        Link link(lp, 1);
        const Decision d = link.offer(0, 0);
        CHECK(d.count == 1);
        CHECK(d.d[0].flip_bit == -1);
    }
}

TEST_CASE("bandwidth: serialization times are exact") {
    CHECK(serialization_time(1000, 8'000'000) == kMillisecond);
    CHECK(serialization_time(1500, 10'000'000) == 1200 * kMicrosecond);
    CHECK(serialization_time(1, 3) == 2'666'666'667);   // rounded up
    CHECK(serialization_time(100, 0) == 0);

    LinkParams lp;
    lp.rate_bps = 8'000'000;   // 1000 bytes = 1 ms
    lp.delay = 10 * kMillisecond;
    SUBCASE("a burst queues behind itself") {
        Link link(lp, 1);
        for (int k = 1; k <= 20; ++k) {
            const Decision d = link.offer(1000, 0);
            REQUIRE(d.count == 1);
            CHECK(d.d[0].at == k * kMillisecond + 10 * kMillisecond);
        }
        CHECK(link.backlog(0) == 20000);
        CHECK(link.backlog(5 * kMillisecond) == 15000);
        CHECK(link.backlog(20 * kMillisecond) == 0);
    }
    SUBCASE("spaced packets only pay their own serialization") {
        Link link(lp, 1);
        for (int k = 0; k < 20; ++k) {
            const Time now = k * 2 * kMillisecond;
            const Decision d = link.offer(500, now);
            CHECK(d.d[0].at == now + 500 * kMicrosecond + 10 * kMillisecond);
        }
    }
}

TEST_CASE("queue limit: drop-tail once the backlog is full, accepts again as it drains") {
    LinkParams lp;
    lp.rate_bps = 8'000'000;
    lp.queue_limit = 5000;
    Link link(lp, 1);
    int ok = 0, dropped = 0;
    for (int k = 0; k < 10; ++k) {
        const Decision d = link.offer(1000, 0);
        if (d.drop == Drop::queue) ++dropped; else ++ok;
    }
    CHECK(ok == 5);
    CHECK(dropped == 5);
    CHECK(link.counters().dropped_queue == 5);
    CHECK(link.counters().queue_peak_bytes == 5000);
    // After 2 ms two packets have left: two more fit, the third does not.
    CHECK(link.offer(1000, 2 * kMillisecond).drop == Drop::none);
    CHECK(link.offer(1000, 2 * kMillisecond).drop == Drop::none);
    CHECK(link.offer(1000, 2 * kMillisecond).drop == Drop::queue);
    // The accepted ones leave back to back: the 7th ends at 7 ms.
    CHECK(link.backlog(7 * kMillisecond) == 0);
}

TEST_CASE("mtu: larger datagrams are dropped, equal ones pass") {
    LinkParams lp;
    lp.mtu = 1500;
    Link link(lp, 1);
    CHECK(link.offer(1500, 0).drop == Drop::none);
    CHECK(link.offer(1501, 0).drop == Drop::mtu);
    CHECK(link.counters().dropped_mtu == 1);
}

TEST_CASE("same seed, same decisions; another seed, others") {
    LinkParams lp;
    lp.loss = 0.1;
    lp.delay = 5 * kMillisecond;
    lp.jitter = 2 * kMillisecond;
    lp.jitter_reorders = true;
    lp.dup_prob = 0.05;
    lp.corrupt_prob = 0.05;
    auto run = [&](std::uint64_t seed) {
        Link link(lp, seed);
        std::uint64_t h = 1469598103934665603ull;
        for (int i = 0; i < 5000; ++i) {
            const Decision d = link.offer(200, i * kMillisecond);
            h = (h ^ static_cast<std::uint64_t>(d.drop)) * 1099511628211ull;
            for (int k = 0; k < d.count; ++k) {
                h = (h ^ static_cast<std::uint64_t>(d.d[k].at)) * 1099511628211ull;
                h = (h ^ static_cast<std::uint64_t>(d.d[k].flip_bit)) * 1099511628211ull;
            }
        }
        return h;
    };
    CHECK(run(1) == run(1));
    CHECK(run(1) != run(2));
}

TEST_CASE("validate: refuses what makes no sense") {
    LinkParams lp;
    CHECK(lp.validate().empty());
    lp.loss = 1.5;
    CHECK(lp.validate().find("loss") != std::string::npos);
    lp = {};
    lp.delay = -1;
    CHECK(lp.validate().find("delay") != std::string::npos);
    lp = {};
    lp.burst = {true, 0.1, 2.0, 1.0};
    CHECK(lp.validate().find("burst") != std::string::npos);
}

TEST_CASE("option strings: accepted forms") {
    struct ProbCase { const char* text; double value; };
    for (const auto& c : {ProbCase{"5%", 0.05}, ProbCase{"0.05", 0.05}, ProbCase{"0", 0.0},
                          ProbCase{"100%", 1.0}, ProbCase{"0.1%", 0.001}, ProbCase{"1", 1.0}}) {
        CAPTURE(c.text);
        double v = -1;
        CHECK(parse_probability("--loss", c.text, v, nullptr) == 0);
        CHECK(v == doctest::Approx(c.value));
    }
    struct DurCase { const char* text; Time value; };
    for (const auto& c : {DurCase{"20ms", 20 * kMillisecond}, DurCase{"1.5s", 1500 * kMillisecond},
                          DurCase{"250us", 250 * kMicrosecond}, DurCase{"100ns", 100},
                          DurCase{"0", 0}, DurCase{"2S", 2 * kSecond}}) {
        CAPTURE(c.text);
        Time v = -1;
        CHECK(parse_duration("--delay", c.text, v, nullptr) == 0);
        CHECK(v == c.value);
    }
    struct U64Case { const char* text; std::uint64_t value; };
    for (const auto& c : {U64Case{"10mbit", 10'000'000}, U64Case{"2MB/s", 16'000'000},
                          U64Case{"1.5gbit", 1'500'000'000}, U64Case{"64kbit", 64'000},
                          U64Case{"9600bit", 9600}, U64Case{"10Mbit/s", 10'000'000},
                          U64Case{"1MiB/s", 8 * 1024 * 1024}, U64Case{"100B/s", 800}}) {
        CAPTURE(c.text);
        std::uint64_t v = 0;
        CHECK(parse_rate("--rate", c.text, v, nullptr) == 0);
        CHECK(v == c.value);
    }
    for (const auto& c : {U64Case{"1500", 1500}, U64Case{"1500B", 1500}, U64Case{"256KB", 256'000},
                          U64Case{"64KiB", 65536}, U64Case{"1MB", 1'000'000},
                          U64Case{"1MiB", 1048576}, U64Case{"1.5kB", 1500}}) {
        CAPTURE(c.text);
        std::uint64_t v = 0;
        CHECK(parse_size("--queue", c.text, v, nullptr) == 0);
        CHECK(v == c.value);
    }
    BurstParams b;
    CHECK(parse_burst("--burst", "1%,30%", b, nullptr) == 0);
    CHECK(b.enabled);
    CHECK(b.p_good_to_bad == doctest::Approx(0.01));
    CHECK(b.p_bad_to_good == doctest::Approx(0.30));
    CHECK(b.loss_bad == doctest::Approx(1.0));
    CHECK(parse_burst("--burst", "0.02,0.5,90%", b, nullptr) == 0);
    CHECK(b.loss_bad == doctest::Approx(0.9));

    LinkParams lp;
    CHECK(set_link_option(lp, "delay", "20ms", nullptr) == 0);
    CHECK(set_link_option(lp, "rate", "10mbit", nullptr) == 0);
    CHECK(set_link_option(lp, "queue", "256KB", nullptr) == 0);
    CHECK(set_link_option(lp, "mtu", "1500", nullptr) == 0);
    CHECK(set_link_option(lp, "reorder-delay", "3ms", nullptr) == 0);
    CHECK(lp.delay == 20 * kMillisecond);
    CHECK(lp.rate_bps == 10'000'000);
    CHECK(lp.queue_limit == 256'000);
    CHECK(lp.mtu == 1500);
    CHECK(lp.reorder_delay == 3 * kMillisecond);
}

TEST_CASE("option strings: refused with a message naming option, value and what is expected") {
    struct Bad { const char* option; const char* text; const char* expect; };
    const Bad bad[] = {
        {"loss", "5x", "probability"},     {"loss", "150%", "probability"},
        {"loss", "-0.1", "probability"},   {"loss", "", "probability"},
        {"loss", "nan", "probability"},    {"loss", "5 %", "probability"},
        {"delay", "20", "unit"},           {"delay", "20min", "duration"},
        {"delay", "-5ms", "duration"},     {"delay", "ms", "duration"},
        {"jitter", "1e30s", "too long"},   {"rate", "10", "rate"},
        {"rate", "10mbps", "ambiguous"},   {"rate", "10xbit", "rate"},
        {"rate", "0mbit", "rate"},         {"rate", "10mb/s", "rate"},
        {"queue", "256KBit", "size"},      {"queue", "12 KB", "size"},
        {"queue", "-1", "size"},           {"mtu", "9e9", "too large"},
        {"burst", "1%", "burst"},          {"burst", "1%,2%,3%,4%", "burst"},
        {"burst", "1%,x", "burst"},        {"burst", "1%,200%", "burst"},
        {"speed", "10", "not a link option"},
    };
    for (const auto& b : bad) {
        CAPTURE(b.option);
        CAPTURE(b.text);
        LinkParams lp;
        std::string err;
        CHECK(set_link_option(lp, b.option, b.text, &err) == -EINVAL);
        CAPTURE(err);
        CHECK(err.find(std::string("--") + b.option) == 0);
        CHECK(err.find(std::string("'") + b.text + "'") != std::string::npos);
        CHECK(err.find(b.expect) != std::string::npos);
    }
    // Nothing was changed by a refused value.
    LinkParams lp;
    std::string err;
    lp.loss = 0.25;
    CHECK(set_link_option(lp, "loss", "oops", &err) != 0);
    CHECK(lp.loss == 0.25);
}
