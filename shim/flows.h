// The shim's bookkeeping: one slot per fd number, one record per classified flow.
//
// Everything here is reachable from hooks that a signal handler may call, so
// it is fixed-size, preallocated (zero BSS pages cost nothing until touched)
// and lock-free: slots are relaxed atomics, records come from a tagged
// lock-free free list.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <cstddef>
#include <sys/socket.h>

#include "core/engine/bridge.h"
#include "core/engine/dgram_bridge.h"
#include "core/engine/mces_bridge.h"
#include "core/qos/ledger.h"
#include "policy/policy.h"

namespace gs::shim {

// fds at or above this are never tracked (they pass through, logged once).
constexpr int kMaxFd = 1 << 20;
// Classified flows alive (or kept for --stats) at once.
constexpr uint32_t kMaxFlows = 1 << 16;

// A slot is 0 for an fd we know nothing about (the common case: one relaxed
// load and the hook passes through), kSocket|bits for an inet socket seen at
// socket()/accept() but not classified yet, kFlow|index for a classified flow.
namespace slot {
constexpr uint32_t kKindMask = 3u << 30;
constexpr uint32_t kSocket = 1u << 30;
constexpr uint32_t kFlow = 2u << 30;
constexpr uint32_t kInternal = 3u << 30;   // one of the shim's own fds: programs may not close it
constexpr uint32_t kV6 = 1u << 0;    // kSocket bits
constexpr uint32_t kUdp = 1u << 1;
constexpr uint32_t kCount = 1u << 29; // kFlow bit: count bytes in the hooks (UDP; TCP asks TCP_INFO)
constexpr uint32_t kPending = 1u << 28; // kFlow bit: recorded, not classified yet: a UDP socket that received
                                        // before it sent, or a socket carrying a GSocket API request (api.cpp)
constexpr uint32_t kBridged = 1u << 27; // kFlow bit: the fd is the program's end of a bridge (core/engine/bridge.h)
// A UDP socket's open file has been registered where a bridge could not
// follow it (epoll_ctl ADD, dup, fork): putting a socketpair on its fd number
// would leave the program's epoll set, or its other fds, on the old socket.
// Such a socket stays native (docs/engine.md "Bridged UDP flows"). On
// kSocket slots and kFlow slots (a pending record) alike.
constexpr uint32_t kExposed = 1u << 26;
constexpr uint32_t kIndexMask = kExposed - 1;
inline bool is_flow(uint32_t s) noexcept { return (s & kKindMask) == kFlow; }
inline bool is_socket(uint32_t s) noexcept { return (s & kKindMask) == kSocket; }
inline bool is_internal(uint32_t s) noexcept { return (s & kKindMask) == kInternal; }
inline bool is_pending(uint32_t s) noexcept { return (s & (kKindMask | kPending)) == (kFlow | kPending); }
// Not classified yet: the next connect/sendto decides.
inline bool unclassified(uint32_t s) noexcept { return is_socket(s) || is_pending(s); }
inline bool counts(uint32_t s) noexcept { return (s & (kKindMask | kCount)) == (kFlow | kCount); }
inline bool is_bridged(uint32_t s) noexcept { return (s & (kKindMask | kBridged)) == (kFlow | kBridged); }
inline uint32_t index(uint32_t s) noexcept { return s & kIndexMask; }
}  // namespace slot

struct FlowRecord;
struct Request;
namespace detail {
extern std::atomic<uint32_t> g_slots[kMaxFd];
}  // namespace detail
// Inline: every hook's first (and, passing through, only) step.
inline std::atomic<uint32_t>& fd_slot(int fd) noexcept { return detail::g_slots[fd]; }   // fd in [0, kMaxFd)
inline bool trackable(int fd) noexcept { return fd >= 0 && fd < kMaxFd; }
// Highest fd ever given a non-zero slot: bounds close_range sweeps.
int max_tracked_fd() noexcept;
void note_fd(int fd) noexcept;

struct Endpoint {
    policy::Address addr;
    uint16_t port = 0;   // host order
};

enum class FlowState : uint8_t { free = 0, open = 1, closed = 2 };

// An explicit request from the GSocket API (api/gsocket.h, shim/api.cpp): the
// class and QoS a program asked for one socket. classify() fills what the
// program left unset from the policy's matching rule into `decision`, which
// then is the flow's decision. gs_set_qos (which may allocate) prepares it;
// classify() only writes scalars into it (no allocation in hooks). Owned by
// api.cpp: one per record index, allocated on first use, reused, never freed.
struct Request {
    policy::ServiceClass service = policy::ServiceClass::reliable;
    policy::Qos asked;           // the program's fields, 0 / -1 = unset
    policy::Decision decision;   // asked + the policy's defaults (valid once classified)
};

struct FlowRecord {
    std::atomic<FlowState> state{FlowState::free};
    std::atomic<uint32_t> refs{0};        // fds that refer to this flow (dup)
    std::atomic<uint32_t> next_free{0};   // free-list link (read by racing pops: atomic)
    int fd = -1;                          // the fd it was classified on
    int family = 0;                       // the socket's AF_INET / AF_INET6
    policy::Proto proto = policy::Proto::tcp;
    policy::Direction direction = policy::Direction::connect;
    int rule = -1;                        // index in the policy's rules, -1 = fallback
    const policy::Decision* decision = nullptr;
    Request* request = nullptr;           // set by the GSocket API: used instead of the policy's match
    Endpoint local, peer;
    std::atomic<uint64_t> bytes_out{0}, bytes_in{0};   // UDP: counted in hooks; TCP: from TCP_INFO
    uint16_t applied = 0, failed = 0;     // bit (1 << Knob) per native QoS knob
    int first_errno = 0;                  // errno of the first knob that failed
    bool denied = false;                  // on_error = fail, or admission, refused it
    qos::Reservation reserved[2];         // up (sending), down (receiving): host ledger entries
    qos::ReserveResult::Status admission = qos::ReserveResult::Status::unavailable;   // when a class reserves
    bool reserves = false;                // the decision asked for a reservation
    uint64_t rate = 0;                    // the pacing rate applied: the policy's, or what a downgrade granted
    uint64_t granted[2] = {0, 0};         // bytes/s admitted up / down (kept after release, for --stats)
    bool bridged = false;                 // carried by the engine over a socketpair
    engine::BridgeState bridge;           // valid while bridged
    engine::DgramState dgram;             // a bridged UDP flow's own part (with `bridge`)
    engine::McesFlow mces;                // a TCP flow carried over MCES (mces.kind != none)
    bool inherited = false;               // came from the parent across fork()
    int64_t opened_ns = 0, closed_ns = 0; // CLOCK_MONOTONIC
};

// Take a free record (refs = 1, state open), or nullptr when all are in use.
FlowRecord* flow_alloc() noexcept;
namespace detail {
// The records live in zeroed storage (BSS: pages nobody touched cost
// nothing) and are constructed when first handed out. A static array of
// FlowRecord would be initialised data with a relocation (vtable pointer)
// in every record, every page of it written by the loader: 37 MiB resident
// in every process, measured.
alignas(FlowRecord) extern unsigned char g_flow_storage[];
}  // namespace detail
inline FlowRecord& flow_at(uint32_t index) noexcept {
    return reinterpret_cast<FlowRecord*>(detail::g_flow_storage)[index];
}
inline uint32_t flow_index(const FlowRecord& r) noexcept { return static_cast<uint32_t>(&r - &flow_at(0)); }
// Drop one fd's reference; the last one finalizes the flow (counters from the
// kernel while `fd` is still open, a log line) and, unless records are kept
// for --stats, returns it to the free list.
void flow_release(FlowRecord& r, int fd) noexcept;
// Give back a record that never described a flow (not reported in --stats).
void flow_discard(FlowRecord& r) noexcept;
// Release whatever a slot held (called with the value a slot had before it was reset).
void release_slot_value(uint32_t value, int fd) noexcept;
// Give back the flow's ledger reservations (shim.cpp; no-op without any).
void release_reservations(FlowRecord& r) noexcept;
// At exit: release the reservations of flows still open.
void release_all_reservations() noexcept;
// Flows that could not be recorded because the table was full.
uint64_t flows_untracked() noexcept;

// Keep closed records so --stats can report them (set once at init).
void keep_closed_flows(bool keep) noexcept;
// After fork(), in the child: every record is the parent's.
void mark_all_inherited() noexcept;

// Refresh counters and addresses of a flow from the kernel (fd still open).
void flow_refresh(FlowRecord& r, int fd) noexcept;

// One JSON object (and a newline) describing this process and all its flows:
// the --stats record, and what the control socket answers. Allocates; may throw.
std::string flows_json(const char* process, const policy::Policy& pol);
// Append one JSON line describing this process and all its flows to `path`.
// Not for signal handlers (it allocates); called at exit.
void write_stats(const char* path, const char* process, const policy::Policy& pol) noexcept;

// sockaddr_in / sockaddr_in6 (v4-mapped becomes v4) to an Endpoint; false for other families.
bool endpoint_from(const sockaddr* sa, socklen_t len, Endpoint& e) noexcept;

// "127.0.0.1:80" / "[::1]:80" into buf; returns buf.
const char* format_endpoint(const Endpoint& e, char* buf, size_t len) noexcept;

}  // namespace gs::shim
