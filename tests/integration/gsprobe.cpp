// gsprobe: exercises the BSD socket API the way real programs do, so that one binary can be run
// with and without the gsocket shim (LD_PRELOAD) and must behave identically and correctly.
//
//   gsprobe SCENARIO...        run the named scenarios in order
//   gsprobe all                run every scenario except qos
//   gsprobe qos CHECK...       report socket options as the program sees them (see run_qos)
//   gsprobe --help             list the scenarios
//
// Output contract. stdout carries only deterministic status lines: "ok SCENARIO: detail",
// "skip SCENARIO: why" and "qos ..." lines, so a run under the shim can be diffed against a plain
// run. A failure prints "FAIL SCENARIO: what, expected X got Y (ERRNO)" to stderr and exits 1.
// Exit 77 when every requested scenario was skipped, 2 on a usage error. Everything is bounded:
// a global alarm(60), poll timeouts, SO_RCVTIMEO/SO_SNDTIMEO on blocking sockets. Servers are
// threads of this process on 127.0.0.1 / ::1 ephemeral ports. GSPROBE_VERBOSE=1 adds notes on
// stderr. "Pitfall N" refers to shared/PITFALLS.md.
//
// Build: g++ -std=c++20 -O2 -D_FORTIFY_SOURCE=2 -Wall -Wextra -Werror -pthread gsprobe.cpp
// (clang++-14 likewise). The chk_* helpers make the fortified __recv_chk, __recvfrom_chk and
// __read_chk imports real: check with `nm -D gsprobe | grep _chk`.

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

// Keeps the optimiser from seeing a constant length through a call, so the fortified wrappers
// really pick the __*_chk variants (GCC's IPA constant propagation would otherwise undo that).
#if defined(__clang__)
#define OPAQUE __attribute__((noinline))
#else
#define OPAQUE __attribute__((noinline, noipa))
#endif

namespace {

constexpr int kIoTimeoutMs = 10000;

// The scenario now running, for FAIL lines. Written only by main, between scenarios.
const char *volatile g_scenario = "gsprobe";
bool g_verbose = false;

// ---------------------------------------------------------------------------------------------
// Reporting and checked calls

const char *errname(int e) {
  if (e == 0) return "0";
  const char *n = strerrorname_np(e);
  return n ? n : "E?";
}

[[noreturn]] [[gnu::format(printf, 1, 2)]] void fail(const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fflush(stdout);
  fprintf(stderr, "FAIL %s: %s\n", g_scenario, msg);
  fflush(stderr);
  _exit(1);
}

// Always printed (stderr): a part of a scenario the kernel does not support.
[[gnu::format(printf, 1, 2)]] void note(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "note %s: ", g_scenario);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

// Printed only with GSPROBE_VERBOSE: kernel behaviour worth knowing but not deterministic.
#define VERBOSE(...)        \
  do {                      \
    if (g_verbose) note(__VA_ARGS__); \
  } while (0)

struct Skip {
  std::string why;
};

template <class T>
T check_ok(T rv, const char *what) {
  if (rv < 0) fail("%s, expected success got -1 (%s)", what, errname(errno));
  return rv;
}
// A call that must succeed; yields its result.
#define CHK(call) check_ok((call), #call)

// A call that must fail with one of the listed errnos; yields the errno seen.
int check_err(long rv, std::initializer_list<int> want, const char *what) {
  const int e = errno;
  std::string names;
  for (int w : want) names += (names.empty() ? "" : " or ") + std::string(errname(w));
  if (rv != -1) fail("%s, expected -1 (%s) got %ld", what, names.c_str(), rv);
  for (int w : want)
    if (e == w) return e;
  fail("%s, expected %s got -1 (%s)", what, names.c_str(), errname(e));
}
#define EXPECT_ERR(call, ...) check_err((call), {__VA_ARGS__}, #call)

void expect_int(long long got, long long want, const char *what) {
  if (got != want) fail("%s, expected %lld got %lld", what, want, got);
}

void expect_bytes(std::string_view got, std::string_view want, const char *what) {
  if (got == want) return;
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  if (got.size() <= 40 && want.size() <= 40)
    fail("%s, expected \"%.*s\" got \"%.*s\"", what, int(want.size()), want.data(), int(got.size()),
         got.data());
  fail("%s, expected %zu bytes got %zu (first difference at offset %zu)", what, want.size(),
       got.size(), i);
}

// Deterministic, position-dependent bytes: a misplaced or duplicated chunk shows.
std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char(seed * 131u + i * 7u + (i >> 8) * 13u);
  return s;
}

// ---------------------------------------------------------------------------------------------
// File descriptors and addresses

// Owns one fd; closing must succeed (a close() that fails unexpectedly is a shim bug, pitfall 10).
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd &&o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd &operator=(Fd &&o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  Fd(const Fd &) = delete;
  Fd &operator=(const Fd &) = delete;
  ~Fd() { reset(); }

  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0 && ::close(fd_) != 0)
      fail("close(%d), expected 0 got -1 (%s)", fd_, errname(errno));
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

struct Addr {
  sockaddr_storage ss{};
  socklen_t len = sizeof(sockaddr_storage);

  int family() const { return ss.ss_family; }
  sockaddr *sa() { return reinterpret_cast<sockaddr *>(&ss); }
  const sockaddr *sa() const { return reinterpret_cast<const sockaddr *>(&ss); }

  uint16_t port() const {
    if (family() == AF_INET) {
      sockaddr_in a;
      memcpy(&a, &ss, sizeof a);
      return ntohs(a.sin_port);
    }
    if (family() == AF_INET6) {
      sockaddr_in6 a;
      memcpy(&a, &ss, sizeof a);
      return ntohs(a.sin6_port);
    }
    return 0;
  }
  std::string host() const {
    char buf[INET6_ADDRSTRLEN] = "?";
    if (family() == AF_INET) {
      sockaddr_in a;
      memcpy(&a, &ss, sizeof a);
      inet_ntop(AF_INET, &a.sin_addr, buf, sizeof buf);
    } else if (family() == AF_INET6) {
      sockaddr_in6 a;
      memcpy(&a, &ss, sizeof a);
      inet_ntop(AF_INET6, &a.sin6_addr, buf, sizeof buf);
    } else {
      snprintf(buf, sizeof buf, "family=%d", family());
    }
    return buf;
  }
  std::string str() const {
    const std::string h = host();
    return (family() == AF_INET6 ? "[" + h + "]" : h) + ":" + std::to_string(port());
  }
  bool same(const Addr &o) const {
    return family() == o.family() && host() == o.host() && port() == o.port();
  }
};

Addr make_addr(int family, const char *host, uint16_t port) {
  Addr a;
  if (family == AF_INET) {
    sockaddr_in s{};
    s.sin_family = AF_INET;
    s.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &s.sin_addr) != 1) fail("bad IPv4 literal %s", host);
    memcpy(&a.ss, &s, sizeof s);
    a.len = sizeof s;
  } else {
    sockaddr_in6 s{};
    s.sin6_family = AF_INET6;
    s.sin6_port = htons(port);
    if (inet_pton(AF_INET6, host, &s.sin6_addr) != 1) fail("bad IPv6 literal %s", host);
    memcpy(&a.ss, &s, sizeof s);
    a.len = sizeof s;
  }
  return a;
}
Addr loopback(int family, uint16_t port = 0) {
  return make_addr(family, family == AF_INET ? "127.0.0.1" : "::1", port);
}
Addr any_addr(int family, uint16_t port = 0) {
  return make_addr(family, family == AF_INET ? "0.0.0.0" : "::", port);
}
const char *loopback_host(int family) { return family == AF_INET ? "127.0.0.1" : "::1"; }
const char *any_host(int family) { return family == AF_INET ? "0.0.0.0" : "::"; }
socklen_t sockaddr_size(int family) {
  return family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
}

Addr sock_name(int fd) {
  Addr a;
  CHK(getsockname(fd, a.sa(), &a.len));
  return a;
}
Addr peer_name(int fd) {
  Addr a;
  CHK(getpeername(fd, a.sa(), &a.len));
  return a;
}

void expect_addr(const Addr &got, const Addr &want, const char *what) {
  if (!got.same(want)) fail("%s, expected %s got %s", what, want.str().c_str(), got.str().c_str());
}
void expect_host(const Addr &got, int family, const char *host, const char *what) {
  if (got.family() != family || got.host() != host)
    fail("%s, expected family %d host %s got family %d host %s", what, family, host,
         got.family(), got.host().c_str());
}

bool have_ipv6() {
  static const bool ok = [] {
    const int s = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return false;
    Addr a = loopback(AF_INET6);
    const bool bound = bind(s, a.sa(), a.len) == 0;
    close(s);
    return bound;
  }();
  return ok;
}

// ---------------------------------------------------------------------------------------------
// Socket helpers

Fd make_socket(int family, int type, int proto = 0) {
  return Fd(CHK(socket(family, type, proto)));
}

void set_timeouts(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  CHK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
  CHK(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv));
}

int getopt_int(int fd, int level, int name, const char *what) {
  int v = 0;
  socklen_t l = sizeof v;
  if (getsockopt(fd, level, name, &v, &l) != 0)
    fail("getsockopt(%s), expected success got -1 (%s)", what, errname(errno));
  return v;
}
#define GETOPT(fd, level, name) getopt_int((fd), (level), (name), #name)

void setopt_int(int fd, int level, int name, int v, const char *what) {
  if (setsockopt(fd, level, name, &v, sizeof v) != 0)
    fail("setsockopt(%s=%d), expected success got -1 (%s)", what, v, errname(errno));
}
#define SETOPT(fd, level, name, v) setopt_int((fd), (level), (name), (v), #name)

// Waits for events on fd; returns revents, fails on timeout.
short wait_for(int fd, short events, const char *what, int ms = kIoTimeoutMs) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int n = poll(&p, 1, ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("poll for %s, expected success got -1 (%s)", what, errname(errno));
    if (n == 0) fail("poll for %s, expected readiness within %d ms got timeout", what, ms);
    return p.revents;
  }
}

// Sends everything, also on non-blocking sockets. Never raises SIGPIPE.
void send_all(int fd, const void *data, size_t n) {
  const char *p = static_cast<const char *>(data);
  while (n > 0) {
    const ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      wait_for(fd, POLLOUT, "send space");
      continue;
    }
    if (w <= 0) fail("send(fd %d, %zu bytes), expected > 0 got %zd (%s)", fd, n, w, errname(errno));
    p += w;
    n -= size_t(w);
  }
}
void send_all(int fd, std::string_view s) { send_all(fd, s.data(), s.size()); }

// Like send_all but reports failure instead of failing: for servers whose peer may go away.
bool send_all_quiet(int fd, const void *data, size_t n) {
  const char *p = static_cast<const char *>(data);
  while (n > 0) {
    const ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      pollfd pf{fd, POLLOUT, 0};
      if (poll(&pf, 1, kIoTimeoutMs) <= 0) return false;
      continue;
    }
    if (w <= 0) return false;
    p += w;
    n -= size_t(w);
  }
  return true;
}

// Reads exactly n bytes (works on blocking and non-blocking sockets).
std::string recv_exact(int fd, size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    wait_for(fd, POLLIN, "data");
    const ssize_t r = recv(fd, out.data() + got, n - got, 0);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r == 0) fail("recv(fd %d), expected %zu more bytes got EOF", fd, n - got);
    if (r < 0) fail("recv(fd %d), expected data got -1 (%s)", fd, errname(errno));
    got += size_t(r);
  }
  return out;
}

void expect_eof(int fd, const char *what) {
  wait_for(fd, POLLIN, what);
  char c;
  const ssize_t r = recv(fd, &c, 1, 0);
  if (r != 0) fail("%s, expected EOF (0) got %zd (%s)", what, r, r < 0 ? errname(errno) : "data");
}

// Sends msg on tx and expects it back (echo server) or across (pair) on rx.
void roundtrip(int tx, int rx, std::string_view msg) {
  send_all(tx, msg);
  expect_bytes(recv_exact(rx, msg.size()), msg, "echoed bytes");
}

int so_error(int fd) { return GETOPT(fd, SOL_SOCKET, SO_ERROR); }
bool is_nonblock(int fd) { return (CHK(fcntl(fd, F_GETFL)) & O_NONBLOCK) != 0; }
bool is_cloexec(int fd) { return (CHK(fcntl(fd, F_GETFD)) & FD_CLOEXEC) != 0; }
void set_nonblock(int fd, bool on) {
  const int fl = CHK(fcntl(fd, F_GETFL));
  CHK(fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK));
}

Fd tcp_connect(const Addr &a) {
  Fd s = make_socket(a.family(), SOCK_STREAM | SOCK_CLOEXEC);
  set_timeouts(s.get(), kIoTimeoutMs);
  CHK(connect(s.get(), a.sa(), a.len));
  return s;
}

Fd udp_bound(const Addr &a) {
  Fd s = make_socket(a.family(), SOCK_DGRAM | SOCK_CLOEXEC);
  set_timeouts(s.get(), kIoTimeoutMs);
  CHK(bind(s.get(), a.sa(), a.len));
  return s;
}

// Receives one datagram (bounded by poll); fills *from when given.
std::string recv_dgram(int fd, Addr *from = nullptr) {
  wait_for(fd, POLLIN, "datagram");
  std::string buf(65536, '\0');
  Addr a;
  const ssize_t n = recvfrom(fd, buf.data(), buf.size(), 0, a.sa(), &a.len);
  if (n < 0) fail("recvfrom, expected a datagram got -1 (%s)", errname(errno));
  buf.resize(size_t(n));
  if (from) *from = a;
  return buf;
}

// A connected TCP pair made without threads: the kernel completes the handshake from the backlog.
struct Pair {
  Fd client, server;
};
Pair tcp_pair(int family = AF_INET) {
  Fd l = make_socket(family, SOCK_STREAM | SOCK_CLOEXEC);
  Addr lb = loopback(family);
  CHK(bind(l.get(), lb.sa(), lb.len));
  CHK(listen(l.get(), 4));
  Addr la = sock_name(l.get());
  Pair p;
  p.client = tcp_connect(la);
  wait_for(l.get(), POLLIN, "accept");
  p.server = Fd(CHK(accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC)));
  set_timeouts(p.server.get(), kIoTimeoutMs);
  return p;
}

// A port on 127.0.0.1 / ::1 with nothing listening: bound once, then released.
uint16_t closed_port(int family) {
  Fd s = make_socket(family, SOCK_STREAM | SOCK_CLOEXEC);
  Addr a = loopback(family);
  CHK(bind(s.get(), a.sa(), a.len));
  return sock_name(s.get()).port();
}

// An fd number that is not open.
int bad_fd() {
  for (int fd = 900;; ++fd)
    if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) return fd;
}

// The fds below 512: the program's own. gsocket keeps the fds it needs
// itself (its engine's ring, bridges' far ends) at 512 and above, out of the
// numbers programs pick (docs/architecture.md).
constexpr int kShimFdBase = 512;
std::vector<int> open_fds();
std::vector<int> program_fds() {
  std::vector<int> fds;
  for (int fd : open_fds())
    if (fd < kShimFdBase) fds.push_back(fd);
  return fds;
}

std::vector<int> open_fds() {
  std::vector<int> fds;
  DIR *d = opendir("/proc/self/fd");
  if (!d) fail("opendir(/proc/self/fd), expected success got NULL (%s)", errname(errno));
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const int fd = atoi(e->d_name);
    if (fd != dirfd(d)) fds.push_back(fd);
  }
  closedir(d);
  return fds;
}

// _FORTIFY_SOURCE routes these through __recv_chk / __recvfrom_chk / __read_chk: the buffer's size
// is known at compile time and the length is not. Pitfall 3: shims that hook only the plain names
// miss every fortified build. A length above kChkBuf would abort in glibc, by design.
// clang (up to glibc 2.39's headers) drops glibc's fortify inlines, whose bodies redirect to their
// own name, and calls plain recv; there we call the _chk entry points as a GCC build would.
#if defined(__clang__) && defined(__USE_FORTIFY_LEVEL) && __USE_FORTIFY_LEVEL > 0
#define CHK_RECV(fd, buf, n, flags) __recv_chk((fd), (buf), (n), sizeof(buf), (flags))
#define CHK_RECVFROM(fd, buf, n, flags, sa, len) __recvfrom_chk((fd), (buf), (n), sizeof(buf), (flags), (sa), (len))
#define CHK_READ(fd, buf, n) __read_chk((fd), (buf), (n), sizeof(buf))
#else
#define CHK_RECV(fd, buf, n, flags) recv((fd), (buf), (n), (flags))
#define CHK_RECVFROM(fd, buf, n, flags, sa, len) recvfrom((fd), (buf), (n), (flags), (sa), (len))
#define CHK_READ(fd, buf, n) read((fd), (buf), (n))
#endif
constexpr size_t kChkBuf = 65536;
OPAQUE ssize_t chk_recv(int fd, size_t want, int flags, std::string *out) {
  char buf[kChkBuf];
  const ssize_t n = CHK_RECV(fd, buf, want, flags);
  out->assign(buf, n > 0 ? std::min(size_t(n), want) : 0);
  return n;
}
OPAQUE ssize_t chk_recvfrom(int fd, size_t want, int flags, std::string *out, Addr *from) {
  char buf[kChkBuf];
  from->len = sizeof from->ss;
  const ssize_t n = CHK_RECVFROM(fd, buf, want, flags, from->sa(), &from->len);
  out->assign(buf, n > 0 ? std::min(size_t(n), want) : 0);
  return n;
}
OPAQUE ssize_t chk_read(int fd, size_t want, std::string *out) {
  char buf[kChkBuf];
  const ssize_t n = CHK_READ(fd, buf, want);
  out->assign(buf, n > 0 ? std::min(size_t(n), want) : 0);
  return n;
}

// ---------------------------------------------------------------------------------------------
// In-process TCP server: one accept thread, one thread per connection running the handler.
// The Listener closes each accepted fd after its handler returns and remembers the peer's port,
// so a test can wait for "the server saw this connection end".
class Listener {
 public:
  using Handler = std::function<void(int fd, const Addr &peer)>;

  Listener(const Addr &where, Handler handler, const std::function<void(int)> &before_listen = {})
      : handler_(std::move(handler)) {
    lfd_ = make_socket(where.family(), SOCK_STREAM | SOCK_CLOEXEC);
    SETOPT(lfd_.get(), SOL_SOCKET, SO_REUSEADDR, 1);
    CHK(bind(lfd_.get(), where.sa(), where.len));
    if (before_listen) before_listen(lfd_.get());
    CHK(listen(lfd_.get(), 256));
    addr_ = sock_name(lfd_.get());
    int p[2];
    CHK(pipe2(p, O_CLOEXEC));
    stop_r_ = Fd(p[0]);
    stop_w_ = Fd(p[1]);
    thread_ = std::thread([this] { accept_loop(); });
  }
  Listener(const Listener &) = delete;
  Listener &operator=(const Listener &) = delete;

  ~Listener() {
    const char c = 'x';
    if (write(stop_w_.get(), &c, 1) != 1) fail("listener stop pipe, expected 1 got -1 (%s)", errname(errno));
    thread_.join();
    std::unique_lock lk(mu_);
    for (int fd : live_) shutdown(fd, SHUT_RDWR);  // wake handlers blocked in recv
    if (!cv_.wait_for(lk, std::chrono::seconds(10), [this] { return active_ == 0; }))
      fail("listener shutdown, expected all handlers done got %d running", active_);
  }

  const Addr &addr() const { return addr_; }

  // True once a connection from this client port has ended on the server side.
  bool wait_closed(uint16_t peer_port, int ms = kIoTimeoutMs) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, std::chrono::milliseconds(ms),
                        [&] { return closed_.count(peer_port) > 0; });
  }
  bool wait_idle(int ms = kIoTimeoutMs) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, std::chrono::milliseconds(ms), [&] { return active_ == 0; });
  }

 private:
  void accept_loop() {
    for (;;) {
      pollfd p[2] = {{lfd_.get(), POLLIN, 0}, {stop_r_.get(), POLLIN, 0}};
      const int n = poll(p, 2, 1000);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("listener poll, expected success got -1 (%s)", errname(errno));
      if (p[1].revents) return;
      if (!(p[0].revents & POLLIN)) continue;
      Addr peer;
      const int fd = accept4(lfd_.get(), peer.sa(), &peer.len, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
        fail("listener accept4, expected a connection got -1 (%s)", errname(errno));
      }
      set_timeouts(fd, 2 * kIoTimeoutMs);
      {
        std::lock_guard lk(mu_);
        live_.insert(fd);
        ++active_;
      }
      std::thread([this, fd, peer] {
        handler_(fd, peer);
        std::lock_guard lk(mu_);
        live_.erase(fd);
        if (::close(fd) != 0) fail("server close(%d), expected 0 got -1 (%s)", fd, errname(errno));
        closed_.insert(peer.port());
        --active_;
        cv_.notify_all();
      }).detach();
    }
  }

  Handler handler_;
  Fd lfd_, stop_r_, stop_w_;
  Addr addr_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<int> live_;
  std::multiset<uint16_t> closed_;
  int active_ = 0;
};

void echo_handler(int fd, const Addr &) {
  char buf[16384];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || !send_all_quiet(fd, buf, size_t(n))) return;
  }
}

// Echo server that also keeps every byte received, per client port.
struct Recorder {
  std::mutex mu;
  std::map<uint16_t, std::string> bytes;

  Listener::Handler handler() {
    return [this](int fd, const Addr &peer) {
      char buf[4096];
      for (;;) {
        const ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        {
          std::lock_guard lk(mu);
          bytes[peer.port()].append(buf, size_t(n));
        }
        if (!send_all_quiet(fd, buf, size_t(n))) return;
      }
    };
  }
  std::string of(uint16_t port) {
    std::lock_guard lk(mu);
    return bytes[port];
  }
};

// Waits for a child; it must exit 0.
void expect_child_ok(pid_t pid, const char *what) {
  int st = 0;
  for (int waited = 0;; waited += 10) {
    const pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (r < 0) fail("waitpid(%s), expected the child got -1 (%s)", what, errname(errno));
    if (waited > 2 * kIoTimeoutMs) {
      kill(pid, SIGKILL);
      fail("%s, expected exit within %d ms got still running", what, 2 * kIoTimeoutMs);
    }
    usleep(10000);
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    fail("%s, expected exit 0 got %s %d", what, WIFEXITED(st) ? "exit" : "signal",
         WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

pid_t checked_fork() {
  fflush(stdout);
  fflush(stderr);
  const pid_t pid = CHK(fork());
  if (pid == 0) alarm(30);  // alarms are not inherited
  return pid;
}

// =============================================================================================
// Scenarios. Each returns the detail of its ok line (deterministic) or throws Skip.

// Pitfalls 5 and 6: a non-blocking connect must return EINPROGRESS at once and complete through
// poll, epoll and select alike; O_NONBLOCK must survive; errors arrive through SO_ERROR.
void wait_connected(int fd, int how) {
  if (how == 0) {
    wait_for(fd, POLLOUT, "connect completion (poll)");
  } else if (how == 1) {
    Fd ep(CHK(epoll_create1(EPOLL_CLOEXEC)));
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.fd = fd;
    CHK(epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev));
    epoll_event out{};
    const int n = epoll_wait(ep.get(), &out, 1, kIoTimeoutMs);
    if (n != 1 || out.data.fd != fd || !(out.events & (EPOLLOUT | EPOLLERR)))
      fail("epoll_wait for connect completion, expected 1 event with EPOLLOUT got %d (%s)", n,
           n < 0 ? errname(errno) : "no EPOLLOUT");
  } else {
    fd_set w;
    FD_ZERO(&w);
    FD_SET(fd, &w);
    timeval tv{kIoTimeoutMs / 1000, 0};
    const int n = select(fd + 1, nullptr, &w, nullptr, &tv);
    if (n != 1 || !FD_ISSET(fd, &w))
      fail("select for connect completion, expected 1 writable got %d (%s)", n,
           n < 0 ? errname(errno) : "not writable");
  }
}

std::string scen_nonblock_connect() {
  Listener srv(loopback(AF_INET), echo_handler);
  static const char *const kWays[] = {"poll", "epoll", "select"};
  for (int made_by_fcntl = 0; made_by_fcntl < 2; ++made_by_fcntl) {
    for (int how = 0; how < 3; ++how) {
      Fd s = make_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (made_by_fcntl ? 0 : SOCK_NONBLOCK));
      if (made_by_fcntl) set_nonblock(s.get(), true);
      const int rv = connect(s.get(), srv.addr().sa(), srv.addr().len);
      if (rv != 0) {
        if (errno != EINPROGRESS)
          fail("non-blocking connect, expected EINPROGRESS (or 0) got -1 (%s)", errname(errno));
        // The kernel answers EALREADY while SYN_SENT, 0 once established, EISCONN after that.
        const int rv2 = connect(s.get(), srv.addr().sa(), srv.addr().len);
        if (rv2 != 0 && errno != EALREADY && errno != EISCONN)
          fail("second connect while in progress, expected EALREADY or EISCONN got -1 (%s)",
               errname(errno));
        VERBOSE("second connect while in progress -> %s", rv2 == 0 ? "0" : errname(errno));
      }
      wait_connected(s.get(), how);
      expect_int(so_error(s.get()), 0, "SO_ERROR after connect completed");
      if (!is_nonblock(s.get())) fail("O_NONBLOCK after connect (%s), expected set got cleared", kWays[how]);
      EXPECT_ERR(connect(s.get(), srv.addr().sa(), srv.addr().len), EISCONN);
      expect_addr(peer_name(s.get()), srv.addr(), "getpeername after non-blocking connect");
      roundtrip(s.get(), s.get(), pattern(3000 + how, unsigned(how)));
    }
  }
  // Refused, non-blocking: EINPROGRESS, then readiness, then SO_ERROR = ECONNREFUSED once.
  for (int how = 0; how < 3; ++how) {
    Fd s = make_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC);
    Addr dead = loopback(AF_INET, closed_port(AF_INET));
    EXPECT_ERR(connect(s.get(), dead.sa(), dead.len), EINPROGRESS);
    wait_connected(s.get(), how);
    expect_int(so_error(s.get()), ECONNREFUSED, "SO_ERROR after refused non-blocking connect");
    expect_int(so_error(s.get()), 0, "SO_ERROR read a second time (cleared)");
    Addr a;
    EXPECT_ERR(getpeername(s.get(), a.sa(), &a.len), ENOTCONN);
  }
  {
    Fd s = make_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
    Addr dead = loopback(AF_INET, closed_port(AF_INET));
    EXPECT_ERR(connect(s.get(), dead.sa(), dead.len), ECONNREFUSED);
  }
  return "SOCK_NONBLOCK and fcntl x poll/epoll/select: EINPROGRESS, SO_ERROR=0, O_NONBLOCK kept, "
         "EISCONN, data; refused: EINPROGRESS then SO_ERROR=ECONNREFUSED; blocking refused";
}

// Pitfall 6: an event loop of non-blocking sockets on both sides, epoll edge- and
// level-triggered, many connections at once; every echoed byte is checked.
constexpr int kEpollClients = 20;
constexpr uint32_t kEpollMessages = 100;

size_t epoll_msg_size(uint32_t c, uint32_t k) {
  static const size_t sizes[] = {1, 7, 100, 1400, 1500, 4096, 9000, 16384, 65536, 33};
  return sizes[(c + k * 3) % 10];
}
char epoll_msg_byte(uint32_t c, uint32_t k, size_t j) {
  return char(c * 31u + k * 17u + j * 7u + (j >> 8));
}

void epoll_echo_server(int lfd, int stopfd, bool et) {
  Fd ep(CHK(epoll_create1(EPOLL_CLOEXEC)));
  auto ctl = [&](int op, int fd, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    CHK(epoll_ctl(ep.get(), op, fd, &ev));
  };
  struct Conn {
    Fd fd;
    std::string out;
    uint32_t events = 0;
  };
  std::map<int, Conn> conns;
  ctl(EPOLL_CTL_ADD, lfd, EPOLLIN | (et ? uint32_t(EPOLLET) : 0u));
  ctl(EPOLL_CTL_ADD, stopfd, EPOLLIN);
  static char buf[65536];  // one server thread at a time
  for (;;) {
    epoll_event evs[64];
    const int n = epoll_wait(ep.get(), evs, 64, 2 * kIoTimeoutMs);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("echo server epoll_wait, expected events got %d (%s)", n, errname(errno));
    for (int i = 0; i < n; ++i) {
      const int fd = evs[i].data.fd;
      if (fd == stopfd) return;
      if (fd == lfd) {
        for (;;) {  // ET: drain the accept queue; LT: one per wakeup
          const int c = et ? accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)
                           : accept(lfd, nullptr, nullptr);
          if (c < 0) {
            if (errno == EAGAIN) break;
            if (errno == EINTR || errno == ECONNABORTED) continue;
            fail("echo server accept, expected a connection got -1 (%s)", errname(errno));
          }
          if (!et) {
            // accept() does not inherit O_NONBLOCK from the listener on Linux.
            set_nonblock(c, true);
            CHK(fcntl(c, F_SETFD, FD_CLOEXEC));
          }
          Conn &cn = conns[c];
          cn.fd = Fd(c);
          cn.events = et ? EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET : EPOLLIN;
          ctl(EPOLL_CTL_ADD, c, cn.events);
          if (!et) break;
        }
        continue;
      }
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      Conn &cn = it->second;
      bool closed = false;
      if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        for (;;) {
          const ssize_t r = recv(fd, buf, sizeof buf, 0);
          if (r > 0) {
            cn.out.append(buf, size_t(r));
            if (et) continue;
            break;
          }
          if (r == 0 || errno == ECONNRESET) {
            closed = true;
          } else if (errno != EAGAIN && errno != EINTR) {
            fail("echo server recv, expected data or EAGAIN got -1 (%s)", errname(errno));
          }
          break;
        }
      }
      while (!closed && !cn.out.empty()) {
        const ssize_t w = send(fd, cn.out.data(), cn.out.size(), MSG_NOSIGNAL);
        if (w > 0) {
          cn.out.erase(0, size_t(w));
        } else if (errno == EAGAIN) {
          break;
        } else {
          fail("echo server send, expected progress got -1 (%s)", errname(errno));
        }
      }
      if (closed) {
        CHK(epoll_ctl(ep.get(), EPOLL_CTL_DEL, fd, nullptr));
        conns.erase(it);
        continue;
      }
      if (!et) {
        const uint32_t want = EPOLLIN | (cn.out.empty() ? 0u : uint32_t(EPOLLOUT));
        if (want != cn.events) ctl(EPOLL_CTL_MOD, fd, cn.events = want);
      }
    }
  }
}

void epoll_round(bool et) {
  Fd lfd = make_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC);
  Addr lb = loopback(AF_INET);
  CHK(bind(lfd.get(), lb.sa(), lb.len));
  CHK(listen(lfd.get(), 64));
  const Addr la = sock_name(lfd.get());
  Fd stop(CHK(eventfd(0, EFD_CLOEXEC)));
  std::thread server([&] { epoll_echo_server(lfd.get(), stop.get(), et); });

  struct Client {
    Fd fd;
    uint32_t k = 0;
    size_t sent = 0, got = 0;
    uint32_t events = 0;
    bool connected = false;
  };
  Fd ep(CHK(epoll_create1(EPOLL_CLOEXEC)));
  std::vector<Client> cl(kEpollClients);
  for (uint32_t c = 0; c < kEpollClients; ++c) {
    cl[c].fd = make_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (connect(cl[c].fd.get(), la.sa(), la.len) != 0 && errno != EINPROGRESS)
      fail("client connect, expected EINPROGRESS got -1 (%s)", errname(errno));
    epoll_event ev{};
    ev.events = cl[c].events = EPOLLIN | EPOLLOUT;
    ev.data.u32 = c;
    CHK(epoll_ctl(ep.get(), EPOLL_CTL_ADD, cl[c].fd.get(), &ev));
  }
  int remaining = kEpollClients;
  std::string chunk, in(65536, '\0');
  while (remaining > 0) {
    epoll_event evs[32];
    const int n = epoll_wait(ep.get(), evs, 32, kIoTimeoutMs);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("client epoll_wait (%s), expected events got %d (%s)", et ? "ET" : "LT", n, errname(errno));
    for (int i = 0; i < n; ++i) {
      const uint32_t c = evs[i].data.u32;
      Client &x = cl[c];
      const int fd = x.fd.get();
      if (!x.connected) {
        if (!(evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) continue;
        expect_int(so_error(fd), 0, "SO_ERROR of epoll client after connect");
        x.connected = true;
      }
      if (evs[i].events & (EPOLLERR | EPOLLHUP))
        fail("client %u, expected no EPOLLERR/EPOLLHUP got events %#x", c, evs[i].events);
      size_t size = epoll_msg_size(c, x.k);
      if (x.sent < size) {
        const size_t len = std::min<size_t>(size - x.sent, 65536);
        chunk.resize(len);
        for (size_t j = 0; j < len; ++j) chunk[j] = epoll_msg_byte(c, x.k, x.sent + j);
        const ssize_t w = send(fd, chunk.data(), len, MSG_NOSIGNAL);
        if (w > 0) x.sent += size_t(w);
        else if (errno != EAGAIN) fail("client send, expected progress got -1 (%s)", errname(errno));
      }
      if (evs[i].events & EPOLLIN) {
        const ssize_t r = recv(fd, in.data(), in.size(), 0);
        if (r == 0) fail("client %u message %u, expected echo got EOF", c, x.k);
        if (r < 0 && errno != EAGAIN) fail("client recv, expected data got -1 (%s)", errname(errno));
        if (r > 0) {
          if (x.got + size_t(r) > x.sent)
            fail("client %u, expected at most %zu echoed bytes got %zu", c, x.sent, x.got + size_t(r));
          for (size_t j = 0; j < size_t(r); ++j)
            if (in[j] != epoll_msg_byte(c, x.k, x.got + j))
              fail("client %u message %u, expected echoed byte %zu intact got a different byte", c, x.k, x.got + j);
          x.got += size_t(r);
          if (x.got == size) {
            x.sent = x.got = 0;
            if (++x.k == kEpollMessages) {
              CHK(epoll_ctl(ep.get(), EPOLL_CTL_DEL, fd, nullptr));
              x.fd.reset();
              --remaining;
              continue;
            }
            size = epoll_msg_size(c, x.k);
          }
        }
      }
      const uint32_t want = EPOLLIN | (x.sent < size ? uint32_t(EPOLLOUT) : 0u);
      if (want != x.events) {
        epoll_event ev{};
        ev.events = x.events = want;
        ev.data.u32 = c;
        CHK(epoll_ctl(ep.get(), EPOLL_CTL_MOD, fd, &ev));
      }
    }
  }
  const uint64_t one = 1;
  if (write(stop.get(), &one, sizeof one) != sizeof one) fail("eventfd write, expected 8 got -1 (%s)", errname(errno));
  server.join();
}

std::string scen_epoll() {
  epoll_round(true);
  epoll_round(false);
  return std::to_string(kEpollClients) + " clients x " + std::to_string(kEpollMessages) +
         " messages echoed intact, edge- and level-triggered";
}

// Pitfalls 2 and 12: dup'ed fds share one connection; the connection ends only with the last
// close; dup2 over a socket closes it silently (no close() call the shim could see).
std::string scen_dup() {
  Listener srv(loopback(AF_INET), echo_handler);
  Fd a = tcp_connect(srv.addr());
  const uint16_t port_a = sock_name(a.get()).port();
  roundtrip(a.get(), a.get(), "orig");

  Fd d1(CHK(dup(a.get())));
  Fd d2(CHK(open("/dev/null", O_RDONLY | O_CLOEXEC)));  // dup2 over a non-socket fd
  expect_int(CHK(dup2(a.get(), d2.get())), d2.get(), "dup2 result");
  Fd d3(CHK(open("/dev/null", O_RDONLY)));
  expect_int(CHK(dup3(a.get(), d3.get(), O_CLOEXEC)), d3.get(), "dup3 result");
  Fd d4(CHK(fcntl(a.get(), F_DUPFD, 100)));
  Fd d5(CHK(fcntl(a.get(), F_DUPFD_CLOEXEC, 100)));
  if (d4.get() < 100 || d5.get() < 100) fail("F_DUPFD(100), expected fd >= 100 got %d/%d", d4.get(), d5.get());
  const int fds[] = {a.get(), d1.get(), d2.get(), d3.get(), d4.get(), d5.get()};
  const bool cloexec[] = {true, false, false, true, false, true};  // a was made SOCK_CLOEXEC
  for (int i = 0; i < 6; ++i) {
    if (is_cloexec(fds[i]) != cloexec[i])
      fail("FD_CLOEXEC of dup #%d, expected %d got %d", i, cloexec[i], !cloexec[i]);
    expect_int(GETOPT(fds[i], SOL_SOCKET, SO_TYPE), SOCK_STREAM, "SO_TYPE of dup");
    expect_addr(peer_name(fds[i]), srv.addr(), "getpeername of dup");
    roundtrip(fds[i], fds[(i + 1) % 6], "dup-" + std::to_string(i));
  }

  a.reset();  // the original goes; the dups carry on
  roundtrip(d1.get(), d5.get(), "after-close-original");

  // dup2 onto a number holding another connected socket: that socket is closed implicitly.
  Fd b = tcp_connect(srv.addr());
  const uint16_t port_b = sock_name(b.get()).port();
  roundtrip(b.get(), b.get(), "b");
  expect_int(CHK(dup2(d1.get(), b.get())), b.get(), "dup2 over a connected socket");
  if (!srv.wait_closed(port_b)) fail("dup2 over connected socket, expected its peer to see EOF got nothing");
  expect_addr(sock_name(b.get()), sock_name(d1.get()), "getsockname of fd reused by dup2");
  roundtrip(b.get(), d1.get(), "b-now-a");

  // dup2(fd, fd) is a no-op that returns fd; dup3(fd, fd) is EINVAL; a bad source is EBADF.
  expect_int(CHK(dup2(d1.get(), d1.get())), d1.get(), "dup2(fd, fd)");
  roundtrip(d1.get(), d1.get(), "self-dup2");
  EXPECT_ERR(dup3(d1.get(), d1.get(), 0), EINVAL);
  const int bad = bad_fd();
  EXPECT_ERR(dup2(bad, bad), EBADF);
  EXPECT_ERR(dup(bad), EBADF);

  // The connection lives until its last fd is closed.
  d1.reset();
  d3.reset();
  d4.reset();
  d5.reset();
  b.reset();
  roundtrip(d2.get(), d2.get(), "last-one-standing");
  if (srv.wait_closed(port_a, 0)) fail("connection with one fd left, expected open got closed by server");
  d2.reset();
  if (!srv.wait_closed(port_a)) fail("closing the last dup, expected the server to see EOF got nothing");
  return "dup/dup2/dup3/F_DUPFD/F_DUPFD_CLOEXEC share the connection with correct FD_CLOEXEC; "
         "dup2 over a socket closes it; dup2(fd,fd) no-op; EOF only after the last close";
}

// Pitfall 9: fork and daemon(): the child uses the inherited socket and makes its own; the
// child's exit (closing its copies) must not end the parent's connection.
std::string scen_fork() {
  Listener srv(loopback(AF_INET), echo_handler);
  Fd c = tcp_connect(srv.addr());
  roundtrip(c.get(), c.get(), "parent-before");

  pid_t pid = checked_fork();
  if (pid == 0) {
    send_all(c.get(), "from-child");  // the parent reads the echo
    Fd own = tcp_connect(srv.addr());
    roundtrip(own.get(), own.get(), pattern(5000, 4));
    _exit(0);
  }
  expect_bytes(recv_exact(c.get(), 10), "from-child", "echo of the child's write on the inherited socket");
  expect_child_ok(pid, "forked child");
  roundtrip(c.get(), c.get(), "parent-after-child-exit");

  // daemon(): fork + setsid in the library, the middle process exits at once.
  int p[2];
  CHK(pipe2(p, O_CLOEXEC));
  Fd rd(p[0]), wr(p[1]);
  pid = checked_fork();
  if (pid == 0) {
    rd.reset();
    if (daemon(1, 1) != 0) _exit(3);
    alarm(30);
    const int devnull = open("/dev/null", O_RDWR);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0) _exit(4);
    close(devnull);
    send_all(c.get(), "from-daemon");
    Fd own = tcp_connect(srv.addr());
    roundtrip(own.get(), own.get(), pattern(7000, 5));
    if (write(wr.get(), "K", 1) != 1) _exit(5);
    _exit(0);
  }
  wr.reset();
  expect_child_ok(pid, "daemon() middle process");
  wait_for(rd.get(), POLLIN, "daemon grandchild report");
  char k = 0;
  if (read(rd.get(), &k, 1) != 1 || k != 'K')
    fail("daemon grandchild, expected report K got %s", "nothing (it failed, see stderr)");
  expect_bytes(recv_exact(c.get(), 11), "from-daemon", "echo of the daemon's write on the inherited socket");
  roundtrip(c.get(), c.get(), "parent-after-daemon");
  return "child writes inherited socket and connects its own; daemon() grandchild likewise; "
         "parent's connection survives both";
}

// Pitfall 12: concurrent socket/connect/close and dup2 in many threads; no errors, no fd leaks.
std::string scen_threads() {
  Listener srv(loopback(AF_INET), echo_handler);
  const size_t before = program_fds().size();
  std::atomic<bool> stop_dup{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        Fd s = make_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
        set_timeouts(s.get(), kIoTimeoutMs);
        CHK(connect(s.get(), srv.addr().sa(), srv.addr().len));
        roundtrip(s.get(), s.get(), pattern(1 + size_t(t * 200 + i) % 3000, unsigned(t)));
      }
    });
  }
  for (int t = 0; t < 2; ++t) {
    ts.emplace_back([&] {
      int iters = 0;
      while (!stop_dup.load() || iters < 200) {
        Fd a = make_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
        Fd b = make_socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC);
        expect_int(CHK(dup2(a.get(), b.get())), b.get(), "dup2 in thread");
        expect_int(GETOPT(b.get(), SOL_SOCKET, SO_TYPE), SOCK_STREAM, "SO_TYPE after dup2 over UDP");
        Fd c(CHK(dup(b.get())));
        ++iters;
      }
    });
  }
  for (int t = 0; t < 8; ++t) ts[size_t(t)].join();
  stop_dup = true;
  for (size_t t = 8; t < ts.size(); ++t) ts[t].join();
  if (!srv.wait_idle()) fail("server handlers, expected all done got still running");
  expect_int(long(program_fds().size()), long(before), "open fds after 1600 connections (leak check)");
  return "8 threads x 200 connect/echo/close with 2 dup2/close threads; no errors, no fd leak";
}

// Pitfall 8: the program's own view of addresses must be the kernel's, for TCP and UDP,
// v4 and v6, before and after bind/connect, compared with what the server saw.
void names_tcp(int family) {
  Fd l = make_socket(family, SOCK_STREAM | SOCK_CLOEXEC);
  Addr lb = loopback(family);
  CHK(bind(l.get(), lb.sa(), lb.len));
  CHK(listen(l.get(), 4));
  const Addr la = sock_name(l.get());
  expect_host(la, family, loopback_host(family), "getsockname of listener");
  expect_int(la.len, sockaddr_size(family), "getsockname addrlen");
  if (la.port() == 0) fail("listener port, expected ephemeral got 0");
  Addr tmp;
  EXPECT_ERR(getpeername(l.get(), tmp.sa(), &tmp.len), ENOTCONN);

  Fd c = make_socket(family, SOCK_STREAM | SOCK_CLOEXEC);
  set_timeouts(c.get(), kIoTimeoutMs);
  const Addr c0 = sock_name(c.get());
  expect_host(c0, family, any_host(family), "getsockname of fresh TCP socket");
  expect_int(c0.port(), 0, "port of fresh TCP socket");
  tmp = Addr{};
  EXPECT_ERR(getpeername(c.get(), tmp.sa(), &tmp.len), ENOTCONN);
  CHK(connect(c.get(), la.sa(), la.len));
  Addr seen;
  Fd a(CHK(accept4(l.get(), seen.sa(), &seen.len, SOCK_CLOEXEC)));
  expect_int(seen.len, sockaddr_size(family), "accept addrlen");
  const Addr cl = sock_name(c.get());
  expect_host(cl, family, loopback_host(family), "client getsockname after connect");
  expect_addr(seen, cl, "accept's peer address vs client getsockname");
  expect_addr(peer_name(c.get()), la, "client getpeername");
  expect_addr(sock_name(a.get()), la, "accepted getsockname");
  expect_addr(peer_name(a.get()), cl, "accepted getpeername");
  // A short buffer is truncated, and the full length is reported.
  sockaddr_storage tiny{};
  socklen_t tl = 4;
  CHK(getsockname(c.get(), reinterpret_cast<sockaddr *>(&tiny), &tl));
  expect_int(tl, sockaddr_size(family), "getsockname into a 4-byte buffer reports full length");
  roundtrip(c.get(), a.get(), "names");
}

void names_udp(int family) {
  Fd r = udp_bound(loopback(family));
  const Addr ra = sock_name(r.get());
  Fd s = make_socket(family, SOCK_DGRAM | SOCK_CLOEXEC);
  const Addr s0 = sock_name(s.get());
  expect_host(s0, family, any_host(family), "getsockname of fresh UDP socket");
  expect_int(s0.port(), 0, "port of fresh UDP socket");
  Addr tmp;
  EXPECT_ERR(getpeername(s.get(), tmp.sa(), &tmp.len), ENOTCONN);
  expect_int(CHK(sendto(s.get(), "n1", 2, 0, ra.sa(), ra.len)), 2, "sendto");
  const Addr s1 = sock_name(s.get());  // autobound by sendto
  expect_host(s1, family, any_host(family), "getsockname after sendto (autobind)");
  if (s1.port() == 0) fail("port after sendto autobind, expected ephemeral got 0");
  Addr from;
  expect_bytes(recv_dgram(r.get(), &from), "n1", "datagram");
  expect_host(from, family, loopback_host(family), "recvfrom source");
  expect_int(from.port(), s1.port(), "recvfrom source port");

  CHK(connect(s.get(), ra.sa(), ra.len));
  const Addr s2 = sock_name(s.get());
  expect_host(s2, family, loopback_host(family), "getsockname of connected UDP");
  expect_int(s2.port(), s1.port(), "port kept by UDP connect");
  expect_addr(peer_name(s.get()), ra, "getpeername of connected UDP");
  expect_int(CHK(send(s.get(), "n2", 2, 0)), 2, "send on connected UDP");
  expect_bytes(recv_dgram(r.get(), &from), "n2", "datagram");
  expect_addr(from, s2, "recvfrom source vs getsockname of connected UDP");
}

std::string scen_names() {
  names_tcp(AF_INET);
  names_udp(AF_INET);
  if (!have_ipv6()) {
    note("IPv6 unavailable, v6 part skipped");
    return "tcp+udp v4 getsockname/getpeername match accept/recvfrom (v6 unavailable)";
  }
  names_tcp(AF_INET6);
  names_udp(AF_INET6);
  return "tcp+udp v4+v6 getsockname/getpeername match accept/recvfrom, before and after connect";
}

// Pitfall 8: v6 and dual-stack listeners; the v4-mapped form must reach the program unchanged.
std::string scen_ipv6() {
  if (!have_ipv6()) throw Skip{"IPv6 unavailable on loopback"};
  {
    Pair p = tcp_pair(AF_INET6);
    expect_host(peer_name(p.server.get()), AF_INET6, "::1", "peer of accepted v6 socket");
    roundtrip(p.client.get(), p.server.get(), pattern(20000, 6));
    roundtrip(p.server.get(), p.client.get(), pattern(20000, 7));
  }
  {
    Fd r = udp_bound(loopback(AF_INET6));
    Fd s = udp_bound(loopback(AF_INET6));
    const Addr ra = sock_name(r.get());
    const std::string msg = pattern(1200, 8);
    expect_int(CHK(sendto(s.get(), msg.data(), msg.size(), 0, ra.sa(), ra.len)), long(msg.size()), "v6 sendto");
    Addr from;
    expect_bytes(recv_dgram(r.get(), &from), msg, "v6 datagram");
    expect_addr(from, sock_name(s.get()), "v6 recvfrom source");
  }
  {
    // Dual-stack listener on :: with IPV6_V6ONLY=0: a v4 client appears as ::ffff:127.0.0.1.
    Fd l = make_socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC);
    SETOPT(l.get(), IPPROTO_IPV6, IPV6_V6ONLY, 0);
    expect_int(GETOPT(l.get(), IPPROTO_IPV6, IPV6_V6ONLY), 0, "IPV6_V6ONLY read back");
    Addr any6 = any_addr(AF_INET6);
    CHK(bind(l.get(), any6.sa(), any6.len));
    CHK(listen(l.get(), 4));
    const uint16_t port = sock_name(l.get()).port();
    Fd c4 = tcp_connect(loopback(AF_INET, port));
    Addr seen;
    wait_for(l.get(), POLLIN, "dual-stack accept");
    Fd a(CHK(accept4(l.get(), seen.sa(), &seen.len, SOCK_CLOEXEC)));
    expect_host(seen, AF_INET6, "::ffff:127.0.0.1", "dual-stack accept address of a v4 client");
    expect_int(seen.port(), sock_name(c4.get()).port(), "dual-stack accept port");
    expect_host(sock_name(a.get()), AF_INET6, "::ffff:127.0.0.1", "getsockname of accepted v4-mapped");
    expect_addr(peer_name(c4.get()), loopback(AF_INET, port), "v4 client's getpeername");
    roundtrip(c4.get(), a.get(), "mapped");
    roundtrip(a.get(), c4.get(), "mapped-back");
    Fd c6 = tcp_connect(loopback(AF_INET6, port));
    wait_for(l.get(), POLLIN, "dual-stack accept v6");
    Addr seen6;
    Fd a6(CHK(accept4(l.get(), seen6.sa(), &seen6.len, SOCK_CLOEXEC)));
    expect_host(seen6, AF_INET6, "::1", "dual-stack accept address of a v6 client");
    roundtrip(c6.get(), a6.get(), "native");
  }
  {
    // v4 datagrams to a dual-stack UDP socket carry a v4-mapped source.
    Fd r = make_socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC);
    SETOPT(r.get(), IPPROTO_IPV6, IPV6_V6ONLY, 0);
    Addr any6 = any_addr(AF_INET6);
    CHK(bind(r.get(), any6.sa(), any6.len));
    const uint16_t port = sock_name(r.get()).port();
    Fd s = udp_bound(loopback(AF_INET));
    Addr to = loopback(AF_INET, port);
    CHK(sendto(s.get(), "u4", 2, 0, to.sa(), to.len));
    Addr from;
    expect_bytes(recv_dgram(r.get(), &from), "u4", "v4 datagram to dual-stack socket");
    expect_host(from, AF_INET6, "::ffff:127.0.0.1", "dual-stack UDP source");
    expect_int(from.port(), sock_name(s.get()).port(), "dual-stack UDP source port");
  }
  {
    // IPV6_V6ONLY=1 on :: leaves the v4 port closed.
    Fd l = make_socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC);
    SETOPT(l.get(), IPPROTO_IPV6, IPV6_V6ONLY, 1);
    Addr any6 = any_addr(AF_INET6);
    CHK(bind(l.get(), any6.sa(), any6.len));
    CHK(listen(l.get(), 4));
    Addr v4 = loopback(AF_INET, sock_name(l.get()).port());
    Fd c = make_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
    EXPECT_ERR(connect(c.get(), v4.sa(), v4.len), ECONNREFUSED);
  }
  return "tcp+udp over ::1; dual-stack listener reports ::ffff:127.0.0.1 for v4 (tcp+udp); "
         "IPV6_V6ONLY=1 refuses v4";
}

// Pitfall 17: UDP in every shape real programs use; datagram boundaries and truncation kept.
std::string scen_udp() {
  Fd a = udp_bound(loopback(AF_INET));
  Fd b = udp_bound(loopback(AF_INET));
  const Addr aa = sock_name(a.get()), ba = sock_name(b.get());

  // Unconnected sendto/recvfrom, sizes from empty to the IPv4 maximum.
  for (size_t size : {size_t(0), size_t(1), size_t(100), size_t(1472), size_t(9000), size_t(65507)}) {
    const std::string msg = pattern(size, unsigned(size));
    expect_int(CHK(sendto(b.get(), msg.data(), size, 0, aa.sa(), aa.len)), long(size), "sendto size");
    Addr from;
    expect_bytes(recv_dgram(a.get(), &from), msg, "recvfrom datagram");
    expect_addr(from, ba, "recvfrom source");
  }
  // Fortified recvfrom (__recvfrom_chk).
  {
    CHK(sendto(b.get(), "chk", 3, 0, aa.sa(), aa.len));
    wait_for(a.get(), POLLIN, "datagram");
    std::string got;
    Addr from;
    expect_int(chk_recvfrom(a.get(), 2000, 0, &got, &from), 3, "__recvfrom_chk length");
    expect_bytes(got, "chk", "__recvfrom_chk data");
    expect_addr(from, ba, "__recvfrom_chk source");
  }
  // sendmsg/recvmsg with msg_name, scatter/gather and IP_PKTINFO ancillary data.
  {
    SETOPT(a.get(), IPPROTO_IP, IP_PKTINFO, 1);
    char p1[] = "hello ", p2[] = "world";
    iovec out[2] = {{p1, 6}, {p2, 5}};
    msghdr m{};
    m.msg_name = const_cast<sockaddr *>(aa.sa());
    m.msg_namelen = aa.len;
    m.msg_iov = out;
    m.msg_iovlen = 2;
    expect_int(CHK(sendmsg(b.get(), &m, 0)), 11, "sendmsg length");
    char r1[5], r2[64];
    iovec in[2] = {{r1, sizeof r1}, {r2, sizeof r2}};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(in_pktinfo))];
    Addr from;
    msghdr rm{};
    rm.msg_name = from.sa();
    rm.msg_namelen = from.len;
    rm.msg_iov = in;
    rm.msg_iovlen = 2;
    rm.msg_control = ctl;
    rm.msg_controllen = sizeof ctl;
    wait_for(a.get(), POLLIN, "datagram");
    expect_int(CHK(recvmsg(a.get(), &rm, 0)), 11, "recvmsg length");
    from.len = rm.msg_namelen;
    expect_bytes(std::string(r1, 5) + std::string(r2, 6), "hello world", "recvmsg scatter");
    expect_int(rm.msg_namelen, sizeof(sockaddr_in), "recvmsg msg_namelen");
    expect_addr(from, ba, "recvmsg msg_name");
    expect_int(rm.msg_flags, 0, "recvmsg msg_flags");
    cmsghdr *cm = CMSG_FIRSTHDR(&rm);
    if (!cm || cm->cmsg_level != IPPROTO_IP || cm->cmsg_type != IP_PKTINFO)
      fail("recvmsg ancillary data, expected IP_PKTINFO got %s", cm ? "another cmsg" : "none");
    in_pktinfo pi;
    memcpy(&pi, CMSG_DATA(cm), sizeof pi);
    expect_int(ntohl(pi.ipi_addr.s_addr), INADDR_LOOPBACK, "IP_PKTINFO destination");
    SETOPT(a.get(), IPPROTO_IP, IP_PKTINFO, 0);
  }
  // sendmmsg/recvmmsg of 16 messages: order, sizes and sources kept.
  {
    constexpr unsigned kN = 16;
    std::vector<std::string> msgs;
    mmsghdr sm[kN]{};
    iovec siov[kN];
    for (unsigned i = 0; i < kN; ++i) msgs.push_back(pattern(10 + i * 37, 100 + i));
    for (unsigned i = 0; i < kN; ++i) {  // after the vector is complete: no reallocation moves
      siov[i] = {msgs[i].data(), msgs[i].size()};
      sm[i].msg_hdr.msg_name = const_cast<sockaddr *>(aa.sa());
      sm[i].msg_hdr.msg_namelen = aa.len;
      sm[i].msg_hdr.msg_iov = &siov[i];
      sm[i].msg_hdr.msg_iovlen = 1;
    }
    for (unsigned sent = 0; sent < kN;) sent += unsigned(CHK(sendmmsg(b.get(), sm + sent, kN - sent, 0)));
    std::vector<std::string> bufs(kN, std::string(2048, '\0'));
    std::vector<Addr> froms(kN);
    mmsghdr rmm[kN]{};
    iovec riov[kN];
    for (unsigned i = 0; i < kN; ++i) {
      riov[i] = {bufs[i].data(), bufs[i].size()};
      rmm[i].msg_hdr.msg_name = froms[i].sa();
      rmm[i].msg_hdr.msg_namelen = froms[i].len;
      rmm[i].msg_hdr.msg_iov = &riov[i];
      rmm[i].msg_hdr.msg_iovlen = 1;
    }
    unsigned got = 0;
    while (got < kN) {
      wait_for(a.get(), POLLIN, "recvmmsg");
      got += unsigned(CHK(recvmmsg(a.get(), rmm + got, kN - got, MSG_WAITFORONE, nullptr)));
    }
    for (unsigned i = 0; i < kN; ++i) {
      expect_int(rmm[i].msg_len, long(msgs[i].size()), "recvmmsg msg_len");
      expect_bytes(bufs[i].substr(0, rmm[i].msg_len), msgs[i], "recvmmsg datagram in order");
      froms[i].len = rmm[i].msg_hdr.msg_namelen;
      expect_addr(froms[i], ba, "recvmmsg source");
    }
  }
  // MSG_TRUNC: a short buffer drops the rest of the datagram; MSG_TRUNC returns the real length.
  {
    const std::string big = pattern(100, 9);
    std::string got;
    CHK(sendto(b.get(), big.data(), big.size(), 0, aa.sa(), aa.len));
    CHK(sendto(b.get(), "next", 4, 0, aa.sa(), aa.len));
    wait_for(a.get(), POLLIN, "datagram");
    expect_int(chk_recv(a.get(), 10, 0, &got), 10, "__recv_chk into 10 bytes of a 100-byte datagram");
    expect_bytes(got, big.substr(0, 10), "truncated datagram head");
    expect_int(chk_recv(a.get(), 100, 0, &got), 4, "next datagram after a truncated one");
    expect_bytes(got, "next", "boundary kept after truncation");

    CHK(sendto(b.get(), big.data(), big.size(), 0, aa.sa(), aa.len));
    wait_for(a.get(), POLLIN, "datagram");
    expect_int(chk_recv(a.get(), 10, MSG_TRUNC, &got), 100, "recv(MSG_TRUNC) returns the real length");

    CHK(sendto(b.get(), big.data(), big.size(), 0, aa.sa(), aa.len));
    char small[10];
    iovec iov{small, sizeof small};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    wait_for(a.get(), POLLIN, "datagram");
    expect_int(CHK(recvmsg(a.get(), &m, 0)), 10, "recvmsg into 10 bytes");
    if (!(m.msg_flags & MSG_TRUNC)) fail("recvmsg msg_flags, expected MSG_TRUNC got %#x", m.msg_flags);

    CHK(sendto(b.get(), "peek", 4, 0, aa.sa(), aa.len));
    wait_for(a.get(), POLLIN, "datagram");
    expect_int(chk_recv(a.get(), 64, MSG_PEEK, &got), 4, "recv(MSG_PEEK)");
    expect_int(chk_recv(a.get(), 64, 0, &got), 4, "recv after MSG_PEEK");
    expect_bytes(got, "peek", "datagram after MSG_PEEK");
    EXPECT_ERR(chk_recv(a.get(), 64, MSG_DONTWAIT, &got), EAGAIN, EWOULDBLOCK);
  }
  // Connected UDP: send/recv, read/write, filtering of strangers, empty datagrams.
  {
    CHK(connect(b.get(), aa.sa(), aa.len));
    CHK(connect(a.get(), ba.sa(), ba.len));
    roundtrip(b.get(), a.get(), "c1");
    roundtrip(a.get(), b.get(), "c2");
    Fd stranger = udp_bound(loopback(AF_INET));
    CHK(sendto(stranger.get(), "stranger", 8, 0, ba.sa(), ba.len));
    CHK(send(a.get(), "c3", 2, 0));
    expect_bytes(recv_dgram(b.get()), "c3", "connected UDP ignores other sources");

    const std::string w50 = pattern(50, 10);
    expect_int(CHK(write(b.get(), w50.data(), w50.size())), 50, "write on connected UDP");
    std::string got;
    wait_for(a.get(), POLLIN, "datagram");
    expect_int(chk_read(a.get(), 4096, &got), 50, "__read_chk on connected UDP");
    expect_bytes(got, w50, "read datagram");
    CHK(write(b.get(), w50.data(), w50.size()));
    CHK(write(b.get(), "x", 1));
    wait_for(a.get(), POLLIN, "datagram");
    expect_int(chk_read(a.get(), 10, &got), 10, "read 10 bytes of a 50-byte datagram");
    wait_for(a.get(), POLLIN, "datagram");
    expect_int(chk_read(a.get(), 100, &got), 1, "read of the next datagram");
    expect_bytes(got, "x", "datagram boundary on read");

    expect_int(CHK(send(b.get(), "", 0, 0)), 0, "send of an empty datagram");
    wait_for(a.get(), POLLIN, "empty datagram");
    expect_int(chk_recv(a.get(), 64, 0, &got), 0, "recv of an empty datagram");
    roundtrip(b.get(), a.get(), "after-empty");
  }
  return "sendto/recvfrom 0..65507 bytes, sendmsg/recvmsg+msg_name+IP_PKTINFO, sendmmsg/recvmmsg "
         "16, MSG_TRUNC/MSG_PEEK, connected send/recv/read/write, stranger filtered, empty datagram";
}

// Pitfall 17: a TCP flow can start without connect(), with sendto(MSG_FASTOPEN), and with
// TCP_FASTOPEN_CONNECT where connect() returns before the handshake.
std::string scen_fastopen() {
  bool server_tfo = true;
  Listener srv(loopback(AF_INET), echo_handler, [&](int lfd) {
    const int qlen = 16;
    if (setsockopt(lfd, IPPROTO_TCP, TCP_FASTOPEN, &qlen, sizeof qlen) != 0) {
      if (errno != EOPNOTSUPP && errno != ENOPROTOOPT)
        fail("setsockopt(TCP_FASTOPEN, 16) on listener, expected success got -1 (%s)", errname(errno));
      server_tfo = false;
      note("listener refused TCP_FASTOPEN (%s): data will follow the handshake", errname(errno));
    }
  });
  const Addr &to = srv.addr();
  auto syn_data = [](int fd) {
    tcp_info ti{};
    socklen_t l = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) != 0) return "?";
    return (ti.tcpi_options & TCPI_OPT_SYN_DATA) ? "yes" : "no";
  };
  for (int round = 0; round < 2; ++round) {  // round 1 may use the cookie from round 0
    Fd s = make_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
    set_timeouts(s.get(), kIoTimeoutMs);
    const std::string msg = "fastopen-" + std::to_string(round);
    const ssize_t n = sendto(s.get(), msg.data(), msg.size(), MSG_FASTOPEN, to.sa(), to.len);
    if (n < 0 && errno == EOPNOTSUPP)
      throw Skip{"kernel refused MSG_FASTOPEN (EOPNOTSUPP): net.ipv4.tcp_fastopen client bit off"};
    if (n != ssize_t(msg.size()))
      fail("sendto(MSG_FASTOPEN) on a blocking socket, expected %zu got %zd (%s)", msg.size(), n,
           n < 0 ? errname(errno) : "short");
    expect_addr(peer_name(s.get()), to, "getpeername after sendto(MSG_FASTOPEN)");
    expect_bytes(recv_exact(s.get(), msg.size()), msg, "echo of fastopen data");
    VERBOSE("blocking round %d: data in SYN: %s (server TFO %d)", round, syn_data(s.get()), server_tfo);
    roundtrip(s.get(), s.get(), "after-fastopen");
  }
  for (int round = 0; round < 2; ++round) {
    // Non-blocking: without a cookie the kernel sends a bare SYN and answers EINPROGRESS.
    Fd s = make_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC);
    const std::string msg = "nb-fastopen-" + std::to_string(round);
    const ssize_t n = sendto(s.get(), msg.data(), msg.size(), MSG_FASTOPEN, to.sa(), to.len);
    if (n < 0) {
      if (errno != EINPROGRESS)
        fail("non-blocking sendto(MSG_FASTOPEN), expected %zu or EINPROGRESS got -1 (%s)", msg.size(), errname(errno));
      wait_for(s.get(), POLLOUT, "fastopen connect");
      expect_int(so_error(s.get()), 0, "SO_ERROR after non-blocking fastopen");
      send_all(s.get(), msg);
    } else if (size_t(n) != msg.size()) {
      send_all(s.get(), msg.data() + n, msg.size() - size_t(n));
    }
    VERBOSE("non-blocking round %d: sendto -> %zd", round, n);
    expect_bytes(recv_exact(s.get(), msg.size()), msg, "echo of non-blocking fastopen data");
    if (!is_nonblock(s.get())) fail("O_NONBLOCK after fastopen, expected set got cleared");
  }
  std::string extra = "TCP_FASTOPEN_CONNECT";
  {
    Fd s = make_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
    set_timeouts(s.get(), kIoTimeoutMs);
    const int one = 1;
    if (setsockopt(s.get(), IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &one, sizeof one) != 0) {
      note("TCP_FASTOPEN_CONNECT refused (%s), part skipped", errname(errno));
      extra = "(TCP_FASTOPEN_CONNECT unsupported)";
    } else {
      CHK(connect(s.get(), to.sa(), to.len));
      roundtrip(s.get(), s.get(), "fastopen-connect");
      expect_addr(peer_name(s.get()), to, "getpeername with TCP_FASTOPEN_CONNECT");
    }
  }
  return "sendto(MSG_FASTOPEN) without connect, twice blocking and twice non-blocking, plus " + extra +
         ": data reaches the server and is echoed";
}

// Pitfall 18: fds that arrive over AF_UNIX from another process, with no shim state, and land
// on a number that held a different socket a moment ago.
void send_fd(int unix_fd, int fd) {
  char byte = 'F';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof ctl;
  cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  expect_int(CHK(sendmsg(unix_fd, &m, MSG_NOSIGNAL)), 1, "sendmsg(SCM_RIGHTS)");
}

int recv_fd(int unix_fd, int flags) {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof ctl;
  wait_for(unix_fd, POLLIN, "SCM_RIGHTS message");
  expect_int(CHK(recvmsg(unix_fd, &m, flags)), 1, "recvmsg(SCM_RIGHTS)");
  if (m.msg_flags & MSG_CTRUNC) fail("recvmsg(SCM_RIGHTS) msg_flags, expected no MSG_CTRUNC got %#x", m.msg_flags);
  cmsghdr *c = CMSG_FIRSTHDR(&m);
  if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
    fail("recvmsg ancillary data, expected SCM_RIGHTS got %s", c ? "another cmsg" : "none");
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

std::string scen_scm_rights() {
  Recorder rec;
  Listener srv(loopback(AF_INET), rec.handler());
  int sp[2];
  CHK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp));
  Fd parent_end(sp[0]), child_end(sp[1]);

  const pid_t pid = checked_fork();
  if (pid == 0) {
    parent_end.reset();
    // A different socket (a connected UDP one) takes the lowest free number, then goes away;
    // the received fd lands on that number.
    int recycled;
    {
      Fd x = make_socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC);
      Addr nowhere = loopback(AF_INET, 9);
      CHK(connect(x.get(), nowhere.sa(), nowhere.len));
      recycled = x.get();
    }
    Fd t1(recv_fd(child_end.get(), 0));
    expect_int(t1.get(), recycled, "number of the received fd (lowest free)");
    expect_int(GETOPT(t1.get(), SOL_SOCKET, SO_TYPE), SOCK_STREAM, "SO_TYPE of received fd");
    expect_int(GETOPT(t1.get(), SOL_SOCKET, SO_PROTOCOL), IPPROTO_TCP, "SO_PROTOCOL of received fd");
    expect_addr(peer_name(t1.get()), srv.addr(), "getpeername of received fd");
    set_timeouts(t1.get(), kIoTimeoutMs);
    roundtrip(t1.get(), t1.get(), "via-send");
    expect_int(CHK(write(t1.get(), "via-write", 9)), 9, "write on received fd");
    std::string got;
    std::string all;
    while (all.size() < 9) {
      wait_for(t1.get(), POLLIN, "echo");
      if (chk_read(t1.get(), 9 - all.size(), &got) <= 0) fail("read on received fd, expected echo got EOF/error");
      all += got;
    }
    expect_bytes(all, "via-write", "echo read on received fd");
    char p1[] = "via-", p2[] = "sendmsg";
    iovec iov[2] = {{p1, 4}, {p2, 7}};
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    expect_int(CHK(sendmsg(t1.get(), &m, MSG_NOSIGNAL)), 11, "sendmsg on received fd");
    char r[11];
    iovec riov{r, sizeof r};
    msghdr rm{};
    rm.msg_iov = &riov;
    rm.msg_iovlen = 1;
    size_t n = 0;
    while (n < 11) {
      wait_for(t1.get(), POLLIN, "echo");
      riov = {r + n, sizeof r - n};
      const ssize_t k = CHK(recvmsg(t1.get(), &rm, 0));
      if (k == 0) fail("recvmsg on received fd, expected echo got EOF");
      n += size_t(k);
    }
    expect_bytes(std::string(r, 11), "via-sendmsg", "recvmsg echo on received fd");

    Fd t2(recv_fd(child_end.get(), MSG_CMSG_CLOEXEC));
    if (!is_cloexec(t2.get())) fail("fd received with MSG_CMSG_CLOEXEC, expected FD_CLOEXEC got clear");
    set_timeouts(t2.get(), kIoTimeoutMs);
    roundtrip(t2.get(), t2.get(), "second");
    _exit(0);
  }
  child_end.reset();
  uint16_t ports[2];
  for (int i = 0; i < 2; ++i) {
    Fd t = tcp_connect(srv.addr());
    ports[i] = sock_name(t.get()).port();
    send_fd(parent_end.get(), t.get());
    // t closes here: from now on only the child holds the connection
  }
  expect_child_ok(pid, "child using received fds");
  for (uint16_t p : ports)
    if (!srv.wait_closed(p)) fail("server, expected EOF after the child exited got nothing");
  expect_bytes(rec.of(ports[0]), "via-sendvia-writevia-sendmsg", "bytes the server received on the passed socket");
  expect_bytes(rec.of(ports[1]), "second", "bytes the server received on the second passed socket");
  return "TCP fds passed over SCM_RIGHTS to a child (one onto a recycled number, one with "
         "MSG_CMSG_CLOEXEC): send, write, sendmsg all reach the server";
}

// Pitfall 10: programs close every fd they do not know: close_range, closefrom, and loops over
// /proc/self/fd (in a child, as before exec). Afterwards sockets must work as before.
std::string scen_close_range() {
  Listener srv(loopback(AF_INET), echo_handler);
  int maxfd = 0;
  for (int fd : program_fds()) maxfd = std::max(maxfd, fd);
  // Our sockets live above every fd the program has, so closing "from base up" hits only them
  // (and whatever gsocket keeps at kShimFdBase and up, which it must survive).
  const int base = std::max(256, maxfd + 1);

  struct Ten {
    std::vector<int> fds;         // base .. base+9
    std::vector<uint16_t> ports;  // client ports of the 5 connected TCP sockets (fds[0..4])
  };
  auto open_ten = [&] {
    Ten t;
    for (int i = 0; i < 10; ++i) {
      Fd s;
      if (i < 5) {
        s = tcp_connect(srv.addr());
        roundtrip(s.get(), s.get(), "cr");
        t.ports.push_back(sock_name(s.get()).port());
      } else if (i < 8) {
        s = make_socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC);
        if (i == 5) CHK(connect(s.get(), srv.addr().sa(), srv.addr().len));
      } else {
        s = make_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
      }
      const int hi = CHK(fcntl(s.get(), F_DUPFD, base));
      expect_int(hi, base + i, "F_DUPFD(base) number");
      t.fds.push_back(hi);
    }
    return t;
  };
  auto expect_closed = [&](const Ten &t, const char *how) {
    for (int fd : t.fds)
      if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
        fail("F_GETFD(%d) after %s, expected -1 (EBADF) got open", fd, how);
    for (uint16_t p : t.ports)
      if (!srv.wait_closed(p)) fail("server after %s, expected EOF on every connection got none", how);
  };
  auto exchange_fresh = [&] {  // new sockets of every kind work
    Fd s = tcp_connect(srv.addr());
    roundtrip(s.get(), s.get(), pattern(10000, 11));
    Fd u1 = udp_bound(loopback(AF_INET)), u2 = udp_bound(loopback(AF_INET));
    Addr to = sock_name(u1.get());
    CHK(sendto(u2.get(), "fresh", 5, 0, to.sa(), to.len));
    expect_bytes(recv_dgram(u1.get()), "fresh", "UDP after closing ranges");
  };

  Ten t = open_ten();
  expect_int(CHK(close_range(unsigned(base), ~0U, 0)), 0, "close_range(base, ~0U, 0)");
  expect_closed(t, "close_range");

  std::string cloexec = "CLOSE_RANGE_CLOEXEC";
  t = open_ten();
  if (close_range(unsigned(base), ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    if (errno != EINVAL) fail("close_range(CLOSE_RANGE_CLOEXEC), expected 0 got -1 (%s)", errname(errno));
    note("close_range(CLOSE_RANGE_CLOEXEC) unsupported by this kernel, part skipped");
    cloexec = "(CLOSE_RANGE_CLOEXEC unsupported)";
  } else {
    for (int fd : t.fds) expect_int(CHK(fcntl(fd, F_GETFD)), FD_CLOEXEC, "F_GETFD after CLOSE_RANGE_CLOEXEC");
    for (int i = 0; i < 5; ++i) roundtrip(t.fds[size_t(i)], t.fds[size_t(i)], "still-open");
  }
  closefrom(base);
  expect_closed(t, "closefrom");

  // A child closes everything it does not know by walking /proc/self/fd, then networks.
  t = open_ten();
  pid_t pid = checked_fork();
  if (pid == 0) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) _exit(3);
    while (dirent *e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      const int fd = atoi(e->d_name);
      if (fd > 2 && fd != dirfd(d) && close(fd) != 0)
        fail("close(%d) in the /proc/self/fd loop, expected 0 got -1 (%s)", fd, errname(errno));
    }
    closedir(d);
    for (int fd : t.fds)
      if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) fail("fd %d after /proc/self/fd loop, expected closed got open", fd);
    exchange_fresh();
    _exit(0);
  }
  expect_child_ok(pid, "child closing every fd via /proc/self/fd");
  for (int i = 0; i < 5; ++i) roundtrip(t.fds[size_t(i)], t.fds[size_t(i)], "parent-unaffected");

  // A child does close_range(3, ~0U): the spawn idiom.
  pid = checked_fork();
  if (pid == 0) {
    CHK(close_range(3, ~0U, 0));
    exchange_fresh();
    _exit(0);
  }
  expect_child_ok(pid, "child after close_range(3, ~0U)");
  for (int i = 0; i < 5; ++i) roundtrip(t.fds[size_t(i)], t.fds[size_t(i)], "parent-unaffected-2");
  closefrom(base);
  expect_closed(t, "closefrom");
  exchange_fresh();
  return "close_range, " + cloexec + ", closefrom over 10 sockets; children closing via "
         "/proc/self/fd and close_range(3,~0U) then network; parent unaffected";
}

// Pitfall 4: type flags and protocol 0 vs explicit, as the kernel reports them back.
std::string scen_types() {
  int variants = 0;
  std::vector<int> families = {AF_INET};
  if (have_ipv6()) families.push_back(AF_INET6);
  const int flag_sets[] = {0, SOCK_NONBLOCK, SOCK_CLOEXEC, SOCK_NONBLOCK | SOCK_CLOEXEC};
  for (int family : families) {
    for (int base : {SOCK_STREAM, SOCK_DGRAM}) {
      const int want_proto = base == SOCK_STREAM ? IPPROTO_TCP : IPPROTO_UDP;
      for (int flags : flag_sets) {
        for (int proto : {0, want_proto}) {
          Fd s(CHK(socket(family, base | flags, proto)));
          expect_int(GETOPT(s.get(), SOL_SOCKET, SO_TYPE), base, "SO_TYPE (flags masked)");
          expect_int(GETOPT(s.get(), SOL_SOCKET, SO_DOMAIN), family, "SO_DOMAIN");
          expect_int(GETOPT(s.get(), SOL_SOCKET, SO_PROTOCOL), want_proto, "SO_PROTOCOL");
          expect_int(so_error(s.get()), 0, "SO_ERROR of a fresh socket");
          expect_int(is_nonblock(s.get()), (flags & SOCK_NONBLOCK) != 0, "O_NONBLOCK from SOCK_NONBLOCK");
          expect_int(is_cloexec(s.get()), (flags & SOCK_CLOEXEC) != 0, "FD_CLOEXEC from SOCK_CLOEXEC");
          ++variants;
        }
      }
    }
  }
  for (int base : {SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET}) {
    for (int flags : flag_sets) {
      Fd s(CHK(socket(AF_UNIX, base | flags, 0)));
      expect_int(GETOPT(s.get(), SOL_SOCKET, SO_TYPE), base, "AF_UNIX SO_TYPE");
      expect_int(GETOPT(s.get(), SOL_SOCKET, SO_DOMAIN), AF_UNIX, "AF_UNIX SO_DOMAIN");
      expect_int(GETOPT(s.get(), SOL_SOCKET, SO_PROTOCOL), 0, "AF_UNIX SO_PROTOCOL");
      expect_int(is_nonblock(s.get()), (flags & SOCK_NONBLOCK) != 0, "AF_UNIX O_NONBLOCK");
      expect_int(is_cloexec(s.get()), (flags & SOCK_CLOEXEC) != 0, "AF_UNIX FD_CLOEXEC");
      ++variants;
    }
  }
  {
    int sp[2];
    CHK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp));
    Fd x(sp[0]), y(sp[1]);
    for (int fd : sp)
      if (!is_nonblock(fd) || !is_cloexec(fd)) fail("socketpair flags, expected O_NONBLOCK and FD_CLOEXEC on both got missing");
  }
  EXPECT_ERR(socket(AF_INET, SOCK_STREAM, IPPROTO_UDP), EPROTONOSUPPORT);
  EXPECT_ERR(socket(AF_INET, SOCK_DGRAM, IPPROTO_TCP), EPROTONOSUPPORT);
  EXPECT_ERR(socket(AF_INET, 42, 0), EINVAL);
  EXPECT_ERR(socket(12345, SOCK_STREAM, 0), EAFNOSUPPORT);

  // Toggling O_NONBLOCK by fcntl and by ioctl(FIONBIO) is visible and effective.
  Pair p = tcp_pair();
  char c;
  set_nonblock(p.client.get(), true);
  EXPECT_ERR(recv(p.client.get(), &c, 1, 0), EAGAIN);
  set_nonblock(p.client.get(), false);
  if (is_nonblock(p.client.get())) fail("F_SETFL clearing O_NONBLOCK, expected clear got set");
  int on = 1;
  CHK(ioctl(p.client.get(), FIONBIO, &on));
  if (!is_nonblock(p.client.get())) fail("ioctl(FIONBIO, 1), expected O_NONBLOCK got clear");
  EXPECT_ERR(recv(p.client.get(), &c, 1, 0), EAGAIN);
  on = 0;
  CHK(ioctl(p.client.get(), FIONBIO, &on));
  if (is_nonblock(p.client.get())) fail("ioctl(FIONBIO, 0), expected blocking got O_NONBLOCK");

  // accept() never inherits the listener's O_NONBLOCK; accept4 applies its own flags.
  Fd l = make_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC);
  Addr lb = loopback(AF_INET);
  CHK(bind(l.get(), lb.sa(), lb.len));
  CHK(listen(l.get(), 4));
  const Addr la = sock_name(l.get());
  Fd c1 = tcp_connect(la), c2 = tcp_connect(la);
  wait_for(l.get(), POLLIN, "accept");
  Fd a1(CHK(accept(l.get(), nullptr, nullptr)));
  if (is_nonblock(a1.get()) || is_cloexec(a1.get())) fail("accept() flags, expected none got O_NONBLOCK/FD_CLOEXEC");
  wait_for(l.get(), POLLIN, "accept4");
  Fd a2(CHK(accept4(l.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)));
  if (!is_nonblock(a2.get()) || !is_cloexec(a2.get())) fail("accept4(SOCK_NONBLOCK|SOCK_CLOEXEC) flags, expected both got missing");
  expect_int(GETOPT(a2.get(), SOL_SOCKET, SO_TYPE), SOCK_STREAM, "SO_TYPE of accepted");
  expect_int(GETOPT(a2.get(), SOL_SOCKET, SO_PROTOCOL), IPPROTO_TCP, "SO_PROTOCOL of accepted");
  EXPECT_ERR(accept(l.get(), nullptr, nullptr), EAGAIN);
  return std::to_string(variants) + " socket variants report type/domain/protocol/flags as created; "
         "bad type/protocol/family errnos; FIONBIO and F_SETFL; accept vs accept4 flags";
}

// Half-close semantics: a shim that closes or flushes on shutdown breaks request/response
// programs (the client sends, shuts down writing, then reads the answer).
std::string scen_shutdown() {
  {
    Pair p = tcp_pair();
    roundtrip(p.client.get(), p.server.get(), "request");
    CHK(shutdown(p.client.get(), SHUT_WR));
    expect_eof(p.server.get(), "server read after client SHUT_WR");
    roundtrip(p.server.get(), p.client.get(), pattern(50000, 12));  // the other direction lives
    EXPECT_ERR(send(p.client.get(), "x", 1, MSG_NOSIGNAL), EPIPE);
    CHK(shutdown(p.server.get(), SHUT_WR));
    expect_eof(p.client.get(), "client read after server SHUT_WR");
  }
  {
    Pair p = tcp_pair();
    CHK(shutdown(p.client.get(), SHUT_RD));
    char c;
    expect_int(CHK(recv(p.client.get(), &c, 1, MSG_DONTWAIT)), 0, "recv after SHUT_RD (EOF, not EAGAIN)");
    roundtrip(p.client.get(), p.server.get(), "still-writes");
  }
  {
    Pair p = tcp_pair();
    CHK(shutdown(p.client.get(), SHUT_RDWR));
    expect_eof(p.server.get(), "server read after client SHUT_RDWR");
    EXPECT_ERR(send(p.client.get(), "x", 1, MSG_NOSIGNAL), EPIPE);
    EXPECT_ERR(shutdown(p.client.get(), 7), EINVAL);
  }
  Fd t = make_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
  EXPECT_ERR(shutdown(t.get(), SHUT_WR), ENOTCONN);
  Fd u = make_socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC);
  const int udp_errno = EXPECT_ERR(shutdown(u.get(), SHUT_RDWR), ENOTCONN);
  {
    // Servers wake a thread blocked in accept() by shutting the listener down.
    Fd l = make_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
    Addr lb = loopback(AF_INET);
    CHK(bind(l.get(), lb.sa(), lb.len));
    CHK(listen(l.get(), 4));
    CHK(shutdown(l.get(), SHUT_RDWR));
    EXPECT_ERR(accept(l.get(), nullptr, nullptr), EINVAL);
  }
  const int bad = bad_fd();
  EXPECT_ERR(shutdown(bad, SHUT_RDWR), EBADF);
  int pp[2];
  CHK(pipe2(pp, O_CLOEXEC));
  Fd pr(pp[0]), pw(pp[1]);
  EXPECT_ERR(shutdown(pr.get(), SHUT_RDWR), ENOTSOCK);
  return std::string("SHUT_WR half-close both ways, SHUT_RD reads EOF, SHUT_RDWR; unconnected "
                     "TCP/UDP ") + errname(udp_errno) + "; listener shutdown wakes accept; EINVAL/EBADF/ENOTSOCK";
}

// Pitfall 19: errno must be the kernel's. Where the kernel may pick among several, the ok line
// names the one seen, so runs with and without the shim compare.
std::string scen_errors() {
  std::string seen;
  auto record = [&](const char *what, int e) { seen += std::string(seen.empty() ? "" : " ") + what + "=" + errname(e); };

  Fd t = make_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
  record("send-unconnected", EXPECT_ERR(send(t.get(), "x", 1, MSG_NOSIGNAL), ENOTCONN, EPIPE));
  char buf[16];
  record("recv-unconnected", EXPECT_ERR(recv(t.get(), buf, sizeof buf, MSG_DONTWAIT), ENOTCONN, EINVAL));

  const int bad = bad_fd();
  const Addr lo = loopback(AF_INET, 9);
  EXPECT_ERR(connect(bad, lo.sa(), lo.len), EBADF);
  EXPECT_ERR(send(bad, "x", 1, MSG_NOSIGNAL), EBADF);
  EXPECT_ERR(recv(bad, buf, sizeof buf, 0), EBADF);
  EXPECT_ERR(close(bad), EBADF);
  int v = 0;
  socklen_t vl = sizeof v;
  EXPECT_ERR(getsockopt(bad, SOL_SOCKET, SO_TYPE, &v, &vl), EBADF);
  EXPECT_ERR(setsockopt(bad, SOL_SOCKET, SO_PRIORITY, &v, sizeof v), EBADF);

  int pp[2];
  CHK(pipe2(pp, O_CLOEXEC));
  Fd pr(pp[0]), pw(pp[1]);
  EXPECT_ERR(connect(pr.get(), lo.sa(), lo.len), ENOTSOCK);
  EXPECT_ERR(send(pw.get(), "x", 1, MSG_NOSIGNAL), ENOTSOCK);
  vl = sizeof v;
  EXPECT_ERR(getsockopt(pr.get(), SOL_SOCKET, SO_TYPE, &v, &vl), ENOTSOCK);
  EXPECT_ERR(setsockopt(pr.get(), IPPROTO_IP, IP_TOS, &v, sizeof v), ENOTSOCK);

  EXPECT_ERR(connect(t.get(), lo.sa(), sizeof(sockaddr_in) - 1), EINVAL);
  EXPECT_ERR(connect(t.get(), lo.sa(), 0), EINVAL);
  const Addr six = loopback(AF_INET6, 9);
  record("connect-v6-on-v4", EXPECT_ERR(connect(t.get(), six.sa(), six.len), EAFNOSUPPORT, EINVAL));
  Fd u = make_socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC);
  record("sendto-v6-on-v4", EXPECT_ERR(sendto(u.get(), "x", 1, 0, six.sa(), six.len), EAFNOSUPPORT, EINVAL));
  EXPECT_ERR(sendto(u.get(), "x", 1, 0, lo.sa(), sizeof(sockaddr_in) - 1), EINVAL);
  if (have_ipv6()) {
    Fd t6 = make_socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC);
    EXPECT_ERR(connect(t6.get(), lo.sa(), lo.len), EINVAL);  // shorter than sockaddr_in6
  }

  // Resources and state.
  Fd l = make_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC);
  Addr lb = loopback(AF_INET);
  CHK(bind(l.get(), lb.sa(), lb.len));
  CHK(listen(l.get(), 4));
  const Addr la = sock_name(l.get());
  Fd l2 = make_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
  EXPECT_ERR(bind(l2.get(), la.sa(), la.len), EADDRINUSE);
  const Addr foreign = make_addr(AF_INET, "192.0.2.1", 0);
  EXPECT_ERR(bind(l2.get(), foreign.sa(), foreign.len), EADDRNOTAVAIL);
  EXPECT_ERR(accept(l.get(), nullptr, nullptr), EAGAIN);
  record("connect-on-listener", EXPECT_ERR(connect(l.get(), la.sa(), la.len), EISCONN, EINVAL));
  EXPECT_ERR(listen(u.get(), 4), EOPNOTSUPP);
  EXPECT_ERR(accept(t.get(), nullptr, nullptr), EINVAL);
  vl = sizeof v;
  EXPECT_ERR(getsockopt(t.get(), SOL_SOCKET, 12345, &v, &vl), ENOPROTOOPT);
  EXPECT_ERR(setsockopt(t.get(), IPPROTO_TCP, TCP_CONGESTION, "no-such-cc", 10), ENOENT);
  // Not IP_TOS: the IPv4 level reads a short optlen as value 0 and succeeds.
  EXPECT_ERR(setsockopt(t.get(), SOL_SOCKET, SO_PRIORITY, &v, 0), EINVAL);
  EXPECT_ERR(setsockopt(u.get(), IPPROTO_TCP, TCP_NODELAY, &v, sizeof v), ENOPROTOOPT, EOPNOTSUPP);

  // Peer reset by SO_LINGER{1,0} + close: ECONNRESET once, then EOF; sending gives EPIPE.
  {
    Pair p = tcp_pair();
    const linger lg{1, 0};
    CHK(setsockopt(p.server.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    p.server.reset();
    wait_for(p.client.get(), POLLIN, "reset");
    record("recv-after-reset", EXPECT_ERR(recv(p.client.get(), buf, sizeof buf, 0), ECONNRESET));
    expect_int(CHK(recv(p.client.get(), buf, sizeof buf, 0)), 0, "recv after the reset was reported");
    record("send-after-reset", EXPECT_ERR(send(p.client.get(), "x", 1, MSG_NOSIGNAL), EPIPE, ECONNRESET));
  }
  {
    Pair p = tcp_pair();
    EXPECT_ERR(recv(p.client.get(), buf, sizeof buf, MSG_DONTWAIT), EAGAIN);
  }
  // Double close.
  const int fd = make_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC).release();
  CHK(close(fd));
  EXPECT_ERR(close(fd), EBADF);
  return seen + "; EBADF/ENOTSOCK/EINVAL/EADDRINUSE/EADDRNOTAVAIL/EAGAIN/EOPNOTSUPP/ENOPROTOOPT/"
                "ENOENT as the kernel gives them";
}

// Throughput path: a shim that copies or shapes must not lose, reorder or duplicate bytes.
constexpr size_t kBulkBytes = 64u << 20;
constexpr uint64_t kFnvInit = 1469598103934665603ull;

uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
  const auto *b = static_cast<const unsigned char *>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

void bulk_sink(int fd, const Addr &) {  // reads to EOF with read() (__read_chk), answers count+hash
  uint64_t reply[2] = {0, kFnvInit};
  std::string chunk;
  for (;;) {
    const ssize_t n = chk_read(fd, kChkBuf - reply[0] % 4096, &chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("bulk server read, expected data got -1 (%s)", errname(errno));
    if (n == 0) break;
    reply[0] += uint64_t(n);
    reply[1] = fnv1a(reply[1], chunk.data(), chunk.size());
  }
  send_all_quiet(fd, reply, sizeof reply);
}

void bulk_check_reply(int fd, uint64_t hash, const char *how) {
  uint64_t reply[2];
  size_t got = 0;
  while (got < sizeof reply) {
    wait_for(fd, POLLIN, "bulk reply");
    const ssize_t n = read(fd, reinterpret_cast<char *>(reply) + got, sizeof reply - got);
    if (n <= 0) fail("%s: read of the server's summary, expected 16 bytes got %zd (%s)", how, n, errname(errno));
    got += size_t(n);
  }
  expect_int(long(reply[0]), long(kBulkBytes), how);
  if (reply[1] != hash) fail("%s: checksum, expected %016llx got %016llx", how, (unsigned long long)hash, (unsigned long long)reply[1]);
  expect_eof(fd, "bulk connection end");
}

std::string scen_bulk() {
  std::string data(kBulkBytes, '\0');
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < kBulkBytes; i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    memcpy(&data[i], &x, 8);
  }
  const uint64_t hash = fnv1a(kFnvInit, data.data(), data.size());
  Listener srv(loopback(AF_INET), bulk_sink);
  {
    Fd s = tcp_connect(srv.addr());
    set_timeouts(s.get(), 2 * kIoTimeoutMs);
    size_t off = 0;
    for (size_t i = 0; off < kBulkBytes; ++i) {
      const size_t len = std::min(kBulkBytes - off, 1 + (i * 7919) % (256 * 1024));
      const ssize_t n = write(s.get(), data.data() + off, len);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail("bulk write at offset %zu, expected progress got %zd (%s)", off, n, errname(errno));
      off += size_t(n);
    }
    CHK(shutdown(s.get(), SHUT_WR));
    bulk_check_reply(s.get(), hash, "write/read 64 MiB");
  }
  {
    const char *tmpdir = getenv("TMPDIR");
    std::string path = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/gsprobe.XXXXXX";
    Fd f(CHK(mkostemp(path.data(), O_CLOEXEC)));
    CHK(unlink(path.c_str()));
    for (size_t off = 0; off < kBulkBytes;) off += size_t(CHK(write(f.get(), data.data() + off, kBulkBytes - off)));
    Fd s = tcp_connect(srv.addr());
    set_timeouts(s.get(), 2 * kIoTimeoutMs);
    off_t off = 0;
    while (size_t(off) < kBulkBytes) {
      const ssize_t n = sendfile(s.get(), f.get(), &off, kBulkBytes - size_t(off));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail("sendfile at offset %lld, expected progress got %zd (%s)", (long long)off, n, errname(errno));
    }
    CHK(shutdown(s.get(), SHUT_WR));
    bulk_check_reply(s.get(), hash, "sendfile 64 MiB");
  }
  return "64 MiB by write/read and 64 MiB by sendfile arrive complete with equal checksum";
}

// =============================================================================================
// qos: socket options as the program sees them, for a policy to be checked against.
//
// CHECK = tcp://HOST:PORT[?k=v&...] | udp://HOST:PORT[?k=v&...]; HOST is an IPv4 literal or
// [IPv6]. The probe listens on HOST:PORT itself (SO_REUSEADDR), connects a client (connect, or
// via=sendto for UDP, via=fastopen for TCP), sends a few bytes, optionally sets the TOS itself
// (settos=N, after connect) and prints what getsockopt says on the client socket (and, for TCP,
// tos/priority of the accepted socket). Expectation keys:
//   tos priority pacing(=N|unlimited) rcvbuf window cc lowat accepted.tos accepted.priority
// rcvbuf=N expects the kernel value 2*N: Linux doubles what setsockopt(SO_RCVBUF) is given, to
// leave room for its bookkeeping, and getsockopt reports the doubled value.

[[noreturn]] [[gnu::format(printf, 1, 2)]] void usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("gsprobe: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs(" (gsprobe --help)\n", stderr);
  va_end(ap);
  exit(2);
}

struct QosCheck {
  std::string base;  // scheme://host:port, as printed
  bool tcp = true;
  Addr addr;
  std::vector<std::pair<std::string, std::string>> expect;
  std::string via;
  std::optional<int> settos;
};

bool parse_u64(const std::string &s, uint64_t *out) {
  if (s.empty()) return false;
  char *end = nullptr;
  errno = 0;
  const unsigned long long v = strtoull(s.c_str(), &end, 0);
  if (errno || *end || s[0] == '-') return false;
  *out = v;
  return true;
}

QosCheck parse_qos(const std::string &text) {
  QosCheck q;
  std::string rest;
  if (text.rfind("tcp://", 0) == 0) {
    q.tcp = true;
  } else if (text.rfind("udp://", 0) == 0) {
    q.tcp = false;
  } else {
    usage_error("qos check %s: expected tcp:// or udp://", text.c_str());
  }
  rest = text.substr(6);
  const size_t qm = rest.find('?');
  const std::string hostport = rest.substr(0, qm);
  const std::string query = qm == std::string::npos ? "" : rest.substr(qm + 1);
  std::string host, port;
  int family;
  if (!hostport.empty() && hostport[0] == '[') {
    const size_t rb = hostport.find(']');
    if (rb == std::string::npos || hostport.size() < rb + 2 || hostport[rb + 1] != ':')
      usage_error("qos check %s: expected [IPv6]:PORT", text.c_str());
    host = hostport.substr(1, rb - 1);
    port = hostport.substr(rb + 2);
    family = AF_INET6;
  } else {
    const size_t colon = hostport.rfind(':');
    if (colon == std::string::npos) usage_error("qos check %s: expected HOST:PORT", text.c_str());
    host = hostport.substr(0, colon);
    port = hostport.substr(colon + 1);
    family = AF_INET;
  }
  uint64_t pnum;
  if (!parse_u64(port, &pnum) || pnum > 65535) usage_error("qos check %s: bad port", text.c_str());
  unsigned char probe[sizeof(in6_addr)];
  if (inet_pton(family, host.c_str(), probe) != 1)
    usage_error("qos check %s: host must be an IPv4 literal or [IPv6]", text.c_str());
  q.addr = make_addr(family, host.c_str(), uint16_t(pnum));
  q.base = text.substr(0, 6) + hostport;
  static const std::set<std::string> kExpectKeys = {"tos", "priority", "pacing", "rcvbuf", "window",
                                                    "cc", "lowat", "accepted.tos", "accepted.priority"};
  static const std::set<std::string> kTcpOnly = {"window", "cc", "lowat", "accepted.tos", "accepted.priority"};
  size_t pos = 0;
  while (pos < query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string::npos) amp = query.size();
    const std::string kv = query.substr(pos, amp - pos);
    pos = amp + 1;
    if (kv.empty()) continue;
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) usage_error("qos check %s: expected key=value, got %s", text.c_str(), kv.c_str());
    const std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
    uint64_t n;
    if (k == "via") {
      if (!(q.tcp ? v == "fastopen" || v == "connect" : v == "sendto" || v == "connect"))
        usage_error("qos check %s: via=%s not valid for %s", text.c_str(), v.c_str(), q.tcp ? "tcp" : "udp");
      q.via = v;
    } else if (k == "settos") {
      if (!parse_u64(v, &n) || n > 255) usage_error("qos check %s: settos wants 0..255", text.c_str());
      q.settos = int(n);
    } else if (kExpectKeys.count(k)) {
      if (!q.tcp && kTcpOnly.count(k)) usage_error("qos check %s: %s applies to tcp only", text.c_str(), k.c_str());
      if (k != "cc" && !(k == "pacing" && v == "unlimited") && !parse_u64(v, &n))
        usage_error("qos check %s: %s wants a number", text.c_str(), k.c_str());
      q.expect.emplace_back(k, v);
    } else {
      usage_error("qos check %s: unknown key %s", text.c_str(), k.c_str());
    }
  }
  return q;
}

// What getsockopt says, in print order: key -> (printed form, numeric value if any).
struct QosSeen {
  std::vector<std::pair<std::string, std::string>> printed;
  std::map<std::string, uint64_t> num;
  std::string cc;

  void add(const std::string &k, uint64_t v, std::string shown = "") {
    printed.emplace_back(k, shown.empty() ? std::to_string(v) : shown);
    num[k] = v;
  }
};

void qos_read(int fd, int family, bool tcp, const std::string &prefix, bool full, QosSeen *seen) {
  const bool v6 = family == AF_INET6;
  seen->add(prefix + "tos", uint64_t(unsigned(v6 ? GETOPT(fd, IPPROTO_IPV6, IPV6_TCLASS)
                                                : GETOPT(fd, IPPROTO_IP, IP_TOS))));
  seen->add(prefix + "priority", uint64_t(unsigned(GETOPT(fd, SOL_SOCKET, SO_PRIORITY))));
  if (!full) return;
  uint64_t pacing = 0;
  socklen_t l = sizeof pacing;
  CHK(getsockopt(fd, SOL_SOCKET, SO_MAX_PACING_RATE, &pacing, &l));
  if (l == sizeof(uint32_t)) {  // older kernels answer 32 bits
    uint32_t p32;
    memcpy(&p32, &pacing, sizeof p32);
    pacing = p32 == ~0u ? ~0ull : p32;
  }
  seen->add("pacing", pacing, pacing == ~0ull ? "unlimited" : "");
  seen->add("rcvbuf", uint64_t(unsigned(GETOPT(fd, SOL_SOCKET, SO_RCVBUF))));
  if (!tcp) return;
  seen->add("window", uint64_t(unsigned(GETOPT(fd, IPPROTO_TCP, TCP_WINDOW_CLAMP))));
  char cc[32] = {};
  l = sizeof cc;
  CHK(getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, &l));
  seen->cc.assign(cc, strnlen(cc, l));
  seen->printed.emplace_back("cc", seen->cc);
  seen->add("lowat", uint64_t(unsigned(GETOPT(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT))));
}

void qos_one(const QosCheck &q) {
  const int family = q.addr.family();
  const bool v6 = family == AF_INET6;
  const std::string payload = "gsprobe-qos";
  QosSeen seen;
  auto settos = [&](int fd) {
    if (!q.settos) return;
    const int v = *q.settos;
    if (setsockopt(fd, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_TCLASS : IP_TOS, &v, sizeof v) != 0)
      fail("%s: the program's own setsockopt(%s, %#x), expected success got -1 (%s)", q.base.c_str(),
           v6 ? "IPV6_TCLASS" : "IP_TOS", v, errname(errno));
  };
  if (q.tcp) {
    Fd l = make_socket(family, SOCK_STREAM | SOCK_CLOEXEC);
    SETOPT(l.get(), SOL_SOCKET, SO_REUSEADDR, 1);
    if (bind(l.get(), q.addr.sa(), q.addr.len) != 0)
      fail("%s: bind listener, expected success got -1 (%s)", q.base.c_str(), errname(errno));
    CHK(listen(l.get(), 8));
    const Addr to = sock_name(l.get());
    Fd c = make_socket(family, SOCK_STREAM | SOCK_CLOEXEC);
    set_timeouts(c.get(), kIoTimeoutMs);
    if (q.via == "fastopen") {
      const ssize_t n = sendto(c.get(), payload.data(), payload.size(), MSG_FASTOPEN, to.sa(), to.len);
      if (n != ssize_t(payload.size()))
        fail("%s: sendto(MSG_FASTOPEN), expected %zu got %zd (%s)", q.base.c_str(), payload.size(), n, errname(errno));
    } else {
      if (connect(c.get(), to.sa(), to.len) != 0)
        fail("%s: connect, expected success got -1 (%s)", q.base.c_str(), errname(errno));
      send_all(c.get(), payload);
    }
    wait_for(l.get(), POLLIN, "qos accept");
    Fd a(CHK(accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC)));
    set_timeouts(a.get(), kIoTimeoutMs);
    expect_bytes(recv_exact(a.get(), payload.size()), payload, "qos payload at the server");
    settos(c.get());
    qos_read(c.get(), family, true, "", true, &seen);
    qos_read(a.get(), family, true, "accepted.", false, &seen);
  } else {
    Fd r = make_socket(family, SOCK_DGRAM | SOCK_CLOEXEC);
    SETOPT(r.get(), SOL_SOCKET, SO_REUSEADDR, 1);
    if (bind(r.get(), q.addr.sa(), q.addr.len) != 0)
      fail("%s: bind receiver, expected success got -1 (%s)", q.base.c_str(), errname(errno));
    const Addr to = sock_name(r.get());
    Fd c = make_socket(family, SOCK_DGRAM | SOCK_CLOEXEC);
    if (q.via == "sendto") {
      expect_int(CHK(sendto(c.get(), payload.data(), payload.size(), 0, to.sa(), to.len)), long(payload.size()), "qos sendto");
    } else {
      if (connect(c.get(), to.sa(), to.len) != 0)
        fail("%s: connect, expected success got -1 (%s)", q.base.c_str(), errname(errno));
      expect_int(CHK(send(c.get(), payload.data(), payload.size(), 0)), long(payload.size()), "qos send");
    }
    expect_bytes(recv_dgram(r.get()), payload, "qos datagram at the receiver");
    settos(c.get());
    qos_read(c.get(), family, false, "", true, &seen);
  }

  std::string line = "qos " + q.base;
  if (!q.via.empty()) line += " via=" + q.via;
  if (q.settos) line += " settos=" + std::to_string(*q.settos);
  for (const auto &[k, v] : seen.printed) line += " " + k + "=" + v;
  printf("%s\n", line.c_str());
  fflush(stdout);

  for (const auto &[k, want] : q.expect) {
    if (k == "cc") {
      if (seen.cc != want) fail("%s: cc, expected %s got %s", q.base.c_str(), want.c_str(), seen.cc.c_str());
      continue;
    }
    uint64_t w = ~0ull;
    if (!(k == "pacing" && want == "unlimited")) parse_u64(want, &w);
    if (k == "rcvbuf") w *= 2;  // the kernel doubles SO_RCVBUF (see above)
    const uint64_t got = seen.num.at(k);
    if (got != w)
      fail("%s: %s, expected %llu%s got %llu", q.base.c_str(), k.c_str(), (unsigned long long)w,
           k == "rcvbuf" ? " (2 x requested)" : "", (unsigned long long)got);
  }
}

int run_qos(int n, char **checks) {
  g_scenario = "qos";
  if (n == 0) usage_error("qos needs at least one CHECK");
  std::vector<QosCheck> qs;
  for (int i = 0; i < n; ++i) qs.push_back(parse_qos(checks[i]));
  for (const QosCheck &q : qs) {
    if (q.addr.family() == AF_INET6 && !have_ipv6()) {
      printf("skip qos: %s: IPv6 unavailable\n", q.base.c_str());
      fflush(stdout);
      if (qs.size() == 1) return 77;
      continue;
    }
    qos_one(q);
  }
  printf("ok qos: %zu checks\n", qs.size());
  fflush(stdout);
  return 0;
}

// =============================================================================================

struct Scenario {
  const char *name;
  const char *what;
  std::string (*run)();
};

const Scenario kScenarios[] = {
    {"nonblock-connect", "non-blocking connect via poll/epoll/select, refused, EALREADY/EISCONN", scen_nonblock_connect},
    {"epoll", "ET and LT epoll echo server, 20 non-blocking clients x 100 messages", scen_epoll},
    {"dup", "dup/dup2/dup3/F_DUPFD(_CLOEXEC) of a connected socket; dup2 over a socket", scen_dup},
    {"fork", "child and daemon() grandchild use inherited and new sockets", scen_fork},
    {"threads", "8x200 connect/echo/close plus dup2/close threads, no fd leak", scen_threads},
    {"names", "getsockname/getpeername for TCP/UDP, v4/v6, bound/connected", scen_names},
    {"ipv6", "TCP/UDP over ::1, dual-stack v4-mapped accept, V6ONLY", scen_ipv6},
    {"udp", "sendto/recvfrom, sendmsg/recvmsg, sendmmsg/recvmmsg, connected, MSG_TRUNC", scen_udp},
    {"fastopen", "sendto(MSG_FASTOPEN) without connect, TCP_FASTOPEN_CONNECT", scen_fastopen},
    {"scm-rights", "TCP fds passed over SCM_RIGHTS to a child", scen_scm_rights},
    {"close-range", "close_range, CLOSE_RANGE_CLOEXEC, closefrom, /proc/self/fd loop", scen_close_range},
    {"types", "SOCK_NONBLOCK/SOCK_CLOEXEC, protocol 0, SO_TYPE/DOMAIN/PROTOCOL", scen_types},
    {"shutdown", "SHUT_WR/SHUT_RD/SHUT_RDWR half-close, ENOTCONN", scen_shutdown},
    {"errors", "errno fidelity: EBADF, ENOTSOCK, EINVAL, ECONNRESET, ...", scen_errors},
    {"bulk", "64 MiB by write/read and by sendfile, checksummed", scen_bulk},
};

void usage(FILE *out) {
  fprintf(out,
          "usage: gsprobe SCENARIO... | gsprobe all | gsprobe qos CHECK... | gsprobe --help\n"
          "scenarios:\n");
  for (const Scenario &s : kScenarios) fprintf(out, "  %-17s %s\n", s.name, s.what);
  fprintf(out,
          "  %-17s scenarios above, in order\n"
          "  %-17s CHECK = tcp://HOST:PORT[?k=v&...] or udp://...; HOST IPv4 or [IPv6]\n"
          "  %-17s keys: tos priority pacing(=N|unlimited) rcvbuf(=N, kernel shows 2N) window\n"
          "  %-17s       cc lowat accepted.tos accepted.priority; via=sendto|fastopen; settos=N\n"
          "exit: 0 ok, 1 failure (FAIL line on stderr), 77 all skipped, 2 usage\n",
          "all", "qos", "", "");
}

void on_alarm(int) {
  static const char head[] = "FAIL ";
  static const char tail[] = ": timeout, expected completion within 60 s got SIGALRM\n";
  const char *name = g_scenario;
  if (write(2, head, sizeof head - 1) < 0 || write(2, name, strlen(name)) < 0 ||
      write(2, tail, sizeof tail - 1) < 0) {
  }
  _exit(1);
}

}  // namespace

int main(int argc, char **argv) {
  struct sigaction sa {};
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);  // as most network programs do; sends also use MSG_NOSIGNAL
  alarm(60);
  g_verbose = getenv("GSPROBE_VERBOSE") && *getenv("GSPROBE_VERBOSE") && strcmp(getenv("GSPROBE_VERBOSE"), "0") != 0;

  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "qos")) return run_qos(argc - 2, argv + 2);

  std::vector<const Scenario *> todo;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "all")) {
      for (const Scenario &s : kScenarios) todo.push_back(&s);
      continue;
    }
    const Scenario *found = nullptr;
    for (const Scenario &s : kScenarios)
      if (!strcmp(argv[i], s.name)) found = &s;
    if (!found) usage_error("unknown scenario %s", argv[i]);
    todo.push_back(found);
  }
  size_t skipped = 0;
  for (const Scenario *s : todo) {
    g_scenario = s->name;
    try {
      const std::string detail = s->run();
      printf("ok %s: %s\n", s->name, detail.c_str());
    } catch (const Skip &skip) {
      printf("skip %s: %s\n", s->name, skip.why.c_str());
      ++skipped;
    }
    fflush(stdout);
  }
  return skipped == todo.size() ? 77 : 0;
}
