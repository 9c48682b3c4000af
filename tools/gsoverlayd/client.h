// A tiny blocking client of gsoverlayd for tests and tools (gsctl overlay
// status): one UDP socket, one request at a time, answers matched by txid,
// resent on timeout. Not for the engine (which drives server_wire.h from its
// own loop).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/overlay/config/server_wire.h"

namespace gs::overlay::server {

class Client {
public:
    Client() = default;
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // Resolves "HOST:PORT" ("127.0.0.1:8081", "[::1]:8081", "localhost:8081")
    // and opens a socket towards it. 0 or -errno (-EINVAL: malformed,
    // -EHOSTUNREACH: the name does not resolve).
    int open(const std::string& server);

    // Sends `q` (its txid is replaced by a fresh one) and waits for the
    // answer, resending after `timeout_ms` up to `tries` times. 0 with `a`
    // filled (a.status says what the server thought), -ETIMEDOUT, or -errno
    // of the socket. The answer's attributes get origin "server HOST:PORT".
    int call(Request q, Response& a, int timeout_ms = 300, int tries = 3);

    // Sends raw bytes (tests: malformed requests) and waits once for any
    // datagram: 0 and `reply`, -ETIMEDOUT, or -errno.
    int raw(std::span<const std::uint8_t> bytes, std::vector<std::uint8_t>& reply,
            int timeout_ms = 300);

    const std::string& server() const noexcept { return server_; }

private:
    int fd_ = -1;
    std::uint32_t next_txid_ = 0;
    std::string server_;
};

}  // namespace gs::overlay::server
