// Key material in guarded memory (libsodium's sodium_malloc): the bytes sit
// between guard pages, are locked out of swap (mlock) where the system
// allows it, and are wiped (sodium_memzero) before the memory is freed.
//
// SecretBytes owns one such block of a fixed size. It is move-only: a copy
// of a key would be a second place to wipe. A default-constructed or moved-
// from SecretBytes holds nothing (valid() false); so does one whose
// allocation failed, and every user then answers -ENOMEM / "no key".
// Nothing here logs or prints the bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace gs::mces::auth {

class SecretBytes {
public:
    SecretBytes() noexcept = default;
    // size zeroed bytes, or nothing (valid() false) if sodium_init or
    // sodium_malloc failed.
    explicit SecretBytes(std::size_t size) noexcept;
    ~SecretBytes();
    SecretBytes(SecretBytes&& o) noexcept;
    SecretBytes& operator=(SecretBytes&& o) noexcept;
    SecretBytes(const SecretBytes&) = delete;
    SecretBytes& operator=(const SecretBytes&) = delete;

    bool valid() const noexcept { return p_ != nullptr; }
    std::size_t size() const noexcept { return size_; }
    std::span<std::uint8_t> bytes() noexcept { return {p_, size_}; }
    std::span<const std::uint8_t> bytes() const noexcept { return {p_, size_}; }
    std::uint8_t* data() noexcept { return p_; }
    const std::uint8_t* data() const noexcept { return p_; }

private:
    void wipe() noexcept;

    std::uint8_t* p_ = nullptr;
    std::size_t size_ = 0;
};

constexpr std::size_t kPskLen = 32;

// The pre-shared key: 32 bytes in guarded, wiped memory. Move-only; empty until
// set() or load_psk() (key_file.h) succeeds.
class Psk {
public:
    bool valid() const noexcept { return key_.valid(); }
    // Copies 32 bytes in. Returns 0, -EINVAL (not 32 bytes) or -ENOMEM.
    // For owners that hold the key elsewhere, and for tests.
    int set(std::span<const std::uint8_t> key) noexcept;
    // The 32 bytes; empty when !valid(). Never log them.
    std::span<const std::uint8_t> bytes() const noexcept { return key_.bytes(); }

private:
    SecretBytes key_;
};

}  // namespace gs::mces::auth
