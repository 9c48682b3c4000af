#include "core/mces/auth/secret.h"

#include <sodium.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace gs::mces::auth {

SecretBytes::SecretBytes(std::size_t size) noexcept {
    // sodium_malloc needs the library initialised (page size, canary);
    // sodium_init is idempotent and thread-safe.
    if (sodium_init() < 0 || size == 0) return;
    p_ = static_cast<std::uint8_t*>(sodium_malloc(size));
    if (p_ == nullptr) return;
    size_ = size;
    sodium_memzero(p_, size_);
}

SecretBytes::~SecretBytes() { wipe(); }

SecretBytes::SecretBytes(SecretBytes&& o) noexcept
    : p_(std::exchange(o.p_, nullptr)), size_(std::exchange(o.size_, 0)) {}

SecretBytes& SecretBytes::operator=(SecretBytes&& o) noexcept {
    if (this != &o) {
        wipe();
        p_ = std::exchange(o.p_, nullptr);
        size_ = std::exchange(o.size_, 0);
    }
    return *this;
}

void SecretBytes::wipe() noexcept {
    if (p_ == nullptr) return;
    // sodium_free zeroes too; the explicit wipe keeps the promise visible
    // and does not depend on that detail.
    sodium_memzero(p_, size_);
    sodium_free(p_);
    p_ = nullptr;
    size_ = 0;
}

int Psk::set(std::span<const std::uint8_t> key) noexcept {
    if (key.size() != kPskLen) return -EINVAL;
    SecretBytes s(kPskLen);
    if (!s.valid()) return -ENOMEM;
    std::memcpy(s.data(), key.data(), kPskLen);
    key_ = std::move(s);
    return 0;
}

}  // namespace gs::mces::auth
