#include "core/qos/ledger.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

namespace gs::qos {

namespace {

constexpr uint64_t kUsed = 1;

std::atomic_ref<uint64_t> state_of(LedgerEntry& e) noexcept { return std::atomic_ref<uint64_t>(e.state); }

int64_t now_ns(clockid_t clock) noexcept {
    timespec ts{};
    clock_gettime(clock, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Waiting for a lock: yield first (the holder's critical section is a few
// microseconds), then sleep, growing to 1 ms. nanosleep is async-signal-safe.
void backoff(int& round) noexcept {
    if (round < 8) {
        sched_yield();
    } else {
        long ns = 20000L << (round - 8 < 6 ? round - 8 : 6);
        timespec ts{0, ns > 1000000 ? 1000000 : ns};
        nanosleep(&ts, nullptr);
    }
    ++round;
}

// "/proc/PID/stat" without snprintf (not async-signal-safe).
void stat_path(pid_t pid, char (&buf)[32]) noexcept {
    char digits[16];
    int n = 0;
    unsigned v = static_cast<unsigned>(pid);
    do digits[n++] = static_cast<char>('0' + v % 10); while ((v /= 10) != 0 && n < 15);
    char* p = buf;
    for (const char* s = "/proc/"; *s; ++s) *p++ = *s;
    while (n > 0) *p++ = digits[--n];
    for (const char* s = "/stat"; *s; ++s) *p++ = *s;
    *p = '\0';
}

// State (field 3) and start time (field 22) of pid. 0 or -errno (-ENOENT: gone).
int read_stat(pid_t pid, char& state, uint64_t& start) noexcept {
    char path[32];
    stat_path(pid, path);
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    char buf[1024];
    ssize_t n;
    do n = ::read(fd, buf, sizeof buf - 1); while (n < 0 && errno == EINTR);
    int err = n < 0 ? -errno : 0;
    ::close(fd);
    if (n <= 0) return err ? err : -ENOENT;   // empty: the process is being reaped
    buf[n] = '\0';
    // The name (field 2) is in parentheses and may hold spaces and ')': the last ')' ends it.
    const char* p = strrchr(buf, ')');
    if (p == nullptr) return -EPROTO;
    ++p;
    for (int field = 3; field <= 22; ++field) {
        while (*p == ' ') ++p;
        if (*p == '\0') return -EPROTO;
        if (field == 3) state = *p;
        if (field == 22) {
            uint64_t v = 0;
            for (; *p >= '0' && *p <= '9'; ++p) v = v * 10 + static_cast<uint64_t>(*p - '0');
            start = v;
            return 0;
        }
        while (*p != ' ' && *p != '\0') ++p;
    }
    return -EPROTO;
}

// The kernel's boot id, so entries written before a reboot (a ledger under
// /tmp may survive one) are not matched against this boot's pids. All zero if
// unreadable, which turns the check off.
void read_boot_id(uint8_t (&id)[16]) noexcept {
    memset(id, 0, sizeof id);
    int fd = ::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char buf[64] = {};
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return;
    int nib = 0;
    for (ssize_t i = 0; i < n && nib < 32; ++i) {
        char c = buf[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) continue;
        id[nib / 2] = static_cast<uint8_t>(id[nib / 2] | (nib % 2 ? v : v << 4));
        ++nib;
    }
}

// A non-zero value wins over zero; between two non-zero values the smaller.
uint64_t min_set(uint64_t a, uint64_t b) noexcept {
    if (a == 0) return b;
    if (b == 0) return a;
    return a < b ? a : b;
}

// errno is the program's: a hook must not change it behind its back.
struct SaveErrno {
    int saved = errno;
    ~SaveErrno() { errno = saved; }
};

}  // namespace

const char* name(Dir d) noexcept { return d == Dir::up ? "up" : d == Dir::down ? "down" : "?"; }

const char* rate_text(uint64_t bytes_per_s, char* buf, size_t len) noexcept {
    const double bits = static_cast<double>(bytes_per_s) * 8;
    if (bits >= 1e9) snprintf(buf, len, "%.3g Gbit/s", bits / 1e9);
    else if (bits >= 1e6) snprintf(buf, len, "%.3g Mbit/s", bits / 1e6);
    else if (bits >= 1e3) snprintf(buf, len, "%.3g kbit/s", bits / 1e3);
    else snprintf(buf, len, "%.0f bit/s", bits);
    return buf;
}

const char* name(ReserveResult::Status s) noexcept {
    using S = ReserveResult::Status;
    switch (s) {
    case S::granted: return "granted";
    case S::downgraded: return "downgraded";
    case S::refused: return "refused";
    case S::full: return "full";
    case S::busy: return "busy";
    case S::unavailable: return "unavailable";
    case S::invalid: return "invalid";
    }
    return "?";
}

uint64_t process_start_time(pid_t pid) noexcept {
    SaveErrno keep;
    char state = 0;
    uint64_t start = 0;
    return read_stat(pid, state, start) == 0 ? start : 0;
}

bool owner_alive(pid_t pid, uint64_t start_time) noexcept {
    SaveErrno keep;
    if (pid <= 0) return false;
    if (kill(pid, 0) != 0 && errno == ESRCH) return false;   // EPERM: alive, another user's
    char state = 0;
    uint64_t start = 0;
    int rc = read_stat(pid, state, start);
    if (rc == -ENOENT || rc == -ESRCH) return false;        // died since kill()
    if (rc != 0) return true;                               // cannot tell (hidepid): keep it
    if (state == 'Z' || state == 'X') return false;         // dead, not reaped yet
    return start == start_time;                             // else the pid was reused
}

int runtime_dir(std::string& dir, std::string& why, DirMode mode) {
    const char* xdg = getenv("XDG_RUNTIME_DIR");
    bool in_tmp = !(xdg && *xdg);
    if (!in_tmp) dir = std::string(xdg) + "/gsocket";
    else dir = "/tmp/gsocket-" + std::to_string(geteuid());
    if (mode == DirMode::name_only) return 0;
    if (mode == DirMode::create && mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
        int e = errno;
        why = "cannot create " + dir + ": " + strerror(e);
        return -e;
    }
    // A shared /tmp: someone else may have made the directory first, or a
    // symlink, to read or redirect our ledger and sockets.
    struct stat st{};
    if (lstat(dir.c_str(), &st) != 0) {
        int e = errno;
        why = "cannot stat " + dir + ": " + strerror(e);
        return -e;
    }
    if (!S_ISDIR(st.st_mode) || (in_tmp && (st.st_uid != geteuid() || (st.st_mode & 077) != 0))) {
        why = dir + " is not a private directory of this user (mode 0700): remove it, or set "
                    "XDG_RUNTIME_DIR or GSOCKET_LEDGER";
        return -EPERM;
    }
    return 0;
}

int ledger_path(std::string& path, std::string& why, bool create_dir) {
    const char* env = getenv("GSOCKET_LEDGER");
    if (env && *env) {
        path = env;
        return 0;
    }
    std::string dir;
    int rc = runtime_dir(dir, why, create_dir ? DirMode::create : DirMode::name_only);
    path = dir + "/ledger";
    return rc;
}

int Ledger::fail(int err, const char* fmt, ...) noexcept {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_, sizeof error_, fmt, ap);
    va_end(ap);
    close();
    return err;
}

int Ledger::open(const char* path, uint64_t capacity_up, uint64_t capacity_down, uint32_t slots) noexcept {
    SaveErrno keep;
    close();
    error_[0] = '\0';
    if (path == nullptr || strlen(path) >= sizeof path_) {
        snprintf(error_, sizeof error_, "ledger path is empty or too long");
        return -ENAMETOOLONG;
    }
    memmove(path_, path, strlen(path) + 1);
    if (slots == 0 || slots > kMaxSlots) slots = kDefaultSlots;
    own_capacity_[0] = capacity_up;
    own_capacity_[1] = capacity_down;
    pid_ = getpid();
    start_time_ = process_start_time(pid_);

    fd_ = ::open(path_, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ < 0) {
        int e = errno;
        return fail(-e, "ledger %s: cannot open: %s; check its directory and permissions, or set GSOCKET_LEDGER",
                    path_, strerror(e));
    }
    int rc = lock(F_WRLCK, 2000);
    if (rc != 0)
        return fail(rc, "ledger %s: cannot lock: %s (a process holding it may be stopped)", path_, strerror(-rc));

    struct stat st{};
    if (fstat(fd_, &st) != 0) {
        int e = errno;
        return fail(-e, "ledger %s: cannot stat: %s", path_, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) return fail(-EPROTO, "ledger %s: not a regular file; set GSOCKET_LEDGER to a file", path_);
    LedgerHeader h{};
    bool init = st.st_size == 0;
    if (!init) {
        if (static_cast<size_t>(st.st_size) < sizeof h || pread(fd_, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h))
            return fail(-EPROTO, "ledger %s: too short to be a gsocket ledger (%lld bytes): another program's file? "
                                 "remove it (gsocket recreates it) or point GSOCKET_LEDGER elsewhere; "
                                 "reservations are off until then", path_, static_cast<long long>(st.st_size));
        // An opener that died between sizing the file and writing the magic
        // leaves zeros: finish its work.
        static const LedgerHeader zero{};
        init = memcmp(&h, &zero, sizeof h) == 0;
    }
    if (init) {
        size_t len = sizeof(LedgerHeader) + static_cast<size_t>(slots) * sizeof(LedgerEntry);
        if (ftruncate(fd_, 0) != 0 || ftruncate(fd_, static_cast<off_t>(len)) != 0) {
            int e = errno;
            return fail(-e, "ledger %s: cannot size it: %s", path_, strerror(e));
        }
        h = LedgerHeader{};
        h.slots = slots;
    } else {
        if (h.magic != kLedgerMagic)
            return fail(-EPROTO, "ledger %s: not a gsocket ledger (magic 0x%08x, want 0x%08x): another program's "
                                 "file? remove it or point GSOCKET_LEDGER elsewhere; reservations are off until then",
                        path_, h.magic, kLedgerMagic);
        if (h.version != kLedgerVersion)
            return fail(-EPROTO, "ledger %s: format version %u, this gsocket reads %u: stop the processes of the other "
                                 "gsocket version and remove the file; reservations are off until then",
                        path_, h.version, kLedgerVersion);
        size_t want = sizeof(LedgerHeader) + static_cast<size_t>(h.slots) * sizeof(LedgerEntry);
        if (h.header_size != sizeof(LedgerHeader) || h.entry_size != sizeof(LedgerEntry) || h.slots == 0 ||
            h.slots > kMaxSlots || static_cast<size_t>(st.st_size) != want)
            return fail(-EPROTO, "ledger %s: damaged (header %u/%u bytes, %u slots, file %lld bytes, want %zu): "
                                 "remove it when no gsocket process runs; reservations are off until then",
                        path_, h.header_size, h.entry_size, h.slots, static_cast<long long>(st.st_size), want);
    }
    slots_ = h.slots;
    map_len_ = sizeof(LedgerHeader) + static_cast<size_t>(slots_) * sizeof(LedgerEntry);
    void* m = mmap(nullptr, map_len_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (m == MAP_FAILED) {
        int e = errno;
        return fail(-e, "ledger %s: cannot map: %s", path_, strerror(e));
    }
    map_ = m;
    hdr_ = static_cast<LedgerHeader*>(m);
    auto* entries = reinterpret_cast<LedgerEntry*>(static_cast<char*>(m) + sizeof(LedgerHeader));

    uint8_t boot[16];
    read_boot_id(boot);
    static const uint8_t no_boot[16] = {};
    if (init) {
        memset(entries, 0, static_cast<size_t>(slots_) * sizeof(LedgerEntry));
        hdr_->version = kLedgerVersion;
        hdr_->header_size = sizeof(LedgerHeader);
        hdr_->entry_size = sizeof(LedgerEntry);
        hdr_->slots = slots_;
        memcpy(hdr_->boot_id, boot, sizeof boot);
        std::atomic_ref<uint32_t>(hdr_->magic).store(kLedgerMagic, std::memory_order_release);
    } else if (memcmp(boot, no_boot, 16) != 0 && memcmp(boot, hdr_->boot_id, 16) != 0) {
        // Written in an earlier boot: every owner is gone, whatever its pid says now.
        for (uint32_t i = 0; i < slots_; ++i) {
            uint64_t s = state_of(entries[i]).load(std::memory_order_relaxed);
            state_of(entries[i]).store(s & ~kUsed, std::memory_order_relaxed);
        }
        memcpy(hdr_->boot_id, boot, sizeof boot);
    }
    // Last writer wins (docs/reservations.md): a changed policy takes effect
    // with the next process that opens the ledger, no file to delete.
    if (capacity_up) hdr_->capacity[0] = capacity_up;
    if (capacity_down) hdr_->capacity[1] = capacity_down;
    entries_ = entries;
    unlock();
    return 0;
}

void Ledger::close() noexcept {
    if (map_ != nullptr) munmap(map_, map_len_);
    if (fd_ >= 0) ::close(fd_);   // releases our OFD lock only if no other descriptor shares it
    map_ = nullptr;
    hdr_ = nullptr;
    entries_ = nullptr;
    map_len_ = 0;
    slots_ = 0;
    fd_ = -1;
    owner_.store(0, std::memory_order_relaxed);
}

int Ledger::after_fork() noexcept {
    // A parent thread may have held the in-process lock at fork(); no such thread exists here.
    owner_.store(0, std::memory_order_relaxed);
    if (fd_ < 0) return -ENODEV;
    // Not unlock(): the descriptor shares the parent's open file description,
    // unlocking it would release the parent's lock.
    char path[PATH_MAX];
    memcpy(path, path_, sizeof path);
    return open(path, own_capacity_[0], own_capacity_[1], slots_);
}

int Ledger::lock(short type, int wait_ms) noexcept {
    const uintptr_t self = reinterpret_cast<uintptr_t>(reinterpret_cast<void*>(pthread_self()));
    const int64_t deadline = now_ns(CLOCK_MONOTONIC) + static_cast<int64_t>(wait_ms) * 1000000;
    int round = 0;
    for (uintptr_t cur = 0; !owner_.compare_exchange_weak(cur, self, std::memory_order_acquire,
                                                         std::memory_order_relaxed);
         cur = 0) {
        // This thread holds it: a signal handler interrupted us inside the
        // ledger. Waiting would be waiting for ourselves.
        if (cur == self) return -EDEADLK;
        if (now_ns(CLOCK_MONOTONIC) > deadline) return -EWOULDBLOCK;
        if (cur != 0) backoff(round);
    }
    struct flock fl{};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;   // the whole file; l_pid must be 0 for OFD locks
    for (;;) {
        if (fcntl(fd_, F_OFD_SETLK, &fl) == 0) return 0;
        int e = errno;
        if (e == EINTR) continue;
        if ((e != EAGAIN && e != EACCES) || now_ns(CLOCK_MONOTONIC) > deadline) {
            owner_.store(0, std::memory_order_release);
            return e == EAGAIN || e == EACCES ? -EWOULDBLOCK : -e;
        }
        backoff(round);
    }
}

void Ledger::unlock() noexcept {
    struct flock fl{};
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fcntl(fd_, F_OFD_SETLK, &fl);
    owner_.store(0, std::memory_order_release);
}

// An entry decoded for tools (allocates the description).
static LedgerItem item_of(const LedgerEntry& e, uint32_t slot) {
    LedgerItem it;
    it.slot = slot;
    it.pid = e.pid;
    it.start_time = e.start_time;
    it.flow_id = e.flow_id;
    it.dir = static_cast<Dir>(e.dir);
    it.service = static_cast<policy::ServiceClass>(e.service);
    it.rate = e.rate;
    it.created_ns = e.created_ns;
    it.description.assign(e.description, strnlen(e.description, sizeof e.description));
    return it;
}

uint32_t Ledger::reclaim_locked(std::vector<LedgerItem>* dropped) noexcept {
    uint32_t n = 0;
    for (uint32_t i = 0; i < slots_; ++i) {
        LedgerEntry& e = entries_[i];
        uint64_t s = state_of(e).load(std::memory_order_acquire);
        if (!(s & kUsed)) continue;
        if (e.pid == pid_ && e.start_time == start_time_) continue;   // ours
        if (owner_alive(e.pid, e.start_time)) continue;
        if (dropped) {
            LedgerItem it = item_of(e, i);
            it.alive = false;
            dropped->push_back(std::move(it));   // tools only; reserve() passes nullptr
        }
        // Only a live owner's release races with us, and this owner is dead.
        if (state_of(e).compare_exchange_strong(s, s & ~kUsed, std::memory_order_acq_rel)) ++n;
    }
    if (n) ++hdr_->mutations;
    return n;
}

ReserveResult Ledger::reserve(uint64_t flow_id, Dir dir, uint64_t rate, policy::ServiceClass service,
                              const char* description, policy::OnReject on_reject) noexcept {
    using S = ReserveResult::Status;
    SaveErrno keep;
    ReserveResult r;
    r.asked = rate;
    if (!is_open()) {
        r.status = S::unavailable;
        r.error = -ENODEV;
        return r;
    }
    if (rate == 0 || (dir != Dir::up && dir != Dir::down)) {
        r.status = S::invalid;
        r.error = -EINVAL;
        return r;
    }
    if (getpid() != pid_) {   // forked, after_fork() not called: the lock is the parent's too
        r.status = S::unavailable;
        r.error = -ECHILD;
        return r;
    }
    int rc = lock(F_WRLCK, kLockWaitMs);
    if (rc != 0) {
        r.status = S::busy;
        r.error = rc;
        return r;
    }
    const int d = static_cast<int>(dir);
    const uint64_t cap = min_set(own_capacity_[d], hdr_->capacity[d]);
    uint64_t used = 0;
    uint32_t free_slot = UINT32_MAX;
    auto scan = [&] {
        used = 0;
        free_slot = UINT32_MAX;
        for (uint32_t i = 0; i < slots_; ++i) {
            LedgerEntry& e = entries_[i];
            if (!(state_of(e).load(std::memory_order_acquire) & kUsed)) {
                if (free_slot == UINT32_MAX) free_slot = i;
            } else if (e.dir == d) {
                used += e.rate;
            }
        }
    };
    scan();
    if (free_slot == UINT32_MAX || used > cap || rate > cap - used) {
        // Before refusing (or settling lower), drop what dead processes hold.
        r.reclaimed = reclaim_locked(nullptr);
        if (r.reclaimed) scan();
    }
    r.capacity = cap;
    r.available = cap > used ? cap - used : 0;
    uint64_t grant = 0;
    if (free_slot == UINT32_MAX) {
        r.status = S::full;
    } else if (rate <= r.available) {
        grant = rate;
        r.status = S::granted;
    } else if (on_reject == policy::OnReject::downgrade && r.available > 0) {
        grant = r.available;
        r.status = S::downgraded;
    } else {
        r.status = S::refused;
    }
    if (grant == 0) {
        r.error = -kRefusedErrno;
        unlock();
        return r;
    }
    LedgerEntry& e = entries_[free_slot];
    uint64_t seq = (state_of(e).load(std::memory_order_relaxed) >> 1) + 1;
    if (seq == 0 || seq > (UINT64_MAX >> 1)) seq = 1;
    e.pid = pid_;
    e.dir = static_cast<uint8_t>(dir);
    e.service = static_cast<uint8_t>(service);
    e.spare = 0;
    e.start_time = start_time_;
    e.flow_id = flow_id;
    e.rate = grant;
    e.created_ns = now_ns(CLOCK_REALTIME);
    size_t n = description ? strnlen(description, kDescriptionLen - 1) : 0;
    memcpy(e.description, description ? description : "", n);
    memset(e.description + n, 0, kDescriptionLen - n);
    // The commit point: a process killed before this store left a free slot.
    state_of(e).store((seq << 1) | kUsed, std::memory_order_release);
    ++hdr_->mutations;
    unlock();
    r.granted = grant;
    r.reservation.slot = free_slot;
    r.reservation.dir = dir;
    r.reservation.seq = seq;
    r.reservation.rate = grant;
    return r;
}

int Ledger::release(Reservation& res) noexcept {
    if (!res.valid() || res.slot == UINT32_MAX) return -EINVAL;
    if (!is_open()) return -ENODEV;
    if (res.slot >= slots_) return -EINVAL;
    SaveErrno keep;
    if (getpid() != pid_) return -ECHILD;
    LedgerEntry& e = entries_[res.slot];
    uint64_t expect = (res.seq << 1) | kUsed;
    if (state_of(e).load(std::memory_order_acquire) != expect) {
        res = Reservation{};
        return -ESTALE;
    }
    // Fields do not change while the state is `expect` (only free slots are written).
    if (e.pid != pid_ || e.start_time != start_time_) return -EPERM;
    if (!state_of(e).compare_exchange_strong(expect, res.seq << 1, std::memory_order_acq_rel)) {
        res = Reservation{};
        return -ESTALE;
    }
    res = Reservation{};
    return 0;
}

int Ledger::usage(LedgerUsage& out) noexcept {
    SaveErrno keep;
    out = LedgerUsage{};
    if (!is_open()) return -ENODEV;
    int rc = lock(F_RDLCK, 2000);
    if (rc != 0) return rc;
    out.capacity[0] = hdr_->capacity[0];
    out.capacity[1] = hdr_->capacity[1];
    out.slots = slots_;
    for (uint32_t i = 0; i < slots_; ++i) {
        LedgerEntry& e = entries_[i];
        if (!(state_of(e).load(std::memory_order_acquire) & kUsed)) continue;
        ++out.used;
        if (e.dir <= 1) out.reserved[e.dir] += e.rate;
    }
    unlock();
    return 0;
}

int Ledger::snapshot(std::vector<LedgerItem>& out, LedgerUsage* use) {
    out.clear();
    if (!is_open()) return -ENODEV;
    LedgerUsage u;
    // Reserve before locking: no allocation while other processes wait.
    out.reserve(64);
    int rc = lock(F_RDLCK, 2000);
    if (rc != 0) return rc;
    u.capacity[0] = hdr_->capacity[0];
    u.capacity[1] = hdr_->capacity[1];
    u.slots = slots_;
    for (uint32_t i = 0; i < slots_; ++i) {
        LedgerEntry& e = entries_[i];
        if (!(state_of(e).load(std::memory_order_acquire) & kUsed)) continue;
        LedgerItem it = item_of(e, i);
        ++u.used;
        if (e.dir <= 1) u.reserved[e.dir] += e.rate;
        out.push_back(std::move(it));
    }
    unlock();
    for (LedgerItem& it : out) it.alive = owner_alive(it.pid, it.start_time);
    if (use) *use = u;
    return 0;
}

int Ledger::reclaim(std::vector<LedgerItem>* dropped) {
    if (!is_open()) return -ENODEV;
    int rc = lock(F_WRLCK, 2000);
    if (rc != 0) return rc;
    reclaim_locked(dropped);
    unlock();
    return 0;
}

}  // namespace gs::qos
