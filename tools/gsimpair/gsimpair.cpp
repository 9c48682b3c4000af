// gsimpair: a UDP relay that impairs the traffic it carries (loss, bursts,
// delay, jitter, reordering, duplication, corruption, a rate limit with a
// drop-tail queue, an MTU), for testing real programs where the kernel has no
// tc netem. The decisions come from the same model as the simulator
// (impair.h); only the clock and the sockets are real here.
//
//   client --> [--listen] gsimpair [one socket per client] --> [--to] server
//   client <-- [--listen] gsimpair [same socket]           <-- server
//
// One thread, epoll; a delivery heap whose earliest time is the wait's
// timeout. Everything queued is bounded (--max-pending bytes, --max-clients).
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tools/gsimpair/impair.h"

namespace {

using gs::impair::Counters;
using gs::impair::LinkParams;
using gs::sansio::kMillisecond;
using gs::sansio::kSecond;
using gs::sansio::Time;

constexpr int kExitUsage = 2;
constexpr std::size_t kMaxDatagram = 65536;
constexpr int kBatch = 32;

const char* const kHelp = R"(usage: gsimpair --listen ADDR:PORT --to ADDR:PORT [impairments] [options]

A UDP relay that impairs what it carries. Clients send to --listen; each
client address gets its own socket towards --to, so the server sees distinct
clients, and the server's replies come back the same way. The two directions
(up: client -> server, down: server -> client) each have their own impairment
state; all clients share them (one path, one bottleneck).

Addresses: 127.0.0.1:9000, [::1]:9000, localhost:9000.

Impairments (all off by default; probabilities as 5% or 0.05):
  --loss P           drop each packet with probability P
  --burst GB,BG[,L]  Gilbert-Elliott burst loss: move good->bad with
                     probability GB and bad->good with BG per packet; in the
                     bad state lose with L (default 100%), in the good state
                     with --loss. Example: --burst 1%,30%
  --delay T          one-way delay added to every packet (20ms, 1.5s, 250us)
  --jitter T         delay varies uniformly within +-T (clamped at 0); packets
                     keep their order unless --jitter-reorders
  --jitter-reorders  let jitter reorder packets (as netem does)
  --reorder P        hold a packet back by --reorder-delay with probability P,
                     so later packets overtake it
  --reorder-delay T  how long a reordered packet is held back (default 10ms)
  --duplicate P      deliver a second copy with probability P
  --corrupt P        flip one random bit of the packet with probability P
  --rate R           bandwidth: 10mbit, 1.5gbit, 64kbit (bits/s) or 2MB/s
                     (bytes/s); packets are serialized at R one after another
  --queue S          drop-tail limit of bytes waiting for --rate: 1500, 256KB,
                     64KiB (default 256KB when --rate is given, else none)
  --mtu S            drop datagrams larger than S bytes

Direction (default --both):
  --both             impair both directions
  --up-only          impair client -> server only; replies pass untouched
  --down-only        impair server -> client only

Options:
  --seed N           seed of the random decisions (default 1); the same seed
                     and the same arrival times give the same decisions
  --stats-interval T a progress line on stderr every T (default 1s; 0 = none)
  --duration T       stop after T (default: run until SIGINT/SIGTERM)
  --max-clients N    client addresses served at once (default 1024); packets
                     from further clients are dropped and counted
  --max-pending S    bytes held for delayed delivery, both directions
                     together (default 64MB); beyond it packets are dropped
                     and counted as overflow
  -h, --help         this text

At exit a JSON line of counters goes to stdout. Exit status: 0 after a
signal or --duration, 1 on a runtime error (a socket could not be made),
2 on bad options.
)";

[[noreturn]] void usage_error(const std::string& msg) {
    std::fprintf(stderr, "gsimpair: %s\n(see gsimpair --help)\n", msg.c_str());
    std::exit(kExitUsage);
}

Time mono_now() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<Time>(ts.tv_sec) * kSecond + ts.tv_nsec;
}

struct SockAddr {
    sockaddr_storage ss{};
    socklen_t len = 0;
    int family() const { return ss.ss_family; }
    std::string str() const {
        char host[INET6_ADDRSTRLEN] = "?";
        unsigned port = 0;
        if (ss.ss_family == AF_INET) {
            auto* s = reinterpret_cast<const sockaddr_in*>(&ss);
            inet_ntop(AF_INET, &s->sin_addr, host, sizeof host);
            port = ntohs(s->sin_port);
            return std::string(host) + ":" + std::to_string(port);
        }
        auto* s = reinterpret_cast<const sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof host);
        port = ntohs(s->sin6_port);
        return "[" + std::string(host) + "]:" + std::to_string(port);
    }
    // Bytes that identify the peer (family, address, port), as a map key.
    std::string key() const {
        if (ss.ss_family == AF_INET) {
            auto* s = reinterpret_cast<const sockaddr_in*>(&ss);
            std::string k(1, '4');
            k.append(reinterpret_cast<const char*>(&s->sin_addr), 4);
            k.append(reinterpret_cast<const char*>(&s->sin_port), 2);
            return k;
        }
        auto* s = reinterpret_cast<const sockaddr_in6*>(&ss);
        std::string k(1, '6');
        k.append(reinterpret_cast<const char*>(&s->sin6_addr), 16);
        k.append(reinterpret_cast<const char*>(&s->sin6_port), 2);
        k.append(reinterpret_cast<const char*>(&s->sin6_scope_id), 4);
        return k;
    }
};

std::optional<SockAddr> resolve(std::string_view text, bool passive) {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) return std::nullopt;
    std::string host(text.substr(0, colon));
    const std::string port(text.substr(colon + 1));
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    unsigned p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || ptr != port.data() + port.size() || p > 65535) return std::nullopt;
    addrinfo hints{};
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr) return std::nullopt;
    SockAddr a;
    std::memcpy(&a.ss, res->ai_addr, res->ai_addrlen);
    a.len = res->ai_addrlen;
    freeaddrinfo(res);
    return a;
}

struct Options {
    SockAddr listen, to;
    LinkParams link;
    bool up = true, down = true;
    bool queue_given = false;
    std::uint64_t seed = 1;
    Time stats_interval = kSecond;
    Time duration = 0;
    std::uint64_t max_clients = 1024;
    std::uint64_t max_pending = 64ull * 1024 * 1024;
};

std::uint64_t parse_count(std::string_view opt, std::string_view v) {
    std::uint64_t n = 0;
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (v.empty() || ec != std::errc() || ptr != v.data() + v.size())
        usage_error(std::string(opt) + ": '" + std::string(v) + "' is not a whole number");
    return n;
}

Options parse_args(int argc, char** argv) {
    Options o;
    bool have_listen = false, have_to = false;
    int directions = 0;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "-h" || arg == "--help") {
            std::fputs(kHelp, stdout);
            std::exit(0);
        }
        if (arg.substr(0, 2) != "--") usage_error("unexpected argument '" + std::string(arg) + "'");
        std::string_view name = arg.substr(2);
        std::optional<std::string_view> value;
        if (auto eq = name.find('='); eq != std::string_view::npos) {
            value = name.substr(eq + 1);
            name = name.substr(0, eq);
        }
        const std::string opt = "--" + std::string(name);
        // Flags first: they take no value.
        if (name == "both" || name == "up-only" || name == "down-only" || name == "jitter-reorders") {
            if (value) usage_error(opt + " takes no value");
            if (name == "jitter-reorders") {
                o.link.jitter_reorders = true;
                continue;
            }
            ++directions;
            o.up = name != "down-only";
            o.down = name != "up-only";
            continue;
        }
        if (!value) {
            if (i + 1 >= argc) usage_error(opt + " needs a value");
            value = std::string_view(argv[++i]);
        }
        const std::string_view v = *value;
        std::string err;
        if (name == "listen" || name == "to") {
            auto a = resolve(v, name == "listen");
            if (!a)
                usage_error(opt + ": '" + std::string(v) +
                            "' is not an address: expected HOST:PORT such as 127.0.0.1:9000 or [::1]:9000");
            (name == "listen" ? o.listen : o.to) = *a;
            (name == "listen" ? have_listen : have_to) = true;
        } else if (name == "seed") {
            o.seed = parse_count(opt, v);
        } else if (name == "max-clients") {
            o.max_clients = parse_count(opt, v);
            if (o.max_clients == 0) usage_error(opt + ": '0' serves nobody: expected at least 1");
        } else if (name == "max-pending") {
            if (gs::impair::parse_size(opt, v, o.max_pending, &err) != 0) usage_error(err);
        } else if (name == "stats-interval") {
            if (gs::impair::parse_duration(opt, v, o.stats_interval, &err) != 0) usage_error(err);
        } else if (name == "duration") {
            if (gs::impair::parse_duration(opt, v, o.duration, &err) != 0) usage_error(err);
        } else if (name == "loss" || name == "burst" || name == "delay" || name == "jitter" ||
                   name == "reorder" || name == "reorder-delay" || name == "duplicate" ||
                   name == "corrupt" || name == "rate" || name == "queue" || name == "mtu") {
            if (gs::impair::set_link_option(o.link, name, v, &err) != 0) usage_error(err);
            if (name == "queue") o.queue_given = true;
        } else {
            usage_error("unknown option '" + opt + "'");
        }
    }
    if (!have_listen) usage_error("--listen ADDR:PORT is required");
    if (!have_to) usage_error("--to ADDR:PORT is required");
    if (directions > 1) usage_error("--both, --up-only and --down-only exclude each other");
    if (o.link.rate_bps != 0 && !o.queue_given) o.link.queue_limit = 256'000;
    if (const std::string bad = o.link.validate(); !bad.empty()) usage_error(bad);
    return o;
}

// One direction of the relay: its impairment state and what it did.
struct Direction {
    const char* name;
    gs::impair::Link link;
    std::uint64_t sent = 0;     // datagrams handed to the kernel
    std::uint64_t send_errors = 0;
    std::uint64_t overflow = 0; // dropped: --max-pending reached
    std::string json() const {
        std::string j = link.counters().json();
        j.pop_back();
        j += ",\"sent\":" + std::to_string(sent) + ",\"send_errors\":" + std::to_string(send_errors) +
             ",\"overflow\":" + std::to_string(overflow) + "}";
        return j;
    }
};

struct Client {
    SockAddr addr;
    int fd = -1;   // connected to --to
};

struct Pending {
    Time at;
    std::uint64_t seq;
    std::uint32_t client;
    bool up;
    std::vector<std::uint8_t> bytes;
};
struct PendingLater {
    bool operator()(const Pending& a, const Pending& b) const {
        return a.at != b.at ? a.at > b.at : a.seq > b.seq;
    }
};

class Relay {
public:
    explicit Relay(const Options& o)
        : o_(o),
          up_{"up", gs::impair::Link(o.up ? o.link : LinkParams{}, gs::impair::mix64(o.seed)), 0, 0, 0},
          down_{"down", gs::impair::Link(o.down ? o.link : LinkParams{}, gs::impair::mix64(~o.seed)), 0, 0, 0} {}

    int setup();
    int run();
    void print_final();

private:
    void on_listen_readable(Time now);
    void on_client_readable(std::uint32_t idx, Time now);
    void offer(Direction& d, bool up, std::uint32_t client, const std::uint8_t* data, std::size_t n, Time now);
    void deliver_due(Time now);
    void stats_line(Time now);
    int client_for(const SockAddr& from);

    Options o_;
    Direction up_, down_;
    int ep_ = -1, lfd_ = -1, sigfd_ = -1;
    std::vector<Client> clients_;
    std::unordered_map<std::string, std::uint32_t> by_addr_;
    std::uint64_t clients_refused_ = 0;
    std::uint64_t upstream_errors_ = 0;
    std::vector<Pending> heap_;
    std::uint64_t seq_ = 0;
    std::uint64_t pending_bytes_ = 0;
    Time start_ = 0;
    bool stop_ = false;
    // Receive batch buffers.
    std::vector<std::uint8_t> buf_ = std::vector<std::uint8_t>(kBatch * kMaxDatagram);
    mmsghdr msgs_[kBatch]{};
    iovec iov_[kBatch]{};
    sockaddr_storage from_[kBatch]{};
};

constexpr std::uint64_t kTagListen = 0, kTagSignal = 1, kTagClient = 16;

int Relay::setup() {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) return -errno;
    lfd_ = socket(o_.listen.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd_ < 0) return -errno;
    int one = 1;
    setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int big = 1 << 21;   // best effort: a relay that buffers bursts drops less in the kernel
    setsockopt(lfd_, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(lfd_, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (bind(lfd_, reinterpret_cast<const sockaddr*>(&o_.listen.ss), o_.listen.len) != 0) {
        const int e = errno;
        std::fprintf(stderr, "gsimpair: cannot bind %s: %s\n", o_.listen.str().c_str(), std::strerror(e));
        return -e;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kTagListen;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, lfd_, &ev) != 0) return -errno;

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) return -errno;
    sigfd_ = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sigfd_ < 0) return -errno;
    ev.data.u64 = kTagSignal;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, sigfd_, &ev) != 0) return -errno;

    for (int i = 0; i < kBatch; ++i) {
        iov_[i].iov_base = buf_.data() + static_cast<std::size_t>(i) * kMaxDatagram;
        iov_[i].iov_len = kMaxDatagram;
    }
    return 0;
}

// The client's index, making its upstream socket on first sight; -1 when it
// cannot be served (too many clients, or no socket).
int Relay::client_for(const SockAddr& from) {
    const std::string key = from.key();
    if (auto it = by_addr_.find(key); it != by_addr_.end()) return static_cast<int>(it->second);
    if (clients_.size() >= o_.max_clients) {
        ++clients_refused_;
        return -1;
    }
    const int fd = socket(o_.to.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ++upstream_errors_;
        return -1;
    }
    int big = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&o_.to.ss), o_.to.len) != 0) {
        ++upstream_errors_;
        close(fd);
        return -1;
    }
    const auto idx = static_cast<std::uint32_t>(clients_.size());
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kTagClient + idx;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) {
        ++upstream_errors_;
        close(fd);
        return -1;
    }
    clients_.push_back(Client{from, fd});
    by_addr_.emplace(key, idx);
    return static_cast<int>(idx);
}

void Relay::offer(Direction& d, bool up, std::uint32_t client, const std::uint8_t* data, std::size_t n,
                  Time now) {
    const gs::impair::Decision dec = d.link.offer(n, now);
    for (int k = 0; k < dec.count; ++k) {
        if (pending_bytes_ + n > o_.max_pending) {
            ++d.overflow;
            continue;
        }
        Pending p{dec.d[k].at, seq_++, client, up, std::vector<std::uint8_t>(data, data + n)};
        gs::impair::apply_flip(p.bytes, dec.d[k].flip_bit);
        pending_bytes_ += n;
        heap_.push_back(std::move(p));
        std::push_heap(heap_.begin(), heap_.end(), PendingLater{});
    }
}

void Relay::on_listen_readable(Time now) {
    // Bounded per wakeup so one busy side cannot starve the other.
    for (int round = 0; round < 8; ++round) {
        for (int i = 0; i < kBatch; ++i) {
            msgs_[i].msg_hdr = msghdr{};
            msgs_[i].msg_hdr.msg_name = &from_[i];
            msgs_[i].msg_hdr.msg_namelen = sizeof from_[i];
            msgs_[i].msg_hdr.msg_iov = &iov_[i];
            msgs_[i].msg_hdr.msg_iovlen = 1;
        }
        const int got = recvmmsg(lfd_, msgs_, kBatch, MSG_DONTWAIT, nullptr);
        if (got <= 0) return;
        for (int i = 0; i < got; ++i) {
            SockAddr from;
            std::memcpy(&from.ss, &from_[i], msgs_[i].msg_hdr.msg_namelen);
            from.len = msgs_[i].msg_hdr.msg_namelen;
            const int c = client_for(from);
            if (c < 0) continue;
            offer(up_, true, static_cast<std::uint32_t>(c), static_cast<std::uint8_t*>(iov_[i].iov_base),
                  msgs_[i].msg_len, now);
        }
        if (got < kBatch) return;
    }
}

void Relay::on_client_readable(std::uint32_t idx, Time now) {
    if (idx >= clients_.size()) return;
    const int fd = clients_[idx].fd;
    for (int round = 0; round < 8; ++round) {
        for (int i = 0; i < kBatch; ++i) {
            msgs_[i].msg_hdr = msghdr{};
            msgs_[i].msg_hdr.msg_iov = &iov_[i];
            msgs_[i].msg_hdr.msg_iovlen = 1;
        }
        const int got = recvmmsg(fd, msgs_, kBatch, MSG_DONTWAIT, nullptr);
        if (got <= 0) {
            // ECONNREFUSED: an ICMP error from the server side; nothing to read.
            return;
        }
        for (int i = 0; i < got; ++i)
            offer(down_, false, idx, static_cast<std::uint8_t*>(iov_[i].iov_base), msgs_[i].msg_len, now);
        if (got < kBatch) return;
    }
}

void Relay::deliver_due(Time now) {
    while (!heap_.empty() && heap_.front().at <= now) {
        std::pop_heap(heap_.begin(), heap_.end(), PendingLater{});
        Pending p = std::move(heap_.back());
        heap_.pop_back();
        pending_bytes_ -= p.bytes.size();
        const Client& c = clients_[p.client];
        Direction& d = p.up ? up_ : down_;
        const ssize_t r = p.up ? send(c.fd, p.bytes.data(), p.bytes.size(), MSG_DONTWAIT)
                               : sendto(lfd_, p.bytes.data(), p.bytes.size(), MSG_DONTWAIT,
                                        reinterpret_cast<const sockaddr*>(&c.addr.ss), c.addr.len);
        if (r < 0) ++d.send_errors; else ++d.sent;
    }
}

void Relay::stats_line(Time now) {
    auto dir = [](const Direction& d) {
        const Counters& c = d.link.counters();
        char b[256];
        std::snprintf(b, sizeof b, "%s in=%llu out=%llu drop=%llu dup=%llu reord=%llu corrupt=%llu",
                      d.name, (unsigned long long)c.packets_in, (unsigned long long)d.sent,
                      (unsigned long long)(c.dropped() + d.overflow), (unsigned long long)c.duplicated,
                      (unsigned long long)c.reordered, (unsigned long long)c.corrupted);
        return std::string(b);
    };
    std::fprintf(stderr, "gsimpair %.1fs clients=%zu pending=%zu %s | %s\n",
                 static_cast<double>(now - start_) / kSecond, clients_.size(), heap_.size(),
                 dir(up_).c_str(), dir(down_).c_str());
}

int Relay::run() {
    start_ = mono_now();
    const Time end = o_.duration > 0 ? start_ + o_.duration : gs::sansio::kNever;
    Time next_stats = o_.stats_interval > 0 ? start_ + o_.stats_interval : gs::sansio::kNever;
    bool have_pwait2 = true;
    epoll_event evs[64];
    while (!stop_) {
        Time now = mono_now();
        deliver_due(now);
        if (now >= next_stats) {
            stats_line(now);
            while (next_stats <= now) next_stats += o_.stats_interval;
        }
        if (now >= end) break;
        Time wake = std::min(end, next_stats);
        if (!heap_.empty()) wake = std::min(wake, heap_.front().at);
        int n;
        if (have_pwait2) {
            timespec ts{};
            timespec* tp = nullptr;
            if (wake != gs::sansio::kNever) {
                const Time dt = std::max<Time>(0, wake - now);
                ts.tv_sec = dt / kSecond;
                ts.tv_nsec = dt % kSecond;
                tp = &ts;
            }
            n = epoll_pwait2(ep_, evs, 64, tp, nullptr);
            if (n < 0 && errno == ENOSYS) {
                have_pwait2 = false;
                continue;
            }
        } else {
            int ms = -1;
            if (wake != gs::sansio::kNever)
                ms = static_cast<int>(std::min<Time>((std::max<Time>(0, wake - now) + kMillisecond - 1) / kMillisecond, 1 << 30));
            n = epoll_wait(ep_, evs, 64, ms);
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            std::fprintf(stderr, "gsimpair: epoll: %s\n", std::strerror(errno));
            return 1;
        }
        now = mono_now();
        for (int i = 0; i < n; ++i) {
            const std::uint64_t tag = evs[i].data.u64;
            if (tag == kTagListen) {
                on_listen_readable(now);
            } else if (tag == kTagSignal) {
                signalfd_siginfo si;
                while (read(sigfd_, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) stop_ = true;
            } else {
                on_client_readable(static_cast<std::uint32_t>(tag - kTagClient), now);
            }
        }
    }
    return 0;
}

void Relay::print_final() {
    const Time now = mono_now();
    std::printf("{\"elapsed_s\":%.3f,\"clients\":%zu,\"clients_refused\":%llu,\"upstream_errors\":%llu,"
                "\"pending_at_exit\":%zu,\"up\":%s,\"down\":%s}\n",
                static_cast<double>(now - start_) / kSecond, clients_.size(),
                (unsigned long long)clients_refused_, (unsigned long long)upstream_errors_, heap_.size(),
                up_.json().c_str(), down_.json().c_str());
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse_args(argc, argv);
    Relay relay(o);
    if (const int rc = relay.setup(); rc != 0) {
        std::fprintf(stderr, "gsimpair: setup failed: %s\n", std::strerror(-rc));
        return 1;
    }
    std::fprintf(stderr, "gsimpair: %s -> %s\n", o.listen.str().c_str(), o.to.str().c_str());
    const int rc = relay.run();
    relay.print_final();
    return rc;
}
