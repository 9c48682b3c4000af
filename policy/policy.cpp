// Policy: loading, the built-in default, the file lookup, matching and the
// canonical text form.
#include "policy/policy.h"

#include "policy/matcher.h"
#include "policy/parser.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

namespace gs::policy {

namespace {

constexpr size_t kMaxFileSize = 16u << 20;   // a policy is hand-written text

// Kept in step with docs/policy.md ("The built-in policy").
constexpr std::string_view kBuiltin =
    "; gsocket built-in policy, used when no policy file is found.\n"
    "; It changes nothing on the wire: every flow stays native, without QoS.\n"
    "; The rules only name common flows in the log.\n"
    "[general]\n"
    "on_error  = open\n"
    "log       = warn\n"
    "\n"
    "[flow dns]\n"
    "proto     = udp\n"
    "dport     = 53\n"
    "class     = datagram\n"
    "transport = native\n"
    "\n"
    "[flow ssh]\n"
    "proto     = tcp\n"
    "dport     = 22\n"
    "class     = reliable\n"
    "transport = native\n"
    "\n"
    "[flow web]\n"
    "proto     = tcp\n"
    "dport     = 80, 443, 8000-8099\n"
    "class     = reliable\n"
    "transport = native\n";

bool is_file(const std::string& p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

Policy::Policy() {
    fallback_tcp_.rule = "default";
    fallback_tcp_.service = ServiceClass::reliable;
    fallback_udp_.rule = "default";
    fallback_udp_.service = ServiceClass::datagram;
}

Policy::~Policy() = default;
Policy::Policy(Policy&&) noexcept = default;
Policy& Policy::operator=(Policy&&) noexcept = default;

Policy Policy::parse(std::string_view text, std::string_view file) {
    Policy p;
    p.source_ = std::string(file);
    Parser(p, text, file).run();
    p.matcher_ = std::make_unique<Matcher>(p.rules_);
    return p;
}

Policy Policy::load_file(const std::string& path) {
    std::string text;
    int err = 0;
    FILE* f = fopen(path.c_str(), "re");
    if (!f) {
        err = errno;
    } else {
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
            text.append(buf, n);
            if (text.size() > kMaxFileSize) break;
        }
        if (ferror(f)) err = errno ? errno : EIO;
        fclose(f);
    }
    if (err == 0 && text.size() > kMaxFileSize) err = EFBIG;
    if (err != 0) {
        Policy p;
        p.source_ = path;
        p.diags_.push_back(Diagnostic{path, 0, path + ":0: cannot read: " + strerror(err) +
                                                   ", check GSOCKET_POLICY"});
        p.matcher_ = std::make_unique<Matcher>(p.rules_);
        return p;
    }
    return parse(text, path);
}

std::string_view Policy::builtin_text() noexcept { return kBuiltin; }

Policy Policy::builtin() {
    Policy p = parse(kBuiltin, "<built-in>");
    return p;
}

std::string find_policy_file() {
    const char* xdg = getenv("XDG_CONFIG_HOME");
    // The XDG spec ignores a relative XDG_CONFIG_HOME.
    if (xdg && xdg[0] == '/') {
        std::string p = std::string(xdg) + "/gsocket/policy.ini";
        if (is_file(p)) return p;
    } else if (const char* home = getenv("HOME"); home && home[0] == '/') {
        std::string p = std::string(home) + "/.config/gsocket/policy.ini";
        if (is_file(p)) return p;
    }
    if (is_file("/etc/gsocket/policy.ini")) return "/etc/gsocket/policy.ini";
    return "";
}

int Policy::match_index(const FlowKey& flow) const noexcept {
    return matcher_ ? matcher_->match(rules_, flow) : match_index_linear(flow);
}

int Policy::match_index_linear(const FlowKey& flow) const noexcept {
    Address dst = normalise(flow.dst), src = normalise(flow.src);
    for (size_t i = 0; i < rules_.size(); ++i)
        if (matches_normalised(rules_[i], flow, dst, src)) return static_cast<int>(i);
    return -1;
}

int Policy::rule_index(const Decision& d) const noexcept {
    // std::less gives a total order even for pointers into different objects.
    std::less<const void*> lt;
    const void* p = &d;
    if (rules_.empty() || lt(p, rules_.data()) || !lt(p, rules_.data() + rules_.size())) return -1;
    auto off = reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(rules_.data());
    return static_cast<int>(off / sizeof(Rule));
}

const Decision& Policy::match(const FlowKey& flow) const noexcept {
    int i = match_index(flow);
    if (i < 0) return flow.proto == Proto::udp ? fallback_udp_ : fallback_tcp_;
    const Rule& r = rules_[static_cast<size_t>(i)];
    return (flow.proto == Proto::udp && !r.class_set && r.proto == Proto::any) ? r.decision_udp
                                                                                : r.decision;
}

namespace {

// "key = a, b, c" wrapped with indented continuation lines so no line passes
// inih's limit.
void put_list(std::string& out, std::string_view key, const std::vector<std::string>& items) {
    std::string line = std::string(key) + " =";
    bool first = true;
    for (const std::string& it : items) {
        if (!first && line.size() + it.size() + 2 > 100) {
            out += line + "\n";
            line = "   ";
            first = true;
        }
        line += (first ? " " : ", ") + it;
        first = false;
    }
    out += line + "\n";
}

std::vector<std::string> ports_text(const std::vector<PortRange>& v) {
    std::vector<std::string> out;
    for (const PortRange& r : v)
        out.push_back(r.lo == r.hi ? std::to_string(r.lo)
                                   : std::to_string(r.lo) + "-" + std::to_string(r.hi));
    return out;
}

std::vector<std::string> cidrs_text(const std::vector<Cidr>& v) {
    std::vector<std::string> out;
    for (const Cidr& c : v) out.push_back(format_cidr(c));
    return out;
}

}  // namespace

std::string to_ini(const Policy& p) {
    std::string o;
    const General& g = p.general();
    o += "[general]\n";
    o += std::string("on_error = ") + (g.on_error == OnError::open ? "open" : "fail") + "\n";
    o += std::string("on_reject = ") + (g.on_reject == OnReject::fail ? "fail" : "downgrade") + "\n";
    o += std::string("log = ") + name(g.log) + "\n";
    o += "capacity = " + (g.capacity ? format_rate(g.capacity) : "0") + "\n";
    o += "rate_up = " + (g.rate_up ? format_rate(g.rate_up) : "0") + "\n";
    o += "rate_down = " + (g.rate_down ? format_rate(g.rate_down) : "0") + "\n";
    if (g.bridge != Bridge::needed) o += std::string("bridge = ") + name(g.bridge) + "\n";
    for (const Rule& r : p.rules()) {
        const Decision& d = r.decision;
        const Qos& q = d.qos;
        o += "\n[flow " + d.rule + "]\n";
        if (!r.process.empty()) put_list(o, "process", r.process);
        if (r.proto != Proto::any) o += std::string("proto = ") + name(r.proto) + "\n";
        if (r.direction != Direction::any) o += std::string("direction = ") + name(r.direction) + "\n";
        if (!r.dst.empty()) put_list(o, "dst", cidrs_text(r.dst));
        if (!r.src.empty()) put_list(o, "src", cidrs_text(r.src));
        if (!r.dport.empty()) put_list(o, "dport", ports_text(r.dport));
        if (!r.sport.empty()) put_list(o, "sport", ports_text(r.sport));
        if (r.class_set) o += std::string("class = ") + name(d.service) + "\n";
        o += std::string("transport = ") + name(d.transport) + "\n";
        if (q.rate) o += "rate = " + format_rate(q.rate) + "\n";
        if (q.rate_down) o += "rate_down = " + format_rate(q.rate_down) + "\n";
        if (q.burst) o += "burst = " + format_size(q.burst) + "\n";
        if (q.latency_us) o += "latency = " + format_duration(q.latency_us) + "\n";
        if (q.jitter_us) o += "jitter = " + format_duration(q.jitter_us) + "\n";
        if (q.loss_ppm) o += "loss = " + format_percent(q.loss_ppm) + "\n";
        if (q.priority >= 0) o += "priority = " + std::to_string(q.priority) + "\n";
        if (q.dscp >= 0) o += "dscp = " + format_dscp(q.dscp) + "\n";
        if (q.fec_data)
            o += "fec = " + std::to_string(q.fec_data) + "/" + std::to_string(q.fec_parity) + "\n";
        if (q.clock_symmetric) o += "clock = symmetric\n";
        if (q.rcvbuf) o += "rcvbuf = " + format_size(q.rcvbuf) + "\n";
        if (q.window) o += "window = " + format_size(q.window) + "\n";
        if (q.notsent_lowat) o += "notsent_lowat = " + format_size(q.notsent_lowat) + "\n";
        if (q.congestion[0]) o += std::string("congestion = ") + q.congestion + "\n";
        if (!q.elements.empty()) put_list(o, "elements", q.elements);
        if (d.auth != Auth::none) {   // the path resolved against the policy file's directory
            o += "auth_key = " + d.auth_key + "\n";
            o += std::string("auth = ") + name(d.auth) + "\n";
        }
    }
    for (const Overlay& ov : p.overlays()) {
        o += "\n[overlay " + ov.name + "]\n";
        if (ov.id) o += "id = " + std::to_string(ov.id) + "\n";
        if (!ov.protocol.empty()) o += "protocol = " + ov.protocol + "\n";
        if (ov.group.family == AF_INET)
            o += "group = " + format_address(ov.group) + ":" + std::to_string(ov.group_port) + "\n";
        else if (ov.group.family == AF_INET6)
            o += "group = [" + format_address(ov.group) + "]:" + std::to_string(ov.group_port) + "\n";
        if (!ov.server.empty()) o += "server = " + ov.server + "\n";
    }
    return o;
}

}  // namespace gs::policy
