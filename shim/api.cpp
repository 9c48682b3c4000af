// The GSocket API (api/gsocket.h): the gs_* entry points of libgsocket-preload.so.
//
// A program asks for its class and QoS here; the request rides in the fd's
// flow record (a pending record, slot kFlow|kPending) until the connect hook
// classifies the flow: classify() then uses the request, with the policy's
// matching rule filling what the program left unset. Everything else — native
// knobs, admission, the engine, close releasing — is the shim's own path, so
// an API program and a shimmed one behave the same.
//
// These calls may allocate (the first request on a record allocates its
// storage) and are not for signal handlers, gs_close excepted. Nothing throws
// out of them: 0 / -1 + errno at this C edge.
#include "api/gsocket.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <new>

#include "shim/flows.h"
#include "shim/log.h"
#include "shim/real.h"
#include "shim/shim.h"

#define GS_EXPORT extern "C" __attribute__((visibility("default")))

using namespace gs::shim;
using gs::policy::Proto;
using gs::policy::ServiceClass;

namespace {

// One request per record index, allocated on first use and reused with the
// record (records are never freed, nor are these). Zero-initialised BSS.
std::atomic<Request*> g_requests[kMaxFlows];

const char* class_name(int cls) noexcept {
    static constexpr const char* names[] = {"GS_DATAGRAM", "GS_RELIABLE", "GS_GUARANTEED", "GS_REALTIME",
                                            "GS_GROUP"};
    return cls >= 0 && cls <= GS_GROUP ? names[cls] : "?";
}

int fail(int e) noexcept {
    errno = e;
    return -1;
}

// Checks the class and QoS a program asks for a socket of `proto` (udp / tcp).
// Returns 0, or -1 with errno and one log line saying what would be right.
int check_request(const char* fn_name, int fd, int cls, const gs_qos& q, Proto proto) noexcept {
    char fn[48];   // "gs_set_qos(fd 5)", or "gs_socket" before there is an fd
    if (fd >= 0) snprintf(fn, sizeof fn, "%s(fd %d)", fn_name, fd);
    else snprintf(fn, sizeof fn, "%s", fn_name);
    if (cls < GS_DATAGRAM || cls > GS_GROUP) {
        GS_LOG(warn, "%s: cls = %d is not a service class, use GS_DATAGRAM (0), GS_RELIABLE (1), "
                     "GS_GUARANTEED (2) or GS_REALTIME (3) (EINVAL)", fn, cls);
        return fail(EINVAL);
    }
    if (cls == GS_GROUP) {
        GS_LOG(warn, "%s: cls = GS_GROUP needs the overlay, which this build does not have yet; use "
                     "GS_DATAGRAM to a multicast address (EPROTONOSUPPORT)", fn);
        return fail(EPROTONOSUPPORT);
    }
    if (cls == GS_DATAGRAM && proto == Proto::tcp) {
        GS_LOG(warn, "%s: cls = GS_DATAGRAM on a TCP socket, TCP is a byte stream: use GS_RELIABLE, or a "
                     "UDP socket (EINVAL)", fn);
        return fail(EINVAL);
    }
    if ((cls == GS_RELIABLE || cls == GS_GUARANTEED) && proto == Proto::udp) {
        GS_LOG(warn, "%s: cls = %s on a UDP socket, the kernel's UDP is not reliable: use a TCP socket "
                     "(gs_socket makes one), or GS_DATAGRAM / GS_REALTIME (EINVAL)", fn, class_name(cls));
        return fail(EINVAL);
    }
    if (q.priority < -1 || q.priority > 6) {
        GS_LOG(warn, "%s: qos.priority = %d is out of range, use 0-6 (7-15 need CAP_NET_ADMIN) or -1 for "
                     "unset (EINVAL)", fn, q.priority);
        return fail(EINVAL);
    }
    if (q.dscp < -1 || q.dscp > 63) {
        GS_LOG(warn, "%s: qos.dscp = %d is out of range, use 0-63 or -1 for unset (EINVAL)", fn, q.dscp);
        return fail(EINVAL);
    }
    if (q.loss_ppm > 1000000) {
        GS_LOG(warn, "%s: qos.loss_ppm = %u is above 1000000 (100%%), use 0-1000000 (EINVAL)", fn,
               q.loss_ppm);
        return fail(EINVAL);
    }
    if ((q.latency_us != 0 || q.jitter_us != 0) && cls != GS_REALTIME) {
        GS_LOG(warn, "%s: qos.%s = %u needs cls = GS_REALTIME (cls is %s): set cls = GS_REALTIME or "
                     "%s = 0 (EINVAL)", fn, q.latency_us ? "latency_us" : "jitter_us",
               q.latency_us ? q.latency_us : q.jitter_us, class_name(cls), q.latency_us ? "latency_us" : "jitter_us");
        return fail(EINVAL);
    }
    return 0;
}

// What the shim knows of `fd`: its slot and the socket bits (kSocket, kV6,
// kUdp) of an inet TCP/UDP socket. Returns 0, or -1 with errno EBADF,
// ENOTSOCK or EAFNOSUPPORT.
int inspect(int fd, uint32_t& s, uint32_t& bits) noexcept {
    if (fd < 0 || real::fcntl()(fd, F_GETFD) < 0) return fail(EBADF);
    s = trackable(fd) ? fd_slot(fd).load(std::memory_order_relaxed) : 0;
    if (slot::is_internal(s)) return fail(EBADF);   // the shim's own: not the program's to use
    int type = 0;
    socklen_t len = sizeof type;
    if (real::getsockopt()(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return fail(ENOTSOCK);
    bits = slot::is_flow(s) && !slot::is_pending(s) ? 0 : socket_bits(s);
    if (s == 0) bits = probe_slot(fd);
    if (bits == 0 && !slot::is_flow(s)) return fail(EAFNOSUPPORT);
    return 0;
}

Request* request_storage(uint32_t index) noexcept {
    Request* q = g_requests[index].load(std::memory_order_acquire);
    if (q != nullptr) return q;
    auto* fresh = new (std::nothrow) Request();
    if (fresh == nullptr) return nullptr;
    if (!g_requests[index].compare_exchange_strong(q, fresh, std::memory_order_acq_rel)) {
        delete fresh;
        return q;
    }
    return fresh;
}

gs_qos unset_qos() noexcept {
    gs_qos q;
    gs_qos_init(&q);
    return q;
}

void to_api(const gs::policy::Qos& in, gs_qos& out) noexcept {
    out.rate = in.rate;
    out.rate_down = in.rate_down;
    out.burst = in.burst;
    out.latency_us = in.latency_us;
    out.jitter_us = in.jitter_us;
    out.loss_ppm = in.loss_ppm;
    out.priority = in.priority;
    out.dscp = in.dscp;
}

}  // namespace

GS_EXPORT void gs_qos_init(struct gs_qos* qos) {
    if (qos == nullptr) return;
    memset(qos, 0, sizeof *qos);
    qos->priority = -1;
    qos->dscp = -1;
}

GS_EXPORT int gs_set_qos(int fd, enum gs_class cls, const struct gs_qos* qos) {
    init();   // a program may call us from its own constructors, before ours ran
    const gs_qos q = qos != nullptr ? *qos : unset_qos();
    uint32_t s = 0, bits = 0;
    if (inspect(fd, s, bits) != 0) return -1;
    if (bits == 0) {
        GS_LOG(warn, "gs_set_qos(fd %d): the flow is classified already (connected, or a UDP socket that sent): "
                     "ask before connect (EISCONN)", fd);
        return fail(EISCONN);
    }
    const Proto proto = (bits & slot::kUdp) ? Proto::udp : Proto::tcp;
    if (check_request("gs_set_qos", fd, static_cast<int>(cls), q, proto) != 0) return -1;
    sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    if (real::getpeername()(fd, reinterpret_cast<sockaddr*>(&peer), &plen) == 0) {
        GS_LOG(warn, "gs_set_qos(fd %d): the socket is connected already: ask before connect (EISCONN)", fd);
        return fail(EISCONN);
    }
    errno = 0;
    if (!g_ready.load(std::memory_order_acquire)) return 0;   // shim disabled: a plain socket
    if (!trackable(fd)) {
        GS_LOG(warn, "gs_set_qos(fd %d): fd above the shim's table (%d): the request is ignored, the flow stays "
                     "native", fd, kMaxFd);
        return 0;
    }
    const auto service = static_cast<ServiceClass>(cls);
    if (service == ServiceClass::guaranteed || service == ServiceClass::realtime) ensure_ledger();

    const bool pending = slot::is_pending(s);
    FlowRecord* r = pending ? &flow_at(slot::index(s)) : flow_alloc();
    if (r == nullptr) return 0;   // table full: logged by flow_alloc; the flow goes by the policy
    Request* req = request_storage(flow_index(*r));
    if (req == nullptr) {
        if (!pending) flow_discard(*r);
        return fail(ENOMEM);
    }
    try {
        req->decision.rule.reserve(63);   // classify() writes "api+RULE" without allocating
    } catch (...) {
        if (!pending) flow_discard(*r);
        return fail(ENOMEM);
    }
    req->service = service;
    req->asked.rate = q.rate;
    req->asked.rate_down = q.rate_down;
    req->asked.burst = q.burst;
    req->asked.latency_us = q.latency_us;
    req->asked.jitter_us = q.jitter_us;
    req->asked.loss_ppm = q.loss_ppm;
    req->asked.priority = static_cast<int8_t>(q.priority);
    req->asked.dscp = static_cast<int8_t>(q.dscp);
    r->request = req;
    if (pending) return 0;

    r->fd = fd;
    r->family = (bits & slot::kV6) ? AF_INET6 : AF_INET;
    r->proto = proto;
    r->direction = proto == Proto::udp ? gs::policy::Direction::datagram : gs::policy::Direction::connect;
    const uint32_t v = slot::kFlow | slot::kPending | flow_index(*r) | (proto == Proto::udp ? slot::kCount : 0);
    // Another thread may have classified, closed or recorded it meanwhile.
    if (!fd_slot(fd).compare_exchange_strong(s, v, std::memory_order_relaxed)) {
        flow_discard(*r);
        GS_LOG(warn, "gs_set_qos(fd %d): another thread connected or closed the socket meanwhile (EISCONN)", fd);
        return fail(EISCONN);
    }
    note_fd(fd);
    return 0;
}

GS_EXPORT int gs_socket(int domain, enum gs_class cls, const struct gs_qos* qos) {
    init();
    if (domain != AF_INET && domain != AF_INET6) {
        GS_LOG(warn, "gs_socket: domain = %d, use AF_INET (%d) or AF_INET6 (%d) (EAFNOSUPPORT)", domain, AF_INET,
               AF_INET6);
        return fail(EAFNOSUPPORT);
    }
    const gs_qos q = qos != nullptr ? *qos : unset_qos();
    const int c = static_cast<int>(cls);
    const Proto proto = c == GS_DATAGRAM || c == GS_GROUP ? Proto::udp : Proto::tcp;
    if (check_request("gs_socket", -1, c, q, proto) != 0) return -1;
    int fd = ::socket(domain, proto == Proto::udp ? SOCK_DGRAM : SOCK_STREAM, 0);   // our hook: the slot is set
    if (fd < 0) return -1;
    if (gs_set_qos(fd, cls, &q) != 0) {
        int e = errno;
        ::close(fd);
        return fail(e);
    }
    return fd;
}

GS_EXPORT int gs_get_qos(int fd, struct gs_grant* out) {
    if (out == nullptr) {
        GS_LOG(warn, "gs_get_qos(fd %d): out is NULL, pass a struct gs_grant to fill (EINVAL)", fd);
        return fail(EINVAL);
    }
    init();
    uint32_t s = 0, bits = 0;
    if (inspect(fd, s, bits) != 0) return -1;
    memset(out, 0, sizeof *out);
    gs_qos_init(&out->qos);
    out->admission = GS_NONE;
    out->transport = GS_NATIVE;
    if (!slot::is_flow(s)) {   // not classified, no request: the policy decides at connect
        out->cls = (bits & slot::kUdp) ? GS_DATAGRAM : GS_RELIABLE;
        return 0;
    }
    const FlowRecord& r = flow_at(slot::index(s));
    if (slot::is_pending(s)) {
        out->cls = r.request ? static_cast<gs_class>(r.request->service)
                   : r.proto == Proto::udp ? GS_DATAGRAM
                                           : GS_RELIABLE;
        if (r.request) to_api(r.request->asked, out->qos);
        return 0;
    }
    const gs::policy::Decision* d = r.decision;
    out->cls = d ? static_cast<gs_class>(d->service) : r.proto == Proto::udp ? GS_DATAGRAM : GS_RELIABLE;
    if (d) to_api(d->qos, out->qos);
    out->transport = slot::is_bridged(s) ? GS_BRIDGED : GS_NATIVE;
    using St = gs::qos::ReserveResult::Status;
    if (r.reserves) {
        if (r.granted[0] || r.granted[1]) {   // what the ledger gave, not what was asked
            out->qos.rate = r.granted[0] ? r.granted[0] : out->qos.rate;
            out->qos.rate_down = r.granted[1] ? r.granted[1] : out->qos.rate_down;
        }
        out->admission = r.admission == St::granted      ? GS_GRANTED
                         : r.admission == St::downgraded ? GS_DOWNGRADED
                                                         : GS_UNRESERVED;
    } else if (d && reserving(*d)) {
        out->admission = GS_UNRESERVED;   // no ledger (no [general] capacity): fail open
    }
    return 0;
}

GS_EXPORT int gs_connect(int fd, const struct sockaddr* addr, socklen_t addrlen, struct gs_grant* granted) {
    init();
    if (addr == nullptr) {
        GS_LOG(warn, "gs_connect(fd %d): addr is NULL, pass the peer's sockaddr_in / sockaddr_in6 (EINVAL)", fd);
        return fail(EINVAL);
    }
    int rc = ::connect(fd, addr, addrlen);   // our hook: classify, admit, bridge
    int e = errno;
    if ((rc == 0 || e == EINPROGRESS) && granted != nullptr) gs_get_qos(fd, granted);
    errno = e;
    return rc;
}

GS_EXPORT int gs_close(int fd) { return ::close(fd); }

GS_EXPORT const char* gs_strerror(int err) {
    switch (err) {
    case ENOBUFS:
        return "ENOBUFS: the host cannot reserve the rate asked (its [general] capacity is taken); ask less, or "
               "the policy may say on_reject = downgrade";
    case EPROTONOSUPPORT: return "EPROTONOSUPPORT: class GS_GROUP needs the overlay, not in this build";
    case EISCONN: return "EISCONN: the socket is connected already; set QoS before connect";
    case EINVAL: return "EINVAL: a class or QoS argument is out of range (the log names it)";
    case EACCES: return "EACCES: the policy is broken and says on_error = fail (gsctl policy check)";
    default: {
        const char* d = strerrordesc_np(err);
        return d ? d : "Unknown error";
    }
    }
}

GS_EXPORT int gs_version(void) { return GS_VERSION; }
