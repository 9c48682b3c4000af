// Byte cursors for the MCES wire format: big-endian integers and QUIC-style
// variable-length integers (RFC 9000 section 16), over caller-owned memory.
//
// Reader walks untrusted bytes: every read checks the bounds first and
// returns false past the end (the cursor then stays where it was). Writer
// fills a caller-provided buffer and never grows it: a write that does not fit
// makes the writer fail (sticky), so an encoder checks once at the end.
// Neither allocates.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace gs::mces::wire {

// The largest value a varint can carry: 2^62 - 1.
constexpr std::uint64_t kVarintMax = (std::uint64_t{1} << 62) - 1;

// Bytes the shortest encoding of v takes: 1, 2, 4 or 8 (v <= kVarintMax).
constexpr std::size_t varint_size(std::uint64_t v) noexcept {
    return v < 64 ? 1 : v < 16384 ? 2 : v < (std::uint64_t{1} << 30) ? 4 : 8;
}

class Reader {
public:
    explicit Reader(std::span<const std::uint8_t> bytes) noexcept
        : p_(bytes.data()), end_(bytes.data() + bytes.size()) {}

    std::size_t left() const noexcept { return static_cast<std::size_t>(end_ - p_); }
    bool empty() const noexcept { return p_ == end_; }
    const std::uint8_t* pos() const noexcept { return p_; }

    bool u8(std::uint8_t& v) noexcept {
        if (left() < 1) return false;
        v = *p_++;
        return true;
    }
    // n big-endian bytes, 1 <= n <= 8
    bool uint(std::size_t n, std::uint64_t& v) noexcept {
        if (n == 0 || n > 8 || left() < n) return false;
        std::uint64_t x = 0;
        for (std::size_t i = 0; i < n; ++i) x = (x << 8) | p_[i];
        p_ += n;
        v = x;
        return true;
    }
    bool u16(std::uint16_t& v) noexcept {
        std::uint64_t x = 0;
        if (!uint(2, x)) return false;
        v = static_cast<std::uint16_t>(x);
        return true;
    }
    bool u32(std::uint32_t& v) noexcept {
        std::uint64_t x = 0;
        if (!uint(4, x)) return false;
        v = static_cast<std::uint32_t>(x);
        return true;
    }
    // A varint: the top two bits of the first byte give its length.
    bool varint(std::uint64_t& v) noexcept {
        if (left() < 1) return false;
        const std::size_t n = std::size_t{1} << (p_[0] >> 6);
        if (left() < n) return false;
        std::uint64_t x = p_[0] & 0x3f;
        for (std::size_t i = 1; i < n; ++i) x = (x << 8) | p_[i];
        p_ += n;
        v = x;
        return true;
    }
    // A view of the next n bytes (into the reader's memory).
    bool bytes(std::size_t n, std::span<const std::uint8_t>& out) noexcept {
        if (left() < n) return false;
        out = {p_, n};
        p_ += n;
        return true;
    }
    bool skip(std::size_t n) noexcept {
        if (left() < n) return false;
        p_ += n;
        return true;
    }

private:
    const std::uint8_t* p_;
    const std::uint8_t* end_;
};

class Writer {
public:
    explicit Writer(std::span<std::uint8_t> buf) noexcept : buf_(buf) {}

    std::size_t size() const noexcept { return len_; }
    std::size_t room() const noexcept { return buf_.size() - len_; }
    std::size_t capacity() const noexcept { return buf_.size(); }
    // 0, -EMSGSIZE (did not fit) or -EINVAL (a value the format cannot carry)
    int error() const noexcept { return err_; }
    bool ok() const noexcept { return err_ == 0; }
    void fail(int err) noexcept {
        if (err_ == 0) err_ = err;
    }
    std::uint8_t* data() noexcept { return buf_.data(); }
    std::span<const std::uint8_t> written() const noexcept { return buf_.first(len_); }

    void u8(std::uint8_t v) noexcept {
        if (!reserve(1)) return;
        buf_[len_++] = v;
    }
    void uint(std::size_t n, std::uint64_t v) noexcept {
        if (n == 0 || n > 8) return fail(-EINVAL);
        if (!reserve(n)) return;
        for (std::size_t i = 0; i < n; ++i)
            buf_[len_ + i] = static_cast<std::uint8_t>(v >> (8 * (n - 1 - i)));
        len_ += n;
    }
    void u16(std::uint16_t v) noexcept { uint(2, v); }
    void u32(std::uint32_t v) noexcept { uint(4, v); }
    void varint(std::uint64_t v) noexcept {
        if (v > kVarintMax) return fail(-EINVAL);
        const std::size_t n = varint_size(v);
        if (!reserve(n)) return;
        static constexpr std::uint8_t prefix[9] = {0, 0x00, 0x40, 0, 0x80, 0, 0, 0, 0xc0};
        uint(n, v);
        buf_[len_ - n] |= prefix[n];
    }
    void bytes(std::span<const std::uint8_t> b) noexcept {
        if (!reserve(b.size())) return;
        if (!b.empty()) std::memcpy(buf_.data() + len_, b.data(), b.size());
        len_ += b.size();
    }
    // Reserves n bytes for the caller to fill (a payload copied straight
    // from where it is held, without a staging buffer). An empty span when
    // they do not fit (the writer has then failed with -EMSGSIZE).
    std::span<std::uint8_t> take(std::size_t n) noexcept {
        if (!reserve(n)) return {};
        len_ += n;
        return buf_.subspan(len_ - n, n);
    }
    void zeros(std::size_t n) noexcept {
        if (!reserve(n)) return;
        std::memset(buf_.data() + len_, 0, n);
        len_ += n;
    }

private:
    bool reserve(std::size_t n) noexcept {
        if (err_ != 0) return false;
        if (room() < n) {
            fail(-EMSGSIZE);
            return false;
        }
        return true;
    }

    std::span<std::uint8_t> buf_;
    std::size_t len_ = 0;
    int err_ = 0;
};

}  // namespace gs::mces::wire
