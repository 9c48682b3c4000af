// load_psk (key_file.h): the format, the permission and owner checks, and
// messages that name the file, the problem and the fix, never the key.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <string>

#include "core/mces/auth/key_file.h"

using namespace gs::mces::auth;

namespace {

const std::string kHex = "00112233445566778899aabbccddeeff0123456789abcdeffedcba9876543210";

// A private temporary directory, removed with what it holds.
struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/gs-auth-test-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir() {
        const std::string cmd = "rm -rf '" + path + "'";
        [[maybe_unused]] const int rc = std::system(cmd.c_str());
    }
    std::string file(const std::string& name, const std::string& text, mode_t mode) const {
        const std::string p = path + "/" + name;
        {
            std::ofstream f(p, std::ios::binary | std::ios::trunc);
            f << text;
            REQUIRE(f.good());
        }
        REQUIRE(::chmod(p.c_str(), mode) == 0);
        return p;
    }
};

// No 8-character piece of the key's hex appears in s.
bool leaks_key(const std::string& s) {
    for (std::size_t i = 0; i + 8 <= kHex.size(); ++i)
        if (s.find(kHex.substr(i, 8)) != std::string::npos) return true;
    return false;
}

}  // namespace

TEST_CASE("a private key file of 64 hex digits loads") {
    TempDir d;
    struct Good {
        const char* name;
        std::string text;
        mode_t mode;
    };
    const Good good[] = {
        {"plain", kHex, 0600},
        {"newline", kHex + "\n", 0600},
        {"crlf", kHex + "\r\n", 0400},
        {"upper", "00112233445566778899AABBCCDDEEFF0123456789ABCDEFFEDCBA9876543210", 0600},
    };
    for (const auto& [name, text, mode] : good) {
        CAPTURE(name);
        const std::string p = d.file(name, text, mode);
        Psk k;
        std::string err;
        REQUIRE(load_psk(p, k, err) == 0);
        CHECK(err.empty());
        REQUIRE(k.valid());
        REQUIRE(k.bytes().size() == 32);
        CHECK(k.bytes()[0] == 0x00);
        CHECK(k.bytes()[1] == 0x11);
        CHECK(k.bytes()[15] == 0xff);
        CHECK(k.bytes()[31] == 0x10);
    }
    // through a symlink, like ssh
    const std::string target = d.file("target", kHex, 0600);
    const std::string link = d.path + "/link";
    REQUIRE(::symlink(target.c_str(), link.c_str()) == 0);
    Psk k;
    std::string err;
    CHECK(load_psk(link, k, err) == 0);
}

TEST_CASE("a file others may read or write is refused, naming the mode and the fix") {
    TempDir d;
    for (const mode_t mode : {0644, 0640, 0604, 0660, 0602, 0620, 0610, 0601, 0666}) {
        CAPTURE(mode);
        const std::string p = d.file("k", kHex, mode);
        Psk k;
        std::string err;
        CHECK(load_psk(p, k, err) == -EPERM);
        CHECK(!k.valid());
        char m[8];
        std::snprintf(m, sizeof m, "%04o", static_cast<unsigned>(mode));
        CHECK(err.find(p) != std::string::npos);
        CHECK(err.find(std::string("mode ") + m) != std::string::npos);
        CHECK(err.find("chmod 600 '" + p + "'") != std::string::npos);
        CHECK(!leaks_key(err));
    }
}

TEST_CASE("a file owned by another user is refused") {
    TempDir d;
    std::string p;
    if (::geteuid() == 0) {
        p = d.file("theirs", kHex, 0600);
        REQUIRE(::chown(p.c_str(), 65534, 65534) == 0);
    } else {
        p = "/etc/passwd";   // root's, and not ours
    }
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    REQUIRE(st.st_uid != ::geteuid());
    Psk k;
    std::string err;
    CHECK(load_psk(p, k, err) == -EPERM);
    CHECK(!k.valid());
    CHECK(err.find(p) != std::string::npos);
    CHECK(err.find("owned by uid " + std::to_string(st.st_uid)) != std::string::npos);
    CHECK(err.find("chown " + std::to_string(::geteuid())) != std::string::npos);
    CHECK(!leaks_key(err));
}

TEST_CASE("wrong length, not hex, missing, not a regular file") {
    TempDir d;
    struct Bad {
        const char* name;
        std::string text;
        const char* says;
    };
    const Bad bad[] = {
        {"short", kHex.substr(0, 63), "63 characters"},
        {"long", kHex + "0", "65 characters"},
        {"empty", "", "0 characters"},
        {"raw32", std::string(32, '\x7f'), "32 characters"},
        {"leading-space", " " + kHex.substr(1), "offset 0 is not a hex digit"},
        {"nonhex", kHex.substr(0, 10) + "zz" + kHex.substr(12), "offset 10 is not a hex digit"},
        {"odd-nonhex", kHex.substr(0, 11) + "g" + kHex.substr(12), "offset 11 is not a hex digit"},
        {"two-lines", kHex.substr(0, 32) + "\n" + kHex.substr(33), "offset 32 is not a hex digit"},
    };
    for (const auto& b : bad) {
        CAPTURE(b.name);
        const std::string p = d.file(b.name, b.text, 0600);
        Psk k;
        std::string err;
        CHECK(load_psk(p, k, err) == -EINVAL);
        CHECK(!k.valid());
        CHECK(err.find(p) != std::string::npos);
        CHECK(err.find(b.says) != std::string::npos);
        CHECK(err.find("64 hex digits") != std::string::npos);
        CHECK(!leaks_key(err));
    }
    // The file's characters never show: a secret that is not hex.
    const std::string p = d.file("secret", "correct horse battery staple, my own passphrase!!", 0600);
    Psk k;
    std::string err;
    CHECK(load_psk(p, k, err) == -EINVAL);
    CHECK(err.find("horse") == std::string::npos);
    CHECK(err.find("passphrase") == std::string::npos);

    const std::string big = d.file("big", std::string(100000, 'a'), 0600);
    CHECK(load_psk(big, k, err) == -EINVAL);
    CHECK(err.find("too large") != std::string::npos);

    CHECK(load_psk(d.path + "/missing", k, err) == -ENOENT);
    CHECK(err.find(d.path + "/missing") != std::string::npos);
    CHECK(err.find("No such file") != std::string::npos);

    CHECK(load_psk(d.path, k, err) == -EPERM);   // a directory
    CHECK(err.find("not a regular file") != std::string::npos);

    const std::string fifo = d.path + "/fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK(load_psk(fifo, k, err) == -EPERM);     // and no hang waiting for a writer
    CHECK(err.find("not a regular file") != std::string::npos);
}

TEST_CASE("a failed load empties a key that was set") {
    TempDir d;
    Psk k;
    std::string err;
    REQUIRE(load_psk(d.file("good", kHex, 0600), k, err) == 0);
    REQUIRE(k.valid());
    CHECK(load_psk(d.file("bad", kHex, 0644), k, err) == -EPERM);
    CHECK(!k.valid());
    CHECK(k.bytes().empty());
    const std::uint8_t raw[31] = {};
    CHECK(k.set(raw) == -EINVAL);
}
