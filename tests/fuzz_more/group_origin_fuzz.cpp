// libFuzzer target: decode_origin() (core/engine/group_origin.h), the 22-byte
// origin header other overlay members put in front of a legacy multicast
// datagram. Besides not crashing:
//  - it never reads past `len`: every prefix of the input is decoded from a
//    heap copy of exactly that many bytes, so ASan sees a read beyond it;
//  - it accepts exactly what the header's table allows (checked here against
//    the table, written out independently): len >= 22, magic "gm", version 1,
//    flags 0, port not 0; and leaves *out alone when it refuses;
//  - what it accepts re-encodes (encode_origin) to the same 22 bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/common/sansio.h"
#include "core/engine/group_origin.h"

namespace {

using gs::engine::decode_origin;
using gs::engine::encode_origin;
using gs::engine::kOriginLen;
using gs::sansio::Addr;

bool acceptable(const std::uint8_t* p, std::size_t n) {
    return n >= 22 && p[0] == 'g' && p[1] == 'm' && p[2] == 1 && p[3] == 0 && (p[20] | p[21]) != 0;
}

void check(const std::uint8_t* p, std::size_t n) {
    // A sentinel that a refusal must leave as it is.
    Addr sentinel = Addr::v4(0x01020304, 4321);
    Addr got = sentinel;
    const bool ok = decode_origin(p, n, &got);
    if (ok != acceptable(p, n)) abort();
    if (!ok) {
        if (!(got == sentinel)) abort();
        return;
    }
    if (got.port == 0) abort();
    std::uint8_t again[kOriginLen];
    encode_origin(got, again);
    if (std::memcmp(again, p, kOriginLen) != 0) abort();
    Addr twice;
    if (!decode_origin(again, sizeof again, &twice) || !(twice == got)) abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // The whole input (libFuzzer's buffer is exactly `size` bytes on the heap).
    check(data, size);
    // Every prefix up to one byte past the header, each in a buffer of its own
    // exact size (an empty one has data() == nullptr, which must be refused too).
    const std::size_t upto = size < kOriginLen + 1 ? size : kOriginLen + 1;
    for (std::size_t n = 0; n <= upto; ++n) {
        std::vector<std::uint8_t> copy(data, data + n);
        check(copy.data(), copy.size());
    }
    return 0;
}
