#include "shim/flows.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <new>
#include <string>

#include "core/qos/native_plan.h"
#include "shim/log.h"
#include "shim/real.h"

namespace gs::shim {
namespace detail {
std::atomic<uint32_t> g_slots[kMaxFd];
alignas(FlowRecord) unsigned char g_flow_storage[sizeof(FlowRecord) * kMaxFlows];
}  // namespace detail

namespace {

using detail::g_slots;
std::atomic<uint32_t> g_bump{0};          // records [0, g_bump) have been handed out once
std::atomic<uint64_t> g_free_head{0};     // (tag << 32) | (index + 1), 0 = empty
std::atomic<uint64_t> g_untracked{0};
std::atomic<int> g_max_fd{-1};
bool g_keep_closed = false;

int64_t now_ns() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

void push_free(uint32_t index) noexcept {
    uint64_t head = g_free_head.load(std::memory_order_relaxed);
    uint64_t next;
    do {
        flow_at(index).next_free.store(static_cast<uint32_t>(head), std::memory_order_relaxed);
        next = ((head >> 32) + 1) << 32 | (index + 1);
    } while (!g_free_head.compare_exchange_weak(head, next, std::memory_order_release,
                                                std::memory_order_relaxed));
}

FlowRecord* pop_free() noexcept {
    uint64_t head = g_free_head.load(std::memory_order_acquire);
    while (static_cast<uint32_t>(head) != 0) {
        uint32_t index = static_cast<uint32_t>(head) - 1;
        // The tag in the high half makes a concurrent pop+push of the same
        // record fail this exchange (ABA).
        uint64_t next = ((head >> 32) + 1) << 32 | flow_at(index).next_free.load(std::memory_order_relaxed);
        if (g_free_head.compare_exchange_weak(head, next, std::memory_order_acquire,
                                              std::memory_order_acquire))
            return &flow_at(index);
    }
    return nullptr;
}

void json_escape(std::string& out, const char* s) {
    for (; *s; ++s) {
        unsigned char c = static_cast<unsigned char>(*s);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20) {
            char b[8];
            snprintf(b, sizeof b, "\\u%04x", c);
            out += b;
        } else {
            out += static_cast<char>(c);
        }
    }
}

// What carries a flow: "mces" (transport = mces / auto, over MCES), else "native".
const char* carried_by(const FlowRecord& r) noexcept {
    if (r.proto == policy::Proto::udp)
        return r.bridged && r.dgram.mces_running.load(std::memory_order_relaxed) ? "mces" : "native";
    return r.mces.kind != engine::McesFlow::none &&
                   r.mces.carried.load(std::memory_order_relaxed) != engine::McesFlow::fell_back
               ? "mces"
               : "native";
}

// How an MCES flow is authenticated (McesFlow::Live::auth): "none", "encrypt", "authenticate".
const char* auth_name(uint64_t mode) noexcept {
    return mode == 0 ? "none" : mces::auth::name(static_cast<mces::auth::Mode>(mode));
}

}  // namespace

bool endpoint_from(const sockaddr* sa, socklen_t len, Endpoint& e) noexcept {
    if (sa == nullptr || len < sizeof(sa_family_t)) return false;
    sockaddr_storage ss{};
    memcpy(&ss, sa, len < sizeof ss ? len : sizeof ss);
    if (ss.ss_family == AF_INET && len >= sizeof(sockaddr_in)) {
        auto& in = reinterpret_cast<const sockaddr_in&>(ss);
        e.addr.family = AF_INET;
        memcpy(e.addr.bytes, &in.sin_addr, 4);
        e.port = ntohs(in.sin_port);
        return true;
    }
    if (ss.ss_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
        auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss);
        if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
            e.addr.family = AF_INET;
            memcpy(e.addr.bytes, in6.sin6_addr.s6_addr + 12, 4);
        } else {
            e.addr.family = AF_INET6;
            memcpy(e.addr.bytes, in6.sin6_addr.s6_addr, 16);
        }
        e.port = ntohs(in6.sin6_port);
        return true;
    }
    return false;
}


int max_tracked_fd() noexcept { return g_max_fd.load(std::memory_order_relaxed); }

void note_fd(int fd) noexcept {
    int cur = g_max_fd.load(std::memory_order_relaxed);
    while (fd > cur && !g_max_fd.compare_exchange_weak(cur, fd, std::memory_order_relaxed)) {
    }
}

FlowRecord* flow_alloc() noexcept {
    FlowRecord* r = pop_free();
    if (r == nullptr) {
        uint32_t i = g_bump.fetch_add(1, std::memory_order_relaxed);
        if (i >= kMaxFlows) {
            g_bump.store(kMaxFlows, std::memory_order_relaxed);
            if (g_untracked.fetch_add(1, std::memory_order_relaxed) == 0)
                GS_LOG(warn, "flow table full (%u flows): further flows keep their QoS but are not "
                             "tracked or reported in --stats", kMaxFlows);
            return nullptr;
        }
        r = new (&flow_at(i)) FlowRecord();   // first use: constructed here
    }
    r->refs.store(1, std::memory_order_relaxed);
    r->fd = -1;
    r->family = 0;
    r->rule = -1;
    r->decision = nullptr;
    r->request = nullptr;
    r->local = Endpoint{};
    r->peer = Endpoint{};
    r->bytes_out.store(0, std::memory_order_relaxed);
    r->bytes_in.store(0, std::memory_order_relaxed);
    r->applied = r->failed = 0;
    r->first_errno = 0;
    r->reserved[0] = r->reserved[1] = qos::Reservation{};
    r->admission = qos::ReserveResult::Status::unavailable;
    r->reserves = false;
    r->rate = 0;
    r->granted[0] = r->granted[1] = 0;
    r->bridged = false;
    r->bridge.phase.store(engine::BridgeState::connecting, std::memory_order_relaxed);
    r->bridge.error.store(0, std::memory_order_relaxed);
    r->bridge.connect_done.store(0, std::memory_order_relaxed);
    r->bridge.transport = r->bridge.app_end = -1;
    r->bridge.filler = 0;
    r->mces.kind = engine::McesFlow::none;
    r->dgram.peer_connected.store(false, std::memory_order_relaxed);
    r->dgram.drops.store(0, std::memory_order_relaxed);
    r->dgram.mces = nullptr;
    r->dgram.mces_running.store(false, std::memory_order_relaxed);
    r->denied = r->inherited = false;
    r->opened_ns = now_ns();
    r->closed_ns = 0;
    r->state.store(FlowState::open, std::memory_order_release);
    return r;
}

uint64_t flows_untracked() noexcept { return g_untracked.load(std::memory_order_relaxed); }
void keep_closed_flows(bool keep) noexcept { g_keep_closed = keep; }

void mark_all_inherited() noexcept {
    uint32_t n = g_bump.load(std::memory_order_relaxed);
    if (n > kMaxFlows) n = kMaxFlows;
    for (uint32_t i = 0; i < n; ++i) flow_at(i).inherited = true;
}

const char* format_endpoint(const Endpoint& e, char* buf, size_t len) noexcept {
    char a[INET6_ADDRSTRLEN] = "?";
    if (e.addr.family == AF_INET || e.addr.family == AF_INET6) inet_ntop(e.addr.family, e.addr.bytes, a, sizeof a);
    snprintf(buf, len, e.addr.family == AF_INET6 ? "[%s]:%u" : "%s:%u", a, e.port);
    return buf;
}

void flow_refresh(FlowRecord& r, int fd) noexcept {
    // A bridged flow's addresses are the transport's (the program's fd is AF_UNIX).
    if (r.bridged && r.bridge.transport >= 0) fd = r.bridge.transport;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    // Over MCES the local address is the UDP socket's (the transport is idle).
    const bool over_mces = r.mces.kind == engine::McesFlow::client &&
                           r.mces.carried.load(std::memory_order_relaxed) != engine::McesFlow::fell_back;
    if (over_mces && r.mces.local_len > 0)
        endpoint_from(reinterpret_cast<const sockaddr*>(&r.mces.local), r.mces.local_len, r.local);
    else if (real::getsockname()(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
        endpoint_from(reinterpret_cast<sockaddr*>(&ss), len, r.local);
    len = sizeof ss;
    if (r.peer.port == 0 && real::getpeername()(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
        endpoint_from(reinterpret_cast<sockaddr*>(&ss), len, r.peer);
    if (r.proto == policy::Proto::tcp && !r.bridged) {
        // The kernel counts TCP bytes exactly, including sendfile/splice that
        // never pass through a hook.
        tcp_info ti{};
        len = sizeof ti;
        if (real::getsockopt()(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
            len >= offsetof(tcp_info, tcpi_bytes_retrans) + sizeof ti.tcpi_bytes_retrans) {
            // What the program wrote: data sent once (retransmissions out),
            // plus what waits unsent. The kernel's sequence space counts a
            // FIN as one byte; bytes_sent does not, bytes_received does.
            // After a graceful close the socket is in CLOSE (the TIME_WAIT
            // mini-socket took over), where a FIN is assumed: a flow ended by
            // a reset is counted one byte high on the way in.
            enum : uint8_t { TCP_FIN_WAIT1 = 4, TCP_TIME_WAIT = 6, TCP_CLOSE = 7, TCP_CLOSE_WAIT = 8,
                             TCP_LAST_ACK = 9, TCP_CLOSING = 11 };   // include/net/tcp_states.h
            const uint8_t st = ti.tcpi_state;
            const bool fin_queued = st == TCP_FIN_WAIT1 || st == TCP_CLOSING || st == TCP_LAST_ACK;
            const bool fin_received = st == TCP_CLOSE_WAIT || st == TCP_LAST_ACK || st == TCP_CLOSING ||
                                      st == TCP_TIME_WAIT || st == TCP_CLOSE;
            uint64_t notsent = ti.tcpi_notsent_bytes;
            if (fin_queued && notsent > 0) --notsent;
            uint64_t out = ti.tcpi_bytes_sent - ti.tcpi_bytes_retrans + notsent;
            uint64_t in = ti.tcpi_bytes_received;
            if (fin_received && in > 0) --in;
            r.bytes_out.store(out, std::memory_order_relaxed);
            r.bytes_in.store(in, std::memory_order_relaxed);
        }
    }
}

void flow_release(FlowRecord& r, int fd) noexcept {
    // An accepted MCES flow's record is also the engine's until its side
    // ends (mces_attach_accepted), which usually comes after the program's
    // close: take the kernel's figures while the fd is still open (before
    // our reference goes: after it the record may be reused). A bridge's
    // likewise: the engine may still be relaying when the process exits,
    // and the --stats record would not know the flow's local address.
    if (fd >= 0 && (r.mces.kind == engine::McesFlow::accepted || r.bridged) &&
        r.refs.load(std::memory_order_relaxed) > 1)
        flow_refresh(r, fd);
    if (r.refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    // A bridge's last reference is the engine's (fd -1): its transport
    // still answers for the flow's addresses.
    if (fd >= 0 || (r.bridged && r.bridge.transport >= 0)) flow_refresh(r, fd);
    release_reservations(r);   // close releases what connect reserved
    if (r.bridged && r.bridge.transport >= 0) {
        // Both the program and the engine are done with the flow.
        engine::close_internal_fd(r.bridge.transport);
        r.bridge.transport = -1;
    }
    r.closed_ns = now_ns();
    if (log::on(policy::LogLevel::info)) {
        char l[64], p[64];
        GS_LOG(info, "flow closed: %s %s %s -> %s rule %s: class %s, transport %s, %llu bytes out, %llu in, %.1f ms",
               policy::name(r.proto), policy::name(r.direction), format_endpoint(r.local, l, sizeof l),
               format_endpoint(r.peer, p, sizeof p), r.decision ? r.decision->rule.c_str() : "-",
               r.decision ? policy::name(r.decision->service) : "-", carried_by(r),
               static_cast<unsigned long long>(r.bytes_out.load(std::memory_order_relaxed)),
               static_cast<unsigned long long>(r.bytes_in.load(std::memory_order_relaxed)),
               static_cast<double>(r.closed_ns - r.opened_ns) / 1e6);
    }
    if (g_keep_closed) {
        r.state.store(FlowState::closed, std::memory_order_release);
    } else {
        r.state.store(FlowState::free, std::memory_order_release);
        push_free(flow_index(r));
    }
}

void release_all_reservations() noexcept {
    uint32_t n = g_bump.load(std::memory_order_acquire);
    if (n > kMaxFlows) n = kMaxFlows;
    for (uint32_t i = 0; i < n; ++i)
        if (flow_at(i).state.load(std::memory_order_acquire) == FlowState::open && !flow_at(i).inherited)
            release_reservations(flow_at(i));
}

void flow_discard(FlowRecord& r) noexcept {
    r.refs.store(0, std::memory_order_relaxed);
    r.state.store(FlowState::free, std::memory_order_release);
    push_free(flow_index(r));
}

void release_slot_value(uint32_t value, int fd) noexcept {
    if (slot::is_flow(value)) flow_release(flow_at(slot::index(value)), fd);
}

// Bytes the flow has to send that have not gone yet: the kernel's send
// queue (TCP: not yet sent, SIOCOUTQNSD), and for a bridged flow also what
// waits in the bridge (its end of the pair, what the engine holds).
uint64_t queued_bytes(const FlowRecord& r) noexcept {
    const bool tcp = r.proto == policy::Proto::tcp;
    int n = 0;
    uint64_t q = 0;
    if (r.bridged) {
        if (ioctl(r.fd, SIOCOUTQ, &n) == 0 && n > 0) q += static_cast<uint64_t>(n);
        if (tcp) {
            q += r.bridge.up.held.load(std::memory_order_relaxed);
            if (r.bridge.transport >= 0 && ioctl(r.bridge.transport, SIOCOUTQNSD, &n) == 0 && n > 0)
                q += static_cast<uint64_t>(n);
        }
        return q;
    }
    if (ioctl(r.fd, tcp ? SIOCOUTQNSD : SIOCOUTQ, &n) == 0 && n > 0) q = static_cast<uint64_t>(n);
    return q;
}

std::string flows_json(const char* process, const policy::Policy& pol) {
    {
        std::string out;
        out.reserve(4096);
        char b[640];   // the longest piece: the mces block, 10 numbers of up to 20 digits, a bool and a name
        snprintf(b, sizeof b, "{\"gsocket\":1,\"pid\":%d,\"process\":\"", static_cast<int>(getpid()));
        out += b;
        json_escape(out, process);
        out += "\",\"policy\":\"";
        json_escape(out, pol.source().c_str());
        snprintf(b, sizeof b, "\",\"policy_ok\":%s,\"untracked\":%llu,\"mces\":", pol.ok() ? "true" : "false",
                 static_cast<unsigned long long>(flows_untracked()));
        out += b;
        out += engine::mces_totals_json();   // TCP over MCES in this process (docs/mces.md)
        out += ",\"flows\":[";
        uint32_t n = g_bump.load(std::memory_order_acquire);
        if (n > kMaxFlows) n = kMaxFlows;
        bool first = true;
        for (uint32_t i = 0; i < n; ++i) {
            FlowRecord& r = flow_at(i);
            FlowState st = r.state.load(std::memory_order_acquire);
            if (st == FlowState::free) continue;
            const bool live = st == FlowState::open && r.fd >= 0 && r.fd < kMaxFd &&
                              slot::is_flow(g_slots[r.fd].load(std::memory_order_relaxed)) &&
                              slot::index(g_slots[r.fd].load(std::memory_order_relaxed)) == i;
            if (live) flow_refresh(r, r.fd);
            const policy::Decision* d = r.decision;
            char l[64], p[64];
            int64_t end = st == FlowState::closed ? r.closed_ns : now_ns();
            snprintf(b, sizeof b,
                     "%s{\"fd\":%d,\"proto\":\"%s\",\"direction\":\"%s\",\"local\":\"%s\",\"peer\":\"%s\","
                     "\"state\":\"%s\",\"rule\":\"",
                     first ? "" : ",", r.fd, policy::name(r.proto), policy::name(r.direction),
                     format_endpoint(r.local, l, sizeof l), format_endpoint(r.peer, p, sizeof p),
                     st == FlowState::open ? "open" : "closed");
            out += b;
            first = false;
            json_escape(out, d ? d->rule.c_str() : "-");
            snprintf(b, sizeof b, "\",\"class\":\"%s\",\"transport\":\"%s\",\"requested_transport\":\"%s\","
                     "\"bridged\":%s,",
                     d ? policy::name(d->service) : "-", carried_by(r), d ? policy::name(d->transport) : "native",
                     r.bridged ? "true" : "false");
            out += b;
            // Applied knobs with their values; knobs the kernel refused by name.
            std::string failed;
            out += "\"qos\":{";
            bool qfirst = true;
            if (d != nullptr) {
                qos::NativePlan plan = qos::plan_native(*d, r.family, r.proto);
                for (int k = 0; k < plan.count; ++k) {
                    const qos::Setting& s = plan.settings[k];
                    unsigned bit = 1u << static_cast<unsigned>(s.knob);
                    if (s.knob == qos::Knob::tclass) continue;   // reported once, as dscp
                    if (r.failed & bit) {
                        failed += failed.empty() ? "\"" : ",\"";
                        failed += qos::name(s.knob);
                        failed += '"';
                    }
                    if (!(r.applied & bit)) continue;
                    if (s.knob == qos::Knob::congestion)
                        snprintf(b, sizeof b, "%s\"%s\":\"%s\"", qfirst ? "" : ",", qos::name(s.knob), s.text);
                    else
                        snprintf(b, sizeof b, "%s\"%s\":%llu", qfirst ? "" : ",", qos::name(s.knob),
                                 static_cast<unsigned long long>(s.value));
                    out += b;
                    qfirst = false;
                }
            }
            out += "},\"qos_failed\":[";
            out += failed;
            out += "]";
            if (r.reserves) {
                snprintf(b, sizeof b, ",\"admission\":\"%s\",\"reserved_up\":%llu,\"reserved_down\":%llu",
                         qos::name(r.admission), static_cast<unsigned long long>(r.granted[0]),
                         static_cast<unsigned long long>(r.granted[1]));
                out += b;
            }
            if (live) {
                snprintf(b, sizeof b, ",\"queue\":%llu", static_cast<unsigned long long>(queued_bytes(r)));
                out += b;
            }
            if (r.bridged && r.proto == policy::Proto::udp) {
                // Datagrams the engine dropped: beyond the receive limit, or
                // with the program's end full (docs/engine.md).
                snprintf(b, sizeof b, ",\"drops\":%llu",
                         static_cast<unsigned long long>(r.dgram.drops.load(std::memory_order_relaxed)));
                out += b;
            }
            auto v = [](const std::atomic<uint64_t>& a) {
                return static_cast<unsigned long long>(a.load(std::memory_order_relaxed));
            };
            if (r.bridged && r.proto == policy::Proto::udp && r.dgram.mces != nullptr) {
                // The socket's MCES side (docs/mces.md, "UDP programs").
                const engine::McesDgramStats& m = r.dgram.mces_stats;
                snprintf(b, sizeof b,
                         ",\"mces_udp\":{\"connects\":%llu,\"accepted\":%llu,\"established\":%llu,\"failed\":%llu,"
                         "\"fallbacks\":%llu,\"sent\":%llu,\"received\":%llu,\"plain_out\":%llu,\"plain_in\":%llu,"
                         "\"dropped\":%llu,\"overflow\":%llu,\"auth\":\"%s\",\"auth_failed\":%llu,\"replay\":%llu}",
                         v(m.connects), v(m.accepted), v(m.established), v(m.failed), v(m.fallbacks), v(m.sent),
                         v(m.received), v(m.plain_out), v(m.plain_in), v(m.dropped), v(m.overflow),
                         auth_name(r.dgram.mces->psk ? static_cast<uint64_t>(r.dgram.mces->auth_mode) : 0),
                         v(m.auth_failed), v(m.replay));
                out += b;
                if (r.dgram.mces->service_class == 3) {   // realtime (docs/mces.md, "Realtime class")
                    out.pop_back();   // the block's '}'
                    snprintf(b, sizeof b,
                             ",\"on_time\":%llu,\"late_dropped\":%llu,\"late_arrivals\":%llu,\"fec_repaired\":%llu,"
                             "\"repairs_sent\":%llu,\"retransmitted\":%llu,\"extra_copies\":%llu,\"expired\":%llu,"
                             "\"jitter_us\":%llu,\"clock\":\"%s\"}",
                             v(m.on_time), v(m.late_dropped), v(m.late_arrivals), v(m.fec_repaired), v(m.repairs_sent),
                             v(m.retransmitted), v(m.extra_copies), v(m.expired), v(m.jitter_us),
                             r.dgram.mces->clock_symmetric ? "symmetric" : "strict");
                    out += b;
                }
            }
            if ((r.mces.kind == engine::McesFlow::client || r.mces.kind == engine::McesFlow::accepted) &&
                r.mces.carried.load(std::memory_order_relaxed) == engine::McesFlow::mces) {
                // The MCES connection under the flow (docs/mces.md, "Counters";
                // an accepted flow's are zero until the engine has attached it).
                const engine::McesFlow::Live& l = r.mces.live;
                snprintf(b, sizeof b,
                         ",\"mces\":{\"srtt_us\":%llu,\"cwnd\":%llu,\"packets_sent\":%llu,"
                         "\"packets_received\":%llu,\"lost\":%llu,\"retransmitted_bytes\":%llu,\"ptos\":%llu,"
                         "\"dropped\":%llu,\"checksum\":%s,\"auth\":\"%s\",\"auth_failed\":%llu,\"replay\":%llu}",
                         v(l.srtt_us), v(l.cwnd), v(l.packets_sent), v(l.packets_received), v(l.lost),
                         v(l.retransmitted_bytes), v(l.ptos), v(l.dropped), v(l.checksum) ? "true" : "false",
                         auth_name(v(l.auth)), v(l.auth_failed), v(l.replay));
                out += b;
                if (v(l.reserved_rate) > 0) {   // class guaranteed: its rate, held or not
                    out.pop_back();   // the mces object's '}'
                    snprintf(b, sizeof b,
                             ",\"guaranteed\":{\"reserved_rate\":%llu,\"delivered_rate\":%llu,\"shortfalls\":%llu,"
                             "\"floor\":%s}}",
                             v(l.reserved_rate), v(l.delivered_rate), v(l.rate_shortfalls),
                             v(l.rate_floor) ? "true" : "false");
                    out += b;
                }
            }
            snprintf(b, sizeof b,
                     ",\"bytes_out\":%llu,\"bytes_in\":%llu,\"duration_ms\":%.3f,"
                     "\"denied\":%s,\"inherited\":%s}",
                     static_cast<unsigned long long>(r.bytes_out.load()),
                     static_cast<unsigned long long>(r.bytes_in.load()),
                     static_cast<double>(end - r.opened_ns) / 1e6, r.denied ? "true" : "false",
                     r.inherited ? "true" : "false");
            out += b;
        }
        out += "]}\n";
        return out;
    }
}

void write_stats(const char* path, const char* process, const policy::Policy& pol) noexcept {
    try {
        std::string out = flows_json(process, pol);
        int fd = static_cast<int>(
            syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
        if (fd < 0) {
            GS_LOG(warn, "cannot write stats to %s: %s; check GSOCKET_STATS / gsrun --stats", path, strerror(errno));
            return;
        }
        // One write with O_APPEND: lines of concurrent processes do not interleave.
        syscall(SYS_write, fd, out.data(), out.size());
        syscall(SYS_close, fd);
    } catch (...) {
        GS_LOG(warn, "cannot write stats to %s: out of memory", path);
    }
}

}  // namespace gs::shim
