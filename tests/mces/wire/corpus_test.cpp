// The committed fuzz corpus (tests/fuzz/corpus/mces_wire) is exactly what
// gen_corpus writes: one valid packet of every type and frame. A change to the
// encoding shows up here until the corpus is regenerated:
//     ninja -C BUILD tests/mces/wire/mces_wire_gen_corpus
//     BUILD/tests/mces/wire/mces_wire_gen_corpus tests/fuzz/corpus/mces_wire
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "core/mces/wire/frame.h"
#include "tests/mces/wire/samples.h"

using namespace gs::mces::wire;
namespace fs = std::filesystem;

TEST_CASE("the committed corpus matches the samples, and covers every frame type") {
    const char* dir = std::getenv("MCES_WIRE_CORPUS");
    REQUIRE(dir != nullptr);
    std::set<FrameType> frames;
    std::size_t files = 0;
    for (const auto& s : test::samples()) {
        CAPTURE(s.name);
        std::ifstream in(fs::path(dir) / s.name, std::ios::binary);
        REQUIRE(in.good());
        const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                              std::istreambuf_iterator<char>());
        CHECK(bytes == s.bytes);
        ++files;
        PacketView v;
        REQUIRE(parse_packet(bytes, 8, v) == ParseError::ok);
        if (v.hdr.type == PacketType::version_negotiation) continue;
        FrameReader fr(v.hdr.type, v.payload);
        Frame f;
        while (fr.next(f) == ParseError::ok && !fr.done()) frames.insert(f.type);
        CHECK(fr.error() == ParseError::ok);
    }
    CHECK(files == test::samples().size());
    CHECK(frames.size() == 18);   // every FrameType
}
