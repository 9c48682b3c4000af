// Legacy multicast over an overlay (docs/overlay.md "Legacy multicast"):
// a UDP socket that joins a group the policy's [overlay] names, or sends or
// connects to its ADDR:PORT, becomes a bridged flow (core/engine/
// dgram_bridge.h) whose group traffic an overlay member in the engine
// carries (DgramGroup). Called by the hooks (hooks.cpp); not for signal
// handlers (a join talks to the overlay server and allocates).
#pragma once

#include <sys/socket.h>

#include <cstdint>

namespace gs::shim {

// setsockopt(fd, level, name, val, len) on the socket whose slot is `s`: a
// membership option for a group the policy carries, or IP_DROP_MEMBERSHIP
// of one this socket is carried in. true: answered here (*rc is the
// call's result, errno set when -1): joined (0), left (0), already a
// member (EADDRINUSE). false: the caller passes the call on as before
// (another option, a group the policy does not name, or a fall-back to
// native multicast, logged once).
bool group_setsockopt(int fd, uint32_t s, int level, int name, const void* val, socklen_t len, int* rc) noexcept;

// The UDP flow on `fd` (slot `s`) was just classified at a send or connect
// whose peer is a group the policy carries: open its overlay member and
// bridge the socket (`sending`: autobind as the kernel's send would). true
// when it now is a bridged member; false: it goes on as before (logged when
// the group cannot be carried).
bool group_start(int fd, uint32_t s, bool sending) noexcept;

}  // namespace gs::shim
