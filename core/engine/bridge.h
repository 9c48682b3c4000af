// A bridged flow: the program's fd is one end of an AF_UNIX stream
// socketpair; the engine holds the other end (`app_end`) and the transport
// socket (`transport`, the program's original TCP socket moved to a guarded
// fd), connects the transport and relays bytes both ways.
//
// BridgeState lives in storage the caller owns (the shim's flow record) and
// is shared: application threads read it (errors, the transport fd, the
// connect result), the engine writes it. The caller keeps it alive until
// on_done() has been called.
//
// The program's threads may also move a direction's bytes themselves, on the
// transport, without waking the engine (bridge_send, bridge_recv): a thread
// hand-off costs more than the whole round trip it carries here
// (docs/engine.md). Whoever moves a direction's bytes holds its lock, and a
// program thread only goes to the transport when nothing taken earlier is
// still in the bridge, so bytes keep their order.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>

#include "core/engine/engine.h"
#include "policy/policy.h"

namespace gs::engine {

class Bridge;

// One direction of a bridge (up: program -> transport; down: transport ->
// program), shared by the engine and the program's threads.
struct BridgeDir {
    static constexpr uint32_t kLocked = 1, kWanted = 2;
    // Held by whoever moves this direction's bytes right now. A program
    // thread only ever tries it; the engine, finding it taken, leaves
    // kWanted, and the holder wakes the engine when it lets go.
    std::atomic<uint32_t> lock{0};
    // Bytes the engine has taken from the source and not yet handed to the
    // destination (it keeps them until the destination has room).
    std::atomic<uint32_t> held{0};
    // Program threads may do this direction's I/O on the transport (no limit
    // the engine must enforce). Written by the engine before `phase` says
    // connected.
    bool direct = false;
};

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
    // Under a send aggregate, the flow's class decides its turn
    // (send_queue.h): realtime before guaranteed before reliable...
    policy::ServiceClass service = policy::ServiceClass::reliable;
    std::atomic<uint64_t>* bytes_out = nullptr;   // counters to add relayed bytes to
    std::atomic<uint64_t>* bytes_in = nullptr;
    // Called on the engine thread once the bridge is over and the engine's
    // end is closed. The transport is left open (shut down) for the owner to
    // close with close_internal_fd() when the program has closed its fd too;
    // from then on the caller may free or reuse this state.
    void (*on_done)(BridgeState* s) noexcept = nullptr;
    void* owner = nullptr;                  // for on_done
    // Program threads may move bytes on the transport themselves when no
    // limit needs the engine (bridge_send, bridge_recv); false: always
    // through the engine. Set before start_bridge().
    bool allow_direct = true;

    BridgeDir up, down;
    // Program threads in a blocking bridge_recv: they take the transport's
    // data themselves, and the engine leaves it to them (saying so in
    // `rx_skipped`, which they look at when they leave).
    std::atomic<uint32_t> rx_waiters{0};
    std::atomic<uint32_t> rx_skipped{0};
    // Bytes the engine put in the program's end, and bytes bridge_recv took
    // from it: equal, the end is empty and a receive need not look there
    // (reads we do not see make `taken` lag: then it looks, as it must).
    std::atomic<uint64_t> down_relayed{0}, down_taken{0};
    // The engine's epoll set watching the transport, and its entry's token
    // (bridge_recv's waiters switch the interest off and on); -1: none.
    // Written by the engine before `phase` says connected.
    int rx_epfd = -1;
    void* rx_token = nullptr;

    // Wake the engine for this bridge (a program thread let go of a lock the
    // engine wanted, or saw the transport end): at most one queued at once.
    std::atomic<uint32_t> kick_queued{0};
    struct Kick final : Command {
        BridgeState* state = nullptr;
        void run(Engine& e) noexcept override;
    } kick;
    Engine* engine = nullptr;               // the engine carrying it (for kicks)
    Bridge* impl = nullptr;                 // engine thread only

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
// The relay's own fields to their starting values (no direct I/O, nothing
// held, no receive readiness registered), for `e`; what start_bridge and the
// MCES bridge do before they submit. Any thread, before the engine sees `s`.
void reset_relay(Engine& e, BridgeState& s) noexcept;

// The program's own I/O call, replayable on another fd: `fd` to do it on,
// `skip` bytes of its data already sent (sends only), `flags` the MSG_* to
// use. Returns what the call returns, errno set.
using IoOp = ssize_t (*)(void* call, int fd, size_t skip, int flags) noexcept;

// A send on the program's end (`program_fd`) of a bridge: on the transport,
// from the calling thread, when the flow may and nothing the program wrote
// earlier is still in the bridge; what the transport cannot take at once
// goes through the bridge, so a blocking call still blocks and a
// non-blocking one still says EAGAIN only when its end is full. `len`: the
// call's byte count; `flags`: the program's MSG_* flags.
ssize_t bridge_send(BridgeState& b, int program_fd, IoOp op, void* call, size_t len, int flags) noexcept;

// A receive on the program's end: what the engine relayed first, then
// straight from the transport; a blocking call waits on both (honouring
// SO_RCVTIMEO, EINTR on a signal). `len`: the call's buffer size.
ssize_t bridge_recv(BridgeState& b, int program_fd, IoOp op, void* call, size_t len, int flags) noexcept;

}  // namespace gs::engine
