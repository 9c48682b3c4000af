// rt_stream: a paced realtime UDP stream and its measurement (issue 5).
//
// `send` emits N messages of B bytes at a steady rate, one every B*8/R
// seconds (an absolute schedule: clock_nanosleep to just before each slot,
// then a short busy-wait, so messages never leave in bursts unless the
// sender has fallen behind). Each message carries a header: magic, a stream
// id, its sequence number, N, the schedule's interval and the time it was
// sent (CLOCK_MONOTONIC; network namespaces on one host share that clock, so
// the receiver's clock minus the send time is the one-way delay).
// `recv` takes the messages, keeps one record per sequence number, and at the
// end prints one JSON line: received, lost, duplicates, reordered, on-time
// (arrived by send time + latency), late, one-way delay p50/p99/max, RFC 3550
// interarrival jitter, bytes and goodput.
// Plain UDP sockets only (sendto, recvmmsg): the tool is an unmodified program
// for gsrun/LD_PRELOAD and for srt-live-transmit's udp:// gateway.
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: rt_stream send --to ADDR:PORT --rate R --size B --count N [--bind ADDR:PORT] [--spin T]\n"
    "                      [--progress S]\n"
    "       rt_stream recv --listen ADDR:PORT --latency T --count N [--timeout S] [--tolerance T]\n"
    "                      [--progress S]\n"
    "\n"
    "send: N messages of B bytes (>= 40) to ADDR:PORT at R bits/s of payload (10mbit, 1.5gbit,\n"
    "  800kbit, or a plain number of bits/s), evenly spaced: sleep (clock_nanosleep, absolute) until\n"
    "  --spin T (default 50us) before each message's slot, then busy-wait to the slot. A sender that\n"
    "  falls behind sends at once to catch up; how far behind it fell is reported. Each message carries\n"
    "  its sequence number and send time (CLOCK_MONOTONIC). At the end one JSON line on stdout:\n"
    "  sent, errors (sendto failures, e.g. ECONNREFUSED or ENOBUFS), seconds, mbit (payload rate\n"
    "  achieved), behind_max_us and behind_p99_us (send time minus scheduled time).\n"
    "recv: receives on ADDR:PORT (0.0.0.0:PORT for any address) until all N messages have arrived,\n"
    "  or --timeout S (default 5) seconds pass without a message (before the first: at least 10). One\n"
    "  JSON line on stdout:\n"
    "    count, received (distinct messages), lost (count - received), duplicates, reordered (arrived\n"
    "    after a higher sequence number), on_time (arrived by send time + latency + tolerance),\n"
    "    on_time_ratio (on_time / count), late (received but not on time), on_time_strict_ratio\n"
    "    (by send time + latency, no tolerance), delay_min/p50/p99/max_ms (one-way, over received\n"
    "    messages), jitter_ms (RFC 3550 interarrival jitter, in arrival order), bytes (payload of\n"
    "    distinct messages), seconds (first to last arrival), goodput_mbit (bytes after the first message over seconds),\n"
    "    foreign (datagrams of another stream or malformed, ignored), latency_ms, tolerance_ms,\n"
    "    late_first and late_last (the lowest and highest sequence number of a late message, -1:\n"
    "    none: where in the stream the lateness was), lost_runs (runs of consecutive missing\n"
    "    messages), lost_tail (missing messages past the highest one received: lost at the stream's\n"
    "    end) and lost_first_runs (the first 8 runs, [first,last] sequence numbers).\n"
    "  --tolerance T (default 0) is added to the latency bound for on_time: a gateway that releases\n"
    "  messages exactly at its own latency (SRT's TSBPD) hands them on a little after the bound.\n"
    "Times: 120ms, 0.12s, 250us; a plain number is milliseconds. --progress S: a line on stderr every S\n"
    "seconds (default 1; 0 = none). Exit status: 0, 1 on a socket error, 2 on bad options.\n";

constexpr uint32_t kMagic = 0x52545331;   // "RTS1"
constexpr size_t kHeader = 40;

struct Header {   // network byte order on the wire, packed by hand
    uint32_t magic;
    uint32_t stream;
    uint64_t seq;
    uint64_t count;
    uint64_t interval_ns;
    uint64_t send_ns;
};

void put64(unsigned char* p, uint64_t v) {
    for (int i = 7; i >= 0; --i) {
        p[i] = static_cast<unsigned char>(v & 0xff);
        v >>= 8;
    }
}
uint64_t get64(const unsigned char* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
    return v;
}
void put32(unsigned char* p, uint32_t v) {
    for (int i = 3; i >= 0; --i) {
        p[i] = static_cast<unsigned char>(v & 0xff);
        v >>= 8;
    }
}
uint32_t get32(const unsigned char* p) {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

void encode(unsigned char* p, const Header& h) {
    put32(p, h.magic);
    put32(p + 4, h.stream);
    put64(p + 8, h.seq);
    put64(p + 16, h.count);
    put64(p + 24, h.interval_ns);
    put64(p + 32, h.send_ns);
}
Header decode(const unsigned char* p) {
    return Header{get32(p), get32(p + 4), get64(p + 8), get64(p + 16), get64(p + 24), get64(p + 32)};
}

int64_t mono_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

// "120ms", "0.12s", "250us", "5ns", "120" (ms) -> nanoseconds, or -1.
int64_t parse_time(const char* s) {
    char* end = nullptr;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0)) return -1;
    std::string_view u(end);
    double mul = 1e6;
    if (u == "s") mul = 1e9;
    else if (u == "ms" || u.empty()) mul = 1e6;
    else if (u == "us") mul = 1e3;
    else if (u == "ns") mul = 1;
    else return -1;
    return static_cast<int64_t>(v * mul + 0.5);
}

// "20mbit", "1.5gbit", "800kbit", "64000" (bits/s), "2MB/s" (bytes/s) -> bits/s, or -1.
double parse_rate(const char* s) {
    char* end = nullptr;
    double v = strtod(s, &end);
    if (end == s || !(v > 0)) return -1;
    std::string u(end);
    for (auto& c : u) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    if (u.empty() || u == "bit" || u == "bps") return v;
    if (u == "kbit" || u == "k") return v * 1e3;
    if (u == "mbit" || u == "m") return v * 1e6;
    if (u == "gbit" || u == "g") return v * 1e9;
    if (u == "kb/s") return v * 8e3;
    if (u == "mb/s") return v * 8e6;
    if (u == "gb/s") return v * 8e9;
    return -1;
}

bool parse_u64(const char* s, uint64_t* out) {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0 || s[0] == '-') return false;
    *out = v;
    return true;
}

// "1.2.3.4:5", "[::1]:5", "localhost:5" -> address; false when it does not parse or resolve.
bool parse_addr(const char* s, sockaddr_storage* out, socklen_t* len) {
    std::string in(s), host, port;
    if (!in.empty() && in[0] == '[') {
        size_t close_at = in.find(']');
        if (close_at == std::string::npos || close_at + 1 >= in.size() || in[close_at + 1] != ':') return false;
        host = in.substr(1, close_at - 1);
        port = in.substr(close_at + 2);
    } else {
        size_t colon = in.rfind(':');
        if (colon == std::string::npos) return false;
        host = in.substr(0, colon);
        port = in.substr(colon + 1);
    }
    if (host.empty()) host = "0.0.0.0";
    addrinfo hints{};
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res) return false;
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return true;
}

// Large socket buffers: past rmem_max/wmem_max as root, else as much as allowed.
void big_buffers(int fd) {
    int big = 32 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) != 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
}

struct Opts {
    const char* to = nullptr;
    const char* bind = nullptr;
    const char* listen = nullptr;
    double rate = -1;
    uint64_t size = 1316, count = 0;
    int64_t spin_ns = 50000, latency_ns = -1, tolerance_ns = 0, timeout_ns = 5000000000, progress_ns = 1000000000;
};

double percentile(std::vector<int64_t>& v, double p) {   // v sorted
    if (v.empty()) return 0;
    size_t i = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size()))) - (p > 0 ? 1 : 0);
    return static_cast<double>(v[std::min(i, v.size() - 1)]);
}

int run_send(const Opts& o) {
    sockaddr_storage to{};
    socklen_t to_len = 0;
    if (!parse_addr(o.to, &to, &to_len)) {
        fprintf(stderr, "rt_stream send: cannot parse or resolve --to %s\n", o.to);
        return 2;
    }
    int fd = socket(to.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "rt_stream send: socket: %s\n", strerror(errno));
        return 1;
    }
    big_buffers(fd);
    if (o.bind) {
        sockaddr_storage b{};
        socklen_t bl = 0;
        if (!parse_addr(o.bind, &b, &bl)) {
            fprintf(stderr, "rt_stream send: cannot parse --bind %s\n", o.bind);
            return 2;
        }
        if (bind(fd, reinterpret_cast<sockaddr*>(&b), bl) != 0) {
            fprintf(stderr, "rt_stream send: bind %s: %s\n", o.bind, strerror(errno));
            return 1;
        }
    }
    // A precise sleep: the default 50 us timer slack would be most of the margin.
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    const double interval = static_cast<double>(o.size) * 8.0 / o.rate * 1e9;
    std::vector<unsigned char> buf(o.size, 0);
    for (size_t i = kHeader; i < buf.size(); ++i) buf[i] = static_cast<unsigned char>(i * 131);
    Header h{kMagic, 0, 0, o.count, static_cast<uint64_t>(interval), 0};
    h.stream = static_cast<uint32_t>(mono_ns() ^ (static_cast<int64_t>(getpid()) << 16));
    std::vector<int64_t> behind;
    behind.reserve(std::min<uint64_t>(o.count, 50000000));
    uint64_t sent = 0, errors = 0;
    int first_errno = 0;
    const int64_t t0 = mono_ns() + 1000000;   // the first slot 1 ms from now
    int64_t next_progress = t0 + o.progress_ns;
    uint64_t progress_sent = 0;
    for (uint64_t i = 0; i < o.count && !g_stop; ++i) {
        const int64_t slot = t0 + static_cast<int64_t>(static_cast<double>(i) * interval);
        int64_t now = mono_ns();
        if (slot - now > o.spin_ns) {
            const int64_t wake = slot - o.spin_ns;
            timespec ts{static_cast<time_t>(wake / 1000000000), static_cast<long>(wake % 1000000000)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR && !g_stop) {}
        }
        while ((now = mono_ns()) < slot) {}
        h.seq = i;
        h.send_ns = static_cast<uint64_t>(now);
        encode(buf.data(), h);
        ssize_t r = sendto(fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&to), to_len);
        if (r < 0) {
            if (!first_errno) first_errno = errno;
            ++errors;
        } else {
            ++sent;
        }
        behind.push_back(now - slot);
        if (o.progress_ns > 0 && now >= next_progress) {
            fprintf(stderr, "rt_stream send: %" PRIu64 "/%" PRIu64 " sent, %.1f Mbit/s\n", sent, o.count,
                    static_cast<double>(sent - progress_sent) * static_cast<double>(o.size) * 8 /
                        (static_cast<double>(o.progress_ns) / 1e9) / 1e6);
            progress_sent = sent;
            next_progress += o.progress_ns;
        }
    }
    const double secs = static_cast<double>(mono_ns() - t0) / 1e9;
    std::sort(behind.begin(), behind.end());
    printf("{\"sent\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"first_error\":\"%s\",\"size\":%" PRIu64
           ",\"seconds\":%.6f,\"mbit\":%.3f,\"rate_mbit\":%.3f,\"behind_p99_us\":%.1f,\"behind_max_us\":%.1f}\n",
           sent, errors, first_errno ? strerror(first_errno) : "", o.size, secs,
           secs > 0 ? static_cast<double>(sent * o.size) * 8 / secs / 1e6 : 0.0, o.rate / 1e6,
           percentile(behind, 0.99) / 1e3, behind.empty() ? 0.0 : static_cast<double>(behind.back()) / 1e3);
    fflush(stdout);
    close(fd);
    return 0;
}

int run_recv(const Opts& o) {
    sockaddr_storage la{};
    socklen_t la_len = 0;
    if (!parse_addr(o.listen, &la, &la_len)) {
        fprintf(stderr, "rt_stream recv: cannot parse or resolve --listen %s\n", o.listen);
        return 2;
    }
    int fd = socket(la.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "rt_stream recv: socket: %s\n", strerror(errno));
        return 1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    big_buffers(fd);
    if (bind(fd, reinterpret_cast<sockaddr*>(&la), la_len) != 0) {
        fprintf(stderr, "rt_stream recv: bind %s: %s\n", o.listen, strerror(errno));
        return 1;
    }
    constexpr int kBatch = 64;
    constexpr size_t kMax = 65536;
    std::vector<unsigned char> bufs(static_cast<size_t>(kBatch) * kMax);
    mmsghdr msgs[kBatch];
    iovec iov[kBatch];
    std::vector<uint8_t> seen(o.count, 0);
    std::vector<int64_t> delays;   // ns, one per distinct message
    delays.reserve(std::min<uint64_t>(o.count, 50000000));
    uint64_t received = 0, dups = 0, reordered = 0, on_time = 0, on_time_strict = 0, foreign = 0, bytes = 0;
    bool have_stream = false, have_prev = false;
    uint32_t stream = 0;
    uint64_t highest = 0;
    int64_t first_arrival = 0, last_arrival = 0, prev_transit = 0;
    int64_t late_first = INT64_MAX, late_last = -1;   // sequence numbers of late messages
    double jitter = 0;   // ns, RFC 3550 section 6.4.1
    const int64_t start = mono_ns();
    int64_t last_activity = start, next_progress = start + o.progress_ns;
    uint64_t progress_received = 0;
    while (!g_stop && received < o.count) {
        int64_t now = mono_ns();
        // Before the first message a gateway may still be connecting: at least 10 s.
        const int64_t limit = have_stream ? o.timeout_ns : std::max<int64_t>(o.timeout_ns, 10000000000);
        if (now - last_activity >= limit) break;
        int wait_ms = static_cast<int>(std::max<int64_t>(1, (limit - (now - last_activity)) / 1000000));
        if (o.progress_ns > 0) wait_ms = std::min<int>(wait_ms, static_cast<int>(o.progress_ns / 1000000) + 1);
        pollfd p{fd, POLLIN, 0};
        int pr = poll(&p, 1, wait_ms);
        now = mono_ns();
        if (o.progress_ns > 0 && now >= next_progress) {
            fprintf(stderr, "rt_stream recv: %" PRIu64 "/%" PRIu64 " received, %.1f Mbit/s\n", received, o.count,
                    static_cast<double>(received - progress_received) * 8 *
                        (received ? static_cast<double>(bytes) / static_cast<double>(received) : 0) /
                        (static_cast<double>(o.progress_ns) / 1e9) / 1e6);
            progress_received = received;
            next_progress = now + o.progress_ns;
        }
        if (pr < 0 && errno != EINTR) {
            fprintf(stderr, "rt_stream recv: poll: %s\n", strerror(errno));
            return 1;
        }
        if (pr <= 0) continue;
        for (int i = 0; i < kBatch; ++i) {
            iov[i] = {bufs.data() + static_cast<size_t>(i) * kMax, kMax};
            msgs[i] = {};
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, msgs, kBatch, MSG_DONTWAIT, nullptr);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNREFUSED) continue;
            fprintf(stderr, "rt_stream recv: recvmmsg: %s\n", strerror(errno));
            return 1;
        }
        const int64_t arrival = mono_ns();   // when the program got them: what "arrived" means to it
        last_activity = arrival;
        for (int i = 0; i < n; ++i) {
            const unsigned char* d = bufs.data() + static_cast<size_t>(i) * kMax;
            size_t len = msgs[i].msg_len;
            if (len < kHeader) {
                ++foreign;
                continue;
            }
            Header h = decode(d);
            if (h.magic != kMagic || h.seq >= o.count || (have_stream && h.stream != stream)) {
                ++foreign;
                continue;
            }
            if (!have_stream) {
                have_stream = true;
                stream = h.stream;
                first_arrival = arrival;
            }
            if (seen[h.seq]) {
                ++dups;
                continue;
            }
            seen[h.seq] = 1;
            ++received;
            bytes += len;
            last_arrival = arrival;
            if (received > 1 && h.seq < highest) ++reordered;
            highest = std::max(highest, h.seq);
            const int64_t delay = arrival - static_cast<int64_t>(h.send_ns);
            delays.push_back(delay);
            if (delay <= o.latency_ns + o.tolerance_ns) {
                ++on_time;
            } else {
                late_first = std::min(late_first, static_cast<int64_t>(h.seq));
                late_last = std::max(late_last, static_cast<int64_t>(h.seq));
            }
            if (delay <= o.latency_ns) ++on_time_strict;
            // Relative transit: the clocks are the same, so the transit is the delay itself.
            if (have_prev) {
                const double dd = std::fabs(static_cast<double>(delay - prev_transit));
                jitter += (dd - jitter) / 16.0;
            }
            prev_transit = delay;
            have_prev = true;
        }
    }
    std::sort(delays.begin(), delays.end());
    // Where the missing messages are: runs of consecutive ones (the first
    // few, for a person to look at) and how many are past the highest one
    // received (a stream's tail, lost at its end rather than on the way).
    uint64_t lost_runs = 0, lost_tail = 0;
    std::string runs_json;
    for (uint64_t i = 0; i < o.count;) {
        if (seen[i]) {
            ++i;
            continue;
        }
        uint64_t j = i;
        while (j + 1 < o.count && !seen[j + 1]) ++j;
        if (lost_runs++ < 8) {
            char b[64];
            snprintf(b, sizeof b, "%s[%" PRIu64 ",%" PRIu64 "]", runs_json.empty() ? "" : ",", i, j);
            runs_json += b;
        }
        if (received == 0 || i > highest) lost_tail = j - i + 1;
        i = j + 1;
    }
    const double secs = static_cast<double>(last_arrival - first_arrival) / 1e9;
    const double cnt = static_cast<double>(o.count);
    printf("{\"count\":%" PRIu64 ",\"received\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"duplicates\":%" PRIu64
           ",\"reordered\":%" PRIu64 ",\"on_time\":%" PRIu64 ",\"on_time_ratio\":%.6f,\"late\":%" PRIu64
           ",\"on_time_strict_ratio\":%.6f,\"delay_min_ms\":%.3f,\"delay_p50_ms\":%.3f,\"delay_p99_ms\":%.3f"
           ",\"delay_max_ms\":%.3f,\"jitter_ms\":%.4f,\"bytes\":%" PRIu64 ",\"seconds\":%.6f,\"goodput_mbit\":%.3f"
           ",\"foreign\":%" PRIu64 ",\"latency_ms\":%.3f,\"tolerance_ms\":%.3f"
           ",\"late_first\":%" PRId64 ",\"late_last\":%" PRId64 ",\"lost_runs\":%" PRIu64
           ",\"lost_tail\":%" PRIu64 ",\"lost_first_runs\":[%s]}\n",
           o.count, received, o.count - received, dups, reordered, on_time, cnt > 0 ? static_cast<double>(on_time) / cnt : 0,
           received - on_time, cnt > 0 ? static_cast<double>(on_time_strict) / cnt : 0,
           delays.empty() ? 0.0 : static_cast<double>(delays.front()) / 1e6, percentile(delays, 0.5) / 1e6,
           percentile(delays, 0.99) / 1e6, delays.empty() ? 0.0 : static_cast<double>(delays.back()) / 1e6,
           jitter / 1e6, bytes, secs, secs > 0 ? static_cast<double>(bytes) * 8 / secs / 1e6 * static_cast<double>(received - 1) / static_cast<double>(received) : 0.0, foreign,
           static_cast<double>(o.latency_ns) / 1e6, static_cast<double>(o.tolerance_ns) / 1e6,
           late_last < 0 ? int64_t{-1} : late_first, late_last, lost_runs, lost_tail, runs_json.c_str());
    fflush(stdout);
    close(fd);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(kUsage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const std::string mode = argv[1];
    if (mode != "send" && mode != "recv") {
        fprintf(stderr, "rt_stream: unknown mode '%s'\n%s", argv[1], kUsage);
        return 2;
    }
    Opts o;
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            fputs(kUsage, stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "rt_stream: %s needs a value\n", argv[i]);
            return 2;
        }
        const char* v = argv[++i];
        bool ok = true;
        if (a == "--to") o.to = v;
        else if (a == "--bind") o.bind = v;
        else if (a == "--listen") o.listen = v;
        else if (a == "--rate") ok = (o.rate = parse_rate(v)) > 0;
        else if (a == "--size") ok = parse_u64(v, &o.size) && o.size >= kHeader && o.size <= 65000;
        else if (a == "--count") ok = parse_u64(v, &o.count) && o.count > 0 && o.count <= 1000000000;
        else if (a == "--spin") ok = (o.spin_ns = parse_time(v)) >= 0;
        else if (a == "--latency") ok = (o.latency_ns = parse_time(v)) >= 0;
        else if (a == "--tolerance") ok = (o.tolerance_ns = parse_time(v)) >= 0;
        else if (a == "--timeout") {
            char* end = nullptr;
            double s = strtod(v, &end);
            ok = end != v && *end == '\0' && s > 0;
            o.timeout_ns = static_cast<int64_t>(s * 1e9);
        } else if (a == "--progress") {
            char* end = nullptr;
            double s = strtod(v, &end);
            ok = end != v && *end == '\0' && s >= 0;
            o.progress_ns = static_cast<int64_t>(s * 1e9);
        } else {
            fprintf(stderr, "rt_stream: unknown option %s\n%s", argv[i - 1], kUsage);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "rt_stream: bad value for %s: '%s'\n", a.c_str(), v);
            return 2;
        }
    }
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    if (mode == "send") {
        if (!o.to || o.rate <= 0 || o.count == 0) {
            fprintf(stderr, "rt_stream send: --to, --rate and --count are required\n%s", kUsage);
            return 2;
        }
        return run_send(o);
    }
    if (!o.listen || o.latency_ns < 0 || o.count == 0) {
        fprintf(stderr, "rt_stream recv: --listen, --latency and --count are required\n%s", kUsage);
        return 2;
    }
    return run_recv(o);
}
