// The control socket: started on the process's engine with a fake snapshot,
// it answers ping and flows, turns away bad requests and silent clients with
// an error line, serves many clients at once without growing, removes its
// file at stop and at exit, and a child of fork() answers on its own path.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "core/engine/control.h"
#include "core/engine/engine.h"

#if defined(__SANITIZE_ADDRESS__)
#define GS_TEST_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GS_TEST_LSAN 1
#endif
#endif
#if defined(GS_TEST_LSAN)
#include <sanitizer/lsan_interface.h>
#endif
#if defined(__SANITIZE_THREAD__)
#define GS_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GS_TEST_TSAN 1
#endif
#endif

using namespace gs::engine;

namespace {

std::string fake_snapshot() { return "{\"gsocket\":1,\"pid\":1,\"flows\":[]}\n"; }
std::string unterminated_snapshot() { return "{\"flows\":[]}"; }
std::string big_snapshot() { return "{\"pad\":\"" + std::string(1 << 20, 'x') + "\"}\n"; }
std::string throwing_snapshot() { throw std::bad_alloc(); }

// Every test runs against a private runtime directory; set once, before the
// first control_start() reads it.
const std::string& test_dir() {
    static std::string dir = [] {
        char tmpl[] = "/tmp/gs-control-test.XXXXXX";
        const char* d = mkdtemp(tmpl);
        REQUIRE(d != nullptr);
        setenv("XDG_RUNTIME_DIR", d, 1);
        return std::string(d);
    }();
    return dir;
}

std::string my_path() {
    test_dir();
    return control_path(getpid());
}

bool exists(const std::string& p) {
    struct stat st{};
    return lstat(p.c_str(), &st) == 0;
}

int connect_to(const std::string& path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

// Read to EOF (or `timeout_ms`); the server closes after every answer.
std::string read_all(int fd, int timeout_ms = 5000) {
    std::string out;
    char b[65536];
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, timeout_ms) <= 0) return out + "<timeout>";
        ssize_t n = read(fd, b, sizeof b);
        if (n <= 0) return out;
        out.append(b, static_cast<size_t>(n));
    }
}

std::string talk(std::string_view request, bool shut_wr = false) {
    int fd = connect_to(my_path());
    if (fd < 0) return std::string("<connect: ") + strerror(-fd) + ">";
    if (!request.empty()) REQUIRE(write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size()));
    if (shut_wr) shutdown(fd, SHUT_WR);
    std::string r = read_all(fd);
    close(fd);
    return r;
}

int open_fds() {
    int n = 0;
    DIR* d = opendir("/proc/self/fd");
    while (readdir(d) != nullptr) ++n;
    closedir(d);
    return n;
}

// A child of fork() that calls exit() (to run the atexit handlers under
// test) would have LSan report the parent's engine, which Engine::get()
// deliberately leaves behind in the child.
void child_keeps_parent_engine(Engine* parent) {
#if defined(GS_TEST_LSAN)
    if (parent != nullptr) __lsan_ignore_object(parent);
#else
    (void)parent;
#endif
}

// TSan cannot start threads (the child's engine) after a multi-threaded fork.
bool fork_unsupported() {
#if defined(GS_TEST_TSAN)
    MESSAGE("fork part skipped under TSan");
    return true;
#else
    return false;
#endif
}

bool starts_with(const std::string& s, std::string_view p) { return s.rfind(p, 0) == 0; }

}  // namespace

TEST_CASE("the directory and the socket path") {
    test_dir();
    CHECK(control_dir() == test_dir() + "/gsocket");
    CHECK(control_path(42) == test_dir() + "/gsocket/42.sock");
}

TEST_CASE("start is idempotent; ping, flows; the socket is private") {
    REQUIRE(control_start(&fake_snapshot) == 0);
    CHECK(control_start(&fake_snapshot) == 0);
    struct stat st{};
    REQUIRE(lstat(my_path().c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 0777) == 0600);
    REQUIRE(stat(control_dir().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);

    CHECK(talk("ping\n") == "pong\n");
    CHECK(talk("flows\n") == fake_snapshot());
    CHECK(talk("ping\r\n") == "pong\n");            // netcat -C
    CHECK(talk("ping", true) == "pong\n");          // EOF ends the line
    CHECK(talk("", true) == "");                    // nothing asked, nothing said

    // A later start replaces the snapshot function; the newline is the server's promise.
    REQUIRE(control_start(&unterminated_snapshot) == 0);
    CHECK(talk("flows\n") == "{\"flows\":[]}\n");
    REQUIRE(control_start(&big_snapshot) == 0);
    CHECK(talk("flows\n") == big_snapshot());       // many partial sends
    REQUIRE(control_start(&throwing_snapshot) == 0);
    CHECK(talk("flows\n") == "error: out of memory\n");
    REQUIRE(control_start(&fake_snapshot) == 0);
}

TEST_CASE("bad requests get an error line") {
    REQUIRE(control_start(&fake_snapshot) == 0);
    CHECK(talk("hello\n") == "error: unknown request 'hello': send flows, overlays [ROOT] or ping\n");
    CHECK(talk("\x1b[2J\n") == "error: unknown request '?[2J': send flows, overlays [ROOT] or ping\n");
    std::string r = talk(std::string(100, 'y') + "\n");
    CHECK(starts_with(r, "error: unknown request 'yyyy"));
    CHECK(r.find("...'") != std::string::npos);
    // 256 bytes and the newline is still a line; 257 without one is not.
    CHECK(starts_with(talk(std::string(256, 'x') + "\n"), "error: unknown request"));
    CHECK(talk(std::string(257, 'x')) == "error: request longer than 256 bytes\n");
    CHECK(talk(std::string(4000, 'x') + "\n") == "error: request longer than 256 bytes\n");
    CHECK(talk("ping\n") == "pong\n");   // still answering
}

TEST_CASE("overlays: the members this process runs; a root that is not a number is an error") {
    REQUIRE(control_start(&fake_snapshot) == 0);
    CHECK(talk("overlays\n") == "{\"overlays\":[]}\n");   // none here (overlay_host_test lists real ones)
    CHECK(talk("overlays 42\n") == "{\"overlays\":[]}\n");
    CHECK(starts_with(talk("overlays x1\n"), "{\"error\":\"the root must be a logical address in decimal"));
    CHECK(starts_with(talk("overlays 18446744073709551616\n"), "{\"error\":"));   // 2^64: out of range
    CHECK(starts_with(talk("overlaysx\n"), "error: unknown request 'overlaysx'"));
}

TEST_CASE("a silent client is dropped after 2 s with an error line") {
    REQUIRE(control_start(&fake_snapshot) == 0);
    int64_t t0 = now_ns();
    CHECK(talk("") == "error: no request within 2 s\n");
    double s = static_cast<double>(now_ns() - t0) / 1e9;
    CHECK(s > 1.8);
    CHECK(s < 4.0);
    CHECK(talk("pin") == "error: no request within 2 s\n");   // half a line, then silence
}

TEST_CASE("50 concurrent clients are all answered, beyond the limit they wait; nothing leaks") {
    REQUIRE(control_start(&fake_snapshot) == 0);
    CHECK(talk("ping\n") == "pong\n");
    const int base = open_fds();

    std::atomic<int> pongs{0}, snapshots{0}, other{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < 50; ++i)
        ts.emplace_back([&, i] {
            std::string r = talk(i % 2 ? "ping\n" : "flows\n");
            if (r == "pong\n") pongs++;
            else if (r == fake_snapshot()) snapshots++;
            else other++;
        });
    for (std::thread& t : ts) t.join();
    CHECK(pongs == 25);
    CHECK(snapshots == 25);
    CHECK(other == 0);

    // Every slot held by a silent client: the next one waits in the backlog
    // and is answered when the first slots time out, not refused, not lost.
    std::vector<int> silent;
    for (int i = 0; i < kMaxConnections; ++i) {
        int fd = connect_to(my_path());
        REQUIRE(fd >= 0);
        silent.push_back(fd);
    }
    usleep(100'000);
    int64_t t0 = now_ns();
    CHECK(talk("ping\n") == "pong\n");
    CHECK(static_cast<double>(now_ns() - t0) / 1e9 > 1.0);
    for (int fd : silent) {
        CHECK(read_all(fd) == "error: no request within 2 s\n");
        close(fd);
    }
    // The engine has closed its side of every connection.
    bool back = false;
    for (int i = 0; i < 100 && !back; ++i) {
        back = open_fds() == base;
        if (!back) usleep(10'000);
    }
    CHECK(back);
}

TEST_CASE("stop removes the socket; start again answers") {
    REQUIRE(control_start(&fake_snapshot) == 0);
    // A client in the middle of its request when the server stops is closed, not hung.
    int pending = connect_to(my_path());
    REQUIRE(pending >= 0);
    usleep(50'000);
    CHECK(control_stop() == 0);
    CHECK(!exists(my_path()));
    CHECK(read_all(pending, 3000) == "");
    close(pending);
    CHECK(connect_to(my_path()) == -ENOENT);
    CHECK(control_stop() == 0);   // nothing runs: still fine

    REQUIRE(control_start(&fake_snapshot) == 0);
    CHECK(exists(my_path()));
    CHECK(talk("ping\n") == "pong\n");
}

TEST_CASE("a stale socket file of a dead process with our pid is replaced") {
    REQUIRE(control_start(&fake_snapshot) == 0);
    REQUIRE(control_stop() == 0);
    // A regular file where our socket goes (a crashed process with our pid).
    int fd = open(my_path().c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    close(fd);
    REQUIRE(control_start(&fake_snapshot) == 0);
    CHECK(talk("ping\n") == "pong\n");
}

TEST_CASE("children of fork: exit removes only their own socket") {
    REQUIRE(control_start(&fake_snapshot) == 0);
    if (fork_unsupported()) return;
    Engine* engine = Engine::get();
    const std::string parent = my_path();

    // A child that never starts its own leaves the parent's file alone at exit.
    fflush(nullptr);   // the children exit(): no second copy of our buffered output
    pid_t a = fork();
    REQUIRE(a >= 0);
    if (a == 0) exit(0);
    int st = 0;
    REQUIRE(waitpid(a, &st, 0) == a);
    CHECK(exists(parent));

    // A child that starts its own answers on its own path, and removes it at exit.
    int pipefd[2];
    REQUIRE(pipe(pipefd) == 0);
    pid_t b = fork();
    REQUIRE(b >= 0);
    if (b == 0) {
        child_keeps_parent_engine(engine);
        close(pipefd[0]);
        int ok = control_start(&fake_snapshot) == 0 && exists(control_path(getpid())) &&
                 talk("ping\n") == "pong\n";
        char c = ok ? 'y' : 'n';
        (void)!write(pipefd[1], &c, 1);
        exit(ok ? 0 : 1);   // exit(), not _exit(): the atexit handler runs
    }
    close(pipefd[1]);
    char c = 0;
    CHECK(read(pipefd[0], &c, 1) == 1);
    close(pipefd[0]);
    REQUIRE(waitpid(b, &st, 0) == b);
    CHECK(c == 'y');
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
    CHECK(!exists(control_path(b)));
    CHECK(exists(parent));
    CHECK(talk("ping\n") == "pong\n");
}

TEST_CASE("at exit the socket file goes") {
    if (fork_unsupported()) return;
    Engine* engine = Engine::get();
    fflush(nullptr);
    pid_t p = fork();
    REQUIRE(p >= 0);
    if (p == 0) {
        child_keeps_parent_engine(engine);
        // A fresh process's first start (the parent's state is inherited, its engine is not).
        int rc = control_start(&fake_snapshot);
        exit(rc == 0 && exists(control_path(getpid())) ? 0 : 1);
    }
    int st = 0;
    REQUIRE(waitpid(p, &st, 0) == p);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
    CHECK(!exists(control_path(p)));
}

TEST_CASE("without XDG_RUNTIME_DIR the directory is /tmp/gsocket-UID") {
    // Done in a child: the environment change must not reach the other tests.
    fflush(nullptr);
    pid_t p = fork();
    REQUIRE(p >= 0);
    if (p == 0) {
        unsetenv("XDG_RUNTIME_DIR");
        std::string dir = control_dir();
        if (dir != "/tmp/gsocket-" + std::to_string(geteuid())) _exit(3);
        _exit(0);
    }
    int st = 0;
    REQUIRE(waitpid(p, &st, 0) == p);
    CHECK(WEXITSTATUS(st) == 0);
}
