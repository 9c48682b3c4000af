// UDP flows carried over MCES class 0 (datagram) or 3 (realtime: each
// message delivered by its send time + the latency, or never) with
// transport = mces / auto, for the shim's datagram bridge (dgram_bridge.h). docs/mces.md, "UDP programs",
// says what a program sees.
//
// The program's own UDP socket becomes an MCES endpoint on the same address
// and port: a UdpHost runs, on it, a splitter that hands MCES datagrams to
// an mces::Endpoint and keeps the others as plain UDP. So:
//   - a datagram the program sends to a peer goes as a DATAGRAM frame on a
//     class-0 connection to that peer's address and port, opened at the
//     first send (held, in order, while the handshake runs) or accepted
//     from it earlier;
//   - what arrives on any connection reaches the program as a datagram
//     from the connection's peer; a datagram that is not MCES reaches it
//     as plain UDP, as before, so a server under gsocket serves plain
//     clients too, and answers each of them in plain UDP;
//   - transport = auto: a peer that does not answer the handshake within
//     kAutoWait is sent plain UDP from then on (remembered in the process's
//     peer table, mces_peers.h, as for TCP); transport = mces: what was
//     held for it is dropped and counted, the error (ETIMEDOUT, or
//     ECONNREFUSED when the peer refused) goes to a connected socket's next
//     call as an ICMP error would, and a new handshake is tried on the first
//     send kRetryAfter later.
// Message boundaries are kept (one DATAGRAM, or MESSAGE, frame per
// message). A message larger than one packet carries
// (mces_dgram_max_payload(): 65,507 bytes less MCES's 34 for class 0; less
// for class 3, whose messages carry a send time and FEC's length) is dropped
// with EMSGSIZE for the next call.
//
// Engine thread only; no exception leaves this file.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/common/sansio.h"
#include "core/engine/engine.h"
#include "core/engine/mces_bridge.h"

namespace gs::engine {

// How often the realtime counters are summed into McesDgramStats.
constexpr int64_t kPublishNs = 10'000'000;

// How long transport = mces waits after a failed handshake before trying a
// peer again (datagrams to it are dropped meanwhile).
constexpr int64_t kRetryAfter = 5'000'000'000;

// Counters of one socket's MCES side, written by the engine thread
// (relaxed), read by gsctl and --stats from any thread.
struct McesDgramStats {
    std::atomic<uint64_t> connects{0};      // class-0 connections opened to peers
    std::atomic<uint64_t> accepted{0};      // ... accepted from peers
    std::atomic<uint64_t> established{0};   // opened ones that completed their handshake
    std::atomic<uint64_t> failed{0};        // opened ones that did not
    std::atomic<uint64_t> fallbacks{0};     // auto: peers sent plain UDP after a failed handshake
    std::atomic<uint64_t> sent{0}, received{0};        // messages given to / taken from a connection
    std::atomic<uint64_t> plain_out{0}, plain_in{0};   // datagrams sent / received as plain UDP
    std::atomic<uint64_t> dropped{0};       // messages lost: held beyond the bound, refused, no MCES (mces)
    // Class realtime, summed over the socket's connections (published every
    // kPublishNs while they run, and as each ends): messages released by
    // their deadline, skipped because they were not there by it, recovered
    // by FEC in time, sent again within their deadline, dropped unsent
    // because they could no longer arrive in time; copies that arrived
    // after their deadline (dropped, never delivered); FEC repairs sent;
    // extra copies of resends (adaptive FEC's other tool, in retransmitted
    // too); and the largest interarrival jitter (RFC 3550) among the live
    // connections, in us.
    std::atomic<uint64_t> on_time{0}, late_dropped{0}, fec_repaired{0}, retransmitted{0}, expired{0};
    std::atomic<uint64_t> late_arrivals{0}, repairs_sent{0}, extra_copies{0};
    std::atomic<uint64_t> jitter_us{0};
    // Keyed sockets (policy auth_key), summed the same way: packets dropped
    // because their tag did not verify (another key or mode, altered,
    // forged), and copies of packets already authenticated.
    std::atomic<uint64_t> auth_failed{0}, replay{0};
    // Messages a connection took from the network and could not keep: its
    // receive side (class 0's queue, realtime's timing buffer or queue)
    // was full. Summed the same way.
    std::atomic<uint64_t> overflow{0};
    void reset() noexcept {
        for (std::atomic<uint64_t>* a : {&connects, &accepted, &established, &failed, &fallbacks, &sent, &received,
                                         &plain_out, &plain_in, &dropped, &on_time, &late_dropped, &fec_repaired,
                                         &retransmitted, &expired, &late_arrivals, &repairs_sent, &extra_copies, &jitter_us,
                                         &auth_failed, &replay, &overflow})
            a->store(0, std::memory_order_relaxed);
    }
};

class McesDgram;   // engine thread only (mces_dgram.cpp)

// A message for the program, from `from`. False: the program's end had no
// room (the caller counts it, as a full UDP receive buffer drops).
using McesDeliver = bool (*)(void* owner, const sansio::Addr& from, const uint8_t* p, size_t n) noexcept;
// An error for the program's next call, about `peer` (the caller reports it
// on a socket connected to that peer only, as the kernel does ICMP errors).
using McesError = void (*)(void* owner, const sansio::Addr& peer, int err) noexcept;

// Runs MCES on `udp_fd` (bound; taken: closed by mces_dgram_close), with
// p's class-0 chain (p.elements, else the default), QoS offer and fallback;
// `stats` (the caller's, kept until mces_dgram_close) counts what it does.
// nullptr, -errno in *err, when it cannot (udp_fd is then closed; the caller
// keeps the flow plain).
McesDgram* mces_dgram_start(Engine& e, int udp_fd, const McesParams& p, McesDgramStats& stats, McesDeliver d,
                            McesError er, void* owner, int* err) noexcept;
// One message the program sent to `to`. 0, or -errno: -EMSGSIZE (larger
// than mces_dgram_max_payload), -ENOBUFS (dropped: too much held for a peer
// whose handshake runs, no MCES there with transport = mces, its
// connection's queue full, or too many peers).
int mces_dgram_send(Engine& e, McesDgram& m, const sansio::Addr& to, const uint8_t* p, size_t n) noexcept;
// Send what the sends since the last call queued (once per batch of sends).
void mces_dgram_flush(Engine& e, McesDgram& m) noexcept;
// The largest message mces_dgram_send takes (class 0: 65,473 bytes).
size_t mces_dgram_max_payload(const McesDgram& m) noexcept;
// The program's socket is gone: no callback after this returns, and
// `stats` is the caller's again. What the connections still hold for peers
// goes on (the kernel would still send a closed UDP socket's datagrams)
// until it is settled: sent, and for realtime acknowledged or past its
// deadline; at most the latency + 1 s. Then the connections are closed (the
// peers are told) and the socket with them, and `m` frees itself. Meanwhile
// it is on the engine's list of lingering work, which the exit drain waits
// for and which the engine ends when its loop ends (engine.h, Lingering).
void mces_dgram_close(Engine& e, McesDgram& m) noexcept;

}  // namespace gs::engine
