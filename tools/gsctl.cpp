// gsctl: look at a gsocket policy the way the shim will, and at the host's
// reservation ledger.
//   gsctl policy check FILE...      validate; diagnostics to stderr, exit 1
//   gsctl policy explain FILE URL   which rule decides a flow, and what it decides
//   gsctl policy show FILE          the policy in canonical form
//   gsctl reservations              the ledger (docs/reservations.md)
//   gsctl flows / gsctl top         the processes' control sockets (docs/observability.md)
// Exit codes: 0 fine, 1 the policy has problems (or a name does not resolve),
// 2 usage error.
#include "core/qos/ledger.h"
#include "policy/policy.h"
#include "tools/json.h"

#include <dirent.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace gp = gs::policy;
using gs::tools::Json;
using gs::tools::JsonReader;

namespace {

constexpr const char* kUsage =
    "usage: gsctl [--help] COMMAND ...\n"
    "\n"
    "commands:\n"
    "  policy check [-q] FILE...      check policy files; print each problem as FILE:LINE: ...\n"
    "  policy explain FILE [OPTIONS] URL\n"
    "                                 show which rule decides a flow and what it decides\n"
    "  policy show FILE               print the policy as the shim reads it (canonical units)\n"
    "  reservations [--json]          list the host's reservation ledger\n"
    "  reservations --reclaim         drop the reservations of processes that are gone\n"
    "  flows [--json] [PID...]        the flows of running gsocket processes, once\n"
    "  top [--interval S] [--iterations N]\n"
    "                                 a live table of processes, flows and rates\n"
    "  overlay status [--server HOST:PORT] [--json] [ID]\n"
    "                                 overlays and members an overlay server knows\n"
    "  overlay members [ID] [--root ADDRESS] [--json]\n"
    "                                 members on this host: neighbours, tree for a root\n"
    "\n"
    "Run 'gsctl policy --help', 'gsctl policy SUBCOMMAND --help',\n"
    "'gsctl reservations --help', 'gsctl flows --help', 'gsctl top --help' or\n"
    "'gsctl overlay --help' for details.\n";

constexpr const char* kPolicyUsage =
    "usage: gsctl policy check [-q] FILE...\n"
    "       gsctl policy explain FILE [--process NAME] [--direction connect|accept|datagram]\n"
    "                                 [--src ADDR[:PORT]] URL\n"
    "       gsctl policy show FILE\n"
    "\n"
    "check    exit 0 and print 'FILE: ok, N rules, M overlays' when clean (nothing with -q);\n"
    "         otherwise print every problem to stderr and exit 1.\n"
    "explain  URL is tcp://HOST:PORT or udp://HOST:PORT; HOST is an IPv4 address, [IPv6],\n"
    "         or a name (each address it resolves to is explained).\n"
    "show     the policy in canonical form: every value in the units the parser reads back.\n"
    "\n"
    "Exit status: 0 ok, 1 the policy has problems, 2 usage error.\n";

constexpr const char* kCheckUsage =
    "usage: gsctl policy check [-q|--quiet] FILE...\n"
    "\n"
    "Check each policy file. When a file is clean, print 'FILE: ok, N rules, M overlays'\n"
    "(nothing with -q). Otherwise print each problem to stderr as\n"
    "'FILE:LINE: key = value: what is wrong, what would be right' and exit 1.\n";

constexpr const char* kExplainUsage =
    "usage: gsctl policy explain FILE [--process NAME] [--direction connect|accept|datagram]\n"
    "                             [--src ADDR[:PORT]] URL\n"
    "\n"
    "URL        tcp://HOST:PORT or udp://HOST:PORT; HOST is an IPv4 address, [IPv6] or a\n"
    "           name, resolved with getaddrinfo (each address is explained)\n"
    "--process  the program name (basename of argv[0]); default: any process, which\n"
    "           matches only rules without 'process'\n"
    "--direction  connect (default): the program connects to URL; accept: the program\n"
    "           accepted a flow on its local address URL (--src is then the peer);\n"
    "           datagram: an unconnected UDP socket sends to URL\n"
    "--src      the local bound address (connect, datagram) or the peer (accept);\n"
    "           default: unknown, which matches only rules without 'src'\n";

constexpr const char* kShowUsage =
    "usage: gsctl policy show FILE\n"
    "\n"
    "Print the policy in canonical form: what parsed cleanly, every value in the units\n"
    "the parser reads back. Problems go to stderr (exit 1).\n";

int usage_error(const std::string& msg, const char* usage) {
    fprintf(stderr, "gsctl: %s\n\n%s", msg.c_str(), usage);
    return 2;
}

bool is_help(std::string_view a) { return a == "--help" || a == "-h"; }

void print_diagnostics(const gp::Policy& p) {
    for (const gp::Diagnostic& d : p.diagnostics()) fprintf(stderr, "%s\n", d.text.c_str());
}

int cmd_check(const std::vector<std::string>& args) {
    bool quiet = false;
    std::vector<std::string> files;
    for (const std::string& a : args) {
        if (is_help(a)) {
            fputs(kCheckUsage, stdout);
            return 0;
        }
        if (a == "-q" || a == "--quiet") quiet = true;
        else if (a.size() > 1 && a[0] == '-') return usage_error("unknown option '" + a + "'", kCheckUsage);
        else files.push_back(a);
    }
    if (files.empty()) return usage_error("policy check needs a FILE", kCheckUsage);
    int rc = 0;
    for (const std::string& f : files) {
        gp::Policy p = gp::Policy::load_file(f);
        if (!p.ok()) {
            print_diagnostics(p);
            rc = 1;
        } else if (!quiet) {
            printf("%s: ok, %zu rules, %zu overlays\n", f.c_str(), p.rules().size(),
                   p.overlays().size());
        }
    }
    return rc;
}

int cmd_show(const std::vector<std::string>& args) {
    std::vector<std::string> files;
    for (const std::string& a : args) {
        if (is_help(a)) {
            fputs(kShowUsage, stdout);
            return 0;
        }
        if (a.size() > 1 && a[0] == '-') return usage_error("unknown option '" + a + "'", kShowUsage);
        files.push_back(a);
    }
    if (files.size() != 1) return usage_error("policy show needs one FILE", kShowUsage);
    gp::Policy p = gp::Policy::load_file(files[0]);
    print_diagnostics(p);
    fputs(gp::to_ini(p).c_str(), stdout);
    return p.ok() ? 0 : 1;
}

// "ADDR", "ADDR:PORT", "[V6]:PORT" or "[V6]".
bool parse_endpoint(std::string_view s, gp::Address& a, uint16_t& port) {
    std::string_view host = s, p;
    if (!s.empty() && s[0] == '[') {
        size_t close = s.find(']');
        if (close == std::string_view::npos) return false;
        host = s.substr(1, close - 1);
        std::string_view rest = s.substr(close + 1);
        if (!rest.empty()) {
            if (rest[0] != ':') return false;
            p = rest.substr(1);
            if (p.empty()) return false;
        }
    } else if (s.find(':') != std::string_view::npos && s.find(':') == s.rfind(':')) {
        host = s.substr(0, s.find(':'));
        p = s.substr(s.find(':') + 1);
        if (p.empty()) return false;
    }
    if (!gp::parse_address(host, a)) return false;
    port = 0;
    if (!p.empty()) {
        gp::PortRange r;
        std::string why;
        if (!gp::parse_port_range(p, r, why) || r.lo != r.hi) return false;
        port = r.lo;
    }
    return true;
}

std::string priority_text(int p) {
    const char* n = p == 2 ? " (low)" : p == 0 ? " (normal)" : p == 6 ? " (high)" : "";
    return std::to_string(p) + n;
}

void print_decision(const gp::Policy& p, const gp::Decision& d) {
    if (d.line == 0)
        printf("  rule:      no rule matched: fallback (%s)\n", d.rule.c_str());
    else
        printf("  rule:      [flow %s] at %s:%d\n", d.rule.c_str(), p.source().c_str(), d.line);
    printf("  class:     %s (%d)\n", gp::name(d.service), static_cast<int>(d.service));
    printf("  transport: %s\n", gp::name(d.transport));
    const gp::Qos& q = d.qos;
    std::vector<std::string> lines;
    if (q.rate) lines.push_back("rate = " + gp::format_rate(q.rate) + " (" + std::to_string(q.rate) + " B/s)");
    if (q.rate_down)
        lines.push_back("rate_down = " + gp::format_rate(q.rate_down) + " (" + std::to_string(q.rate_down) + " B/s)");
    if (q.burst) lines.push_back("burst = " + gp::format_size(q.burst) + " (" + std::to_string(q.burst) + " bytes)");
    if (q.latency_us)
        lines.push_back("latency = " + gp::format_duration(q.latency_us) + " (" + std::to_string(q.latency_us) + " us)");
    if (q.jitter_us)
        lines.push_back("jitter = " + gp::format_duration(q.jitter_us) + " (" + std::to_string(q.jitter_us) + " us)");
    if (q.loss_ppm)
        lines.push_back("loss = " + gp::format_percent(q.loss_ppm) + " (" + std::to_string(q.loss_ppm) + " ppm)");
    if (q.priority >= 0) lines.push_back("priority = " + priority_text(q.priority) + " (SO_PRIORITY)");
    if (q.dscp >= 0)
        lines.push_back("dscp = " + gp::format_dscp(q.dscp) + " (" + std::to_string(q.dscp) + ", TOS byte " +
                        std::to_string(q.dscp << 2) + ")");
    if (q.fec_data)
        lines.push_back("fec = " + std::to_string(q.fec_data) + "/" + std::to_string(q.fec_parity) + " (" +
                        std::to_string(q.fec_data) + " data, " + std::to_string(q.fec_parity) +
                        " parity packets)");
    if (q.rcvbuf) lines.push_back("rcvbuf = " + gp::format_size(q.rcvbuf) + " (" + std::to_string(q.rcvbuf) + " bytes)");
    if (q.window) lines.push_back("window = " + gp::format_size(q.window) + " (" + std::to_string(q.window) + " bytes)");
    if (q.notsent_lowat)
        lines.push_back("notsent_lowat = " + gp::format_size(q.notsent_lowat) + " (" +
                        std::to_string(q.notsent_lowat) + " bytes)");
    if (q.congestion[0]) lines.push_back(std::string("congestion = ") + q.congestion);
    if (!q.elements.empty()) {
        std::string e = "elements =";
        for (const std::string& x : q.elements) e += " " + x;
        lines.push_back(e);
    }
    if (lines.empty()) printf("  qos:       none\n");
    for (size_t i = 0; i < lines.size(); ++i)
        printf("  %s %s\n", i == 0 ? "qos:      " : "          ", lines[i].c_str());
}

int cmd_explain(const std::vector<std::string>& args) {
    std::string file, url, process, src_text;
    gp::Direction dir = gp::Direction::connect;
    for (size_t i = 0; i < args.size(); ++i) {
        std::string a = args[i];
        if (is_help(a)) {
            fputs(kExplainUsage, stdout);
            return 0;
        }
        std::string value;
        bool has_value = false;
        if (a.rfind("--", 0) == 0 && a.find('=') != std::string::npos) {
            value = a.substr(a.find('=') + 1);
            a = a.substr(0, a.find('='));
            has_value = true;
        }
        auto take = [&](std::string& out) {
            if (has_value) {
                out = value;
                return true;
            }
            if (i + 1 >= args.size()) return false;
            out = args[++i];
            return true;
        };
        if (a == "--process") {
            if (!take(process)) return usage_error("--process needs a NAME", kExplainUsage);
        } else if (a == "--direction") {
            std::string d;
            if (!take(d)) return usage_error("--direction needs a value", kExplainUsage);
            if (d == "connect") dir = gp::Direction::connect;
            else if (d == "accept") dir = gp::Direction::accept;
            else if (d == "datagram") dir = gp::Direction::datagram;
            else return usage_error("--direction: write connect, accept or datagram, not '" + d + "'", kExplainUsage);
        } else if (a == "--src") {
            if (!take(src_text)) return usage_error("--src needs ADDR[:PORT]", kExplainUsage);
        } else if (a.size() > 1 && a[0] == '-') {
            return usage_error("unknown option '" + a + "'", kExplainUsage);
        } else if (file.empty()) {
            file = a;
        } else if (url.empty()) {
            url = a;
        } else {
            return usage_error("unexpected argument '" + a + "'", kExplainUsage);
        }
    }
    if (file.empty() || url.empty()) return usage_error("policy explain needs FILE and URL", kExplainUsage);

    gp::FlowKey flow;
    std::string_view rest;
    if (url.rfind("tcp://", 0) == 0) flow.proto = gp::Proto::tcp;
    else if (url.rfind("udp://", 0) == 0) flow.proto = gp::Proto::udp;
    else return usage_error("URL must be tcp://HOST:PORT or udp://HOST:PORT, not '" + url + "'", kExplainUsage);
    rest = std::string_view(url).substr(6);
    std::string host, port_text;
    if (!rest.empty() && rest[0] == '[') {
        size_t close = rest.find(']');
        if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':')
            return usage_error("URL: write [IPv6]:PORT, e.g. tcp://[::1]:443", kExplainUsage);
        host = std::string(rest.substr(1, close - 1));
        port_text = std::string(rest.substr(close + 2));
    } else {
        size_t colon = rest.rfind(':');
        if (colon == std::string_view::npos || rest.find(':') != colon)
            return usage_error("URL: write HOST:PORT (IPv6 in brackets), e.g. tcp://10.0.0.1:443", kExplainUsage);
        host = std::string(rest.substr(0, colon));
        port_text = std::string(rest.substr(colon + 1));
    }
    gp::PortRange pr;
    std::string why;
    if (host.empty() || !gp::parse_port_range(port_text, pr, why) || pr.lo != pr.hi)
        return usage_error("URL: bad host or port in '" + url + "'", kExplainUsage);
    flow.dport = pr.lo;
    flow.direction = dir;
    if (dir == gp::Direction::accept && flow.proto == gp::Proto::udp)
        return usage_error("--direction accept is for TCP (UDP has no accept)", kExplainUsage);
    if (dir == gp::Direction::datagram && flow.proto == gp::Proto::tcp)
        return usage_error("--direction datagram is for UDP", kExplainUsage);
    if (!src_text.empty() && !parse_endpoint(src_text, flow.src, flow.sport))
        return usage_error("--src: write ADDR, ADDR:PORT or [IPv6]:PORT, not '" + src_text + "'", kExplainUsage);
    flow.process = process;

    // The addresses to explain: a literal, or everything the name resolves to.
    std::vector<gp::Address> dsts;
    gp::Address lit;
    if (gp::parse_address(host, lit)) {
        dsts.push_back(lit);
    } else {
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = flow.proto == gp::Proto::tcp ? SOCK_STREAM : SOCK_DGRAM;
        addrinfo* res = nullptr;
        int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
        if (rc != 0) {
            fprintf(stderr, "gsctl: cannot resolve %s: %s\n", host.c_str(), gai_strerror(rc));
            return 1;
        }
        for (addrinfo* ai = res; ai; ai = ai->ai_next) {
            gp::Address a;
            if (ai->ai_family == AF_INET) {
                a.family = AF_INET;
                memcpy(a.bytes, &reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr, 4);
            } else if (ai->ai_family == AF_INET6) {
                a.family = AF_INET6;
                memcpy(a.bytes, &reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr, 16);
            } else {
                continue;
            }
            bool dup = false;
            for (const gp::Address& d : dsts)
                dup = dup || (d.family == a.family && memcmp(d.bytes, a.bytes, 16) == 0);
            if (!dup) dsts.push_back(a);
        }
        freeaddrinfo(res);
    }

    gp::Policy p = gp::Policy::load_file(file);
    printf("policy: %s (%zu rules, %zu overlays)\n", file.c_str(), p.rules().size(), p.overlays().size());
    if (!p.ok()) {
        for (const gp::Diagnostic& d : p.diagnostics()) printf("%s\n", d.text.c_str());
        if (p.general().on_error == gp::OnError::fail)
            printf("the policy has %zu problem(s): the shim would fail every flow (on_error = fail);\n"
                   "below is what the rules that parsed cleanly would decide\n",
                   p.diagnostics().size());
        else
            printf("the policy has %zu problem(s): the shim would leave every flow native (on_error = open);\n"
                   "below is what the rules that parsed cleanly would decide\n",
                   p.diagnostics().size());
    }
    auto endpoint = [](const gp::Address& a, uint16_t port) {
        if (a.family == 0) return std::string("(unknown)");
        std::string s = a.family == AF_INET6 ? "[" + gp::format_address(a) + "]" : gp::format_address(a);
        return port ? s + ":" + std::to_string(port) : s;
    };
    for (const gp::Address& d : dsts) {
        flow.dst = d;
        printf("\nflow: %s %s, dst %s, src %s, process: %s\n", gp::name(flow.proto), gp::name(dir),
               endpoint(flow.dst, flow.dport).c_str(), endpoint(flow.src, flow.sport).c_str(),
               process.empty() ? "(any)" : process.c_str());
        print_decision(p, p.match(flow));
    }
    return p.ok() ? 0 : 1;
}

int cmd_policy(const std::vector<std::string>& args) {
    if (args.empty()) return usage_error("policy needs a subcommand", kPolicyUsage);
    if (is_help(args[0])) {
        fputs(kPolicyUsage, stdout);
        return 0;
    }
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (args[0] == "check") return cmd_check(rest);
    if (args[0] == "explain") return cmd_explain(rest);
    if (args[0] == "show") return cmd_show(rest);
    return usage_error("unknown policy subcommand '" + args[0] + "'", kPolicyUsage);
}


// ---- gsctl reservations ----

namespace gq = gs::qos;

constexpr const char* kReservationsUsage =
    "usage: gsctl reservations [--ledger FILE] [--json]\n"
    "       gsctl reservations --reclaim [--ledger FILE] [--json]\n"
    "       gsctl reservations --hold RATE --for SECONDS [--direction up|down]\n"
    "                          [--class guaranteed|realtime] [--on-reject fail|downgrade]\n"
    "                          [--capacity RATE | --policy FILE] [--flow TEXT] [--ledger FILE]\n"
    "\n"
    "List the host's reservation ledger: every guaranteed or realtime flow's reserved\n"
    "rate, with its process (pid, name, whether it is still alive), direction (up =\n"
    "sending, down = receiving), class, flow and age; then the total reserved and the\n"
    "capacity of each direction. Entries of dead processes are dropped by the next\n"
    "reservation that would not fit otherwise, or now by --reclaim.\n"
    "\n"
    "--ledger FILE   the ledger; default $GSOCKET_LEDGER, else $XDG_RUNTIME_DIR/gsocket/ledger,\n"
    "                else /tmp/gsocket-UID/ledger\n"
    "--json          one JSON object on stdout, for scripts\n"
    "--reclaim       drop dead processes' entries and print what was dropped\n"
    "\n"
    "Debugging aid: --hold reserves RATE (policy units: 20mbit, 2MB/s, 600B/s) as a\n"
    "flow of this gsctl process would, prints the answer, holds it SECONDS (or until\n"
    "SIGINT/SIGTERM) and releases it. It lets an operator try admission by hand.\n"
    "--capacity RATE (or the [general] capacity of --policy FILE, whose on_reject is\n"
    "then the default too) is written to the ledger as a process with that policy would.\n"
    "Exit status of --hold: 0 granted or downgraded, 1 refused or the ledger unusable.\n"
    "\n"
    "Exit status: 0 ok, 1 the ledger is missing (when named) or unusable, 2 usage error.\n";

std::string json_str(std::string_view s) {
    std::string o = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            o += '\\';
            o += static_cast<char>(c);
        } else if (c < 0x20) {
            char b[8];
            snprintf(b, sizeof b, "\\u%04x", c);
            o += b;
        } else {
            o += static_cast<char>(c);
        }
    }
    return o + "\"";
}

std::string process_name(pid_t pid) {
    std::string path = "/proc/" + std::to_string(pid) + "/comm";
    FILE* f = fopen(path.c_str(), "re");
    if (!f) return "";
    char b[64] = "";
    if (!fgets(b, sizeof b, f)) b[0] = '\0';
    fclose(f);
    std::string n = b;
    while (!n.empty() && n.back() == '\n') n.pop_back();
    return n;
}

double age_seconds(int64_t created_ns) {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
    return now > created_ns ? static_cast<double>(now - created_ns) / 1e9 : 0.0;
}

std::string age_text(double s) {
    char b[32];
    if (s < 60) snprintf(b, sizeof b, "%.1fs", s);
    else if (s < 3600) snprintf(b, sizeof b, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
    else snprintf(b, sizeof b, "%dh%02dm", static_cast<int>(s) / 3600, static_cast<int>(s) % 3600 / 60);
    return b;
}

std::string rate_text(uint64_t r) { return gp::format_rate(r) + " (" + std::to_string(r) + " B/s)"; }

std::string item_json(const gq::LedgerItem& it) {
    char age[32];
    snprintf(age, sizeof age, "%.3f", age_seconds(it.created_ns));
    return "{\"pid\": " + std::to_string(it.pid) + ", \"process\": " + json_str(process_name(it.pid)) +
           ", \"alive\": " + (it.alive ? "true" : "false") + ", \"direction\": \"" + gq::name(it.dir) +
           "\", \"rate\": " + std::to_string(it.rate) + ", \"rate_text\": " + json_str(gp::format_rate(it.rate)) +
           ", \"class\": \"" + gp::name(it.service) + "\", \"flow\": " + json_str(it.description) +
           ", \"flow_id\": " + std::to_string(it.flow_id) + ", \"start_time\": " + std::to_string(it.start_time) +
           ", \"age_s\": " + age + ", \"slot\": " + std::to_string(it.slot) + "}";
}

// Open the ledger for a look (capacity 0: the header's is kept). A missing
// default ledger is an empty one; a missing --ledger FILE is a mistake.
int open_for_look(gq::Ledger& l, const std::string& path, bool named, bool& absent) {
    struct stat st{};
    absent = false;
    if (stat(path.c_str(), &st) != 0 && errno == ENOENT) {
        absent = true;
        if (named) {
            fprintf(stderr, "gsctl: no ledger at %s: check the path (no gsocket process has reserved there)\n",
                    path.c_str());
            return 1;
        }
        return 0;
    }
    if (l.open(path.c_str(), 0, 0) != 0) {
        fprintf(stderr, "gsctl: %s\n", l.error());
        return 1;
    }
    return 0;
}

int cmd_hold(gq::Ledger& l, const std::string& path, uint64_t rate, double seconds, gq::Dir dir,
             gp::ServiceClass cls, gp::OnReject on, uint64_t capacity, const std::string& flow) {
    if (l.open(path.c_str(), capacity, capacity) != 0) {
        fprintf(stderr, "gsctl: %s\n", l.error());
        return 1;
    }
    // Block the signals that end the hold before reserving: sigtimedwait takes them.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, nullptr);
    gq::ReserveResult r = l.reserve(static_cast<uint64_t>(getpid()), dir, rate, cls, flow.c_str(), on);
    std::string reclaimed = r.reclaimed ? ", reclaimed " + std::to_string(r.reclaimed) + " dead entr" +
                                              (r.reclaimed == 1 ? "y" : "ies") : "";
    switch (r.status) {
    case gq::ReserveResult::Status::granted:
        printf("granted %s %s to pid %d, %s of %s were free%s; holding for %gs\n", rate_text(r.granted).c_str(),
               gq::name(dir), static_cast<int>(getpid()), rate_text(r.available).c_str(),
               rate_text(r.capacity).c_str(), reclaimed.c_str(), seconds);
        break;
    case gq::ReserveResult::Status::downgraded:
        printf("downgraded: asked %s %s, granted %s to pid %d (all that was free of %s)%s; holding for %gs\n",
               rate_text(r.asked).c_str(), gq::name(dir), rate_text(r.granted).c_str(), static_cast<int>(getpid()),
               rate_text(r.capacity).c_str(), reclaimed.c_str(), seconds);
        break;
    default:
        printf("%s: asked %s %s, available %s of capacity %s%s (%s%s%s)\n", gq::name(r.status),
               rate_text(r.asked).c_str(), gq::name(dir), rate_text(r.available).c_str(),
               rate_text(r.capacity).c_str(), reclaimed.c_str(), strerrorname_np(-r.error),
               r.status == gq::ReserveResult::Status::full ? ": every slot of the ledger is taken" : "",
               r.capacity == 0 && r.status == gq::ReserveResult::Status::refused
                   ? ": no capacity is set; give --capacity or a policy with [general] capacity" : "");
        return 1;
    }
    fflush(stdout);
    timespec ts{static_cast<time_t>(seconds), static_cast<long>((seconds - static_cast<double>(static_cast<time_t>(seconds))) * 1e9)};
    int sig = sigtimedwait(&set, nullptr, &ts);
    int rc = l.release(r.reservation);
    printf("released%s%s\n", sig > 0 ? " on " : "", sig > 0 ? sigabbrev_np(sig) : "");
    if (rc != 0) fprintf(stderr, "gsctl: release: %s\n", strerror(-rc));
    return rc == 0 ? 0 : 1;
}

int cmd_reservations(const std::vector<std::string>& args) {
    std::string ledger, policy_file, flow = "gsctl hold";
    bool json = false, reclaim = false, hold = false, have_for = false;
    uint64_t rate = 0, capacity = 0;
    double seconds = 0;
    gq::Dir dir = gq::Dir::up;
    gp::ServiceClass cls = gp::ServiceClass::guaranteed;
    gp::OnReject on = gp::OnReject::fail;
    bool on_set = false;
    for (size_t i = 0; i < args.size(); ++i) {
        std::string a = args[i], value;
        bool has_value = false;
        if (is_help(a)) {
            fputs(kReservationsUsage, stdout);
            return 0;
        }
        if (a.rfind("--", 0) == 0 && a.find('=') != std::string::npos) {
            value = a.substr(a.find('=') + 1);
            a = a.substr(0, a.find('='));
            has_value = true;
        }
        auto take = [&](std::string& out) {
            if (has_value) return out = value, true;
            if (i + 1 >= args.size()) return false;
            out = args[++i];
            return true;
        };
        std::string v, why;
        if (a == "--json") json = true;
        else if (a == "--reclaim") reclaim = true;
        else if (a == "--ledger") {
            if (!take(ledger) || ledger.empty()) return usage_error("--ledger needs a FILE", kReservationsUsage);
        } else if (a == "--hold") {
            if (!take(v)) return usage_error("--hold needs a RATE", kReservationsUsage);
            if (!gp::parse_rate(v, rate, why) || rate == 0)
                return usage_error("--hold " + v + ": " + (why.empty() ? "the rate must be above 0" : why),
                                   kReservationsUsage);
            hold = true;
        } else if (a == "--for") {
            if (!take(v)) return usage_error("--for needs SECONDS", kReservationsUsage);
            char* end = nullptr;
            seconds = strtod(v.c_str(), &end);
            if (v.empty() || *end || !(seconds >= 0 && seconds <= 86400))
                return usage_error("--for: write seconds, 0 to 86400, not '" + v + "'", kReservationsUsage);
            have_for = true;
        } else if (a == "--capacity") {
            if (!take(v) || !gp::parse_rate(v, capacity, why))
                return usage_error("--capacity: " + (why.empty() ? std::string("needs a RATE") : why),
                                   kReservationsUsage);
        } else if (a == "--policy") {
            if (!take(policy_file)) return usage_error("--policy needs a FILE", kReservationsUsage);
        } else if (a == "--direction") {
            if (!take(v) || (v != "up" && v != "down"))
                return usage_error("--direction: write up or down", kReservationsUsage);
            dir = v == "up" ? gq::Dir::up : gq::Dir::down;
        } else if (a == "--class") {
            if (!take(v) || (v != "guaranteed" && v != "realtime"))
                return usage_error("--class: write guaranteed or realtime", kReservationsUsage);
            cls = v == "guaranteed" ? gp::ServiceClass::guaranteed : gp::ServiceClass::realtime;
        } else if (a == "--on-reject") {
            if (!take(v) || (v != "fail" && v != "downgrade"))
                return usage_error("--on-reject: write fail or downgrade", kReservationsUsage);
            on = v == "fail" ? gp::OnReject::fail : gp::OnReject::downgrade;
            on_set = true;
        } else if (a == "--flow") {
            if (!take(flow)) return usage_error("--flow needs a TEXT", kReservationsUsage);
        } else {
            return usage_error("unknown argument '" + a + "'", kReservationsUsage);
        }
    }
    if (hold && !have_for) return usage_error("--hold needs --for SECONDS", kReservationsUsage);
    if (!hold && (have_for || capacity || !policy_file.empty()))
        return usage_error("--for, --capacity and --policy go with --hold", kReservationsUsage);
    if (hold && (reclaim || json)) return usage_error("--hold goes alone (no --reclaim, --json)", kReservationsUsage);

    bool named = !ledger.empty();
    if (!named) {
        std::string why;
        if (gq::ledger_path(ledger, why, hold) != 0) {
            fprintf(stderr, "gsctl: %s\n", why.c_str());
            return 1;
        }
    }
    gq::Ledger l;
    if (hold) {
        if (!policy_file.empty()) {
            gp::Policy p = gp::Policy::load_file(policy_file);
            if (!p.ok()) {
                print_diagnostics(p);
                return 1;
            }
            if (!capacity) capacity = p.general().capacity;
            if (!on_set) on = p.general().on_reject;
        }
        return cmd_hold(l, ledger, rate, seconds, dir, cls, on, capacity, flow);
    }
    bool absent = false;
    if (int rc = open_for_look(l, ledger, named, absent)) return rc;

    if (reclaim) {
        std::vector<gq::LedgerItem> dropped;
        if (!absent) {
            if (int rc = l.reclaim(&dropped)) {
                fprintf(stderr, "gsctl: ledger %s: %s\n", ledger.c_str(), strerror(-rc));
                return 1;
            }
        }
        if (json) {
            printf("{\"ledger\": %s, \"reclaimed\": [", json_str(ledger).c_str());
            for (size_t i = 0; i < dropped.size(); ++i) printf("%s%s", i ? ", " : "", item_json(dropped[i]).c_str());
            printf("]}\n");
            return 0;
        }
        for (const gq::LedgerItem& it : dropped)
            printf("dropped pid %d (gone): %s %s, %s, %s, age %s\n", static_cast<int>(it.pid), gq::name(it.dir),
                   rate_text(it.rate).c_str(), gp::name(it.service), it.description.c_str(),
                   age_text(age_seconds(it.created_ns)).c_str());
        printf("%s: reclaimed %zu reservation(s) of dead processes\n", ledger.c_str(), dropped.size());
        return 0;
    }

    std::vector<gq::LedgerItem> items;
    gq::LedgerUsage u;
    if (!absent) {
        if (int rc = l.snapshot(items, &u)) {
            fprintf(stderr, "gsctl: ledger %s: %s\n", ledger.c_str(), strerror(-rc));
            return 1;
        }
    }
    if (json) {
        printf("{\"ledger\": %s, \"exists\": %s, \"slots\": %u, \"used\": %u,\n", json_str(ledger).c_str(),
               absent ? "false" : "true", u.slots, u.used);
        for (int d = 0; d < 2; ++d)
            printf(" \"%s\": {\"capacity\": %llu, \"reserved\": %llu},\n", d ? "down" : "up",
                   static_cast<unsigned long long>(u.capacity[d]), static_cast<unsigned long long>(u.reserved[d]));
        printf(" \"reservations\": [");
        for (size_t i = 0; i < items.size(); ++i)
            printf("%s\n  %s", i ? "," : "", item_json(items[i]).c_str());
        printf("%s]}\n", items.empty() ? "" : "\n");
        return 0;
    }
    if (absent) {
        printf("%s: no ledger yet: no reservations (no gsocket process has reserved here)\n", ledger.c_str());
        return 0;
    }
    printf("ledger %s: %u reservation(s), %u slots\n", ledger.c_str(), u.used, u.slots);
    if (!items.empty()) {
        printf("%-8s %-16s %-5s %-4s %-28s %-10s %-8s %s\n", "PID", "PROCESS", "ALIVE", "DIR", "RATE", "CLASS", "AGE",
               "FLOW");
        for (const gq::LedgerItem& it : items) {
            std::string n = process_name(it.pid);
            printf("%-8d %-16s %-5s %-4s %-28s %-10s %-8s %s\n", static_cast<int>(it.pid), n.empty() ? "-" : n.c_str(),
                   it.alive ? "yes" : "no", gq::name(it.dir), rate_text(it.rate).c_str(), gp::name(it.service),
                   age_text(age_seconds(it.created_ns)).c_str(), it.description.c_str());
        }
    }
    for (int d = 0; d < 2; ++d) {
        std::string cap = u.capacity[d] ? rate_text(u.capacity[d]) : std::string("unset");
        uint64_t free_ = u.capacity[d] > u.reserved[d] ? u.capacity[d] - u.reserved[d] : 0;
        printf("%-4s reserved %s of %s, free %s\n", d ? "down" : "up", rate_text(u.reserved[d]).c_str(), cap.c_str(),
               rate_text(free_).c_str());
    }
    size_t dead = 0;
    for (const gq::LedgerItem& it : items) dead += !it.alive;
    if (dead)
        printf("%zu reservation(s) belong to dead processes: the next reservation that needs the room drops them, "
               "or run 'gsctl reservations --reclaim'\n", dead);
    return 0;
}


// ---- gsctl flows / gsctl top: ask the processes' control sockets ----
// (the server is core/engine/control.cpp; the protocol is in control.h)


constexpr const char* kFlowsUsage =
    "usage: gsctl flows [--json] [PID...]\n"
    "\n"
    "Ask every gsocket process of this user (each answers on DIR/PID.sock, DIR being\n"
    "$XDG_RUNTIME_DIR/gsocket, else /tmp/gsocket-UID), or only the PIDs given, for its\n"
    "flows, and print one table: process[pid], direction, protocol, local and peer\n"
    "addresses, rule, class, transport, admission and reserved rates, bytes each way;\n"
    "under a flow carried over MCES, its connection: smoothed RTT, congestion window,\n"
    "packets sent and lost, bytes resent, probe timeouts, packets dropped.\n"
    "A process answers once it holds a reservation (docs/observability.md).\n"
    "\n"
    "--json   a JSON array of the processes' objects, as they sent them\n"
    "\n"
    "Sockets of processes that are gone are removed (said on stderr); a process that\n"
    "does not answer within 1 s is skipped (said on stderr).\n"
    "Exit status: 0 (also when no process answers: stderr says so and --json prints []),\n"
    "1 a PID given does not answer or the directory is unusable, 2 usage error.\n";

constexpr const char* kTopUsage =
    "usage: gsctl top [--interval SECONDS] [--iterations N]\n"
    "\n"
    "A live table of every gsocket process of this user and its flows: class,\n"
    "transport, rate each way (from the bytes counted between two refreshes), bytes,\n"
    "reservation, and per-process totals. Refreshed every --interval seconds\n"
    "(default 1, at least 0.05); --iterations N stops after N tables (default: until\n"
    "interrupted). On a terminal the screen is cleared before each table; otherwise\n"
    "the tables follow each other, separated by a blank line, without escape codes.\n"
    "Exit status: 0, 1 the directory is unusable, 2 usage error.\n";

double mono_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

constexpr double kAnswerWait = 1.0;                // seconds a process has to answer
constexpr size_t kMaxAnswer = 64u << 20;           // bytes: a snapshot, not a stream

// One request to one control socket. 0 and `out`, or -errno: -ENOENT (no
// socket), -ECONNREFUSED (nobody listens), -ETIMEDOUT, -EMSGSIZE, other.
int ask(const std::string& path, const char* request, std::string& out) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path) return -ENAMETOOLONG;
    memcpy(a.sun_path, path.c_str(), path.size() + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -errno;
    const double deadline = mono_seconds() + kAnswerWait;
    auto left_ms = [&] {
        double l = deadline - mono_seconds();
        return l <= 0 ? 0 : static_cast<int>(l * 1000) + 1;
    };
    int rc = 0;
    // A full listen backlog says EAGAIN (AF_UNIX has no EINPROGRESS): retry until the deadline.
    while (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN || left_ms() == 0) {
            rc = errno == EAGAIN ? -ETIMEDOUT : -errno;
            close(fd);
            return rc;
        }
        usleep(10'000);
    }
    std::string req = std::string(request) + "\n";
    if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
        rc = -errno;
        close(fd);
        return rc ? rc : -EIO;
    }
    out.clear();
    char b[65536];
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        int ms = left_ms();
        int n = ms > 0 ? poll(&p, 1, ms) : 0;
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            rc = -ETIMEDOUT;
            break;
        }
        ssize_t r = read(fd, b, sizeof b);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r < 0) {
            rc = -errno;
            break;
        }
        if (r == 0) break;
        out.append(b, static_cast<size_t>(r));
        if (out.size() > kMaxAnswer) {
            rc = -EMSGSIZE;
            break;
        }
    }
    close(fd);
    return rc;
}

struct ProcAnswer {
    pid_t pid = 0;
    std::string raw;   // the object as sent, without its newline
    Json obj;
    double at = 0;     // mono_seconds() when it came
};

struct Collected {
    std::vector<ProcAnswer> procs;
    std::vector<std::string> notes;   // what was skipped or removed, and why
    bool named_missing = false;       // a PID given on the command line did not answer
    bool dir_error = false;
    bool dir_absent = false;
    std::string dir;
};

bool pid_gone(pid_t pid) { return kill(pid, 0) != 0 && errno == ESRCH; }

std::string proc_label(pid_t pid) {
    std::string n = process_name(pid);
    return (n.empty() ? std::string("pid ") : n + "[") + std::to_string(pid) + (n.empty() ? "" : "]");
}

// The sockets to ask: DIR/PID.sock for the PIDs given, else every one in DIR;
// `request` is the line each is sent ("flows", "overlays ROOT").
Collected collect(const std::vector<pid_t>& pids, const std::string& request = "flows") {
    Collected c;
    std::string why;
    int rc = gq::runtime_dir(c.dir, why, gq::DirMode::check);
    if (rc == -ENOENT) {
        c.dir_absent = true;
        c.notes.push_back(c.dir + " does not exist: no gsocket process of this user has opened a control socket "
                          "(a process opens one when it holds a reservation)");
        c.named_missing = !pids.empty();
        return c;
    }
    if (rc < 0) {
        c.dir_error = true;
        c.notes.push_back(why);
        return c;
    }
    std::vector<pid_t> targets = pids;
    if (targets.empty()) {
        DIR* d = opendir(c.dir.c_str());
        if (d == nullptr) {
            c.dir_error = true;
            c.notes.push_back("cannot read " + c.dir + ": " + strerror(errno));
            return c;
        }
        while (dirent* e = readdir(d)) {
            std::string_view n = e->d_name;
            if (n.size() <= 5 || n.substr(n.size() - 5) != ".sock") continue;
            std::string_view digits = n.substr(0, n.size() - 5);
            if (digits.find_first_not_of("0123456789") != std::string_view::npos || digits.size() > 9) continue;
            targets.push_back(static_cast<pid_t>(std::stol(std::string(digits))));
        }
        closedir(d);
        std::sort(targets.begin(), targets.end());
    }
    const bool named = !pids.empty();
    for (pid_t pid : targets) {
        std::string path = c.dir + "/" + std::to_string(pid) + ".sock";
        std::string out;
        int r = ask(path, request.c_str(), out);
        if (r == 0) {
            ProcAnswer a;
            a.pid = pid;
            a.raw = out;
            while (!a.raw.empty() && (a.raw.back() == '\n' || a.raw.back() == '\r')) a.raw.pop_back();
            a.at = mono_seconds();
            if (a.raw.rfind("error:", 0) == 0) {
                c.notes.push_back(proc_label(pid) + " answered: " + a.raw);
                c.named_missing |= named;
            } else if (!JsonReader(a.raw).parse(a.obj) || a.obj.type != Json::Type::object) {
                c.notes.push_back(proc_label(pid) + " sent an answer that is not a JSON object; skipped");
                c.named_missing |= named;
            } else {
                c.procs.push_back(std::move(a));
            }
            continue;
        }
        c.named_missing |= named;
        if (r == -ENOENT) {
            c.notes.push_back(pid_gone(pid) ? "no process " + std::to_string(pid)
                                            : proc_label(pid) + " has no control socket (it holds no reservation, "
                                                                "or does not run under gsocket)");
        } else if (pid_gone(pid)) {
            // Left by a process that died without exit() (SIGKILL, _exit).
            // Refused, or reset: io_uring tears a dead process's ring down
            // asynchronously, so its listener may accept a moment longer.
            if (unlink(path.c_str()) == 0)
                c.notes.push_back("removed " + path + ": process " + std::to_string(pid) + " is gone");
            else
                c.notes.push_back("process " + std::to_string(pid) + " is gone; cannot remove " + path + ": " +
                                  strerror(errno));
        } else if (r == -ETIMEDOUT) {
            c.notes.push_back(proc_label(pid) + " did not answer within 1 s; skipped");
        } else {
            c.notes.push_back(proc_label(pid) + " does not answer on " + path + ": " + strerror(-r) + "; skipped");
        }
    }
    return c;
}

// 1234 -> "1.2k": live figures, where exact units (format_rate) would be noise.
std::string human(double v, const char* unit) {
    const char* pre[] = {"", "k", "M", "G", "T"};
    int i = 0;
    while (v >= 1000 && i < 4) v /= 1000, ++i;
    char b[32];
    if (i == 0) snprintf(b, sizeof b, "%.0f%s", v, unit);
    else snprintf(b, sizeof b, "%.*f%s%s", v < 10 ? 2 : v < 100 ? 1 : 0, v, pre[i], unit);
    return b;
}

uint64_t as_u64(double d) { return d > 0 ? static_cast<uint64_t>(d) : 0; }

// ", auth encrypt (0 failed, 0 replays)": how a keyed MCES flow is
// authenticated (policy auth_key), and the packets that failed it; "" when
// not keyed (or an older process).
std::string auth_text(const Json& m) {
    const std::string mode = m.str("auth", "none");
    if (mode == "none") return "";
    return ", auth " + mode + " (" + std::to_string(as_u64(m.num("auth_failed"))) + " failed, " +
           std::to_string(as_u64(m.num("replay"))) + " replays)";
}

// "; guaranteed 20.0 Mbit/s: delivered 19.9 Mbit/s, floor held, 0 shortfalls": a class-2 stream's
// reserved rate (docs/mces-recovery.md, "Guaranteed rate"); "" for other flows.
std::string guaranteed_text(const Json& m) {
    const Json* g = m.get("guaranteed");
    if (g == nullptr || g->type != Json::Type::object) return "";
    const bool held = g->flag("floor");
    char b[200];
    snprintf(b, sizeof b, "; guaranteed %.1f Mbit/s: delivered %.1f Mbit/s, %s, %llu shortfalls",
             g->num("reserved_rate") * 8 / 1e6, g->num("delivered_rate") * 8 / 1e6,
             held ? "floor held" : "path short: under congestion control",
             static_cast<unsigned long long>(as_u64(g->num("shortfalls"))));
    return b;
}

// "srtt 0.42 ms, cwnd 1.20MB, 1.52k packets sent, 1.50k received (3 lost, 0.20%), 4.4kB resent, 0 PTOs,
// 0 dropped, crc off": the MCES connection under a flow, as flows_json gives it. "crc" only when the
// snapshot says (older processes do not).
std::string mces_text(const Json& m) {
    const double sent = m.num("packets_sent"), lost = m.num("lost");
    const Json* crc = m.get("checksum");
    char b[320];
    snprintf(b, sizeof b,
             "srtt %.2f ms, cwnd %s, %s packets sent, %s received (%llu lost, %.2f%%), %s resent, %llu PTOs, "
             "%llu dropped%s",
             m.num("srtt_us") / 1000.0, human(m.num("cwnd"), "B").c_str(), human(sent, "").c_str(),
             human(m.num("packets_received"), "").c_str(), static_cast<unsigned long long>(as_u64(lost)),
             sent > 0 ? 100.0 * lost / sent : 0.0, human(m.num("retransmitted_bytes"), "B").c_str(),
             static_cast<unsigned long long>(as_u64(m.num("ptos"))),
             static_cast<unsigned long long>(as_u64(m.num("dropped"))),
             crc == nullptr || crc->type != Json::Type::boolean ? "" : crc->b ? ", crc on" : ", crc off");
    return b + auth_text(m) + guaranteed_text(m);
}

// "2 peers opened (2 established, 0 failed), 1 accepted, 1.20k sent, 1.19k received, plain 3 out 3 in,
// 1 fallback, 0 dropped": a UDP socket's MCES side (docs/mces.md, "unmodified UDP programs").
std::string mces_udp_text(const Json& m) {
    auto u = [&](const char* k) { return static_cast<unsigned long long>(as_u64(m.num(k))); };
    char b[512];   // room for every count at 20 digits
    snprintf(b, sizeof b,
             "%llu peers opened (%llu established, %llu failed), %llu accepted, %s sent, %s received, plain %llu "
             "out %llu in, %llu fallbacks, %llu dropped, %llu overflowed",
             u("connects"), u("established"), u("failed"), u("accepted"), human(m.num("sent"), "").c_str(),
             human(m.num("received"), "").c_str(), u("plain_out"), u("plain_in"), u("fallbacks"), u("dropped"),
             u("overflow"));
    std::string out = b + auth_text(m);
    if (m.has("on_time")) {   // class realtime: "; realtime: 99.95% on time (3 late), 41 repaired by FEC, ..."
        const double on = m.num("on_time"), late = m.num("late_dropped");
        snprintf(b, sizeof b, "; realtime: %.2f%% on time (%llu late, %llu copies too late), %llu repaired by FEC, "
                              "%llu repairs sent, %llu resent (%llu extra copies), %llu expired, jitter %.2f ms, %s clock",
                 on + late > 0 ? 100.0 * on / (on + late) : 100.0, u("late_dropped"), u("late_arrivals"),
                 u("fec_repaired"), u("repairs_sent"), u("retransmitted"), u("extra_copies"), u("expired"),
                 m.num("jitter_us") / 1000.0, m.str("clock", "strict").c_str());
        out += b;
    }
    return out;
}

// "granted up 60mbit down -", or "-" for a flow without a reservation.
std::string reservation_text(const Json& f) {
    if (!f.has("admission")) return "-";
    std::string s = f.str("admission");
    uint64_t up = as_u64(f.num("reserved_up")), down = as_u64(f.num("reserved_down"));
    if (up) s += " up " + gp::format_rate(up);
    if (down) s += " down " + gp::format_rate(down);
    return s;
}

std::string proc_title(const ProcAnswer& p) {
    return p.obj.str("process", "?") + "[" + std::to_string(static_cast<long>(p.obj.num("pid", p.pid))) + "]";
}

const std::vector<Json>& flows_of(const ProcAnswer& p) {
    static const std::vector<Json> none;
    const Json* f = p.obj.get("flows");
    return f && f->type == Json::Type::array ? f->a : none;
}

void print_notes(const Collected& c, FILE* to) {
    for (const std::string& n : c.notes) fprintf(to, "gsctl: %s\n", n.c_str());
}

std::string nothing_text(const Collected& c) {
    return "no gsocket process answers in " + c.dir +
           " (processes open a control socket there when they hold a reservation)";
}

int cmd_flows(const std::vector<std::string>& args) {
    bool json = false;
    std::vector<pid_t> pids;
    for (const std::string& a : args) {
        if (is_help(a)) {
            fputs(kFlowsUsage, stdout);
            return 0;
        }
        if (a == "--json") {
            json = true;
        } else if (!a.empty() && a.find_first_not_of("0123456789") == std::string::npos && a.size() <= 9 &&
                   std::stol(a) > 0) {
            pids.push_back(static_cast<pid_t>(std::stol(a)));
        } else {
            return usage_error("unexpected argument '" + a + "' (a PID is a positive number)", kFlowsUsage);
        }
    }
    Collected c = collect(pids);
    print_notes(c, stderr);
    if (c.dir_error) return 1;
    if (c.procs.empty() && pids.empty() && !c.dir_absent) fprintf(stderr, "gsctl: %s\n", nothing_text(c).c_str());
    if (json) {
        printf("[");
        for (size_t i = 0; i < c.procs.size(); ++i) printf("%s\n%s", i ? "," : "", c.procs[i].raw.c_str());
        printf("%s]\n", c.procs.empty() ? "" : "\n");
        return c.named_missing ? 1 : 0;
    }
    if (!c.procs.empty()) {
        printf("%-22s %-8s %-5s %-22s %-22s %-12s %-11s %-9s %-30s %9s %9s\n", "PROCESS", "DIR", "PROTO", "LOCAL",
               "PEER", "RULE", "CLASS", "TRANSPORT", "RESERVATION", "OUT", "IN");
        for (const ProcAnswer& p : c.procs) {
            const std::vector<Json>& fl = flows_of(p);
            if (fl.empty())
                printf("%-22s (no flows)\n", proc_title(p).c_str());
            for (const Json& f : fl) {
                std::string peer = f.str("peer");
                if (f.str("state", "open") == "closed") peer += " (closed)";
                printf("%-22s %-8s %-5s %-22s %-22s %-12s %-11s %-9s %-30s %9s %9s\n", proc_title(p).c_str(),
                       f.str("direction").c_str(), f.str("proto").c_str(), f.str("local").c_str(), peer.c_str(),
                       f.str("rule").c_str(), f.str("class").c_str(), f.str("transport").c_str(),
                       reservation_text(f).c_str(), human(f.num("bytes_out"), "B").c_str(),
                       human(f.num("bytes_in"), "B").c_str());
                if (const Json* m = f.get("mces"); m && m->type == Json::Type::object)
                    printf("%-22s   mces: %s\n", "", mces_text(*m).c_str());
                if (const Json* m = f.get("mces_udp"); m && m->type == Json::Type::object)
                    printf("%-22s   mces: %s\n", "", mces_udp_text(*m).c_str());
            }
        }
    }
    return c.named_missing ? 1 : 0;
}

constexpr const char* kMembersUsage =
    "usage: gsctl overlay members [OVERLAY_ID] [--root ADDRESS] [--json]\n"
    "\n"
    "The overlay members this user's gsocket processes run on this host (each\n"
    "answers on its control socket; network namespaces do not matter): overlay,\n"
    "logical address, process, neighbours. With --root, each member's parent and\n"
    "children in the spanning tree rooted at ADDRESS (a logical address as listed),\n"
    "and the tree itself drawn from the root through the members found here,\n"
    "with any member the tree does not reach (or reaches twice) named.\n"
    "Exit status: 0 ok, 1 no member found or the tree is broken, 2 usage error.\n";

struct MemberView {
    pid_t pid = 0;
    std::string proc;
    uint64_t overlay = 0;
    std::string protocol;
    bool joined = false;
    uint64_t address = 0;
    std::vector<uint64_t> neighbors, children;
    bool has_parent = false;
    uint64_t parent = 0;
    std::vector<std::pair<std::string, double>> stats;   // the node's counters, as the member sent them
};

std::vector<uint64_t> u64_list(const Json* v) {
    std::vector<uint64_t> out;
    if (v && v->type == Json::Type::array)
        for (const Json& x : v->a)
            if (x.type == Json::Type::number && x.whole) out.push_back(x.u);
    return out;
}

std::string list_text(const std::vector<uint64_t>& v) {
    if (v.empty()) return "-";
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
    return s;
}

// Draws root's tree from the members' children lists; returns false (with
// what is wrong on stderr) when a member is unreachable or reached twice.
bool print_tree(const std::vector<const MemberView*>& ms, uint64_t root) {
    std::map<uint64_t, const MemberView*> by;
    for (const MemberView* m : ms) by[m->address] = m;
    if (!by.count(root)) {
        fprintf(stderr, "gsctl: no member here has address %llu: give --root one of the addresses listed\n",
                static_cast<unsigned long long>(root));
        return false;
    }
    std::map<uint64_t, int> seen;
    bool ok = true;
    std::function<void(uint64_t, const std::string&, bool, int)> walk = [&](uint64_t a, const std::string& pre, bool last,
                                                                         int depth) {
        const bool again = seen[a]++ > 0;
        auto it = by.find(a);
        printf("%s%s%llu%s\n", pre.c_str(), depth == 0 ? "" : (last ? "`-- " : "|-- "),
               static_cast<unsigned long long>(a),
               again ? "  (reached twice)" : it == by.end() ? "  (not a member found here)" : "");
        if (again) ok = false;
        if (again || it == by.end() || depth > 64) return;
        const auto& kids = it->second->children;
        for (size_t i = 0; i < kids.size(); ++i)
            walk(kids[i], depth == 0 ? "" : pre + (last ? "    " : "|   "), i + 1 == kids.size(), depth + 1);
    };
    printf("tree rooted at %llu:\n", static_cast<unsigned long long>(root));
    walk(root, "", true, 0);
    for (const MemberView* m : ms)
        if (!seen.count(m->address)) {
            fprintf(stderr, "gsctl: member %llu (%s) is not in the tree\n", static_cast<unsigned long long>(m->address),
                    m->proc.c_str());
            ok = false;
        }
    return ok;
}

}  // namespace

int cmd_overlay_members(const std::vector<std::string>& args) {
    bool json = false;
    std::string root_text;
    uint64_t only = 0;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (is_help(a)) {
            fputs(kMembersUsage, stdout);
            return 0;
        }
        if (a == "--json") {
            json = true;
        } else if (a == "--root") {
            if (++i == args.size()) return usage_error("--root needs a logical address", kMembersUsage);
            root_text = args[i];
            errno = 0;
            if (root_text.empty() || root_text.find_first_not_of("0123456789") != std::string::npos ||
                root_text.size() > 20 || (strtoull(root_text.c_str(), nullptr, 10), errno != 0))
                return usage_error("--root " + root_text + ": a logical address is a decimal number, as listed",
                                   kMembersUsage);
        } else if (!a.empty() && a.find_first_not_of("0123456789") == std::string::npos && a.size() <= 19 && only == 0 &&
                   std::stoull(a) > 0) {
            only = std::stoull(a);
        } else {
            return usage_error("unexpected argument '" + a + "'", kMembersUsage);
        }
    }
    const bool with_root = !root_text.empty();
    const uint64_t root = with_root ? strtoull(root_text.c_str(), nullptr, 10) : 0;
    Collected c = collect({}, with_root ? "overlays " + root_text : std::string("overlays"));
    // Processes without members answer with an empty list; only real trouble is worth a note.
    for (const std::string& n : c.notes)
        if (n.find("has no control socket") == std::string::npos) fprintf(stderr, "gsctl: %s\n", n.c_str());
    if (c.dir_error) return 1;
    std::vector<MemberView> ms;
    for (const ProcAnswer& p : c.procs) {
        const Json* list = p.obj.get("overlays");
        if (list == nullptr || list->type != Json::Type::array) continue;
        for (const Json& o : list->a) {
            MemberView m;
            m.pid = p.pid;
            m.proc = proc_label(p.pid);
            auto whole = [&](std::string_view k) {
                const Json* v = o.get(k);
                return v && v->type == Json::Type::number && v->whole ? v->u : 0;
            };
            m.overlay = whole("overlay");
            if (only && m.overlay != only) continue;
            m.protocol = o.str("protocol");
            m.joined = o.flag("joined");
            m.address = whole("address");
            m.neighbors = u64_list(o.get("neighbors"));
            m.children = u64_list(o.get("children"));
            const Json* par = o.get("parent");
            m.has_parent = par && par->type == Json::Type::number && par->whole;
            if (m.has_parent) m.parent = par->u;
            if (const Json* st = o.get("stats"); st && st->type == Json::Type::object)
                for (size_t k = 0; k < st->keys.size(); ++k)
                    if (st->values[k].type == Json::Type::number) m.stats.emplace_back(st->keys[k], st->values[k].n);
            ms.push_back(std::move(m));
        }
    }
    if (json) {
        printf("{\"members\":[");
        for (size_t i = 0; i < ms.size(); ++i) {
            const MemberView& m = ms[i];
            printf("%s\n{\"pid\":%d,\"overlay\":%llu,\"protocol\":%s,\"joined\":%s,\"address\":%llu,\"neighbors\":[%s]",
                   i ? "," : "", static_cast<int>(m.pid), static_cast<unsigned long long>(m.overlay),
                   json_str(m.protocol).c_str(), m.joined ? "true" : "false", static_cast<unsigned long long>(m.address),
                   m.neighbors.empty() ? "" : list_text(m.neighbors).c_str());
            if (with_root) {
                printf(",\"parent\":%s,\"children\":[%s]", m.has_parent ? std::to_string(m.parent).c_str() : "null",
                       m.children.empty() ? "" : list_text(m.children).c_str());
            }
            printf(",\"stats\":{");
            for (size_t k = 0; k < m.stats.size(); ++k)
                printf("%s%s:%.0f", k ? "," : "", json_str(m.stats[k].first).c_str(), m.stats[k].second);
            printf("}}");
        }
        printf("%s]}\n", ms.empty() ? "" : "\n");
        return ms.empty() ? 1 : 0;
    }
    if (ms.empty()) {
        fprintf(stderr, "gsctl: no overlay member%s runs in this user's gsocket processes (%s)\n",
                only ? (" of overlay " + std::to_string(only)).c_str() : "", c.dir.c_str());
        return 1;
    }
    std::sort(ms.begin(), ms.end(), [](const MemberView& a, const MemberView& b) {
        return a.overlay != b.overlay ? a.overlay < b.overlay : a.address < b.address;
    });
    printf("%-12s %-5s %-20s %-24s %-24s", "OVERLAY", "PROTO", "ADDRESS", "PROCESS", "NEIGHBOURS");
    if (with_root) printf(" %-20s %s", "PARENT", "CHILDREN");
    printf("\n");
    for (const MemberView& m : ms) {
        printf("%-12llu %-5s %-20s %-24s %-24s", static_cast<unsigned long long>(m.overlay), m.protocol.c_str(),
               m.joined ? std::to_string(m.address).c_str() : "(joining)", m.proc.c_str(), list_text(m.neighbors).c_str());
        if (with_root)
            printf(" %-20s %s", m.has_parent ? std::to_string(m.parent).c_str() : "(root)", list_text(m.children).c_str());
        printf("\n");
    }
    if (!with_root) return 0;
    bool ok = true;
    std::set<uint64_t> overlays;
    for (const MemberView& m : ms) overlays.insert(m.overlay);
    for (uint64_t id : overlays) {
        std::vector<const MemberView*> in;
        for (const MemberView& m : ms)
            if (m.overlay == id && m.joined) in.push_back(&m);
        printf("overlay %llu: ", static_cast<unsigned long long>(id));
        ok &= print_tree(in, root);
    }
    return ok ? 0 : 1;
}

namespace {

int cmd_top(const std::vector<std::string>& args) {
    double interval = 1.0;
    long iterations = 0;
    for (size_t i = 0; i < args.size(); ++i) {
        std::string a = args[i], value;
        if (is_help(a)) {
            fputs(kTopUsage, stdout);
            return 0;
        }
        bool has_value = false;
        if (a.rfind("--", 0) == 0 && a.find('=') != std::string::npos) {
            value = a.substr(a.find('=') + 1);
            a = a.substr(0, a.find('='));
            has_value = true;
        }
        if (a != "--interval" && a != "--iterations") return usage_error("unknown argument '" + a + "'", kTopUsage);
        if (!has_value) {
            if (i + 1 >= args.size()) return usage_error(a + " needs a value", kTopUsage);
            value = args[++i];
        }
        char* end = nullptr;
        if (a == "--interval") {
            interval = strtod(value.c_str(), &end);
            if (value.empty() || *end || !(interval >= 0.05 && interval <= 3600))
                return usage_error("--interval: write seconds, 0.05 to 3600, not '" + value + "'", kTopUsage);
        } else {
            iterations = strtol(value.c_str(), &end, 10);
            if (value.empty() || *end || iterations < 1)
                return usage_error("--iterations: write a count of 1 or more, not '" + value + "'", kTopUsage);
        }
    }
    const bool tty = isatty(STDOUT_FILENO);
    struct Prev {
        double out = 0, in = 0, at = 0;
    };
    std::map<std::string, Prev> prev;
    char itv[32];
    snprintf(itv, sizeof itv, "%g", interval);
    for (long n = 1; iterations == 0 || n <= iterations; ++n) {
        const double started = mono_seconds();
        Collected c = collect({});
        if (c.dir_error) {
            print_notes(c, stderr);
            return 1;
        }
        std::map<std::string, Prev> seen;
        std::string out;
        char line[512];
        time_t wall = time(nullptr);
        char clock_text[16] = "";
        strftime(clock_text, sizeof clock_text, "%H:%M:%S", localtime(&wall));
        size_t nflows = 0;
        for (const ProcAnswer& p : c.procs) nflows += flows_of(p).size();
        snprintf(line, sizeof line, "gsctl top  %s  %zu process(es), %zu flow(s)  every %ss  [%ld]\n", clock_text,
                 c.procs.size(), nflows, itv, n);
        out += line;
        if (c.procs.empty()) out += nothing_text(c) + "\n";
        for (const ProcAnswer& p : c.procs) {
            std::string rows;
            double rate_out = 0, rate_in = 0, bytes_out = 0, bytes_in = 0;
            uint64_t res_up = 0, res_down = 0;
            bool any_rate = false;
            for (const Json& f : flows_of(p)) {
                std::string key = std::to_string(p.pid) + "|" + std::to_string(static_cast<long>(f.num("fd", -1))) +
                                  "|" + f.str("proto") + "|" + f.str("local") + "|" + f.str("peer");
                Prev now{f.num("bytes_out"), f.num("bytes_in"), p.at};
                seen[key] = now;
                std::string ro = "-", ri = "-";
                auto it = prev.find(key);
                if (it != prev.end() && now.at > it->second.at && now.out >= it->second.out &&
                    now.in >= it->second.in) {
                    double dt = now.at - it->second.at;
                    double o = (now.out - it->second.out) / dt, in = (now.in - it->second.in) / dt;
                    ro = human(o, "B/s");
                    ri = human(in, "B/s");
                    rate_out += o;
                    rate_in += in;
                    any_rate = true;
                }
                bytes_out += now.out;
                bytes_in += now.in;
                res_up += as_u64(f.num("reserved_up"));
                res_down += as_u64(f.num("reserved_down"));
                std::string peer = f.str("peer");
                if (f.str("state", "open") == "closed") peer += " (closed)";
                // A bridged flow's transport is the kernel's, carried by the engine.
                std::string transport = f.str("transport");
                if (f.flag("bridged")) transport += "+br";
                std::string queue = f.has("queue") ? human(f.num("queue"), "B") : "-";
                std::string drops = f.has("drops") ? std::to_string(as_u64(f.num("drops"))) : "-";
                snprintf(line, sizeof line, "  %-4ld %-4s %-22s %-26s %-11s %-9s %10s %10s %9s %9s %8s %6s  %s\n",
                         static_cast<long>(f.num("fd", -1)), f.str("proto").c_str(), f.str("local").c_str(),
                         peer.c_str(), f.str("class").c_str(), transport.c_str(), ro.c_str(), ri.c_str(),
                         human(now.out, "B").c_str(), human(now.in, "B").c_str(), queue.c_str(), drops.c_str(),
                         reservation_text(f).c_str());
                rows += line;
            }
            std::string res = "-";
            if (res_up || res_down)
                res = "up " + (res_up ? gp::format_rate(res_up) : std::string("-")) + " down " +
                      (res_down ? gp::format_rate(res_down) : std::string("-"));
            snprintf(line, sizeof line, "%-22s %-3zu flow(s) %-48s %10s %10s %9s %9s %15s  reserved %s\n",
                     proc_title(p).c_str(), flows_of(p).size(), "", any_rate ? human(rate_out, "B/s").c_str() : "-",
                     any_rate ? human(rate_in, "B/s").c_str() : "-", human(bytes_out, "B").c_str(),
                     human(bytes_in, "B").c_str(), "", res.c_str());
            out += "\n";
            out += line;
            snprintf(line, sizeof line, "  %-4s %-4s %-22s %-26s %-11s %-9s %10s %10s %9s %9s %8s %6s  %s\n", "FD",
                     "PROT", "LOCAL", "PEER", "CLASS", "TRANSPORT", "OUT/s", "IN/s", "OUT", "IN", "QUEUE", "DROPS",
                     "RESERVATION");
            out += line;
            out += rows;
        }
        for (const std::string& note : c.notes) out += "gsctl: " + note + "\n";
        prev = std::move(seen);
        if (tty) fputs("\x1b[H\x1b[2J", stdout);
        else if (n > 1) fputs("\n", stdout);
        fputs(out.c_str(), stdout);
        fflush(stdout);
        if (iterations != 0 && n == iterations) break;
        double wait = interval - (mono_seconds() - started);
        if (wait > 0) {
            timespec ts{static_cast<time_t>(wait), static_cast<long>((wait - static_cast<double>(static_cast<time_t>(wait))) * 1e9)};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            }
        }
    }
    return 0;
}

}  // namespace

int cmd_overlay(const std::vector<std::string>& args);   // gsctl_overlay.cpp

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) return usage_error("a command is needed", kUsage);
    if (is_help(args[0])) {
        fputs(kUsage, stdout);
        return 0;
    }
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (args[0] == "policy") return cmd_policy(rest);
    if (args[0] == "reservations") return cmd_reservations(rest);
    if (args[0] == "flows") return cmd_flows(rest);
    if (args[0] == "top") return cmd_top(rest);
    if (args[0] == "overlay") return cmd_overlay(rest);
    if (args[0][0] == '-') return usage_error("unknown option '" + args[0] + "'", kUsage);
    return usage_error("unknown command '" + args[0] + "'", kUsage);
}
