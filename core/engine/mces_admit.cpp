#include "core/engine/mces_admit.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>

namespace gs::engine {
namespace {

// "10.0.0.1:40000", "[::1]:40000", without allocating.
const char* addr_text(const sansio::Addr& a, char* out, size_t n) noexcept {
    char ip[INET6_ADDRSTRLEN] = "?";
    if (a.is_v4()) inet_ntop(AF_INET, a.ip.data() + 12, ip, sizeof ip);
    else inet_ntop(AF_INET6, a.ip.data(), ip, sizeof ip);
    snprintf(out, n, a.is_v4() ? "%s:%u" : "[%s]:%u", ip, static_cast<unsigned>(a.port));
    return out;
}

using qos::rate_text;

// A down reservation as the endpoint's handle: sequence number << 16 | slot
// (a ledger has at most kMaxSlots = 2^16 slots). Never 0: seq starts at 1.
constexpr unsigned kSlotBits = 16;
static_assert(qos::kMaxSlots <= (1u << kSlotBits));
uint64_t to_handle(const qos::Reservation& r) noexcept {
    // A slot reserved 2^48 times cannot be named: 0, the caller gives it back.
    if (r.seq == 0 || (r.seq >> (64 - kSlotBits)) != 0 || r.slot >= (1u << kSlotBits)) return 0;
    return r.seq << kSlotBits | r.slot;
}
qos::Reservation from_handle(uint64_t h) noexcept {
    qos::Reservation r;
    r.slot = static_cast<uint32_t>(h & ((1u << kSlotBits) - 1));
    r.dir = qos::Dir::down;
    r.seq = h >> kSlotBits;
    return r;
}

}  // namespace

void McesAdmission::log(const char* fmt, ...) noexcept {
    if (log_ == nullptr) return;
    char line[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_(line);
}

mces::wire::Admission McesAdmission::admit(const mces::wire::AdmissionRequest& req,
                                           const sansio::Addr& local) noexcept {
    mces::wire::Admission a;   // admitted, class as asked
    a.granted = req.qos;
    const auto cls = static_cast<policy::ServiceClass>(req.service_class);
    const uint64_t rate = req.qos.rate.value_or(0);
    if ((cls != policy::ServiceClass::guaranteed && cls != policy::ServiceClass::realtime) || rate == 0) return a;
    if (!req.validated) {
        // A reservation for an unproved source: a spoofed INITIAL would
        // hold the host's capacity for the handshake timeout. A RETRY
        // first (one round trip more for flows that reserve).
        a.admitted = false;
        a.prove_address = true;
        return a;
    }

    char peer[64], desc[qos::kDescriptionLen], asked[32], avail[32], cap[32];
    addr_text(req.from, peer, sizeof peer);
    snprintf(desc, sizeof desc, "mces %s -> :%u", peer, static_cast<unsigned>(local.port));
    const uint64_t flow = next_flow_.fetch_add(1, std::memory_order_relaxed);
    qos::ReserveResult r = ledger_.reserve(flow, qos::Dir::down, rate, cls, desc, on_reject_);
    if (r.admitted()) {
        a.held = to_handle(r.reservation);
        if (a.held == 0) {   // cannot be named for a later release: none rather than a leak
            ledger_.release(r.reservation);
            return a;
        }
        if (r.status == qos::ReserveResult::Status::downgraded) {
            a.granted.rate = r.granted;   // the client learns both (ACCEPT)
            log("mces listener :%u: %s, class %s, asked %s down, granted %s (on_reject = downgrade; "
                "ledger %s)", static_cast<unsigned>(local.port), peer, policy::name(cls),
                rate_text(r.asked, asked, sizeof asked), rate_text(r.granted, cap, sizeof cap), ledger_.path());
        }
        return a;
    }
    if (r.fail_open() || r.status == qos::ReserveResult::Status::invalid) {
        if (!fail_open_logged_.exchange(true, std::memory_order_relaxed))
            log("reservation ledger %s: %s; MCES clients are admitted without reserving", ledger_.path(),
                qos::name(r.status));
        return a;
    }
    // Refused, or every slot is taken: the client's connect fails (ECONNREFUSED).
    const bool full = r.status == qos::ReserveResult::Status::full;
    a.admitted = false;
    a.code = mces::kRefuseHostCapacity;
    a.available.rate = r.available;
    char why[mces::wire::kMaxReasonLen];
    if (full)
        snprintf(why, sizeof why, "host capacity: every reservation slot is taken");
    else
        snprintf(why, sizeof why, "host capacity: available rate=%lluB/s of %lluB/s",
                 static_cast<unsigned long long>(r.available), static_cast<unsigned long long>(r.capacity));
    try {
        a.reason = why;
    } catch (...) {   // the code and the available rate still say it
    }
    log("mces listener :%u: refused %s, class %s, asked %s down, %s free of %s (ledger %s)%s: its connect fails "
        "with ECONNREFUSED; lower the client's rate or raise [general] capacity",
        static_cast<unsigned>(local.port), peer, policy::name(cls), rate_text(r.asked, asked, sizeof asked),
        rate_text(r.available, avail, sizeof avail), rate_text(r.capacity, cap, sizeof cap), ledger_.path(),
        full ? ", every ledger slot is taken" : "");
    return a;
}

void McesAdmission::release(uint64_t held) noexcept {
    if (held == 0) return;
    qos::Reservation r = from_handle(held);
    ledger_.release(r);   // -ESTALE: already given back, or reclaimed; -EPERM: a forked child's copy
}

int McesAdmission::listen(mces::Endpoint& ep, McesAdmission* a, const sansio::Addr& local) noexcept {
    try {
        if (a != nullptr)
            return ep.listen(
                mces::wire::ServerConfig{},
                [a, local](const mces::wire::AdmissionRequest& req) { return a->admit(req, local); },
                [a](uint64_t held) { a->release(held); });
    } catch (...) {   // no memory for the callbacks: listen without them (everything as asked)
    }
    try {
        return ep.listen(mces::wire::ServerConfig{});
    } catch (...) {
        return -ENOMEM;
    }
}

}  // namespace gs::engine
