// TCP flows carried over MCES (transport = mces / auto), for the shim.
// docs/mces.md, "Through the shim", says what a program sees.
//
// Client (start_mces_bridge): the program's fd is already the program's end
// of an AF_UNIX stream pair (as for a TCP bridge, core/engine/bridge.h; the
// BridgeState is the same, with allow_direct false: every byte goes through
// the engine, there is no kernel transport to take them from). The engine
// opens an MCES class-1 (or 2) connection on its own UDP socket, connected to
// the peer's IP and the TCP port, and relays: program's end -> write() while
// it takes bytes, read() -> program's end. EOF from the program becomes
// shutdown_write, the peer's FIN an EOF; RESET gives ECONNRESET, an idle
// timeout ETIMEDOUT, an ICMP unreachable or a REFUSE ECONNREFUSED, a
// handshake nobody answers ETIMEDOUT. With `fallback` (transport = auto) the
// last two (no MCES there) instead connect the program's TCP socket (the
// BridgeState's transport) and hand the flow to an ordinary TCP bridge
// (start_bridge), and the answer is remembered (mces_peers.h).
//
// Server (mces_listen): an MCES endpoint on a UDP socket bound to the
// program's TCP listening address. Each MCES connection it accepts becomes a
// kernel TCP connection the engine opens over loopback to the program's own
// listening socket, so accept(), accept4 flags, poll and epoll work as they
// do; the engine relays between its end of that connection and the MCES
// connection. The shim's accept hook recognises the connection by its source
// address (mces_claim_accepted) and answers getpeername with the MCES peer;
// once the accepted fd has its flow record, mces_attach_accepted ties the
// record's McesFlow to the connection so that the engine publishes its
// counters there too (the engine then holds a reference to the record).
//
// Engine thread for everything inside; the functions here may be called from
// any thread. No exception leaves this file.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/engine/bridge.h"
#include "core/engine/engine.h"
#include "core/mces/auth/keys.h"

namespace gs::engine {

// Where the engine says what a program's user must hear about a flow (a
// guaranteed flow whose path stopped delivering its rate): one line, no
// newline. Set once by the shim before the engine starts; the engine thread
// calls it. nullptr: nothing is said.
using McesWarnFn = void (*)(int level, const char* line) noexcept;   // level: 0 warn, 1 info
void set_mces_warn(McesWarnFn fn) noexcept;

class McesAdmission;   // mces_admit.h

// What one flow asks of MCES (from the policy's decision).
struct McesParams {
    uint8_t service_class = 1;          // 0 datagram, 1 reliable, 2 guaranteed, 3 realtime
    uint64_t rate = 0;                  // bytes/s asked (QoS offer), 0: none
    int dscp = -1;                      // QoS offer, -1: none
    int priority = -1;
    // The policy's `elements` (owned by the policy, which lives as long as
    // the process); null or empty: the class's default chain.
    const std::vector<std::string>* elements = nullptr;
    uint32_t latency_us = 0;            // realtime: the latency bound asked (QoS offer); 0: none
    uint8_t fec_data = 0, fec_parity = 0;   // realtime: the FEC layout (policy `fec`); 0: the default
    bool clock_symmetric = false;       // realtime: the deadline clock (policy `clock`; ConnConfig::rt_clock_symmetric)
    bool fallback = false;              // transport = auto: no answer -> kernel TCP (UDP: plain UDP)
    // Give up on a handshake nobody answers after this long: kAutoWait with
    // fallback, kMcesWait without.
    int64_t handshake_timeout_ns = 0;
    // Authentication (policy auth_key / auth; docs/mces.md "Authenticated
    // connections"): the pre-shared key, read once when the policy loaded
    // and shared with it, or null for none; and the mode. Every endpoint
    // made for the flow (client, listener, a UDP socket's) uses both.
    std::shared_ptr<const mces::auth::Psk> psk;
    mces::auth::Mode auth_mode = mces::auth::Mode::encrypt;
    // Server side (a listener's endpoint, a UDP socket's): the host ledger's
    // admission of the clients that ask for a reserved rate (mces_admit.h;
    // process-wide, never freed), or null: every client as it asked.
    McesAdmission* admission = nullptr;
};
// The bound on an unanswered handshake before auto falls back (an ICMP
// unreachable falls back at once): 1 s, INITIALs at 0, 250 and 750 ms.
constexpr int64_t kAutoWait = 1'000'000'000;
// transport = mces: ETIMEDOUT after this long without an answer.
constexpr int64_t kMcesWait = 5'000'000'000;

// The shim's per-flow part of an MCES flow (embedded in its flow record:
// no allocation on the program's thread).
struct McesFlow {
    enum Kind : uint8_t { none = 0, client = 1, accepted = 2 };
    enum Carried : int { trying = 0, mces = 1, fell_back = 2 };
    Kind kind = none;
    // client: mces until the handshake fails with fallback, then fell_back
    // (the TCP bridge's transport answers from then on). Written by the
    // engine before the bridge's phase leaves `connecting`.
    std::atomic<int> carried{trying};
    // The addresses the program is told: client, the UDP socket's local
    // address and the peer it connected to; accepted, the MCES peer (in the
    // listener's family) and, for `local`, nothing (the kernel's answer).
    sockaddr_storage local{}, peer{};
    socklen_t local_len = 0, peer_len = 0;
    McesParams params;
    int udp_fd = -1;                    // client: handed to the engine at start
    // The connection as it goes, for gsctl flows and the --stats record
    // (client flows, and accepted flows once attached): the engine stores
    // every Link::kPublishNs while data flows and once more when its side
    // ends, relaxed, so a reader sees a recent snapshot, not one instant.
    // reset_live() when a record is set up for another flow.
    struct Live {
        std::atomic<uint64_t> srtt_us{0};          // smoothed RTT, 0 before a sample
        std::atomic<uint64_t> cwnd{0};             // congestion window, bytes
        std::atomic<uint64_t> packets_sent{0}, packets_received{0};
        std::atomic<uint64_t> lost{0};             // packets declared lost
        std::atomic<uint64_t> retransmitted_bytes{0};
        std::atomic<uint64_t> ptos{0};             // probe timeouts
        std::atomic<uint64_t> dropped{0};          // packets dropped as malformed, duplicate, late...
        // 1 while short packets carry the CRC32C (before and unless the
        // handshake agreed to leave it off), 0 once agreed off
        // (mces::Connection::checksum(); docs/mces.md "No checksum").
        std::atomic<uint64_t> checksum{1};
        // Keyed (params.psk): packets dropped because their tag did not
        // verify, and copies of packets already authenticated.
        std::atomic<uint64_t> auth_failed{0}, replay{0};
        // How the connection is protected: 0 none (no key), else its
        // mces::auth::Mode (1 encrypt, 2 authenticate). Stored when the
        // engine ties the record to the connection (accepted flows have no
        // params of their own: the listener's are used).
        std::atomic<uint64_t> auth{0};
        // Class guaranteed (mces::Guarantee): the reserved rate the stream is
        // held to (0: none), the goodput acknowledged in the last interval
        // judged (bytes/s), shortfalls so far, and 1 while the floor holds.
        std::atomic<uint64_t> reserved_rate{0}, delivered_rate{0}, rate_shortfalls{0}, rate_floor{0};
    } live;
    void reset_live() noexcept {
        for (std::atomic<uint64_t>* a : {&live.srtt_us, &live.cwnd, &live.packets_sent, &live.packets_received,
                                         &live.lost, &live.retransmitted_bytes, &live.ptos, &live.dropped,
                                         &live.auth_failed, &live.replay, &live.auth})
            a->store(0, std::memory_order_relaxed);
        live.checksum.store(1, std::memory_order_relaxed);
    }
    // Accepted flows (mces_attach_accepted): called once, on the engine
    // thread, when the engine will not touch this McesFlow again; it gives
    // back the reference the shim took for the engine. `owner` is for it.
    void (*release)(McesFlow& f) noexcept = nullptr;
    void* owner = nullptr;
    struct Start final : Command {
        BridgeState* b = nullptr;
        McesFlow* f = nullptr;
        void run(Engine& e) noexcept override;
    } start;
};

// Client: carry the prepared bridge `b` (program's end, transport = the
// program's unconnected TCP socket, peer, filler: as for start_bridge) over
// MCES on `f.udp_fd` (a UDP socket connected to the peer, guarded; owned by
// the engine from here on), with f.params. Any thread; no allocation here.
// The outcome arrives as for start_bridge: phase, error, connect_done.
void start_mces_bridge(Engine& e, BridgeState& b, McesFlow& f) noexcept;

// Server: accept MCES connections on `udp_fd` (bound to the listener's
// address and port, guarded; owned by the engine from here on), with the
// chain p.elements when given (else the class's default), and deliver
// each over a kernel TCP connection to `target` (the listener's address, or
// loopback for a wildcard one). The engine stops accepting when `listen_fd`
// no longer is the listening socket with inode `listen_ino` (looked at
// every second): the program closed it. `family` is the listener's.
// Returns 0, or -EMFILE when kMaxListeners are running (udp_fd is then
// closed).
constexpr int kMaxListeners = 64;
int mces_listen(Engine& e, int udp_fd, int listen_fd, unsigned long listen_ino, int family,
                const sockaddr* target, socklen_t target_len, const McesParams& p) noexcept;

// Whether any MCES listener is running (the accept hook asks first: one
// relaxed load when none).
bool mces_listening() noexcept;
// The accept hook: `from` (the accepted connection's peer address) is one
// the engine opened for an MCES connection: true, `peer` the MCES peer in
// `family`'s form. Each connection is claimed once. Lock-free, no
// allocation (signal-safe).
bool mces_claim_accepted(const sockaddr* from, socklen_t len, int family, sockaddr_storage& peer,
                         socklen_t& peer_len) noexcept;
// The accept hook, after a successful claim of `from` and once the accepted
// fd has its flow record: let the engine publish the connection's counters
// into f.live (checksum state too) from now on. The caller sets f.release (and
// f.owner) and takes, before the call, the reference release gives back.
// true: the engine holds `f` until it calls f.release(f) (on the engine
// thread, once, when the loopback connection closes or the engine stops);
// it never writes to f after that, so the record may then be reused.
// false: the connection was not claimed, or has ended meanwhile; the engine
// never sees f and the caller drops the reference itself.
// Lock-free, no allocation, no wait on the engine (signal-safe): the
// claim's table entry decides every race with one compare-exchange.
bool mces_attach_accepted(const sockaddr* from, socklen_t len, McesFlow& f) noexcept;

// Process-wide counters (any thread reads; gsctl flows and --stats).
struct McesTotals {
    std::atomic<uint64_t> connects{0};          // client MCES connections begun
    std::atomic<uint64_t> established{0};       // ... established
    std::atomic<uint64_t> refused{0};           // ... ended by ICMP unreachable / REFUSE / no answer (mces)
    std::atomic<uint64_t> fallbacks{0};         // auto: went to kernel TCP
    std::atomic<uint64_t> accepted{0};          // server: MCES connections delivered to accept()
    std::atomic<uint64_t> listeners{0};         // running listeners
    std::atomic<uint64_t> stream_out{0}, stream_in{0};     // bytes relayed program <-> MCES
    std::atomic<uint64_t> udp_datagrams_out{0}, udp_bytes_out{0};
    std::atomic<uint64_t> udp_datagrams_in{0}, udp_bytes_in{0};
    std::atomic<uint64_t> retransmits{0}, lost{0};          // of finished connections
};
McesTotals& mces_totals() noexcept;
// Endpoints (a client connection's, a listener's) the engine still runs:
// they outlive the program's side until their connections have drained.
int mces_sites() noexcept;
// {"connects":...,...}: the counters as one JSON object.
std::string mces_totals_json();

// The peer verdict table's key for a sockaddr (mces_peers.h).
bool mces_peer_says_native(const sockaddr* peer, socklen_t len) noexcept;

}  // namespace gs::engine
