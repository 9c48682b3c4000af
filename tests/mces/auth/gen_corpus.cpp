// Writes the mces_auth_fuzz seed corpus:
//     mces_auth_gen_corpus tests/fuzz/corpus/mces_auth_fuzz
#include <cstdio>
#include <fstream>
#include <string>

#include "tests/mces/auth/seeds.h"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    for (const auto& s : gs::mces::auth::test::seeds()) {
        const std::string path = std::string(argv[1]) + "/" + s.name;
        std::ofstream f(path, std::ios::binary | std::ios::trunc);
        f.write(reinterpret_cast<const char*>(s.bytes.data()),
                static_cast<std::streamsize>(s.bytes.size()));
        if (!f) {
            std::fprintf(stderr, "%s: cannot write\n", path.c_str());
            return 1;
        }
    }
    return 0;
}
