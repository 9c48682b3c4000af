// The host reservation ledger: admission arithmetic, fail vs downgrade, reclaim
// of dead owners (SIGKILL, zombies, reused pids), fork, concurrency between
// processes, corrupt files, a full table, and bounded lock waits.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>

#include "core/qos/ledger.h"

using namespace gs;
using gs::qos::Dir;
using gs::qos::Ledger;
using S = gs::qos::ReserveResult::Status;
using policy::OnReject;
using policy::ServiceClass;

namespace {

struct TempDir {
    std::string path;
    TempDir() {
        char t[] = "/tmp/gs-ledger-test.XXXXXX";
        REQUIRE(mkdtemp(t) != nullptr);
        path = t;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    std::string file(const char* name = "ledger") const { return path + "/" + name; }
};

qos::ReserveResult up(Ledger& l, uint64_t rate, OnReject on = OnReject::fail, uint64_t flow = 1) {
    return l.reserve(flow, Dir::up, rate, ServiceClass::guaranteed, "tcp 10.0.0.2:5000", on);
}

qos::LedgerUsage usage(Ledger& l) {
    qos::LedgerUsage u;
    REQUIRE(l.usage(u) == 0);
    return u;
}

// A child that reserves `rate`, tells the parent through `fd`, then waits to be killed.
pid_t holder(const std::string& file, uint64_t cap, uint64_t rate) {
    int p[2];
    REQUIRE(pipe(p) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(p[0]);
        Ledger l;
        char ok = 'n';
        if (l.open(file.c_str(), cap, cap) == 0 && up(l, rate).status == S::granted) ok = 'y';
        if (write(p[1], &ok, 1) != 1) _exit(2);
        for (;;) pause();
    }
    ::close(p[1]);
    char ok = 0;
    REQUIRE(read(p[0], &ok, 1) == 1);
    ::close(p[0]);
    REQUIRE(ok == 'y');
    return pid;
}

}  // namespace

TEST_SUITE("core") {

TEST_CASE("ledger: reserve and release arithmetic, per direction") {
    TempDir d;
    Ledger l;
    REQUIRE(l.open(d.file().c_str(), 1000, 2000) == 0);
    auto a = up(l, 300);
    CHECK(a.status == S::granted);
    CHECK(a.granted == 300);
    CHECK(a.available == 1000);
    CHECK(a.capacity == 1000);
    CHECK(a.reservation.valid());
    auto b = up(l, 700);
    CHECK(b.status == S::granted);
    CHECK(b.available == 700);
    auto c = up(l, 1);
    CHECK(c.status == S::refused);
    CHECK(c.error == -ENOBUFS);
    CHECK(c.asked == 1);
    CHECK(c.available == 0);
    CHECK_FALSE(c.reservation.valid());
    CHECK_FALSE(c.fail_open());
    auto dn = l.reserve(2, Dir::down, 2000, ServiceClass::realtime, "udp 10.0.0.3:5004", OnReject::fail);
    CHECK(dn.status == S::granted);
    auto u = usage(l);
    CHECK(u.reserved[0] == 1000);
    CHECK(u.reserved[1] == 2000);
    CHECK(u.used == 3);
    CHECK(u.capacity[0] == 1000);
    CHECK(u.capacity[1] == 2000);

    CHECK(l.release(a.reservation) == 0);
    CHECK_FALSE(a.reservation.valid());
    CHECK(l.release(a.reservation) == -EINVAL);   // holds nothing any more
    CHECK(usage(l).reserved[0] == 700);
    CHECK(up(l, 300).status == S::granted);
    CHECK(up(l, 1).status == S::refused);

    std::vector<qos::LedgerItem> items;
    REQUIRE(l.snapshot(items) == 0);
    CHECK(items.size() == 3);
    for (const auto& it : items) {
        CHECK(it.pid == getpid());
        CHECK(it.alive);
        CHECK(it.created_ns > 0);
    }

    CHECK(l.reserve(1, Dir::up, 0, ServiceClass::guaranteed, "", OnReject::fail).status == S::invalid);
    Ledger closed;
    auto x = up(closed, 1);
    CHECK(x.status == S::unavailable);
    CHECK(x.fail_open());
}

TEST_CASE("ledger: on_reject fail refuses, downgrade settles for what is left") {
    TempDir d;
    Ledger l;
    REQUIRE(l.open(d.file().c_str(), 1000, 1000) == 0);
    REQUIRE(up(l, 600).status == S::granted);
    auto f = up(l, 600, OnReject::fail);
    CHECK(f.status == S::refused);
    CHECK(f.asked == 600);
    CHECK(f.available == 400);
    CHECK(f.granted == 0);
    auto g = up(l, 600, OnReject::downgrade);
    CHECK(g.status == S::downgraded);
    CHECK(g.admitted());
    CHECK(g.asked == 600);
    CHECK(g.granted == 400);
    CHECK(g.reservation.rate == 400);
    CHECK(g.error == 0);
    // Nothing left: downgrade cannot grant zero.
    auto h = up(l, 10, OnReject::downgrade);
    CHECK(h.status == S::refused);
    CHECK(h.error == -qos::kRefusedErrno);
    // More than the whole capacity, on an empty ledger in the other direction.
    auto big = l.reserve(3, Dir::down, 5000, ServiceClass::realtime, "", OnReject::fail);
    CHECK(big.status == S::refused);
    CHECK(big.available == 1000);
}

TEST_CASE("ledger: capacity, last writer wins in the header, each process admits within its own") {
    TempDir d;
    Ledger a, b, c;
    REQUIRE(a.open(d.file().c_str(), 1000, 1000) == 0);
    REQUIRE(b.open(d.file().c_str(), 500, 500) == 0);   // a newer policy lowers it
    CHECK(usage(a).capacity[0] == 500);
    auto r = up(a, 800);
    CHECK(r.status == S::refused);   // a's own 1000 does not beat the header's 500
    CHECK(r.capacity == 500);
    REQUIRE(c.open(d.file().c_str(), 0, 0) == 0);   // no capacity in its policy: the header's
    CHECK(up(c, 500).status == S::granted);
    CHECK(up(b, 1).status == S::refused);

    TempDir e;
    Ledger none;
    REQUIRE(none.open(e.file().c_str(), 0, 0) == 0);
    auto n = up(none, 1);
    CHECK(n.status == S::refused);   // nobody configured a capacity
    CHECK(n.capacity == 0);
}

TEST_CASE("ledger: a SIGKILLed holder is reclaimed, zombie or reaped") {
    TempDir d;
    Ledger l;
    REQUIRE(l.open(d.file().c_str(), 1000, 1000) == 0);
    pid_t child = holder(d.file(), 1000, 800);
    CHECK(usage(l).reserved[0] == 800);
    auto r = up(l, 500);
    CHECK(r.status == S::refused);   // alive: not reclaimed
    CHECK(r.reclaimed == 0);
    REQUIRE(kill(child, SIGKILL) == 0);
    // Not reaped yet: a zombie holds nothing.
    siginfo_t si{};
    REQUIRE(waitid(P_PID, static_cast<id_t>(child), &si, WEXITED | WNOWAIT) == 0);
    CHECK_FALSE(qos::owner_alive(child, qos::process_start_time(child)));
    r = up(l, 500);
    CHECK(r.status == S::granted);
    CHECK(r.reclaimed == 1);
    CHECK(r.available == 1000);
    REQUIRE(waitpid(child, nullptr, 0) == child);

    // Reaped, through the tools' reclaim.
    child = holder(d.file(), 1000, 300);
    REQUIRE(kill(child, SIGKILL) == 0);
    REQUIRE(waitpid(child, nullptr, 0) == child);
    std::vector<qos::LedgerItem> dropped;
    REQUIRE(l.reclaim(&dropped) == 0);
    REQUIRE(dropped.size() == 1);
    CHECK(dropped[0].pid == child);
    CHECK(dropped[0].rate == 300);
    CHECK(dropped[0].description == "tcp 10.0.0.2:5000");
    CHECK(usage(l).reserved[0] == 500);
}

TEST_CASE("ledger: a reused pid is told apart by its start time") {
    TempDir d;
    Ledger l;
    REQUIRE(l.open(d.file().c_str(), 1000, 1000) == 0);
    // Forge two entries: our pid with a start time that is not ours (the
    // process that had this pid before us), and pid 1 with its true start time.
    int fd = ::open(d.file().c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    qos::LedgerEntry e{};
    e.state = (1u << 1) | 1;
    e.pid = getpid();
    e.start_time = qos::process_start_time(getpid()) + 12345;
    e.rate = 600;
    strcpy(e.description, "forged");
    REQUIRE(pwrite(fd, &e, sizeof e, sizeof(qos::LedgerHeader) + 5 * sizeof e) == sizeof e);
    e.pid = 1;
    e.start_time = qos::process_start_time(1);
    e.rate = 100;
    REQUIRE(e.start_time != 0);
    REQUIRE(pwrite(fd, &e, sizeof e, sizeof(qos::LedgerHeader) + 6 * sizeof e) == sizeof e);
    ::close(fd);
    CHECK(usage(l).reserved[0] == 700);
    auto r = up(l, 800);
    CHECK(r.status == S::granted);
    CHECK(r.reclaimed == 1);   // the forged one; pid 1 is alive and keeps its 100
    CHECK(usage(l).reserved[0] == 900);
}

TEST_CASE("ledger: a forked child does not own its parent's reservations") {
    TempDir d;
    Ledger l;
    REQUIRE(l.open(d.file().c_str(), 1000, 1000) == 0);
    auto mine = up(l, 400);
    REQUIRE(mine.status == S::granted);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        // Without after_fork() the child shares the parent's lock: refused to use it.
        if (up(l, 10).error != -ECHILD) _exit(10);
        if (l.release(mine.reservation) != -ECHILD) _exit(11);
        if (l.after_fork() != 0) _exit(12);
        if (l.release(mine.reservation) != -EPERM) _exit(13);
        auto c = up(l, 500);
        if (c.status != S::granted) _exit(14);
        if (up(l, 200).status != S::refused) _exit(15);
        _exit(0);   // exits holding 500: the parent reclaims it
    }
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    REQUIRE(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
    auto r = up(l, 600);
    CHECK(r.status == S::granted);
    CHECK(r.reclaimed == 1);
    CHECK(l.release(mine.reservation) == 0);
}

TEST_CASE("ledger: 4 processes x 500 cycles never exceed the capacity") {
    TempDir d;
    const std::string file = d.file();
    constexpr int kProcs = 4, kCycles = 500;
    constexpr uint64_t kCap = 1000, kRate = 300;   // three fit, the fourth is refused or downgraded
    Ledger l;
    REQUIRE(l.open(file.c_str(), kCap, kCap, 64) == 0);
    int p[2], go[2];
    REQUIRE(pipe(p) == 0);
    REQUIRE(pipe(go) == 0);   // a start line: all four run at once
    pid_t kids[kProcs];
    for (int k = 0; k < kProcs; ++k) {
        kids[k] = fork();
        REQUIRE(kids[k] >= 0);
        if (kids[k] == 0) {
            ::close(p[0]);
            ::close(go[1]);
            Ledger c;
            if (c.open(file.c_str(), kCap, kCap) != 0) _exit(20);
            char x;
            if (read(go[0], &x, 1) != 0) _exit(26);
            uint32_t counts[4] = {0, 0, 0, 0};   // granted, downgraded, refused, busy
            for (int i = 0; i < kCycles; ++i) {
                OnReject on = i % 2 ? OnReject::downgrade : OnReject::fail;
                auto r = c.reserve(static_cast<uint64_t>(i), Dir::up, kRate, ServiceClass::guaranteed, "load", on);
                if (r.status == S::granted) ++counts[0];
                else if (r.status == S::downgraded) ++counts[1];
                else if (r.status == S::refused) ++counts[2];
                else if (r.status == S::busy) ++counts[3];
                else _exit(21);
                // Checked under the ledger's lock: the sum of every process's reservations.
                qos::LedgerUsage u;
                if (c.usage(u) != 0) _exit(22);
                if (u.reserved[0] > kCap) _exit(23);
                sched_yield();   // hold it a moment: let the others find the capacity taken
                if (r.admitted() && c.release(r.reservation) != 0) _exit(24);
            }
            if (write(p[1], counts, sizeof counts) != sizeof counts) _exit(25);
            _exit(0);
        }
    }
    ::close(p[1]);
    ::close(go[0]);
    auto t0 = std::chrono::steady_clock::now();
    ::close(go[1]);
    uint64_t total[4] = {0, 0, 0, 0};
    for (int k = 0; k < kProcs; ++k) {
        uint32_t counts[4];
        REQUIRE(read(p[0], counts, sizeof counts) == sizeof counts);
        for (int i = 0; i < 4; ++i) total[i] += counts[i];
    }
    ::close(p[0]);
    for (int k = 0; k < kProcs; ++k) {
        int st = 0;
        REQUIRE(waitpid(kids[k], &st, 0) == kids[k]);
        CHECK(WIFEXITED(st));
        CHECK(WEXITSTATUS(st) == 0);
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    CHECK(total[0] + total[1] + total[2] + total[3] == uint64_t{kProcs} * kCycles);
    CHECK(total[3] == 0);
    auto u = usage(l);
    CHECK(u.reserved[0] == 0);
    CHECK(u.used == 0);
    MESSAGE(kProcs << " processes x " << kCycles << " reserve/usage/release cycles: " << ms << " ms; granted "
                   << total[0] << ", downgraded " << total[1] << ", refused " << total[2] << ", busy " << total[3]);
}

TEST_CASE("ledger: a corrupt or foreign file is reported and fails open") {
    TempDir d;
    auto write_file = [](const std::string& f, const void* data, size_t n) {
        int fd = ::open(f.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
        REQUIRE(fd >= 0);
        REQUIRE(write(fd, data, n) == static_cast<ssize_t>(n));
        ::close(fd);
    };
    Ledger l;
    // Short.
    write_file(d.file(), "hello", 5);
    CHECK(l.open(d.file().c_str(), 1000, 1000) == -EPROTO);
    CHECK(std::string(l.error()).find(d.file()) != std::string::npos);
    CHECK(std::string(l.error()).find("too short") != std::string::npos);
    CHECK_FALSE(l.is_open());
    auto r = up(l, 1);
    CHECK(r.status == S::unavailable);
    CHECK(r.fail_open());
    // Foreign: the right size, another magic.
    std::string junk(sizeof(qos::LedgerHeader) + 4 * sizeof(qos::LedgerEntry), 'x');
    write_file(d.file(), junk.data(), junk.size());
    CHECK(l.open(d.file().c_str(), 1000, 1000) == -EPROTO);
    CHECK(std::string(l.error()).find("not a gsocket ledger") != std::string::npos);
    CHECK(std::string(l.error()).find("remove it") != std::string::npos);
    // Another version.
    std::filesystem::remove(d.file());
    {
        Ledger ok;
        REQUIRE(ok.open(d.file().c_str(), 1000, 1000, 4) == 0);
    }
    int fd = ::open(d.file().c_str(), O_RDWR);
    uint16_t v = 99;
    REQUIRE(pwrite(fd, &v, 2, 4) == 2);
    CHECK(l.open(d.file().c_str(), 1000, 1000) == -EPROTO);
    CHECK(std::string(l.error()).find("version 99") != std::string::npos);
    v = qos::kLedgerVersion;
    REQUIRE(pwrite(fd, &v, 2, 4) == 2);
    // Grown behind our back.
    REQUIRE(ftruncate(fd, sizeof(qos::LedgerHeader) + 5 * sizeof(qos::LedgerEntry)) == 0);
    ::close(fd);
    CHECK(l.open(d.file().c_str(), 1000, 1000) == -EPROTO);
    CHECK(std::string(l.error()).find("damaged") != std::string::npos);
    // Header zeros (an opener died while initialising): taken over.
    std::string zeros(sizeof(qos::LedgerHeader) + 4 * sizeof(qos::LedgerEntry), '\0');
    write_file(d.file(), zeros.data(), zeros.size());
    CHECK(l.open(d.file().c_str(), 1000, 1000) == 0);
    CHECK(up(l, 10).status == S::granted);
    // Not a file at all.
    Ledger dir;
    CHECK(dir.open(d.path.c_str(), 1, 1) < 0);
    CHECK(std::string(dir.error()).find(d.path) != std::string::npos);
}

TEST_CASE("ledger: a full table refuses with its own reason") {
    TempDir d;
    Ledger l;
    REQUIRE(l.open(d.file().c_str(), 1000000, 1000000, 4) == 0);
    qos::Reservation held[4];
    for (auto& h : held) {
        auto r = up(l, 10);
        REQUIRE(r.status == S::granted);
        h = r.reservation;
    }
    auto r = up(l, 10, OnReject::downgrade);
    CHECK(r.status == S::full);
    CHECK(r.error == -ENOBUFS);
    CHECK(r.available == 1000000 - 40);
    CHECK(std::string(qos::name(r.status)) == "full");
    CHECK(l.release(held[2]) == 0);
    CHECK(up(l, 10).status == S::granted);
    // A second opener asking for more slots gets the file's size.
    Ledger m;
    REQUIRE(m.open(d.file().c_str(), 0, 0, 100) == 0);
    CHECK(usage(m).slots == 4);
}

TEST_CASE("ledger: a held lock costs a bounded wait, never a hang") {
    TempDir d;
    Ledger l;
    REQUIRE(l.open(d.file().c_str(), 1000, 1000) == 0);
    // Another open file description holding the lock: a process stopped inside the ledger.
    int fd = ::open(d.file().c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    struct flock fl{};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    REQUIRE(fcntl(fd, F_OFD_SETLK, &fl) == 0);
    auto t0 = std::chrono::steady_clock::now();
    auto r = up(l, 10);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    CHECK(r.status == S::busy);
    CHECK(r.error == -EWOULDBLOCK);
    CHECK(r.fail_open());
    CHECK(ms >= qos::kLockWaitMs * 0.9);
    CHECK(ms < qos::kLockWaitMs * 5);
    // release() needs no lock.
    ::close(fd);
    auto g = up(l, 10);
    REQUIRE(g.status == S::granted);
    REQUIRE(fcntl(fd = ::open(d.file().c_str(), O_RDWR), F_OFD_SETLK, &fl) == 0);
    CHECK(l.release(g.reservation) == 0);
    ::close(fd);
}

namespace {
Ledger* g_sig_ledger = nullptr;
std::atomic<int> g_sig_granted{0}, g_sig_busy{0}, g_sig_other{0};
void on_alarm(int) {
    auto r = g_sig_ledger->reserve(99, Dir::down, 1, ServiceClass::realtime, "from a signal handler",
                                   OnReject::fail);
    if (r.status == S::granted) {
        ++g_sig_granted;
        if (g_sig_ledger->release(r.reservation) != 0) ++g_sig_other;
    } else if (r.status == S::busy && r.error == -EDEADLK) {
        ++g_sig_busy;
    } else {
        ++g_sig_other;
    }
}
}  // namespace

TEST_CASE("ledger: reserve from a signal handler that interrupted reserve: busy, no deadlock") {
    TempDir d;
    Ledger l;
    REQUIRE(l.open(d.file().c_str(), 1000, 1000, 4096) == 0);   // a long scan widens the window
    g_sig_ledger = &l;
    struct sigaction sa{};
    sa.sa_handler = on_alarm;
    REQUIRE(sigaction(SIGALRM, &sa, nullptr) == 0);
    itimerval it{{0, 200}, {0, 200}};
    REQUIRE(setitimer(ITIMER_REAL, &it, nullptr) == 0);
    auto t0 = std::chrono::steady_clock::now();
    int n = 0;
    while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(300) || g_sig_busy.load() == 0) {
        auto r = up(l, 5);
        if (r.admitted()) l.release(r.reservation);
        ++n;
        if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(3)) break;
    }
    itimerval off{};
    setitimer(ITIMER_REAL, &off, nullptr);
    signal(SIGALRM, SIG_DFL);
    CHECK(g_sig_other.load() == 0);
    CHECK(g_sig_granted.load() > 0);
    CHECK(usage(l).used == 0);
    MESSAGE(n << " reserves; signal handler: " << g_sig_granted.load() << " granted, " << g_sig_busy.load()
              << " busy (re-entered)");
    if (g_sig_busy.load() == 0) MESSAGE("the timer never landed inside the lock on this run");
}

TEST_CASE("ledger: path from the environment") {
    std::string path, why;
    const char* old_l = getenv("GSOCKET_LEDGER");
    const char* old_x = getenv("XDG_RUNTIME_DIR");
    std::string sl = old_l ? old_l : "", sx = old_x ? old_x : "";
    TempDir d;
    setenv("GSOCKET_LEDGER", "/some/where", 1);
    CHECK(qos::ledger_path(path, why, false) == 0);
    CHECK(path == "/some/where");
    unsetenv("GSOCKET_LEDGER");
    setenv("XDG_RUNTIME_DIR", d.path.c_str(), 1);
    CHECK(qos::ledger_path(path, why, true) == 0);
    CHECK(path == d.path + "/gsocket/ledger");
    struct stat st{};
    REQUIRE(stat((d.path + "/gsocket").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    unsetenv("XDG_RUNTIME_DIR");
    CHECK(qos::ledger_path(path, why, false) == 0);
    CHECK(path == "/tmp/gsocket-" + std::to_string(geteuid()) + "/ledger");
    if (old_l) setenv("GSOCKET_LEDGER", sl.c_str(), 1);
    if (old_x) setenv("XDG_RUNTIME_DIR", sx.c_str(), 1);
}

}  // TEST_SUITE
