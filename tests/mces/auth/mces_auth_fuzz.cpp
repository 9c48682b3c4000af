// libFuzzer target: Opener::open in both modes, the handshake proof check and
// the replay window on arbitrary bytes (record format and invariants:
// harness.h). Seeds: tests/fuzz/corpus/mces_auth_fuzz (gen_corpus.cpp).
#include <cstddef>
#include <cstdint>

#include "tests/mces/auth/harness.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    (void)gs::mces::auth::test::run_input(data, size);
    return 0;
}
