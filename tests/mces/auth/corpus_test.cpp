// The committed seed corpus (tests/fuzz/corpus/mces_auth_fuzz) is exactly what
// gen_corpus writes, and the seeds reach every success path of the fuzz
// harness. After a change to the keys or the formats:
//     ninja -C BUILD tests/mces/auth/mces_auth_gen_corpus
//     BUILD/tests/mces/auth/mces_auth_gen_corpus tests/fuzz/corpus/mces_auth_fuzz
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/mces/auth/seeds.h"

using namespace gs::mces::auth;
namespace fs = std::filesystem;

TEST_CASE("the committed corpus equals the generator's seeds") {
    const char* dir = std::getenv("MCES_AUTH_CORPUS");
    REQUIRE(dir != nullptr);
    const auto all = test::seeds();
    CHECK(all.size() == 5);
    for (const auto& s : all) {
        CAPTURE(s.name);
        std::ifstream in(fs::path(dir) / s.name, std::ios::binary);
        REQUIRE(in.good());
        const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                              std::istreambuf_iterator<char>());
        CHECK(bytes == s.bytes);
    }
}

TEST_CASE("the seeds reach the success paths of the harness") {
    std::size_t opened[2] = {0, 0}, replays = 0, proofs = 0, window = 0;
    for (const auto& s : test::seeds()) {
        CAPTURE(s.name);
        const auto st = test::run_input(s.bytes.data(), s.bytes.size());
        CHECK(st.records > 0);
        opened[0] += st.opened[0];
        opened[1] += st.opened[1];
        replays += st.replays;
        proofs += st.proofs_ok;
        window += st.window_ops;
    }
    CHECK(opened[0] == 4);   // pn 0, 2, 1, 1500; then a replay and a too-old
    CHECK(opened[1] == 4);
    CHECK(replays == 2);
    CHECK(proofs == 4);      // one of each kind
    CHECK(window == 10);
}

TEST_CASE("a truncated input never opens more than the whole one") {
    // Cutting an input cuts its last record's packet short: that packet
    // must then fail, never open.
    for (const auto& s : test::seeds()) {
        CAPTURE(s.name);
        const auto whole = test::run_input(s.bytes.data(), s.bytes.size());
        for (std::size_t n = 0; n < s.bytes.size(); ++n) {
            CAPTURE(n);
            const auto st = test::run_input(s.bytes.data(), n);
            CHECK(st.opened[0] <= whole.opened[0]);
            CHECK(st.opened[1] <= whole.opened[1]);
            CHECK(st.proofs_ok <= whole.proofs_ok);
        }
    }
}
