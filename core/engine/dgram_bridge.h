// A bridged UDP flow: the program's fd is one end of an AF_UNIX
// SOCK_SEQPACKET socketpair, one message per datagram, each behind a
// DgramHeader that carries the peer's address (the destination on the way
// out, the source on the way in). The engine holds the other end (the
// BridgeState's `app_end`) and the program's own UDP socket, moved to a
// guarded fd (`transport`), and relays between them: sends paced by the
// flow's and the process's token buckets, receives policed (datagrams beyond
// the receive limit are dropped and counted, as UDP would lose them).
//
// SEQPACKET rather than DGRAM: the same message boundaries and truncation
// (the kernel serves both with one receive function), but a closed end is
// seen by the other (POLLHUP, EOF): with a datagram pair the engine never
// learns that the program closed its socket, and the transport would stay
// bound for the life of the process.
//
// The program's side (dgram_send, dgram_recv, ...) is what the shim's hooks
// call: it adds and strips the header with scatter/gather (header on the
// stack, payload straight in the program's buffers), allocates nothing and
// takes no lock (signal handlers send and receive too), and answers as the
// kernel's UDP would (docs/engine.md "Bridged UDP flows").
//
// A direction without a limit does not need the engine: sends then go on the
// transport from the program's thread (exact errors, no hand-off). The
// receive direction always goes through the engine (it must see every
// datagram to police, and the program's end must be what wakes the program).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include <atomic>
#include <cstdint>

#include "core/common/sansio.h"
#include "core/engine/bridge.h"
#include "core/engine/engine.h"
#include "core/engine/mces_dgram.h"

namespace gs::engine {

// In front of every message on the pair.
struct DgramHeader {
    static constexpr uint16_t kData = 0;
    // No payload: the engine saw an error on the transport (an ICMP error on
    // a connected socket: ECONNREFUSED...). It wakes a program blocked in a
    // receive; the errno itself is the BridgeState's `error` (reported once,
    // by whichever call comes first, as the kernel's sk_err).
    static constexpr uint16_t kError = 1;
    uint16_t kind = kData;
    uint16_t name_len = 0;   // bytes of `name` that hold the address; 0: none (a connected send)
    uint32_t ctl_len = 0;    // out only: bytes of ancillary data (cmsghdrs) between header and payload
    sockaddr_in6 name{};     // a sockaddr_in or sockaddr_in6, as the kernel gives or takes it
};
static_assert(sizeof(DgramHeader) == 36, "the wire header is part of the pair's format");

// The largest UDP payload: IPv4 65535 - 20 - 8; IPv6 65535 - 8 (measured:
// the kernel says EMSGSIZE one byte beyond each).
constexpr size_t kMaxUdp4 = 65507;
constexpr size_t kMaxUdp6 = 65527;
// Ancillary data a send may carry through the engine (IP_PKTINFO, UDP_SEGMENT,
// IP_TOS...); more, or more than kMaxDgramIov buffers, goes on the transport
// directly (the datagram escapes the send limit; no program seen does this).
constexpr size_t kMaxDgramCtl = 256;
constexpr int kMaxDgramIov = 64;

class DgramBridge;

// A bridged UDP socket that is a member of an overlay's multicast group
// (docs/overlay.md "Legacy multicast"). Storage the shim owns, kept until
// `on_detached` has run: the engine holds `member_fd` from
// attach_dgram_group() until it calls `on_detached`.
//
// Up: a datagram the program sends to `group` (or, connected to it, with no
// address) is written on `member_fd` as an OverlayRequest (send to all),
// the origin header (group_origin.h: `node`'s IP, the socket's own port),
// then the payload; with IP_MULTICAST_LOOP on (the kernel's default) and the
// socket bound to the group's port, a copy comes back to the program. Any
// other destination goes on the kernel socket as before.
// Down: each delivery on `member_fd` (OverlayDelivery, origin header,
// payload) reaches the program as a datagram from the origin's address, if
// the socket is bound to the group's port and not connected to the group
// (as the kernel would deliver it); otherwise it is dropped and counted.
struct DgramGroup {
    sansio::Addr group;                      // ADDR:PORT (IPv4 held IPv4-mapped)
    sansio::Addr node;                       // this member's node address: the origin's IP
    int member_fd = -1;                      // the overlay member's pair end (core/engine/overlay_host.h)
    std::atomic<bool> connected{false};      // the program connected its socket to the group
    std::atomic<uint64_t> sent{0};           // datagrams handed to the overlay (sendToAll)
    std::atomic<uint64_t> delivered{0};      // members' datagrams given to the program
    std::atomic<uint64_t> looped{0};         // the program's own, given back (IP_MULTICAST_LOOP)
    std::atomic<uint64_t> refused{0};        // sends the member's end had no room for
    std::atomic<uint64_t> dropped{0};        // deliveries malformed, not for this socket, or no room
    // Engine thread: the engine has let go of the group (member_fd is
    // closed, so the overlay member leaves); the owner may free it.
    void (*on_detached)(DgramGroup* g) noexcept = nullptr;
    void* owner = nullptr;
};

// What a datagram bridge adds to the BridgeState the flow record holds
// (the BridgeState's transport, app_end, program_fd/ino, limits, counters,
// error, phase, on_done and owner are used as for TCP). Storage the caller
// owns, kept until on_done has run.
struct DgramState {
    int family = AF_INET;                       // the transport's (a v6 socket may send to AF_INET)
    std::atomic<bool> peer_connected{false};    // the transport is connected: a send needs no address
    std::atomic<uint64_t> drops{0};             // datagrams the engine dropped: beyond the receive
                                                // limit, or the program's end full
    BridgeState* base = nullptr;
    DgramBridge* impl = nullptr;                // engine thread only
    // The group this socket is a member of (set on the engine thread by
    // attach_dgram_group, cleared by detach); the program's threads read it
    // to route a send to the group through the engine.
    std::atomic<DgramGroup*> group{nullptr};
    // transport = mces / auto (core/engine/mces_dgram.h): set before
    // start_dgram_bridge (with up.direct false): the engine runs MCES class 0
    // on the transport, with these parameters (the flow record's). The
    // engine sets mces_running once it does; if it cannot, the flow stays
    // plain UDP through the bridge.
    const McesParams* mces = nullptr;
    std::atomic<bool> mces_running{false};
    McesDgram* mces_impl = nullptr;              // engine thread only
    McesDgramStats mces_stats;                   // reset() by the caller before the start
    // dgram_connect bumps it: the bridge asks the transport for its peer
    // again (a send with no address goes to it).
    std::atomic<uint32_t> connect_gen{0};

    struct Start final : Command {
        DgramState* state = nullptr;
        void run(Engine& e) noexcept override;
    } start;
};

// Hand a prepared bridge to the engine (any thread). Set before: in `b`,
// transport, app_end, program_fd, program_ino, the rates, counters, on_done,
// owner, and up.direct (true: the program's sends go on the transport
// themselves: no send limit); `b.phase` is set to connected here (nothing to
// connect: the transport is the program's own socket, as it was).
void start_dgram_bridge(Engine& e, BridgeState& b, DgramState& d) noexcept;

// The program's calls on its end (`pfd`) of a datagram bridge. `msg` is the
// program's own; only the fields the kernel's call writes are written.
// Return what the kernel's UDP call would, errno set.
ssize_t dgram_send(BridgeState& b, DgramState& d, int pfd, const msghdr* msg, int flags) noexcept;
ssize_t dgram_recv(BridgeState& b, DgramState& d, int pfd, msghdr* msg, int flags) noexcept;
int dgram_sendmmsg(BridgeState& b, DgramState& d, int pfd, mmsghdr* v, unsigned n, int flags) noexcept;
int dgram_recvmmsg(BridgeState& b, DgramState& d, int pfd, mmsghdr* v, unsigned n, int flags,
                   timespec* timeout) noexcept;
// shutdown(2) on the program's fd: the transport's answer (ENOTCONN on an
// unconnected socket, which the kernel shuts down all the same), and a
// SHUT_WR reaches the program's end too (its sends say EPIPE, the engine
// sees the end of what it must relay).
int dgram_shutdown(BridgeState& b, DgramState& d, int pfd, int how) noexcept;
// connect(2) on the program's fd: on the transport (the kernel then filters
// what it receives); AF_UNSPEC disconnects.
int dgram_connect(BridgeState& b, DgramState& d, const sockaddr* addr, socklen_t len) noexcept;
// getsockopt(SO_ERROR): the error the engine saw, else the transport's.
int dgram_so_error(BridgeState& b, DgramState& d) noexcept;

// Engine thread: the running bridge of `d` carries `g` from now on (it
// polls g.member_fd). 0, or -ENOTCONN when the bridge is not running (it
// could not start, or has ended), -EBUSY when it carries a group already:
// then nothing changed and g.member_fd is still the caller's.
int attach_dgram_group(DgramState& d, DgramGroup& g) noexcept;
// Engine thread: the bridge lets go of its group (closes member_fd, calls
// on_detached); a no-op without one. The bridge's end does the same.
void detach_dgram_group(DgramState& d) noexcept;

}  // namespace gs::engine
