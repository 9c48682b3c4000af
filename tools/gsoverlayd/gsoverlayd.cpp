// gsoverlayd: the overlay server. Keeps the attributes of each overlay ID,
// hands them to joiners and helps them find current members (server.h has
// the logic, server_wire.h the protocol). One UDP socket, poll(), a
// signalfd; the state (overlays and their attributes) is saved to
// --state-dir with an atomic rename whenever it changes and reloaded at start.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include "core/overlay/config/config.h"
#include "tools/gsoverlayd/server.h"

namespace {

using gs::overlay::server::Limits;
using gs::overlay::server::Server;
using gs::sansio::Addr;
using gs::sansio::kMillisecond;
using gs::sansio::kSecond;
using gs::sansio::Time;

constexpr int kExitUsage = 2;
constexpr const char* kStateFile = "gsoverlayd.state";
constexpr Time kSummaryEvery = 10 * kSecond;

const char* const kHelp = R"(usage: gsoverlayd [options]

The overlay server (docs/overlay.md). Keeps the attributes of each overlay ID,
hands them to members (GET), registers members with a lease and answers a
joiner with current members to bootstrap from (JOIN), over UDP, protocol
version 1. Members keep working while it is down.

Options:
  --listen ADDR:PORT   where to listen (default 127.0.0.1:8081; [::]:8081,
                       0.0.0.0:8081; port 0 picks a free one, logged)
  --state-dir DIR      keep the overlays in DIR/gsoverlayd.state (created if
                       missing), saved on every change, reloaded at start;
                       without it the state lives in memory only
  --max-overlays N     overlays kept (default 1024); further CREATEs refused
  --max-members N      members per overlay (default 1024); further JOINs refused
  --lease-default T    lease of a member that asks for none (default 30s)
  --lease-min T        shortest lease granted (default 1s)
  --lease-max T        longest lease granted (default 1h)
  -h, --help           this text

Durations: 500ms, 30s, 2m. Logs one line per event on stderr (overlay
created or refused, member joined, left or expired, a summary of malformed
requests at most every 10 s). SIGTERM or SIGINT: saves, prints the counters
and exits 0. Exit status 1: the socket or the state could not be set up;
2: bad options.
)";

[[noreturn]] void usage_error(const std::string& msg) {
    std::fprintf(stderr, "gsoverlayd: %s\n(see gsoverlayd --help)\n", msg.c_str());
    std::exit(kExitUsage);
}

void log_line(const std::string& s) {
    std::fprintf(stderr, "gsoverlayd: %s\n", s.c_str());
    std::fflush(stderr);
}

Time mono_now() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<Time>(ts.tv_sec) * kSecond + ts.tv_nsec;
}

bool parse_count(std::string_view s, std::size_t& out) {
    std::uint64_t v = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec != std::errc{} || r.ptr != s.data() + s.size() || v == 0 || v > 1'000'000) return false;
    out = static_cast<std::size_t>(v);
    return true;
}

bool parse_time(std::string_view s, Time& out) {
    std::uint64_t v = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec != std::errc{} || v > 1'000'000'000) return false;
    const std::string_view unit(r.ptr, static_cast<std::size_t>(s.data() + s.size() - r.ptr));
    Time mul = 0;
    if (unit == "ms") mul = kMillisecond;
    else if (unit == "s") mul = kSecond;
    else if (unit == "m") mul = 60 * kSecond;
    else return false;
    out = static_cast<Time>(v) * mul;
    return out > 0;
}

Addr from_sockaddr(const sockaddr_storage& ss) {
    Addr a;
    if (ss.ss_family == AF_INET) {
        const auto* s = reinterpret_cast<const sockaddr_in*>(&ss);
        a = Addr::v4(ntohl(s->sin_addr.s_addr), ntohs(s->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const auto* s = reinterpret_cast<const sockaddr_in6*>(&ss);
        std::memcpy(a.ip.data(), &s->sin6_addr, 16);
        a.port = ntohs(s->sin6_port);
    }
    return a;
}

// The socket address for `a` in the socket's family.
socklen_t to_sockaddr(const Addr& a, int family, sockaddr_storage& ss) {
    std::memset(&ss, 0, sizeof ss);
    if (family == AF_INET) {
        auto* s = reinterpret_cast<sockaddr_in*>(&ss);
        s->sin_family = AF_INET;
        std::memcpy(&s->sin_addr, a.ip.data() + 12, 4);
        s->sin_port = htons(a.port);
        return sizeof *s;
    }
    auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
    s->sin6_family = AF_INET6;
    std::memcpy(&s->sin6_addr, a.ip.data(), 16);
    s->sin6_port = htons(a.port);
    return sizeof *s;
}

// Writes the state next to the file, flushes it and renames it into place,
// so a crash leaves either the old or the new state, never half of one.
int save_state(const std::string& dir, const std::string& text) {
    const std::string tmp = dir + "/" + kStateFile + ".tmp";
    const std::string dst = dir + "/" + kStateFile;
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    std::size_t off = 0;
    while (off < text.size()) {
        const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int e = errno;
            ::close(fd);
            return -e;
        }
        off += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) return -errno;
    if (::rename(tmp.c_str(), dst.c_str()) != 0) return -errno;
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
    return 0;
}

std::string stats_line(const Server& s) {
    const auto& st = s.stats();
    std::ostringstream o;
    o << "requests=" << st.requests << " answered=" << st.answered << " dropped=" << st.dropped
      << " malformed=" << st.malformed << " bad_version=" << st.bad_version
      << " conflicts=" << st.conflicts << " bad_attributes=" << st.bad_attributes
      << " full=" << st.full << " created=" << st.created << " joins=" << st.joins
      << " renews=" << st.renews << " leaves=" << st.leaves << " expired=" << st.expired
      << " overlays=" << s.overlay_count() << " members=" << s.member_count();
    return o.str();
}

}  // namespace

int main(int argc, char** argv) {
    std::string listen = "127.0.0.1:8081";
    std::string state_dir;
    Limits limits;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            std::fputs(kHelp, stdout);
            return 0;
        }
        if (i + 1 >= argc) usage_error("unknown option or missing value: " + a);
        const std::string v = argv[++i];
        if (a == "--listen") listen = v;
        else if (a == "--state-dir") state_dir = v;
        else if (a == "--max-overlays") {
            if (!parse_count(v, limits.max_overlays)) usage_error("--max-overlays " + v + ": expected 1 to 1000000");
        } else if (a == "--max-members") {
            if (!parse_count(v, limits.max_members)) usage_error("--max-members " + v + ": expected 1 to 1000000");
        } else if (a == "--lease-default") {
            if (!parse_time(v, limits.lease_default)) usage_error("--lease-default " + v + ": expected a duration such as 30s");
        } else if (a == "--lease-min") {
            if (!parse_time(v, limits.lease_min)) usage_error("--lease-min " + v + ": expected a duration such as 1s");
        } else if (a == "--lease-max") {
            if (!parse_time(v, limits.lease_max)) usage_error("--lease-max " + v + ": expected a duration such as 1h");
        } else {
            usage_error("unknown option " + a);
        }
    }
    if (limits.lease_min > limits.lease_max) usage_error("--lease-min is longer than --lease-max");
    limits.lease_default = std::clamp(limits.lease_default, limits.lease_min, limits.lease_max);
    Addr bind_addr;
    if (!gs::overlay::parse_addr(listen, bind_addr))
        usage_error("--listen " + listen + ": expected ADDR:PORT such as 127.0.0.1:8081 or [::]:8081");

    Server server(limits);
    if (!state_dir.empty()) {
        if (::mkdir(state_dir.c_str(), 0755) != 0 && errno != EEXIST) {
            log_line("cannot create --state-dir " + state_dir + ": " + std::strerror(errno));
            return 1;
        }
        const std::string path = state_dir + "/" + kStateFile;
        std::ifstream f(path, std::ios::binary);
        if (f) {
            std::stringstream ss;
            ss << f.rdbuf();
            std::vector<std::string> errors;
            if (server.load(ss.str(), path, errors) != 0) {
                for (const auto& e : errors) log_line(e);
                log_line("state file " + path + " is damaged; fix or move it away (refusing to start)");
                return 1;
            }
            log_line("loaded " + std::to_string(server.overlay_count()) + " overlays from " + path);
        }
    } else {
        log_line("no --state-dir: overlays are kept in memory only");
    }

    const int family = bind_addr.is_v4() ? AF_INET : AF_INET6;
    const int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_line(std::string("socket: ") + std::strerror(errno));
        return 1;
    }
    sockaddr_storage ss{};
    socklen_t len = to_sockaddr(bind_addr, family, ss);
    if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        log_line("cannot listen on " + listen + ": " + std::strerror(errno));
        return 1;
    }
    len = sizeof ss;
    getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    log_line("listening on " + from_sockaddr(ss).str() + " (protocol version 1)");

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    const int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        log_line(std::string("signalfd: ") + std::strerror(errno));
        return 1;
    }

    auto persist = [&] {
        if (state_dir.empty() || !server.dirty()) return;
        const int r = save_state(state_dir, server.save());
        if (r != 0) {
            log_line("cannot save the state to " + state_dir + ": " + std::strerror(-r) +
                     " (kept in memory, retried on the next change)");
            return;
        }
        server.clear_dirty();
    };
    auto drain_events = [&] {
        std::string line;
        while (server.poll_event(line)) log_line(line);
    };

    std::uint64_t reported_bad = 0;
    Time last_summary = mono_now();
    std::vector<std::uint8_t> buf(gs::overlay::server::kMaxDatagram + 1);
    std::vector<std::uint8_t> reply;
    bool running = true;
    while (running) {
        Time now = mono_now();
        const Time next = server.next_expiry();
        int timeout = 1000;
        if (next != gs::sansio::kNever)
            timeout = static_cast<int>(std::clamp<Time>((next - now) / kMillisecond + 1, 0, 1000));
        pollfd p[2] = {{fd, POLLIN, 0}, {sfd, POLLIN, 0}};
        const int r = poll(p, 2, timeout);
        if (r < 0 && errno != EINTR) {
            log_line(std::string("poll: ") + std::strerror(errno));
            break;
        }
        now = mono_now();
        if (r > 0 && (p[1].revents & POLLIN)) {
            signalfd_siginfo si{};
            if (read(sfd, &si, sizeof si) > 0)
                log_line(std::string("exiting on ") + strsignal(static_cast<int>(si.ssi_signo)));
            running = false;
        }
        // A bounded batch per wakeup, so signals and expiry are not starved.
        for (int batch = 0; running && batch < 64; ++batch) {
            sockaddr_storage from{};
            socklen_t flen = sizeof from;
            const ssize_t n = recvfrom(fd, buf.data(), buf.size(), 0,
                                       reinterpret_cast<sockaddr*>(&from), &flen);
            if (n < 0) break;   // EAGAIN, or an ICMP error for an earlier answer
            const Addr src = from_sockaddr(from);
            now = mono_now();   // per request: "freshest first" needs distinct times
            if (server.handle(src, std::span(buf.data(), static_cast<std::size_t>(n)), now, reply)) {
                persist();   // before the answer: an acknowledged CREATE is on disk
                sockaddr_storage to{};
                const socklen_t tlen = to_sockaddr(src, family, to);
                sendto(fd, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&to), tlen);
            }
        }
        server.expire(now);
        drain_events();
        const auto& st = server.stats();
        const std::uint64_t bad = st.malformed + st.dropped + st.bad_version;
        if (bad != reported_bad && now - last_summary >= kSummaryEvery) {
            log_line(std::to_string(bad - reported_bad) + " bad requests in the last period (" +
                     std::to_string(st.malformed) + " malformed, " + std::to_string(st.dropped) +
                     " dropped, " + std::to_string(st.bad_version) + " bad version in all)");
            reported_bad = bad;
            last_summary = now;
        }
    }
    persist();
    drain_events();
    log_line("counters: " + stats_line(server));
    ::close(sfd);
    ::close(fd);
    return 0;
}
