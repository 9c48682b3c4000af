// The control socket: each process with reservations (and, later, upgraded
// flows) answers on a Unix socket under $XDG_RUNTIME_DIR/gsocket/ with a JSON
// snapshot of its flows, for `gsctl flows` and `gsctl top`.
#pragma once

#include <sys/types.h>

#include <string>

namespace gs::engine {

// Produces the snapshot (called on the engine thread; may allocate).
using SnapshotFn = std::string (*)();

// Start answering (idempotent; starts the process's engine if needed).
// Returns 0, or -errno when the engine or the socket cannot be had (the
// caller carries on: observability never breaks a flow).
int control_start(SnapshotFn fn) noexcept;

// The directory of control sockets and this pid's socket in it.
std::string control_dir();
std::string control_path(pid_t pid);

}  // namespace gs::engine
