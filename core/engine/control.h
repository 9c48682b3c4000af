// The control socket: each process with reservations (and, later, upgraded
// flows) answers on a Unix socket under $XDG_RUNTIME_DIR/gsocket/ with a JSON
// snapshot of its flows, for `gsctl flows` and `gsctl top`.
// docs/observability.md describes the socket, the protocol and the JSON.
//
// The server lives on the engine thread and uses io_uring only (accept, recv,
// send, cancel): no thread of its own. Protocol: a client sends one line,
// "flows\n", "overlays [ROOT]\n" or "ping\n", and reads the answer to EOF:
// the snapshot or the overlay members' views (overlay_status.h; each one
// JSON object, newline-terminated) or "pong\n". Anything else, a line longer than
// kMaxRequest bytes, or silence for kIdleMs, gets "error: ...\n". The server
// closes after every answer.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "core/engine/control_request.h"

namespace gs::engine {

inline constexpr int kMaxConnections = 16;       // answered at once; more wait in the listen backlog
inline constexpr int kListenBacklog = 64;
inline constexpr int64_t kIdleMs = 2000;         // silence before a client is dropped (request or reply)

// The request line parser: core/engine/control_request.h.

// Produces the snapshot (called on the engine thread; may allocate, may
// throw std::bad_alloc: the client then gets an error line).
using SnapshotFn = std::string (*)();

// Start answering (idempotent and thread-safe; starts the process's engine if
// needed; waits for the engine to have bound the socket). Returns 0, or
// -errno when the engine or the socket cannot be had (the caller carries on:
// observability never breaks a flow). A later call with another fn replaces
// the snapshot function. In a child of fork() the parent's socket is not
// answered; the child's first call opens the child's own (its own pid's path).
// Must not be called from a signal handler.
int control_start(SnapshotFn fn) noexcept;

// Stop answering: close the socket and the connections, remove the socket
// file; waits for the engine to have done so (bounded). 0 or -errno; 0 too
// when nothing was started. control_start() may be called again afterwards.
// At exit the socket file is removed without this (an atexit handler).
int control_stop() noexcept;

// The directory of control sockets (gs::qos::runtime_dir: $XDG_RUNTIME_DIR/gsocket
// or /tmp/gsocket-UID; not created) and this pid's socket in it: DIR/PID.sock.
std::string control_dir();
std::string control_path(pid_t pid);

}  // namespace gs::engine
