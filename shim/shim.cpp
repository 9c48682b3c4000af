#include "shim/shim.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <new>

#include "core/engine/control.h"
#include "core/engine/engine.h"
#include "core/engine/mces_admit.h"
#include "core/qos/native_plan.h"
#include "shim/log.h"
#include "shim/real.h"

namespace gs::shim {

std::atomic<bool> g_ready{false};

namespace {

// Written once by init() before g_ready is published, read-only afterwards.
const policy::Policy* g_policy = nullptr;
bool g_fail_closed = false;     // the policy is broken and says on_error = fail
bool g_has_src_rules = false;   // only then is getsockname worth a syscall at connect
char g_process[256] = "";
char g_stats[PATH_MAX] = "";
// One bit per (rule, kind of warning), so each is logged once per process.
// Index 0 is the fallback decision, rule i is at i + 1.
// Never freed: hooks in other threads may still run while the process exits.
std::atomic<uint32_t>* g_warned = nullptr;
size_t g_warned_count = 0;
std::atomic<bool> g_denied_logged{false};
// The host reservation ledger, opened at load when a rule reserves (classes
// guaranteed and realtime with a rate), or later by ensure_ledger() for a
// GSocket API request. Published once, never freed.
std::atomic<qos::Ledger*> g_ledger_ptr{nullptr};
inline qos::Ledger* ledger() noexcept { return g_ledger_ptr.load(std::memory_order_acquire); }
std::atomic<bool> g_ledger_open_logged{false};
// The MCES server's half of the reservations (core/engine/mces_admit.h): made
// with the ledger when it opens, handed to every MCES listener through
// mces_params(). Published once, never freed (endpoints call it to the end).
std::atomic<engine::McesAdmission*> g_mces_admission{nullptr};
std::atomic<bool> g_untrackable_logged{false};

enum Warn : uint32_t {
    kWarnTransport = 1u << 16,   // upgraded transport asked, left native
    kWarnRateDown = 1u << 17,    // rate_down has no native knob
    kWarnUdpRate = 1u << 18,     // UDP pacing needs the fq qdisc
    kWarnNoKey = 1u << 19,       // auth_key set, no key loaded: left native
    kWarnDefaultAuto = 1u << 20, // the class's default auto, not written: left native
};

// Whether rule `rule` writes its transport (not the class's default).
bool transport_written(int rule) noexcept {
    return rule >= 0 && static_cast<size_t>(rule) < g_policy->rules().size() && g_policy->rules()[rule].transport_set;
}

bool once(int rule, uint32_t bit) noexcept {
    size_t i = static_cast<size_t>(rule + 1);
    if (i >= g_warned_count) return false;
    return (g_warned[i].fetch_or(bit, std::memory_order_relaxed) & bit) == 0;
}

const char* errname(int e) noexcept {
    const char* n = strerrorname_np(e);
    return n ? n : "error";
}

bool parse_level(const char* s, policy::LogLevel& out) noexcept {
    static constexpr policy::LogLevel all[] = {policy::LogLevel::off, policy::LogLevel::error,
                                              policy::LogLevel::warn, policy::LogLevel::info,
                                              policy::LogLevel::debug};
    for (policy::LogLevel l : all)
        if (strcmp(s, policy::name(l)) == 0) return out = l, true;
    return false;
}

// The shim's own descriptors: close/close_range/closefrom leave them alone.
// Counted, so that bridges never take the fds a program would have had
// (bridge_fd_room).
std::atomic<int> g_internal_fds{0};
void protect_fd(int fd) noexcept {
    if (!trackable(fd)) return;
    note_fd(fd);
    if (fd_slot(fd).exchange(slot::kInternal, std::memory_order_relaxed) != slot::kInternal)
        g_internal_fds.fetch_add(1, std::memory_order_relaxed);
}
void unprotect_fd(int fd) noexcept {
    if (trackable(fd) && fd_slot(fd).exchange(0, std::memory_order_relaxed) == slot::kInternal)
        g_internal_fds.fetch_sub(1, std::memory_order_relaxed);
}

// After fork() both processes hold every socket's open file: a socket one
// of them bridged later would leave the other on the transport (the
// engine's), reading under it. Not-yet-classified sockets stay native from
// here on, in both.
void expose_unclassified_sockets() noexcept {
    for (int fd = 0, max = max_tracked_fd(); fd <= max; ++fd) {
        uint32_t v = fd_slot(fd).load(std::memory_order_relaxed);
        if (slot::unclassified(v)) fd_slot(fd).fetch_or(slot::kExposed, std::memory_order_relaxed);
    }
}

void on_fork_parent() noexcept { expose_unclassified_sockets(); }

void on_fork_child() noexcept {
    expose_unclassified_sockets();
    mark_all_inherited();
    qos::Ledger* led = ledger();
    if (led != nullptr && led->is_open()) {
        // The child opens its own descriptor: the inherited one shares the
        // parent's lock. Its reservations stay the parent's.
        int old = led->fd();
        unprotect_fd(old);
        if (led->after_fork() == 0) protect_fd(led->fd());
    }
}

using qos::rate_text;

void open_ledger(const policy::Policy& pol, bool needed) {
    // A rule that reserves needs it; so does one that carries flows over
    // MCES: this process may serve MCES clients that ask for a reserved rate.
    for (const policy::Rule& r : pol.rules())
        needed |= reserving(r.decision) || r.decision.transport == policy::Transport::mces ||
                  r.decision.transport == policy::Transport::automatic;
    if (!needed || pol.general().capacity == 0) return;
    std::string path, why;
    auto* l = new qos::Ledger();
    if (qos::ledger_path(path, why, true) != 0) {
        GS_LOG(warn, "no reservation ledger: %s; guaranteed and realtime flows proceed without admission",
               why.c_str());
    } else if (l->open(path.c_str(), pol.general().capacity, pol.general().capacity) != 0) {
        GS_LOG(warn, "%s; guaranteed and realtime flows proceed without admission", l->error());
    } else {
        protect_fd(l->fd());
        // No memory: MCES clients are admitted as they ask (fail open).
        g_mces_admission.store(
            new (std::nothrow) engine::McesAdmission(*l, pol.general().on_reject,
                                                     [](const char* line) noexcept { GS_LOG(warn, "%s", line); }),
            std::memory_order_release);
    }
    g_ledger_ptr.store(l, std::memory_order_release);
}

void load() {
    const char* env_log = getenv("GSOCKET_LOG");
    policy::LogLevel level = policy::LogLevel::warn;
    bool bad_env_log = env_log && *env_log && !parse_level(env_log, level);
    log::configure(level, getenv("GSOCKET_LOG_FILE"));
    if (bad_env_log)
        GS_LOG(warn, "GSOCKET_LOG=%s: unknown level, use off, error, warn, info or debug; using warn", env_log);

    const char* proc = program_invocation_short_name;
    strncpy(g_process, proc ? proc : "", sizeof g_process - 1);

    const char* path = getenv("GSOCKET_POLICY");
    std::string found;
    auto* pol = new policy::Policy();
    if (path && *path) {
        *pol = policy::Policy::load_file(path);
    } else if (!(found = policy::find_policy_file()).empty()) {
        *pol = policy::Policy::load_file(found);
    } else {
        *pol = policy::Policy::builtin();
    }
    g_policy = pol;

    if (!(env_log && *env_log) && pol->ok()) log::configure(pol->general().log, getenv("GSOCKET_LOG_FILE"));

    for (const policy::Diagnostic& d : pol->diagnostics()) GS_LOG(error, "%s", d.text.c_str());
    if (!pol->ok()) {
        g_fail_closed = pol->general().on_error == policy::OnError::fail;
        GS_LOG(error, "policy %s has %zu error(s): %s", pol->source().c_str(), pol->diagnostics().size(),
               g_fail_closed ? "on_error = fail, so connect/sendto/listen on TCP and UDP sockets fail with EACCES"
                             : "every flow stays native, without QoS (on_error = open)");
    }
    if (pol->ok() && (pol->general().rate_up || pol->general().rate_down))
        GS_LOG(info, "policy %s: rate_up/rate_down are enforced by the engine on this process's TCP and UDP "
                     "flows (a UDP socket that is in an epoll set before its first send stays native)",
               pol->source().c_str());

    for (const policy::Rule& r : pol->rules()) g_has_src_rules |= !r.src.empty();
    g_warned_count = pol->rules().size() + 1;
    g_warned = new std::atomic<uint32_t>[g_warned_count]();

    const char* stats = getenv("GSOCKET_STATS");
    if (stats && *stats) {
        strncpy(g_stats, stats, sizeof g_stats - 1);
        keep_closed_flows(true);
    }
    engine::set_fd_guard(engine::FdGuard{&protect_fd, &unprotect_fd});
    open_ledger(*pol, false);
    pthread_atfork(nullptr, on_fork_parent, on_fork_child);
    GS_LOG(debug, "loaded policy %s for process %s: %zu rules", pol->source().c_str(), g_process,
           pol->rules().size());
}

void apply_native(int fd, const policy::Decision& d, int rule, int family, policy::Proto proto,
                  FlowRecord* rec) noexcept {
    qos::NativePlan plan = qos::plan_native(d, family, proto);
    for (int i = 0; i < plan.count; ++i) {
        const qos::Setting& s = plan.settings[i];
        int rc;
        if (s.knob == qos::Knob::tos || s.knob == qos::Knob::tclass) {
            int cur = 0;
            socklen_t len = sizeof cur;
            if (real::getsockopt()(fd, s.level, s.optname, &cur, &len) != 0) cur = 0;
            int v = qos::tos_with_dscp(static_cast<int>(s.value), cur);
            rc = real::setsockopt()(fd, s.level, s.optname, &v, sizeof v);
        } else if (s.knob == qos::Knob::pacing) {
            uint64_t v = s.value;
            rc = real::setsockopt()(fd, s.level, s.optname, &v, sizeof v);
            if (rc != 0 && errno == EINVAL) {   // kernels before 4.20 take 32 bits
                uint32_t v32 = v > UINT32_MAX - 1 ? UINT32_MAX - 1 : static_cast<uint32_t>(v);
                rc = real::setsockopt()(fd, s.level, s.optname, &v32, sizeof v32);
            }
        } else if (s.knob == qos::Knob::congestion) {
            rc = real::setsockopt()(fd, s.level, s.optname, s.text, static_cast<socklen_t>(strlen(s.text)));
        } else {
            int v = s.value > INT_MAX ? INT_MAX : static_cast<int>(s.value);
            rc = real::setsockopt()(fd, s.level, s.optname, &v, sizeof v);
        }
        uint16_t bit = static_cast<uint16_t>(1u << static_cast<unsigned>(s.knob));
        if (rc == 0) {
            if (rec) rec->applied |= bit;
            continue;
        }
        int e = errno;
        if (rec) {
            rec->failed |= bit;
            if (rec->first_errno == 0) rec->first_errno = e;
        }
        if (once(rule, bit)) {
            if (s.knob == qos::Knob::congestion)
                GS_LOG(warn, "flow rule %s: congestion = %s refused by the kernel (%s: %s); see "
                             "/proc/sys/net/ipv4/tcp_allowed_congestion_control; the flow keeps the default",
                       d.rule.c_str(), s.text, errname(e), strerror(e));
            else
                GS_LOG(warn, "flow rule %s: %s = %llu refused by the kernel (%s: %s); left unchanged",
                       d.rule.c_str(), qos::name(s.knob), static_cast<unsigned long long>(s.value), errname(e),
                       strerror(e));
        }
    }
    // UDP flows with a rate or a rate_down are bridged (the engine enforces
    // them) unless the policy says bridge = never.
    const bool no_bridges = g_policy->general().bridge == policy::Bridge::never;
    if (proto == policy::Proto::udp && d.qos.rate > 0 && no_bridges && once(rule, kWarnUdpRate))
        GS_LOG(info, "flow rule %s: rate on a native UDP flow is SO_MAX_PACING_RATE, which only the fq qdisc "
                     "enforces (bridge = never keeps the engine out)", d.rule.c_str());
    if (d.qos.rate_down > 0 && proto == policy::Proto::udp && no_bridges && once(rule, kWarnRateDown))
        GS_LOG(warn, "flow rule %s: rate_down needs the engine, and bridge = never: this udp flow gets none",
               d.rule.c_str());
    // MCES carries TCP flows of a stream class and UDP flows of a message
    // class (datagram, realtime).
    const bool stream = d.service == policy::ServiceClass::reliable || d.service == policy::ServiceClass::guaranteed;
    const bool messages = d.service == policy::ServiceClass::datagram || d.service == policy::ServiceClass::realtime;
    const bool carried = d.transport != policy::Transport::overlay &&
                         (proto == policy::Proto::tcp ? stream : messages && !no_bridges);
    if (d.transport != policy::Transport::native && !carried && once(rule, kWarnTransport)) {
        const char* why = proto == policy::Proto::udp && messages
                              ? "bridge = never keeps the engine, which runs MCES, out"
                              : "MCES carries TCP flows of class reliable or guaranteed and UDP flows of class "
                                "datagram or realtime so far";
        if (d.transport == policy::Transport::automatic)
            GS_LOG(info, "flow rule %s: transport = auto stays native for this %s flow: %s", d.rule.c_str(),
                   policy::name(proto), why);
        else
            GS_LOG(warn, "flow rule %s: transport = %s: %s; this %s flow stays native", d.rule.c_str(),
                   policy::name(d.transport), why, policy::name(proto));
    } else if (carried && d.transport == policy::Transport::automatic && !transport_written(rule) &&
               once(rule, kWarnDefaultAuto)) {
        // docs/policy.md: trying MCES sends a peer handshake packets it never asked for.
        GS_LOG(info, "flow rule %s (line %d): class %s keeps the kernel's %s with its QoS knobs; write transport "
                     "= auto (or mces) in the rule to carry it over MCES where the peers run gsocket",
               d.rule.c_str(), d.line, policy::name(d.service), policy::name(proto));
    }
}

// Whether a flow's decision sends it over MCES: transport = mces, or auto
// written in the rule (the class default auto of guaranteed and realtime
// stays native: trying MCES sends a peer handshake packets on the flow's
// port, which a plain program there never asked for; docs/policy.md), for
// a class MCES has a chain for: a
// TCP flow of class reliable or guaranteed (a stream), a UDP flow of class
// datagram or realtime (messages, class 0 or 3: docs/mces.md, "unmodified
// UDP programs").
bool mces_wanted(const policy::Decision& d, int rule, policy::Proto proto) noexcept {
    const bool stream = d.service == policy::ServiceClass::reliable || d.service == policy::ServiceClass::guaranteed;
    const bool messages = d.service == policy::ServiceClass::datagram || d.service == policy::ServiceClass::realtime;
    if (proto == policy::Proto::udp ? !messages : !stream) return false;
    const bool wanted = d.transport == policy::Transport::mces ||
                        (d.transport == policy::Transport::automatic && transport_written(rule));
    // A rule with auth_key never runs MCES without its key: the policy reads
    // and checks the key when it loads (a rule whose key fails is not kept),
    // so this is a guard; such a flow stays native, as a program expects.
    if (wanted && d.auth != policy::Auth::none && !(d.psk && d.psk->valid())) {
        if (once(rule, kWarnNoKey))
            GS_LOG(error, "flow rule %s (line %d): auth_key %s: no key loaded; these flows stay native, never "
                          "over MCES without their key: check the key file, then restart the program",
                   d.rule.c_str(), d.line, d.auth_key.empty() ? "(unset)" : d.auth_key.c_str());
        return false;
    }
    return wanted;
}

engine::McesParams mces_params(const policy::Decision& d) noexcept {
    engine::McesParams p;
    p.service_class = d.service == policy::ServiceClass::guaranteed ? 2
                      : d.service == policy::ServiceClass::datagram ? 0
                      : d.service == policy::ServiceClass::realtime ? 3
                                                                     : 1;
    p.latency_us = d.qos.latency_us;
    p.fec_data = d.qos.fec_data;
    p.fec_parity = d.qos.fec_parity;
    p.clock_symmetric = d.qos.clock_symmetric;
    p.rate = d.qos.rate;
    p.dscp = d.qos.dscp;
    p.priority = d.qos.priority;
    p.elements = d.qos.elements.empty() ? nullptr : &d.qos.elements;
    p.fallback = d.transport == policy::Transport::automatic;
    p.handshake_timeout_ns = p.fallback ? engine::kAutoWait : engine::kMcesWait;
    if (d.auth != policy::Auth::none) {   // mces_wanted made sure the key is there
        p.psk = d.psk;
        p.auth_mode = d.auth == policy::Auth::authenticate ? mces::auth::Mode::authenticate : mces::auth::Mode::encrypt;
    }
    p.admission = g_mces_admission.load(std::memory_order_acquire);   // null: no ledger, clients as asked
    return p;
}

}  // namespace

bool reserving(const policy::Decision& d) noexcept {
    return (d.service == policy::ServiceClass::guaranteed || d.service == policy::ServiceClass::realtime) &&
           (d.qos.rate > 0 || d.qos.rate_down > 0);
}

void ensure_ledger() noexcept {
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    if (!g_ready.load(std::memory_order_acquire) || ledger() != nullptr) return;
    pthread_mutex_lock(&mu);
    try {
        if (ledger() == nullptr) open_ledger(*g_policy, true);
    } catch (...) {
        GS_LOG(warn, "no reservation ledger (out of memory): guaranteed and realtime flows proceed without admission");
    }
    pthread_mutex_unlock(&mu);
}

const policy::Policy* current_policy() noexcept { return g_ready.load(std::memory_order_acquire) ? g_policy : nullptr; }

namespace {

// The program asked through the GSocket API: its class and the QoS it set,
// the rest from the rule the policy matched, the defaults a shimmed program
// would get. Writes scalars only, into storage gs_set_qos prepared (the rule
// name fits the capacity it reserved): no allocation in a hook.
const policy::Decision& merge_request(Request& q, const policy::Decision& m) noexcept {
    policy::Decision& d = q.decision;
    const policy::Qos& a = q.asked;
    const policy::Qos& p = m.qos;
    policy::Qos& o = d.qos;
    d.service = q.service;
    d.line = m.line;
    // The rule's transport when it is about the same class; else what the
    // parser gives the class by default.
    d.transport = m.service == q.service ? m.transport
                  : (q.service == policy::ServiceClass::guaranteed || q.service == policy::ServiceClass::realtime)
                      ? policy::Transport::automatic
                      : policy::Transport::native;
    o.rate = a.rate ? a.rate : p.rate;
    o.rate_down = a.rate_down ? a.rate_down : p.rate_down;
    o.burst = a.burst ? a.burst : p.burst;
    o.latency_us = a.latency_us ? a.latency_us : p.latency_us;
    o.jitter_us = a.jitter_us ? a.jitter_us : p.jitter_us;
    o.loss_ppm = a.loss_ppm ? a.loss_ppm : p.loss_ppm;
    o.priority = a.priority >= 0 ? a.priority : p.priority;
    o.dscp = a.dscp >= 0 ? a.dscp : p.dscp;
    // Not in the API: the rule's.
    o.fec_data = p.fec_data;
    o.fec_parity = p.fec_parity;
    o.clock_symmetric = p.clock_symmetric;
    o.rcvbuf = p.rcvbuf;
    o.window = p.window;
    o.notsent_lowat = p.notsent_lowat;
    memcpy(o.congestion, p.congestion, sizeof o.congestion);
    // The rule's key, if it has one: the API's flows are authenticated as
    // the rule's are (a reference count, no allocation; the policy holds
    // the key too, so this never frees one). auth_key (the path, text) is
    // not copied: mces_wanted names it only when no key is there.
    d.auth = m.auth;
    d.psk = m.psk;
    char name[64];
    int n = snprintf(name, sizeof name, "api+%s", m.rule.c_str());
    if (n > 0 && static_cast<size_t>(n) <= d.rule.capacity()) d.rule.assign(name, static_cast<size_t>(n));
    else d.rule.assign("api", 3);
    return d;
}

}  // namespace

// What the engine says about a flow (engine::set_mces_warn), in the log.
static void engine_says(int level, const char* line) noexcept {
    if (level == 0)
        GS_LOG(warn, "%s", line);
    else
        GS_LOG(info, "%s", line);
}

void init() noexcept {
    static std::atomic<int> state{0};   // 0 new, 1 running, 2 done
    int expected = 0;
    if (!state.compare_exchange_strong(expected, 1)) return;
    real::resolve_all();
    const char* disable = getenv("GSOCKET_DISABLE");
    if (disable && strcmp(disable, "1") == 0) {
        state.store(2);
        return;
    }
    try {
        load();
        engine::set_mces_warn(engine_says);
        g_ready.store(true, std::memory_order_release);
    } catch (...) {
        // Fail open: without a policy every call passes through untouched.
        GS_LOG(error, "cannot load the policy (out of memory); every flow stays native");
    }
    state.store(2);
}

void fini() noexcept {
    if (!g_ready.load(std::memory_order_acquire)) return;
    if (g_stats[0] != '\0') write_stats(g_stats, g_process, *g_policy);
    release_all_reservations();
}

void release_reservations(FlowRecord& r) noexcept {
    qos::Ledger* led = ledger();
    if (led == nullptr || r.inherited) return;
    for (qos::Reservation& res : r.reserved)
        if (res.valid()) led->release(res);
}

bool fail_closed() noexcept { return g_ready.load(std::memory_order_acquire) && g_fail_closed; }

uint32_t socket_bits(uint32_t s) noexcept {
    if (slot::is_socket(s)) return s;
    if (!slot::is_pending(s)) return 0;
    const FlowRecord& r = flow_at(slot::index(s));
    return slot::kSocket | (r.family == AF_INET6 ? slot::kV6 : 0) | (r.proto == policy::Proto::udp ? slot::kUdp : 0);
}

uint32_t socket_slot(int domain, int type, int protocol) noexcept {
    if (domain != AF_INET && domain != AF_INET6) return 0;
    int base = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
    uint32_t v6 = domain == AF_INET6 ? slot::kV6 : 0;
    // MPTCP sockets are TCP to the program (mptcpize users run us too).
    if (base == SOCK_STREAM && (protocol == 0 || protocol == IPPROTO_TCP || protocol == IPPROTO_MPTCP))
        return slot::kSocket | v6;
    if (base == SOCK_DGRAM && (protocol == 0 || protocol == IPPROTO_UDP)) return slot::kSocket | v6 | slot::kUdp;
    return 0;
}

uint32_t probe_slot(int fd) noexcept {
    int domain = 0, type = 0, protocol = 0;
    socklen_t len = sizeof(int);
    int saved = errno;
    uint32_t s = 0;
    if (real::getsockopt()(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
        (domain == AF_INET || domain == AF_INET6) &&
        real::getsockopt()(fd, SOL_SOCKET, SO_TYPE, &type, &(len = sizeof(int))) == 0 &&
        real::getsockopt()(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &(len = sizeof(int))) == 0)
        s = socket_slot(domain, type, protocol);
    errno = saved;
    return s;
}

int deny(int fd, const char* call, const sockaddr* peer, socklen_t peerlen) noexcept {
    Endpoint e;
    char b[64] = "-";
    if (endpoint_from(peer, peerlen, e)) format_endpoint(e, b, sizeof b);
    if (!g_denied_logged.exchange(true, std::memory_order_relaxed))
        GS_LOG(error, "%s on fd %d to %s refused: the policy %s has errors and says on_error = fail (EACCES); "
                      "fix it (gsctl policy check) or set on_error = open", call, fd, b, g_policy->source().c_str());
    else
        GS_LOG(debug, "%s on fd %d to %s refused (on_error = fail)", call, fd, b);
    return -EACCES;
}

std::string snapshot() { return flows_json(g_process, *g_policy); }

// A process with reservations or bridged flows answers gsctl flows/top.
// Asked at each (cheap once started): a child of fork() starts its own.
void answer_gsctl() noexcept {
    int rc = engine::control_start(&snapshot);
    static std::atomic<bool> logged{false};
    if (rc < 0 && !logged.exchange(true, std::memory_order_relaxed))
        GS_LOG(info, "no control socket for gsctl flows (%s): flows carry on", strerror(-rc));
}

// GSocket's "connect negotiates": reserve the flow's rates in the host
// ledger. Returns 0 to go on (granted, downgraded, or no ledger to ask: fail
// open) or -ENOBUFS to refuse the connect. An accepted flow is never refused
// (the peer is already connected): it goes on without a reservation.
// `pending`: r is the record of an unclassified socket (an API request): a
// refusal leaves it in place, so the program may lower its request and connect again.
static int admit(int fd, const policy::Decision& d, policy::Direction dir, const Endpoint& peer, policy::Proto proto,
          FlowRecord* r, bool pending) noexcept {
    qos::Ledger* const led = ledger();
    char where[64], desc[qos::kDescriptionLen], asked[32], gave[32], avail[32], cap[32];
    format_endpoint(peer, where, sizeof where);
    snprintf(desc, sizeof desc, "%s %s %s (%s)", policy::name(proto), policy::name(dir), where, d.rule.c_str());
    const uint64_t want[2] = {d.qos.rate, d.qos.rate_down};
    qos::Reservation got[2];
    qos::ReserveResult::Status status = qos::ReserveResult::Status::granted;
    uint64_t granted[2] = {0, 0};
    for (int i = 0; i < 2; ++i) {
        if (want[i] == 0) continue;
        const qos::Dir qd = i == 0 ? qos::Dir::up : qos::Dir::down;
        qos::ReserveResult res = led->reserve(r ? flow_index(*r) : static_cast<uint64_t>(fd), qd, want[i],
                                                   d.service, desc, g_policy->general().on_reject);
        if (res.admitted()) {
            got[i] = res.reservation;
            granted[i] = res.granted;
            if (res.status == qos::ReserveResult::Status::downgraded) {
                status = res.status;
                GS_LOG(warn, "flow %s to %s (rule %s): class %s asked %s %s, settled for %s (on_reject = downgrade; "
                             "%s of %s free)", policy::name(proto), where, d.rule.c_str(), policy::name(d.service),
                       rate_text(res.asked, asked, sizeof asked), qos::name(qd),
                       rate_text(res.granted, gave, sizeof gave), rate_text(res.available, avail, sizeof avail),
                       rate_text(res.capacity, cap, sizeof cap));
            }
            continue;
        }
        if (res.fail_open()) {
            status = res.status;
            if (!g_ledger_open_logged.exchange(true, std::memory_order_relaxed))
                GS_LOG(warn, "reservation ledger %s: %s; flows proceed without admission", led->path(),
                       qos::name(res.status));
            continue;
        }
        // Refused (or the table is full): give back what the other direction got.
        for (qos::Reservation& g : got)
            if (g.valid()) led->release(g);
        if (r != nullptr) {
            r->reserves = true;
            r->admission = res.status;
            r->denied = dir != policy::Direction::accept;
        }
        GS_LOG(warn, "flow %s to %s (rule %s): class %s asked %s %s, %s free of %s (ledger %s): %s%s",
               policy::name(proto), where, d.rule.c_str(), policy::name(d.service),
               rate_text(res.asked, asked, sizeof asked), qos::name(qd), rate_text(res.available, avail, sizeof avail),
               rate_text(res.capacity, cap, sizeof cap), led->path(),
               res.status == qos::ReserveResult::Status::full ? "every ledger slot is taken, " : "",
               dir == policy::Direction::accept
                   ? "the accepted flow goes on without a reservation"
                   : "connect fails with ENOBUFS; lower the rate, raise [general] capacity or set on_reject = downgrade");
        if (dir == policy::Direction::accept) return 0;
        if (r != nullptr) {
            r->fd = fd;
            r->peer = peer;
            r->proto = proto;
            r->direction = dir;
            r->decision = &d;
            if (!pending) flow_release(*r, -1);   // kept for --stats when it keeps closed flows
        }
        return -qos::kRefusedErrno;
    }
    if (got[0].valid() || got[1].valid()) answer_gsctl();
    if (r != nullptr) {
        r->reserves = true;
        r->admission = status;
        r->reserved[0] = got[0];
        r->reserved[1] = got[1];
        r->granted[0] = granted[0];
        r->granted[1] = granted[1];
        r->rate = granted[0] ? granted[0] : d.qos.rate;
    }
    return 0;
}

int classify(int fd, uint32_t cur, policy::Direction dir, const sockaddr* peer, socklen_t peerlen) noexcept {
    if (!g_ready.load(std::memory_order_acquire)) return 0;
    if (!trackable(fd)) {
        if (fd >= 0 && !g_untrackable_logged.exchange(true, std::memory_order_relaxed))
            GS_LOG(warn, "fd %d is above the shim's table (%d): flows on such fds stay native without QoS", fd,
                   kMaxFd);
        return 0;
    }
    if (cur == 0) cur = probe_slot(fd);
    if (!slot::unclassified(cur)) return 0;   // not TCP/UDP, or already classified
    // A UDP socket that received first already has its record.
    FlowRecord* pending = slot::is_pending(cur) ? &flow_at(slot::index(cur)) : nullptr;
    Endpoint pe;
    if (!endpoint_from(peer, peerlen, pe)) return 0;
    if (g_fail_closed) {
        FlowRecord* r = pending ? pending : flow_alloc();   // recorded so --stats shows what was refused
        if (r != nullptr) {
            r->denied = true;
            r->peer = pe;
            r->proto = (cur & slot::kUdp) ? policy::Proto::udp : policy::Proto::tcp;
            r->direction = dir;
            if (pending == nullptr) flow_release(*r, -1);
        }
        return deny(fd, dir == policy::Direction::datagram ? "sendto" : "connect", peer, peerlen);
    }

    const int saved = errno;
    const int family = pending ? pending->family : (cur & slot::kV6) ? AF_INET6 : AF_INET;
    const policy::Proto proto = pending ? pending->proto : (cur & slot::kUdp) ? policy::Proto::udp : policy::Proto::tcp;
    if (pending) {   // an API request refused before may be asked again
        pending->denied = pending->reserves = false;
        pending->admission = qos::ReserveResult::Status::unavailable;
        pending->rate = 0;
    }
    Endpoint local;
    if (dir == policy::Direction::accept || g_has_src_rules) {
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        if (real::getsockname()(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
            endpoint_from(reinterpret_cast<sockaddr*>(&ss), len, local);
    }
    policy::FlowKey key;
    key.process = g_process;
    key.proto = proto;
    key.direction = dir;
    if (dir == policy::Direction::accept) {
        key.dst = local.addr;
        key.dport = local.port;
        key.src = pe.addr;
        key.sport = pe.port;
    } else {
        key.dst = pe.addr;
        key.dport = pe.port;
        // An unbound socket has no source yet: rules with `src` do not match it.
        static constexpr uint8_t zero[16] = {};
        bool unbound = local.port == 0 &&
                       memcmp(local.addr.bytes, zero, local.addr.family == AF_INET6 ? 16 : 4) == 0;
        if (local.addr.family != 0 && !unbound) {
            key.src = local.addr;
            key.sport = local.port;
        }
    }
    const policy::Decision& matched = g_policy->match(key);
    const int rule = g_policy->rule_index(matched);
    const bool requested = pending != nullptr && pending->request != nullptr;
    const policy::Decision& d = requested ? merge_request(*pending->request, matched) : matched;

    FlowRecord* r = pending ? pending : flow_alloc();
    if (reserving(d) && ledger() != nullptr) {
        int rc = admit(fd, d, dir, pe, proto, r, requested);
        if (rc < 0) {
            errno = saved;
            return rc;
        }
    }
    if (r != nullptr) r->direction = dir;
    apply_native(fd, d, rule, family, proto, r);
    if (r != nullptr && r->reserves && r->rate != d.qos.rate && r->rate > 0) {
        // Downgraded: pace at what was granted, not at what was asked.
        uint64_t v = r->rate;
        real::setsockopt()(fd, SOL_SOCKET, SO_MAX_PACING_RATE, &v, sizeof v);
    }
    if (r != nullptr) {
        r->fd = fd;
        r->family = family;
        r->proto = proto;
        r->direction = dir;
        r->rule = rule;
        r->decision = &d;
        r->peer = pe;
        r->local = local;
        uint32_t v = slot::kFlow | flow_index(*r) | (proto == policy::Proto::udp ? slot::kCount : 0) |
                     (cur & slot::kExposed);
        note_fd(fd);
        uint32_t old = fd_slot(fd).exchange(v, std::memory_order_relaxed);
        if (old & slot::kExposed) fd_slot(fd).fetch_or(slot::kExposed, std::memory_order_relaxed);
        if (slot::is_flow(old) && slot::index(old) != flow_index(*r))
            release_slot_value(old, -1);   // lost a race with another thread
    }
    if (log::on(policy::LogLevel::info)) {
        char p[64];
        // The transport the policy asks for; a flow another transport carries
        // says so in a line of its own (MCES, or why it stays native).
        GS_LOG(info, "flow: %s %s %s on fd %d: rule %s (line %d), class %s, transport %s%s", policy::name(proto),
               policy::name(dir), format_endpoint(pe, p, sizeof p), fd, d.rule.c_str(), d.line,
               policy::name(d.service), policy::name(d.transport), r && r->failed ? ", some QoS refused" : "");
    }
    errno = saved;
    return 0;
}

void record_pending(int fd, uint32_t cur, uint64_t n) noexcept {
    if (!trackable(fd)) return;
    FlowRecord* r = flow_alloc();
    if (r == nullptr) return;
    r->fd = fd;
    r->family = (cur & slot::kV6) ? AF_INET6 : AF_INET;
    r->proto = policy::Proto::udp;
    r->direction = policy::Direction::datagram;
    r->bytes_in.store(n, std::memory_order_relaxed);
    uint32_t v = slot::kFlow | slot::kCount | slot::kPending | flow_index(*r) | (cur & slot::kExposed);
    // Another thread may have classified or recorded it meanwhile: then it keeps its own.
    if (!fd_slot(fd).compare_exchange_strong(cur, v, std::memory_order_relaxed)) {
        flow_discard(*r);
        if (slot::counts(cur)) flow_at(slot::index(cur)).bytes_in.fetch_add(n, std::memory_order_relaxed);
        return;
    }
    note_fd(fd);
}

// The engine must carry a flow when its QoS needs what the kernel cannot do:
// a receive rate, or the process's aggregate limits (trickle's -u/-d); for
// UDP also a send rate (SO_MAX_PACING_RATE paces UDP only under the fq
// qdisc, which loopback and most hosts do not have). TCP connects and
// accepts; UDP at its first connect or addressed send; either only when the
// socket is in no epoll set and shares its open file with no other fd
// (slot::kExposed: the socketpair could not follow it there).
bool wants_bridge(uint32_t s) noexcept {
    if (!slot::is_flow(s) || slot::is_bridged(s)) return false;
    const FlowRecord& r = flow_at(slot::index(s));
    if (r.denied || r.inherited) return false;
    const bool udp = r.proto == policy::Proto::udp;
    if (udp ? r.direction != policy::Direction::datagram && r.direction != policy::Direction::connect
            : r.direction != policy::Direction::connect && r.direction != policy::Direction::accept)
        return false;
    const policy::General& g = g_policy->general();
    bool want = false;
    switch (g.bridge) {
    case policy::Bridge::never: return false;
    case policy::Bridge::always: want = true; break;
    case policy::Bridge::needed:
        want = g_policy->ok() && (g.rate_up > 0 || g.rate_down > 0 ||
                                  (r.decision && (r.decision->qos.rate_down > 0 || (udp && r.decision->qos.rate > 0))));
        // UDP over MCES: the engine runs MCES on the program's socket.
        want = want || (udp && r.decision && mces_wanted(*r.decision, r.rule, policy::Proto::udp));
        break;
    }
    if (want && (s & slot::kExposed)) {
        static std::atomic<bool> logged{false};
        if (!logged.exchange(true, std::memory_order_relaxed))
            GS_LOG(warn, "%s flow on fd %d stays native: it is in an epoll set (or shares its file with another "
                         "fd) since before its first %s, and a bridge cannot follow it there; its QoS limits "
                         "are not enforced (docs/limitations.md)", udp ? "udp" : "tcp", r.fd, udp ? "send" : "connect");
        return false;
    }
    return want;
}

engine::BridgeState& bridge_of(uint32_t s) noexcept { return flow_at(slot::index(s)).bridge; }

// A bridged UDP socket's datagrams wait for the program in the engine's end
// of the pair: that end's send buffer is the program's receive buffer. It
// follows the transport's SO_RCVBUF (what the program asked, before or
// after the bridge), and never shrinks below the pair's default, so that a
// large datagram is never refused where UDP would have queued it.
void follow_rcvbuf(int app_end, int transport) noexcept {
    int want = 0, have = 0;
    socklen_t l = sizeof want;
    if (real::getsockopt()(transport, SOL_SOCKET, SO_RCVBUF, &want, &l) != 0) return;
    l = sizeof have;
    if (real::getsockopt()(app_end, SOL_SOCKET, SO_SNDBUF, &have, &l) != 0 || want <= have) return;
    int half = want / 2;   // both values are as the kernel doubled them
    real::setsockopt()(app_end, SOL_SOCKET, SO_SNDBUF, &half, sizeof half);
}
engine::DgramState& dgram_of(uint32_t s) noexcept { return flow_at(slot::index(s)).dgram; }

namespace {

// The engine is done with a bridge: drop its reference to the flow record.
void bridge_done(engine::BridgeState* b) noexcept {
    auto* r = static_cast<FlowRecord*>(b->owner);
    flow_release(*r, -1);
}

// Zeros the shim writes into a non-blocking connect's end of the pair, so
// that it does not look writable before the transport is connected.
const char kFiller[64 * 1024] = {};

// A bridge's fds go to 512 and above, never lower: the numbers a program
// picks from the bottom stay its own.
int move_high(int fd) noexcept { return real::fcntl()(fd, F_DUPFD_CLOEXEC, engine::kInternalFdBase); }

// Room for a bridge's two fds (the engine's end and the transport): the
// shim's fds take at most half of the numbers from 512 to the fd limit, so
// a program keeps at least the other half and everything below 512. Past
// that, flows stay native (one log line): a bridge must not be why a
// program's socket() fails with EMFILE.
bool bridge_fd_room(int fd) noexcept {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
    const rlim_t base = engine::kInternalFdBase;
    const rlim_t allowed = rl.rlim_cur == RLIM_INFINITY ? rlim_t{1} << 30
                           : rl.rlim_cur > base         ? (rl.rlim_cur - base) / 2
                                                        : 0;
    if (static_cast<rlim_t>(g_internal_fds.load(std::memory_order_relaxed) + 2) <= allowed) return true;
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true))
        GS_LOG(warn, "fd limit %llu: no room for more bridged flows (gsocket keeps its own fds at %d and above, "
                     "at most half of those numbers); the flow on fd %d and later ones stay native: raise the "
                     "limit (ulimit -n) to bridge them",
               static_cast<unsigned long long>(rl.rlim_cur), engine::kInternalFdBase, fd);
    return false;
}

}  // namespace

int bridge_connect(int fd, const sockaddr* addr, socklen_t len, engine::McesFlow* mces) noexcept {
    uint32_t s = fd_slot(fd).load(std::memory_order_relaxed);
    FlowRecord& r = flow_at(slot::index(s));
    const bool accepted = addr == nullptr;
    if (!accepted && len > sizeof r.bridge.peer) return 1;
    if (!bridge_fd_room(fd)) return 1;   // before the engine, whose fds count too
    engine::Engine* e = engine::Engine::get();
    static std::atomic<bool> logged{false};
    if (e == nullptr) {
        if (!logged.exchange(true)) GS_LOG(warn, "the gsocket engine cannot start (io_uring?): flows stay native");
        return 1;
    }
    const int saved = errno;
    // A listening or already connected socket: let the kernel say EISCONN.
    int listening = 0;
    socklen_t ll = sizeof listening;
    sockaddr_storage tmp;
    socklen_t tl = sizeof tmp;
    if (!accepted && ((real::getsockopt()(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) == 0 && listening) ||
                      real::getpeername()(fd, reinterpret_cast<sockaddr*>(&tmp), &tl) == 0)) {
        errno = saved;
        return 1;
    }
    int fl = real::fcntl()(fd, F_GETFL);
    int fdfl = real::fcntl()(fd, F_GETFD);
    int sp[2];
    if (fl < 0 || fdfl < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) {
        errno = saved;
        return 1;
    }
    int transport = move_high(fd);
    int app_end = move_high(sp[1]);
    real::close()(sp[1]);
    // The program's fd becomes its end of the pair, with the flags it had.
    if (transport < 0 || app_end < 0 ||
        real::dup3()(sp[0], fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
        if (transport >= 0) real::close()(transport);
        if (app_end >= 0) real::close()(app_end);
        real::close()(sp[0]);
        errno = saved;
        return 1;
    }
    real::close()(sp[0]);
    struct stat st;
    r.bridge.program_fd = fd;
    r.bridge.program_ino = fstat(fd, &st) == 0 ? st.st_ino : 0;
    const bool nonblock = fl & O_NONBLOCK;
    if (nonblock) real::fcntl()(fd, F_SETFL, O_NONBLOCK);
    protect_fd(transport);
    protect_fd(app_end);

    engine::BridgeState& b = r.bridge;
    b.transport = transport;
    b.app_end = app_end;
    b.accepted = accepted;
    if (!accepted) memcpy(&b.peer, addr, len);
    b.peer_len = accepted ? 0 : len;
    b.bytes_out = &r.bytes_out;
    b.bytes_in = &r.bytes_in;
    b.rate_down = r.decision ? r.decision->qos.rate_down : 0;
    b.aggregate_up = g_policy->general().rate_up;
    b.aggregate_down = g_policy->general().rate_down;
    b.service = r.decision ? r.decision->service : policy::ServiceClass::reliable;
    // The flow's own send rate is the kernel's pacing on the transport; under
    // a send aggregate the engine's queue holds it too, so that a realtime
    // flow's priority stops at its rate (send_queue.h).
    b.rate_up = b.aggregate_up != 0 && r.decision ? r.decision->qos.rate : 0;
    b.on_done = &bridge_done;
    b.owner = &r;
    b.filler = 0;
    b.allow_direct = mces == nullptr;   // over MCES there is no kernel transport to move bytes on
    if (nonblock && !accepted) {
        for (;;) {
            ssize_t n = real::send()(fd, kFiller, sizeof kFiller, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n <= 0) break;
            b.filler += static_cast<uint32_t>(n);
        }
    }
    r.bridged = true;
    r.refs.fetch_add(1, std::memory_order_relaxed);   // the engine's, dropped in bridge_done
    fd_slot(fd).fetch_or(slot::kBridged, std::memory_order_relaxed);
    if (mces != nullptr) engine::start_mces_bridge(*e, b, *mces);
    else engine::start_bridge(*e, b);
    answer_gsctl();
    errno = saved;
    if (accepted) return 0;
    if (nonblock) return -EINPROGRESS;
    // A blocking connect honours the program's SO_SNDTIMEO, as the kernel's does.
    timeval tv{};
    socklen_t tvl = sizeof tv;
    int64_t timeout = 0;
    if (real::getsockopt()(transport, SOL_SOCKET, SO_SNDTIMEO, &tv, &tvl) == 0)
        timeout = int64_t{tv.tv_sec} * 1'000'000'000 + int64_t{tv.tv_usec} * 1000;
    int err = b.wait_connected(timeout);
    if (err != 0) return -err;
    sockaddr_storage ss{};
    socklen_t sl = sizeof ss;
    if (mces != nullptr && mces->carried.load(std::memory_order_relaxed) != engine::McesFlow::fell_back) return 0;
    if (real::getsockname()(transport, reinterpret_cast<sockaddr*>(&ss), &sl) == 0)
        endpoint_from(reinterpret_cast<sockaddr*>(&ss), sl, r.local);
    return 0;
}

int bridge_datagram(int fd, bool autobind) noexcept {
    uint32_t s = fd_slot(fd).load(std::memory_order_relaxed);
    FlowRecord& r = flow_at(slot::index(s));
    static std::atomic<bool> logged{false};
    if (!bridge_fd_room(fd)) return 1;   // before the engine, whose fds count too
    engine::Engine* e = engine::Engine::get();
    if (e == nullptr) {
        if (!logged.exchange(true)) GS_LOG(warn, "the gsocket engine cannot start (io_uring?): flows stay native");
        return 1;
    }
    const int saved = errno;
    int fl = real::fcntl()(fd, F_GETFL);
    int fdfl = real::fcntl()(fd, F_GETFD);
    // O_ASYNC: the program's SIGIO owner is the open file's; the pair's end
    // would not have it.
    int sp[2];
    if (fl < 0 || fdfl < 0 || (fl & O_ASYNC) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) {
        if (!logged.exchange(true))
            GS_LOG(warn, "udp flow on fd %d stays native: no bridge (%s)", fd,
                   fl >= 0 && (fl & O_ASYNC) ? "O_ASYNC is set" : strerror(errno));
        errno = saved;
        return 1;
    }
    int transport = move_high(fd);
    int app_end = move_high(sp[1]);
    real::close()(sp[1]);
    if (transport < 0 || app_end < 0 || real::dup3()(sp[0], fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
        int err = errno;
        if (transport >= 0) real::close()(transport);
        if (app_end >= 0) real::close()(app_end);
        real::close()(sp[0]);
        if (!logged.exchange(true)) GS_LOG(warn, "udp flow on fd %d stays native: no bridge (%s)", fd, strerror(err));
        errno = saved;
        return 1;
    }
    real::close()(sp[0]);
    struct stat st;
    engine::BridgeState& b = r.bridge;
    engine::DgramState& d = r.dgram;
    b.program_fd = fd;
    b.program_ino = fstat(fd, &st) == 0 ? st.st_ino : 0;
    if (fl & O_NONBLOCK) real::fcntl()(fd, F_SETFL, O_NONBLOCK);
    protect_fd(transport);
    protect_fd(app_end);
    follow_rcvbuf(app_end, transport);
    b.transport = transport;
    b.app_end = app_end;
    b.accepted = true;
    b.peer_len = 0;
    b.bytes_out = &r.bytes_out;
    b.bytes_in = &r.bytes_in;
    // UDP's send rate is the engine's to keep (the kernel's pacing needs fq).
    const policy::Qos* q = r.decision ? &r.decision->qos : nullptr;
    b.rate_up = r.rate > 0 ? r.rate : q ? q->rate : 0;
    b.rate_down = q ? q->rate_down : 0;
    b.aggregate_up = g_policy->general().rate_up;
    b.aggregate_down = g_policy->general().rate_down;
    b.service = r.decision ? r.decision->service : policy::ServiceClass::datagram;
    b.up.direct = b.rate_up == 0 && b.aggregate_up == 0;   // no send limit: the program's thread sends
    b.on_done = &bridge_done;
    b.owner = &r;
    d.family = r.family;
    // transport = mces / auto (docs/mces.md, "UDP programs"): every send
    // goes through the engine, which runs MCES class 0 on the socket; it must
    // have its port now (a bind-only receiver has; a sender is autobound).
    d.mces = nullptr;
    d.mces_running.store(false, std::memory_order_relaxed);
    if (r.decision != nullptr && mces_wanted(*r.decision, r.rule, policy::Proto::udp)) {
        r.mces.params = mces_params(*r.decision);
        d.mces = &r.mces.params;
        d.mces_stats.reset();
        b.up.direct = false;
        autobind = true;
    }
    if (autobind) {
        // The kernel gives an unbound socket its ephemeral port at the first
        // send; a send through the engine happens later, and the program may
        // ask getsockname at once. A wildcard bind to port 0 is that autobind.
        sockaddr_storage me{};
        socklen_t ml = sizeof me;
        if (real::getsockname()(transport, reinterpret_cast<sockaddr*>(&me), &ml) == 0 &&
            (me.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(me).sin6_port
                                      : reinterpret_cast<sockaddr_in&>(me).sin_port) == 0) {
            sockaddr_storage any{};
            any.ss_family = static_cast<sa_family_t>(r.family);
            real::bind()(transport, reinterpret_cast<sockaddr*>(&any),
                         r.family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
        }
    }
    sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    d.peer_connected.store(real::getpeername()(transport, reinterpret_cast<sockaddr*>(&peer), &pl) == 0,
                           std::memory_order_relaxed);
    d.drops.store(0, std::memory_order_relaxed);
    r.bridged = true;
    r.refs.fetch_add(1, std::memory_order_relaxed);   // the engine's, dropped in bridge_done
    fd_slot(fd).fetch_or(slot::kBridged, std::memory_order_relaxed);
    engine::start_dgram_bridge(*e, b, d);
    answer_gsctl();
    if (d.mces != nullptr && log::on(policy::LogLevel::info)) {
        sockaddr_storage me{};
        socklen_t ml = sizeof me;
        Endpoint local;
        if (real::getsockname()(transport, reinterpret_cast<sockaddr*>(&me), &ml) == 0)
            endpoint_from(reinterpret_cast<sockaddr*>(&me), ml, local);
        GS_LOG(info, "flow: udp on fd %d (rule %s): carried over MCES class %u on its port %u (transport %s): "
                     "peers under gsocket get MCES, %s", fd, r.decision->rule.c_str(),
               static_cast<unsigned>(d.mces->service_class), local.port,
               policy::name(r.decision->transport),
               d.mces->fallback ? "others plain UDP after 1 s without an answer"
                                : "others nothing (transport = auto falls back to plain UDP)");
    }
    if (log::on(policy::LogLevel::debug)) {
        char p[64];
        GS_LOG(debug, "flow: udp on fd %d to %s bridged: send limit %llu B/s (process %llu), receive %llu (process %llu)",
               fd, format_endpoint(r.peer, p, sizeof p), static_cast<unsigned long long>(b.rate_up),
               static_cast<unsigned long long>(b.aggregate_up), static_cast<unsigned long long>(b.rate_down),
               static_cast<unsigned long long>(b.aggregate_down));
    }
    errno = saved;
    return 0;
}

bool policy_override(const FlowRecord& r, int level, int optname, const void* val, socklen_t len,
                     uint64_t& out) noexcept {
    if (r.decision == nullptr || val == nullptr) return false;
    const policy::Qos& q = r.decision->qos;
    if (((level == IPPROTO_IP && optname == IP_TOS) || (level == IPPROTO_IPV6 && optname == IPV6_TCLASS)) &&
        q.dscp >= 0 && len >= sizeof(int)) {
        int v;
        memcpy(&v, val, sizeof v);
        out = static_cast<uint64_t>(qos::tos_with_dscp(q.dscp, v < 0 ? 0 : v));
        return true;
    }
    if (level == SOL_SOCKET && optname == SO_PRIORITY && q.priority >= 0 && len >= sizeof(int)) {
        out = static_cast<uint64_t>(q.priority);
        return true;
    }
    if (level == SOL_SOCKET && optname == SO_MAX_PACING_RATE && q.rate > 0 && len >= sizeof(uint32_t)) {
        uint64_t v = 0;
        if (len >= sizeof(uint64_t)) {
            memcpy(&v, val, sizeof v);
        } else {
            uint32_t v32;
            memcpy(&v32, val, sizeof v32);
            v = v32 == UINT32_MAX ? UINT64_MAX : v32;
        }
        const uint64_t cap = r.rate > 0 ? r.rate : q.rate;   // a downgrade granted less
        out = v < cap ? v : cap;   // the program may ask for less, never more
        return true;
    }
    return false;
}

int adopt_internal_fd(int fd) noexcept {
    int h = move_high(fd);
    real::close()(fd);
    if (h < 0) return -1;
    protect_fd(h);
    return h;
}


// ---- TCP over MCES (docs/mces.md, "Through the shim") -------------------------

namespace {

void mces_log_once(const char* what, int fd, int err) noexcept {
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true, std::memory_order_relaxed))
        GS_LOG(warn, "tcp flow on fd %d stays on kernel TCP: %s (%s); later flows that cannot have MCES stay "
                     "native without a word", fd, what, strerror(err));
}

}  // namespace

int mces_connect(int fd, const sockaddr* addr, socklen_t len) noexcept {
    if (!g_ready.load(std::memory_order_acquire) || !trackable(fd)) return 1;
    uint32_t s = fd_slot(fd).load(std::memory_order_relaxed);
    if (!slot::is_flow(s) || slot::is_bridged(s)) return 1;
    FlowRecord& r = flow_at(slot::index(s));
    if (r.proto != policy::Proto::tcp || r.denied || r.inherited || r.direction != policy::Direction::connect ||
        r.decision == nullptr || !mces_wanted(*r.decision, r.rule, policy::Proto::tcp))
        return 1;
    if (addr == nullptr || len > sizeof(sockaddr_storage) ||
        (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
        return 1;
    const int saved = errno;
    if (s & slot::kExposed) {
        mces_log_once("it is in an epoll set (or shares its file with another fd) since before its connect, and "
                      "a bridge cannot follow it there", fd, EBUSY);
        return 1;
    }
    const engine::McesParams p = mces_params(*r.decision);
    // auto: a peer that did not answer MCES a moment ago is not asked again.
    if (p.fallback && engine::mces_peer_says_native(addr, len)) return 1;
    int u = real::socket()(addr->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (u < 0 || real::connect()(u, addr, len) != 0) {
        int err = errno;
        if (u >= 0) real::close()(u);
        mces_log_once("no UDP socket for MCES", fd, err);
        errno = saved;
        return 1;
    }
    int h = move_high(u);
    real::close()(u);
    if (h < 0) {
        mces_log_once("no UDP socket for MCES", fd, errno);
        errno = saved;
        return 1;
    }
    protect_fd(h);
    engine::McesFlow& m = r.mces;
    m.params = p;
    m.udp_fd = h;
    m.reset_live();
    memcpy(&m.peer, addr, len);
    m.peer_len = len;
    m.local_len = sizeof m.local;
    if (real::getsockname()(h, reinterpret_cast<sockaddr*>(&m.local), &m.local_len) != 0) m.local_len = 0;
    else endpoint_from(reinterpret_cast<sockaddr*>(&m.local), m.local_len, r.local);
    m.kind = engine::McesFlow::client;
    int rc = bridge_connect(fd, addr, len, &m);
    if (rc == 1) {   // no bridge: the UDP socket was never handed over
        m.kind = engine::McesFlow::none;
        m.udp_fd = -1;
        engine::close_internal_fd(h);
    } else if (log::on(policy::LogLevel::info)) {
        char pe[64];
        GS_LOG(info, "flow: tcp connect %s on fd %d: carried over MCES (transport %s, class %u)",
               format_endpoint(r.peer, pe, sizeof pe), fd, policy::name(r.decision->transport),
               static_cast<unsigned>(p.service_class));
    }
    errno = saved;
    return rc;
}

namespace {

// The decision for flows to a bound socket's own address, when it sends
// them over MCES (else nullptr): a TCP listener's accepted connections, a
// UDP receiver's datagrams. Matched as its peers' flows are: the local
// address and port as the destination. `me`, `ml`, `local`: its address.
const policy::Decision* local_mces(int fd, policy::Proto proto, sockaddr_storage& me, socklen_t& ml,
                                   Endpoint& local) noexcept {
    if (real::getsockname()(fd, reinterpret_cast<sockaddr*>(&me), &ml) != 0 ||
        !endpoint_from(reinterpret_cast<sockaddr*>(&me), ml, local))
        return nullptr;
    policy::FlowKey key;
    key.process = g_process;
    key.proto = proto;
    key.direction = proto == policy::Proto::tcp ? policy::Direction::accept : policy::Direction::datagram;
    key.dst = local.addr;
    key.dport = local.port;
    const policy::Decision& d = g_policy->match(key);
    return mces_wanted(d, g_policy->rule_index(d), proto) ? &d : nullptr;
}

}  // namespace

void mces_after_listen(int fd) noexcept {
    if (!g_ready.load(std::memory_order_acquire) || !g_policy->ok() || !trackable(fd)) return;
    uint32_t s = fd_slot(fd).load(std::memory_order_relaxed);
    if (s == 0) s = probe_slot(fd);
    uint32_t bits = socket_bits(s);
    if (bits == 0 || (bits & slot::kUdp)) return;
    const int saved = errno;
    sockaddr_storage me{};
    socklen_t ml = sizeof me;
    Endpoint local;
    const policy::Decision* dp = local_mces(fd, policy::Proto::tcp, me, ml, local);
    if (dp == nullptr) {
        errno = saved;
        return;
    }
    const policy::Decision& d = *dp;
    char where[64];
    format_endpoint(local, where, sizeof where);
    static std::atomic<bool> logged{false};
    engine::Engine* e = engine::Engine::get();
    int u = e == nullptr ? -1 : real::socket()(me.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int err = e == nullptr ? EAGAIN : errno;
    if (u >= 0 && me.ss_family == AF_INET6) {
        int only = 0;
        socklen_t ol = sizeof only;
        if (real::getsockopt()(fd, IPPROTO_IPV6, IPV6_V6ONLY, &only, &ol) == 0)
            real::setsockopt()(u, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof only);
    }
    if (u >= 0 && real::bind()(u, reinterpret_cast<sockaddr*>(&me), ml) != 0) {
        err = errno;
        real::close()(u);
        u = -1;
    }
    int h = u >= 0 ? move_high(u) : -1;
    if (u >= 0) {
        err = errno;
        real::close()(u);
    }
    if (h < 0) {
        if (!logged.exchange(true, std::memory_order_relaxed))
            GS_LOG(warn, "tcp listener on %s: no MCES there (%s: %s); it accepts kernel TCP only", where,
                   e == nullptr ? "the gsocket engine cannot start" : "no UDP socket on that address and port",
                   strerror(err));
        errno = saved;
        return;
    }
    protect_fd(h);
    // The engine reaches the program's listener at its address, or over
    // loopback when it listens on every address.
    sockaddr_storage target = me;
    static constexpr uint8_t zero[16] = {};
    if (memcmp(local.addr.bytes, zero, local.addr.family == AF_INET6 ? 16 : 4) == 0) {
        if (me.ss_family == AF_INET) reinterpret_cast<sockaddr_in&>(target).sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else reinterpret_cast<sockaddr_in6&>(target).sin6_addr = in6addr_loopback;
    }
    struct stat st;
    unsigned long ino = fstat(fd, &st) == 0 ? st.st_ino : 0;
    int rc = engine::mces_listen(*e, h, fd, ino, me.ss_family, reinterpret_cast<sockaddr*>(&target), ml,
                                 mces_params(d));
    if (rc < 0) {
        if (!logged.exchange(true, std::memory_order_relaxed))
            GS_LOG(warn, "tcp listener on %s: no MCES there (%s); it accepts kernel TCP only", where, strerror(-rc));
    } else {
        answer_gsctl();
        GS_LOG(info, "tcp listener on %s (rule %s) also accepts MCES on udp port %u", where, d.rule.c_str(),
               local.port);
    }
    errno = saved;
}

void mces_after_bind(int fd) noexcept {
    if (!g_ready.load(std::memory_order_acquire) || !g_policy->ok() || !trackable(fd)) return;
    uint32_t s = fd_slot(fd).load(std::memory_order_relaxed);
    if (s == 0) s = probe_slot(fd);
    if (!(socket_bits(s) & slot::kUdp) || !slot::unclassified(s) || (s & slot::kExposed)) return;
    const int saved = errno;
    sockaddr_storage me{};
    socklen_t ml = sizeof me;
    Endpoint local;
    if (local_mces(fd, policy::Proto::udp, me, ml, local) == nullptr) {
        errno = saved;
        return;
    }
    // Classified now, named by its own address until it sends; bridged
    // before the program can put it in an epoll set.
    if (classify(fd, s, policy::Direction::datagram, reinterpret_cast<sockaddr*>(&me), ml) == 0 &&
        wants_bridge(s = fd_slot(fd).load(std::memory_order_relaxed)))
        bridge_datagram(fd, false);
    errno = saved;
}

bool mces_accepted(const sockaddr_storage& peer, socklen_t plen, sockaddr_storage& out, socklen_t& outlen) noexcept {
    if (!engine::mces_listening()) return false;
    return engine::mces_claim_accepted(reinterpret_cast<const sockaddr*>(&peer), plen, peer.ss_family, out, outlen);
}

namespace {
// The engine is done publishing into an accepted flow's record: drop the
// reference mces_mark_accepted took for it (engine thread).
void mces_accepted_done(engine::McesFlow& f) noexcept { flow_release(*static_cast<FlowRecord*>(f.owner), -1); }
}  // namespace

void mces_mark_accepted(int fd, const sockaddr_storage& peer, socklen_t plen) noexcept {
    if (!trackable(fd) || plen > sizeof peer) return;
    uint32_t s = fd_slot(fd).load(std::memory_order_relaxed);
    if (!slot::is_flow(s)) return;
    FlowRecord& r = flow_at(slot::index(s));
    memcpy(&r.mces.peer, &peer, plen);
    r.mces.peer_len = plen;
    r.mces.local_len = 0;
    r.mces.reset_live();
    r.mces.carried.store(engine::McesFlow::mces, std::memory_order_relaxed);
    r.mces.kind = engine::McesFlow::accepted;
    // Tie the record to the engine's connection so that its counters reach
    // gsctl flows and --stats. The connection is found again by the
    // kernel's peer address of `fd` (the engine's loopback socket, what the
    // claim matched). The engine gets a reference to the record, so the
    // record is not reused while the engine may still write into it; it
    // gives it back (mces_accepted_done) when its side of the loopback
    // connection closes. Lock-free, no allocation.
    sockaddr_storage from{};
    socklen_t fl = sizeof from;
    if (real::getpeername()(fd, reinterpret_cast<sockaddr*>(&from), &fl) != 0) return;
    r.mces.release = &mces_accepted_done;
    r.mces.owner = &r;
    r.refs.fetch_add(1, std::memory_order_relaxed);
    // Not attached (the connection already ended): our fd still holds the
    // record (accept() has not returned it yet), so this is not the last
    // reference.
    if (!engine::mces_attach_accepted(reinterpret_cast<sockaddr*>(&from), fl, r.mces))
        r.refs.fetch_sub(1, std::memory_order_relaxed);
}

int mces_name(uint32_t s, bool peer, sockaddr* addr, socklen_t* len) noexcept {
    const FlowRecord& r = flow_at(slot::index(s));
    const engine::McesFlow& m = r.mces;
    if (m.kind == engine::McesFlow::none || addr == nullptr || len == nullptr) return 1;
    if (m.kind == engine::McesFlow::accepted && !peer) return 1;   // the kernel's local address
    if (m.kind == engine::McesFlow::client) {
        if (m.carried.load(std::memory_order_relaxed) == engine::McesFlow::fell_back) return 1;
        if (peer && r.bridge.phase.load(std::memory_order_acquire) != engine::BridgeState::connected) {
            errno = ENOTCONN;
            return -1;
        }
    }
    const sockaddr_storage& a = peer ? m.peer : m.local;
    const socklen_t alen = peer ? m.peer_len : m.local_len;
    if (alen == 0) return 1;
    memcpy(addr, &a, *len < alen ? *len : alen);
    *len = alen;
    return 0;
}

}  // namespace gs::shim
