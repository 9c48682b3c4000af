// Writes the seed corpus for mces_wire_fuzz: one file per sample packet.
//     mces_wire_gen_corpus DIR
#include <cstdio>
#include <fstream>

#include "tests/mces/wire/samples.h"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    for (const auto& s : gs::mces::wire::test::samples()) {
        const std::string path = std::string(argv[1]) + "/" + s.name;
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(s.bytes.data()),
                  static_cast<std::streamsize>(s.bytes.size()));
        if (!out) {
            std::fprintf(stderr, "cannot write %s\n", path.c_str());
            return 1;
        }
    }
    return 0;
}
