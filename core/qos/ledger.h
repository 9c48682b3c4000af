// The host reservation ledger: guaranteed (2) and realtime (3) flows reserve
// their rate at connect and release it at close ("connect negotiates, close
// releases"), against a capacity per direction shared by every process of the
// host. docs/reservations.md describes the file, the locking and reclaim.
//
// Contract the shim relies on:
//  - open()/close()/after_fork() may allocate nothing but are not for signal
//    handlers (they open, map and may initialise the file).
//  - reserve() and release() never allocate and never wait without bound.
//    release() takes no lock at all (one compare-and-swap on the entry).
//    reserve() takes an in-process lock and the file's OFD lock, both by
//    polling with a deadline (kLockWaitMs): a reserve() from a signal handler
//    that interrupted this same thread inside the ledger gets Status::busy at
//    once instead of deadlocking, and a process stopped (SIGSTOP, debugger)
//    while holding the lock costs others kLockWaitMs, never a hang.
//  - Nothing here throws; errors are 0 / -errno or a ReserveResult.
//  - Rates are bytes per second, as everywhere in policy/.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "policy/policy.h"

namespace gs::qos {

// up = what the process sends, down = what it receives.
enum class Dir : uint8_t { up = 0, down = 1 };
const char* name(Dir d) noexcept;   // "up", "down"

// ---- The file format (docs/reservations.md). Little-endian, host layout. ----

inline constexpr uint32_t kLedgerMagic = 0x474c5347u;   // bytes "GSLG"
inline constexpr uint16_t kLedgerVersion = 1;
inline constexpr uint32_t kDefaultSlots = 1024;         // 128 KiB of entries
inline constexpr uint32_t kMaxSlots = 1u << 16;
inline constexpr int kLockWaitMs = 200;                 // reserve()'s bound on waiting for the lock
inline constexpr size_t kDescriptionLen = 80;           // with the NUL

struct LedgerHeader {
    uint32_t magic;            // kLedgerMagic, written last when the file is initialised
    uint16_t version;          // kLedgerVersion
    uint16_t header_size;      // sizeof(LedgerHeader)
    uint32_t entry_size;       // sizeof(LedgerEntry)
    uint32_t slots;            // number of entries after the header
    uint64_t capacity[2];      // bytes/s per Dir, the last non-zero value an opener wrote; 0 = unset
    uint8_t boot_id[16];       // /proc/sys/kernel/random/boot_id of the boot that wrote the entries
    uint64_t mutations;        // reserves and reclaims so far (under the lock), for gsctl
    uint8_t spare[72];
};
static_assert(sizeof(LedgerHeader) == 128);

struct LedgerEntry {
    // (seq << 1) | used. Accessed only atomically: the commit point of a
    // reserve (every other field is written before it) and the whole of a release.
    uint64_t state;
    int32_t pid;               // the owner
    uint8_t dir;               // Dir
    uint8_t service;           // policy::ServiceClass
    uint16_t spare;
    uint64_t start_time;       // owner's start, /proc/PID/stat field 22 (clock ticks since boot)
    uint64_t flow_id;          // the owner's own flow number
    uint64_t rate;             // bytes/s reserved
    int64_t created_ns;        // CLOCK_REALTIME
    char description[kDescriptionLen];   // "tcp 10.0.0.2:5000", NUL-terminated
};
static_assert(sizeof(LedgerEntry) == 128);

// What a reserve hands back; release() takes it. Plain data: copyable,
// storable in the shim's preallocated flow records.
struct Reservation {
    uint32_t slot = UINT32_MAX;
    Dir dir = Dir::up;
    uint64_t seq = 0;          // 0 = holds nothing
    uint64_t rate = 0;         // bytes/s granted
    bool valid() const noexcept { return seq != 0; }
};

struct ReserveResult {
    enum class Status : uint8_t {
        granted,      // all that was asked
        downgraded,   // on_reject = downgrade: `granted` < `asked`, what was left
        refused,      // does not fit (or nothing left to downgrade to): fail connect with `error`
        full,         // every slot holds a live reservation: fail connect with `error`
        busy,         // lock not obtained in kLockWaitMs, or re-entered from a signal handler: fail open
        unavailable,  // no ledger (not open, corrupt file, forked child without after_fork()): fail open
        invalid,      // rate 0 or bad direction
    };
    Status status = Status::unavailable;
    int error = 0;             // 0 when admitted, else -errno (-ENOBUFS for refused/full, see errno note)
    uint64_t asked = 0;        // bytes/s
    uint64_t granted = 0;      // bytes/s
    uint64_t available = 0;    // bytes/s that were free when decided (after any reclaim)
    uint64_t capacity = 0;     // bytes/s, the capacity admission used
    uint32_t reclaimed = 0;    // dead owners' entries dropped on the way
    Reservation reservation;   // valid() when granted or downgraded
    bool admitted() const noexcept { return status == Status::granted || status == Status::downgraded; }
    // The shim lets the flow proceed without a reservation (DESIGN: fail open).
    bool fail_open() const noexcept { return status == Status::busy || status == Status::unavailable; }
};
const char* name(ReserveResult::Status s) noexcept;   // "granted", "downgraded", ...
// A rate for log lines, "600 Mbit/s", written into buf without allocating
// (the shim's hooks call it); returns buf.
const char* rate_text(uint64_t bytes_per_s, char* buf, size_t len) noexcept;

// The errno connect() fails with when admission refuses: ENOBUFS. POSIX lists
// it for connect() ("no buffer space is available"), so programs already treat
// it as a local resource shortage rather than a peer or routing problem, and
// strerror() does not send the operator to the wrong place (EDQUOT would say
// "Disk quota exceeded"; ECONNREFUSED blames the peer; EAGAIN invites a tight retry).
inline constexpr int kRefusedErrno = ENOBUFS;

struct LedgerUsage {
    uint64_t capacity[2] = {0, 0};   // from the header
    uint64_t reserved[2] = {0, 0};   // sum of used entries
    uint32_t used = 0, slots = 0;
};

// One entry as tools see it (a copy, decoded).
struct LedgerItem {
    uint32_t slot = 0;
    pid_t pid = 0;
    uint64_t start_time = 0;
    uint64_t flow_id = 0;
    Dir dir = Dir::up;
    policy::ServiceClass service = policy::ServiceClass::guaranteed;
    uint64_t rate = 0;
    int64_t created_ns = 0;
    std::string description;
    bool alive = true;         // owner_alive() when the copy was taken
};

// Whether pid still is the process that started at `start_time`: false when it
// is gone (kill() says ESRCH), a zombie, or a new process that reused the pid.
// Unknown (e.g. /proc hidden) counts as alive: never reclaim a live owner.
bool owner_alive(pid_t pid, uint64_t start_time) noexcept;
// /proc/PID/stat field 22, 0 if unreadable. No allocation.
uint64_t process_start_time(pid_t pid) noexcept;

// gsocket's per-user runtime directory, home of the ledger and of the control
// sockets (core/engine/control.h): $XDG_RUNTIME_DIR/gsocket, else
// /tmp/gsocket-UID. name_only: just the name. check: it must exist (-ENOENT)
// and, in a shared /tmp, be a real directory of ours, mode 0700 (-EPERM).
// create: create it 0700 if absent, then check. Returns 0 or -errno with `why`
// saying what is wrong and what to do.
enum class DirMode : uint8_t { name_only, check, create };
int runtime_dir(std::string& dir, std::string& why, DirMode mode);

// The ledger's file: $GSOCKET_LEDGER, else $XDG_RUNTIME_DIR/gsocket/ledger, else
// /tmp/gsocket-UID/ledger. With create_dir, the default directory is created
// 0700 (and a /tmp one must be a real directory owned by us). Returns 0 or
// -errno with `why` saying what is wrong.
int ledger_path(std::string& path, std::string& why, bool create_dir);

class Ledger {
public:
    Ledger() = default;
    ~Ledger() { close(); }
    Ledger(const Ledger&) = delete;
    Ledger& operator=(const Ledger&) = delete;

    // Open (creating and initialising if absent or empty) and map the ledger.
    // Non-zero capacities become the header's capacity (last writer wins, see
    // docs); 0 keeps what the header has. `slots` only matters when the file is
    // created. Returns 0 or -errno; on failure error() names the file and what
    // to do, and the caller fails open. -EPROTO: not a ledger of this version.
    int open(const char* path, uint64_t capacity_up, uint64_t capacity_down,
             uint32_t slots = kDefaultSlots) noexcept;
    void close() noexcept;
    bool is_open() const noexcept { return entries_ != nullptr; }
    const char* error() const noexcept { return error_; }
    const char* path() const noexcept { return path_; }
    // The descriptor the OFD lock lives on (-1 when closed): the shim keeps
    // programs from closing it.
    int fd() const noexcept { return fd_; }

    // In the child after fork(), single-threaded (a pthread_atfork child
    // handler): the inherited descriptor shares the parent's OFD lock, so the
    // child opens its own; its identity (pid, start time) becomes its own. The
    // parent's reservations stay the parent's. Returns 0 or -errno (then the
    // ledger is closed and the child fails open).
    int after_fork() noexcept;

    // Reserve `rate` bytes/s in `dir` for this process's flow `flow_id`. Never
    // allocates; see the contract above for the lock. `description` is
    // truncated to kDescriptionLen - 1 bytes.
    ReserveResult reserve(uint64_t flow_id, Dir dir, uint64_t rate, policy::ServiceClass service,
                          const char* description, policy::OnReject on_reject) noexcept;
    // Give a reservation back; `r` then holds nothing. Lock-free, never waits.
    // 0, -EINVAL (holds nothing), -EPERM (not this process's: a forked child
    // with its parent's handle), -ESTALE (already gone: reclaimed), -ECHILD
    // (forked without after_fork()), -ENODEV (not open).
    int release(Reservation& r) noexcept;

    // Totals under a read lock. 0 or -errno.
    int usage(LedgerUsage& out) noexcept;
    // Tools: every used entry (allocates). 0 or -errno.
    int snapshot(std::vector<LedgerItem>& out, LedgerUsage* usage = nullptr);
    // Tools: drop dead owners' entries; what was dropped goes to `dropped`. 0 or -errno.
    int reclaim(std::vector<LedgerItem>* dropped);

private:
    int lock(short type, int wait_ms) noexcept;
    void unlock() noexcept;
    uint32_t reclaim_locked(std::vector<LedgerItem>* dropped) noexcept;
    int fail(int err, const char* fmt, ...) noexcept __attribute__((format(printf, 3, 4)));

    int fd_ = -1;
    void* map_ = nullptr;
    size_t map_len_ = 0;
    LedgerHeader* hdr_ = nullptr;
    LedgerEntry* entries_ = nullptr;
    uint32_t slots_ = 0;
    pid_t pid_ = 0;
    uint64_t start_time_ = 0;
    uint64_t own_capacity_[2] = {0, 0};
    // The in-process half of the lock: the OFD lock does not exclude threads
    // sharing one descriptor. Holds pthread_self() of the holder, 0 when free.
    std::atomic<uintptr_t> owner_{0};
    char path_[PATH_MAX] = "";
    char error_[PATH_MAX + 256] = "";
};

}  // namespace gs::qos
