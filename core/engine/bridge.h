// A bridged flow: the program's fd is one end of an AF_UNIX stream
// socketpair; the engine holds the other end (`app_end`) and the transport
// socket (`transport`, the program's original TCP socket moved to a guarded
// fd), connects the transport and relays bytes both ways.
//
// BridgeState lives in storage the caller owns (the shim's flow record) and
// is shared: application threads read it (errors, the transport fd, the
// connect result), the engine writes it. The caller keeps it alive until
// on_done() has been called.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>

#include "core/engine/engine.h"

namespace gs::engine {

class Bridge;

struct BridgeState {
    enum Phase : int { connecting = 0, connected = 1, failed = 2, closed = 3 };
    std::atomic<int> phase{connecting};
    std::atomic<int> error{0};              // the transport's errno (ECONNREFUSED, ECONNRESET...), 0 none
    std::atomic<uint32_t> connect_done{0};  // futex word: 1 once the connect has an answer
    int transport = -1;                     // the guarded transport fd (getsockname, options...)
    // The program's end: its fd number and inode. At exit the engine
    // half-closes it (if it is still that socket) so that everything the
    // program wrote is relayed before the process goes.
    int program_fd = -1;
    unsigned long program_ino = 0;
    int app_end = -1;                       // the engine's end of the socketpair
    uint32_t filler = 0;                    // bytes the shim wrote into the program's end to hold off POLLOUT
    bool accepted = false;                  // the transport is connected already (accept()): relay at once
    sockaddr_storage peer{};
    socklen_t peer_len = 0;
    // Limits the engine enforces, bytes/s, 0 = none: this flow's (a receive
    // limit the kernel cannot give; a send limit if the kernel's pacing is
    // not used) and the process's aggregates.
    uint64_t rate_up = 0, rate_down = 0;
    uint64_t aggregate_up = 0, aggregate_down = 0;
    std::atomic<uint64_t>* bytes_out = nullptr;   // counters to add relayed bytes to
    std::atomic<uint64_t>* bytes_in = nullptr;
    // Called on the engine thread once the bridge is over and the engine's
    // end is closed. The transport is left open (shut down) for the owner to
    // close with close_internal_fd() when the program has closed its fd too;
    // from then on the caller may free or reuse this state.
    void (*on_done)(BridgeState* s) noexcept = nullptr;
    void* owner = nullptr;                  // for on_done

    // The command that starts the bridge (storage here: no allocation on the
    // application thread).
    struct Start final : Command {
        BridgeState* state = nullptr;
        void run(Engine& e) noexcept override;
    } start;

    // Block the calling thread until the connect has an answer (blocking
    // connect()). Returns 0 or the positive errno; EINPROGRESS when
    // `timeout_ns` (> 0: the program's SO_SNDTIMEO) passes first, EINTR when
    // a signal handler runs, as the kernel's connect() would; the connect
    // goes on in both cases.
    int wait_connected(int64_t timeout_ns = 0) noexcept;
};

// Hand a prepared BridgeState to the engine (any thread).
void start_bridge(Engine& e, BridgeState& s) noexcept;

}  // namespace gs::engine
