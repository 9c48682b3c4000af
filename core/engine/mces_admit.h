// The MCES server's half of "connect negotiates" (docs/reservations.md, "The
// server's half"). A client that proved its address and asks for class
// guaranteed (2) or realtime (3) with a rate gets that rate reserved, down
// (what this process will receive), in this host's ledger before it is
// ACCEPTed; the reservation is given back when its connection is gone (the
// endpoint's release callback, mces::Endpoint::listen). When the ledger cannot
// take it, the client is refused (REFUSE code mces::kRefuseHostCapacity, with
// the rate that was available) and one line goes to the owner's log. Classes
// 0 and 1, or no rate: granted as asked, nothing reserved. A busy or unusable
// ledger: granted as asked (fail open, as the client's side), logged once.
//
// One per process (the shim's, made when it has a ledger), shared by every
// listening endpoint (a TCP listener's, a UDP socket's); never freed, so the
// callbacks of an endpoint destroyed late still find it. Called on the engine
// thread. It keeps no table: the handle the endpoint holds for a connection
// is the reservation itself (its slot and sequence number), so there is
// nothing to lock, allocate or lose across fork(), and a stale or repeated
// release is refused by the ledger (-ESTALE), a forked child's (-EPERM). A
// reserve waits for the ledger's lock at most qos::kLockWaitMs (only while
// another process holds it stopped), then admits unreserved (busy). No
// exception leaves here.
#pragma once

#include <atomic>
#include <cstdint>

#include "core/common/sansio.h"
#include "core/mces/conn/endpoint.h"
#include "core/qos/ledger.h"
#include "policy/policy.h"

namespace gs::engine {

class McesAdmission {
public:
    // The owner's log, one line without the newline (the shim: GS_LOG warn).
    using Log = void (*)(const char* line) noexcept;

    // `ledger` outlives this (the shim's never goes); on_reject is the
    // policy's: downgrade grants what is left instead of refusing.
    McesAdmission(qos::Ledger& ledger, policy::OnReject on_reject, Log log) noexcept
        : ledger_(ledger), on_reject_(on_reject), log_(log) {}
    McesAdmission(const McesAdmission&) = delete;
    McesAdmission& operator=(const McesAdmission&) = delete;

    // The AdmitFn of an endpoint listening at `local`. Admitted with a
    // reservation: Admission::held names it, for release().
    mces::wire::Admission admit(const mces::wire::AdmissionRequest& req, const sansio::Addr& local) noexcept;
    // The ReleaseFn: gives the reservation `held` back to the ledger.
    void release(std::uint64_t held) noexcept;

    // ep.listen(ServerConfig{}, ...) with a's callbacks for an endpoint at
    // `local`; a null: no admission of its own (everything as asked).
    static int listen(mces::Endpoint& ep, McesAdmission* a, const sansio::Addr& local) noexcept;

private:
    void log(const char* fmt, ...) noexcept __attribute__((format(printf, 2, 3)));

    qos::Ledger& ledger_;
    const policy::OnReject on_reject_;
    const Log log_;
    std::atomic<bool> fail_open_logged_{false};
    std::atomic<std::uint64_t> next_flow_{1};   // the ledger's flow_id for each reservation
};

}  // namespace gs::engine
