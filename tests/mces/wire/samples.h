// One valid packet of every packet type and every frame type, built with the
// encoders: shared by the unit tests, the corpus generator and the corpus
// check (tests/fuzz/corpus/mces_wire holds these bytes, one file each).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/common/sansio.h"
#include "core/mces/wire/cookie.h"
#include "core/mces/wire/packet.h"

namespace gs::mces::wire::test {

struct Sample {
    std::string name;                  // the corpus file name
    PacketType type;
    std::vector<std::uint8_t> bytes;
};

// Connection IDs the samples use; short headers carry kServerCid (8 bytes).
ConnectionId client_cid();
ConnectionId server_cid();
CookieJar::Key test_key(std::uint8_t seed);
sansio::Addr client_addr();

std::vector<Sample> samples();

}  // namespace gs::mces::wire::test
