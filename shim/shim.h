// The shim's decisions, between the hooks (hooks.cpp) and the policy.
//
// Hooks make a three-way choice: pass to libc, handle (classify, then call
// libc), or deny with errno. Everything here is noexcept and, once init() has
// run, allocation-free.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>

#include "policy/policy.h"
#include "shim/flows.h"

namespace gs::shim {

// Set by init() once the policy is loaded; hooks that classify check it.
extern std::atomic<bool> g_ready;

// Load configuration and policy (the constructor calls it; idempotent).
void init() noexcept;
// At exit: --stats.
void fini() noexcept;

// Classify the flow on `fd` (slot value `cur`, from socket()/accept or 0 when
// unknown) and apply native QoS. `peer`: the address the program connects or
// sends to, or for `accept` the peer it accepted. Returns 0 to go on with the
// real call, or -errno to deny it (on_error = fail with a broken policy).
int classify(int fd, uint32_t cur, policy::Direction dir, const sockaddr* peer, socklen_t peerlen) noexcept;

// A UDP socket (slot value `cur`, kSocket) received `n` bytes before its first
// send: give it a record, still unclassified (slot kFlow|kPending), so its
// bytes count from the start and --stats lists receive-only sockets too.
void record_pending(int fd, uint32_t cur, uint64_t n) noexcept;

// Whether the classified flow on `fd` (slot value `s`) is to be carried by the
// engine over a bridge (TCP connects and accepts, UDP connects and sends).
bool wants_bridge(uint32_t s) noexcept;
// Put the engine between the program and its TCP socket `fd` and connect the
// transport to `addr`. Returns 0 (connected: blocking connect), -EINPROGRESS
// (non-blocking), -errno (the transport's connect failed), or 1 when the
// bridge could not be set up (the caller connects natively: fail open).
// With `addr` null, `fd` is an accepted, connected socket: bridged at once.
// `mces`: the flow's MCES part (mces_connect): carried over MCES instead of
// the transport (core/engine/mces_bridge.h).
int bridge_connect(int fd, const sockaddr* addr, socklen_t len, engine::McesFlow* mces = nullptr) noexcept;
// transport = mces / auto on a classified TCP connect (docs/mces.md,
// "Through the shim"): carry it over MCES. Returns as bridge_connect: 0,
// -EINPROGRESS, -errno, or 1 when the flow is not for MCES or MCES cannot be
// had (the caller goes on natively: fail open, logged once).
int mces_connect(int fd, const sockaddr* addr, socklen_t len) noexcept;
// listen() succeeded on `fd`: if the policy accepts MCES on its address and
// port, the engine also listens there over UDP (fail open: logged once).
void mces_after_listen(int fd) noexcept;
// After a successful bind() of a UDP socket: when the policy sends
// datagrams to its port over MCES (transport = mces / auto, class
// datagram or realtime), classify it and start its bridge now, so that a
// socket that only receives is an MCES endpoint too (docs/mces.md,
// "unmodified UDP programs").
void mces_after_bind(int fd) noexcept;
// accept(): `peer` is the accepted connection's kernel peer address. If the
// engine opened it for an MCES connection, true and `out` the MCES peer.
bool mces_accepted(const sockaddr_storage& peer, socklen_t plen, sockaddr_storage& out, socklen_t& outlen) noexcept;
// After classify(): the flow on `fd` came over MCES from `peer`.
void mces_mark_accepted(int fd, const sockaddr_storage& peer, socklen_t plen) noexcept;
// getsockname (peer false) / getpeername of an MCES flow (slot value `s`):
// 0 answered, -1 with errno, 1 not an MCES flow (ask the kernel).
int mces_name(uint32_t s, bool peer, sockaddr* addr, socklen_t* len) noexcept;
// Put the engine between the program and its classified UDP socket `fd`
// (core/engine/dgram_bridge.h): the socket, bound or connected as it is,
// becomes the transport; `autobind`: it is about to send (an unbound socket
// gets its ephemeral port now, as the kernel's send would give it). 0, or 1
// when the bridge could not be set up (the flow stays native: fail open,
// logged once).
int bridge_datagram(int fd, bool autobind) noexcept;
// An fd of the shim's own (the engine side of an API object): moved above
// the program's numbers (engine::kInternalFdBase) and kept from its close
// calls; the original is closed. -1 when it cannot be moved (closed too).
int adopt_internal_fd(int fd) noexcept;
// For the hooks: the bridge of a bridged slot (a UDP one: with its dgram part).
engine::BridgeState& bridge_of(uint32_t s) noexcept;
// The engine's end of a UDP bridge queues as much as the transport's SO_RCVBUF.
void follow_rcvbuf(int app_end, int transport) noexcept;
engine::DgramState& dgram_of(uint32_t s) noexcept;

// The slot value socket()/accept would set for an inet socket of this kind,
// or 0 if the fd is not an AF_INET/AF_INET6 TCP or UDP socket.
uint32_t socket_slot(int domain, int type, int protocol) noexcept;
// Same, asking the kernel (for fds the shim never saw created).
uint32_t probe_slot(int fd) noexcept;

// For an unclassified slot (kSocket, or a pending record): the kSocket value
// socket() would have given it; 0 for anything else.
uint32_t socket_bits(uint32_t s) noexcept;

// Whether a decision reserves in the host ledger (guaranteed or realtime with a rate).
bool reserving(const policy::Decision& d) noexcept;
// Open the host ledger if the policy has a budget and nobody opened it yet (a
// GSocket API request reserves although no rule does). Not for hooks: allocates.
void ensure_ledger() noexcept;
// The loaded policy, or nullptr before init() or with GSOCKET_DISABLE=1.
const policy::Policy* current_policy() noexcept;

// with on_error = fail and a broken policy, listen() is denied too.
bool fail_closed() noexcept;
int deny(int fd, const char* call, const sockaddr* peer, socklen_t peerlen) noexcept;

// The program sets an option the policy also sets: returns the value to pass
// to the kernel instead (policy wins, the program's ECN bits are kept), or
// false to pass the program's value unchanged.
bool policy_override(const FlowRecord& r, int level, int optname, const void* val, socklen_t len,
                     uint64_t& out) noexcept;

// Open this process's control socket (gsctl flows, gsctl overlay members) if
// it is not open yet; cheap once it is. A failure is logged once, never fatal.
// Not from a signal handler.
void answer_gsctl() noexcept;

}  // namespace gs::shim
