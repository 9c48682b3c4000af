// load_psk: the file side of key handling. Kept apart from the packet code,
// which must stay free of I/O.
#include "core/mces/auth/key_file.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace gs::mces::auth {

namespace {

// Closes the descriptor on every path out of load_psk.
class Fd {
public:
    explicit Fd(int fd) noexcept : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const noexcept { return fd_; }

private:
    int fd_;
};

std::string octal_mode(mode_t m) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
    return buf;
}

bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_hex(char c) noexcept {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

}  // namespace

int parse_psk(std::span<const char> text, const std::string& name, Psk& out,
              std::string& error) {
    out = Psk{};
    std::size_t n = text.size();
    while (n > 0 && is_space(text[n - 1])) --n;   // the trailing newline, if any
    const std::string fix = "; it must hold 64 hex digits (32 bytes) and an optional newline";
    if (n != kPskHexLen) {
        error = "key file " + name + ": " + std::to_string(n) +
                " characters before the trailing whitespace, expected 64" + fix;
        return -EINVAL;
    }
    SecretBytes key(kPskLen);
    if (!key.valid()) {
        error = "key file " + name + ": cannot allocate locked memory for the key";
        return -ENOMEM;
    }
    // sodium_hex2bin runs in constant time: the digits are secret too.
    // Without hex_end it fails unless every character is a digit.
    std::size_t bin_len = 0;
    const int rc = sodium_hex2bin(key.data(), kPskLen, text.data(), n, nullptr, &bin_len, nullptr);
    if (rc != 0 || bin_len != kPskLen) {
        // The key is refused, so where the bad character sits tells nothing
        // about a key in use; which character it is is never said.
        std::size_t at = 0;
        while (at < n && is_hex(text[at])) ++at;
        error = "key file " + name + ": the character at offset " + std::to_string(at) +
                " is not a hex digit" + fix;
        return -EINVAL;
    }
    const int set = out.set(key.bytes());
    if (set != 0) error = "key file " + name + ": cannot allocate locked memory for the key";
    return set;
}

int load_psk(const std::string& path, Psk& out, std::string& error) {
    out = Psk{};
    const std::string name = "'" + path + "'";
    // O_NONBLOCK: a FIFO in the key's place must not hang the program; it
    // is refused below as not a regular file.
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (fd.get() < 0) {
        const int e = errno;
        error = "key file " + name + ": cannot open: " + std::strerror(e);
        return -e;
    }
    // fstat on the open descriptor: what is checked is what is read.
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        const int e = errno;
        error = "key file " + name + ": cannot stat: " + std::strerror(e);
        return -e;
    }
    if (!S_ISREG(st.st_mode)) {
        error = "key file " + name + ": not a regular file";
        return -EPERM;
    }
    const uid_t me = ::geteuid();
    if (st.st_uid != me) {
        error = "key file " + name + ": owned by uid " + std::to_string(st.st_uid) +
                ", not by this user (uid " + std::to_string(me) +
                "); run: chown " + std::to_string(me) + " '" + path + "' && chmod 600 '" + path +
                "'";
        return -EPERM;
    }
    if ((st.st_mode & 077) != 0) {
        error = "key file " + name + ": has mode " + octal_mode(st.st_mode) +
                ", readable or writable by group or others; a key must be private to its "
                "owner; run: chmod 600 '" + path + "'";
        return -EPERM;
    }
    if (st.st_size > static_cast<off_t>(kMaxKeyFileLen)) {
        error = "key file " + name + ": " + std::to_string(st.st_size) +
                " bytes, too large for a key; it must hold 64 hex digits (32 bytes) and an "
                "optional newline";
        return -EINVAL;
    }
    // The file's text goes through guarded memory too, and is wiped with it.
    SecretBytes text(kMaxKeyFileLen + 1);
    if (!text.valid()) {
        error = "key file " + name + ": cannot allocate locked memory for the key";
        return -ENOMEM;
    }
    std::size_t got = 0;
    while (got < text.size()) {
        const ssize_t r = ::read(fd.get(), text.data() + got, text.size() - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            const int e = errno;
            error = "key file " + name + ": cannot read: " + std::strerror(e);
            return -e;
        }
        if (r == 0) break;
        got += static_cast<std::size_t>(r);
    }
    if (got > kMaxKeyFileLen) {   // grew between fstat and read
        error = "key file " + name + ": too large for a key; it must hold 64 hex digits "
                "(32 bytes) and an optional newline";
        return -EINVAL;
    }
    return parse_psk({reinterpret_cast<const char*>(text.data()), got}, name, out, error);
}

}  // namespace gs::mces::auth
