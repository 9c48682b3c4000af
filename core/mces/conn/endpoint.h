// An MCES endpoint: one local UDP address, any number of connections (up to
// a bound), as a gs::sansio::Endpoint. The engine runs it on a UDP socket;
// the simulator (tests/sim) runs it in tests.
//
//   client:  ep.connect(peer, class, qos, now, conn)   -> a Connection handle
//   server:  ep.listen(server_config, admit)            -> INITIALs are answered
//            while (auto c = ep.accept()) serve(c);     -> admitted connections
//   both:    on_datagram / on_timeout / poll_transmit / next_timeout (sansio.h)
//
// Demultiplexing: short-header packets go to the connection whose ID (8
// bytes, kCidLen) is their destination ID; unknown IDs are dropped and
// counted. Long-header INITIALs go to the ServerHandshake; RETRY, ACCEPT,
// REFUSE and VERSION_NEGOTIATION go to the connecting client whose ID they
// name. A connection is created after admission, only while fewer than
// max_connections exist and the accept queue has room (otherwise the client
// is refused: "server busy"), and either after a valid cookie or, with
// RetryPolicy::under_load (the default), for an INITIAL without one while
// fewer than ServerConfig::max_unvalidated connections await their client's
// first short packet: such a connection sends at most 3x what it received
// until that packet proves the address, and is forgotten if none comes
// within the handshake timeout (counters admitted_unvalidated, validated,
// unvalidated_expired). One client (address and client ID) gets one
// connection however often its INITIAL is repeated, with or without
// cookies. Closed connections are forgotten after their drain period.
//
// Short packets without the CRC32C: skip_checksum() below decides, for the
// client's offer and the server's agreement alike; the connection then
// builds and parses its short packets accordingly (Connection::checksum()).
// Demultiplexing does not depend on it: the destination ID comes first.
//
// Ownership: connections are shared between the endpoint and the
// application (std::shared_ptr). A handle stays valid after the endpoint
// forgets the connection; it is then closed and inert. The endpoint must not
// be moved (the handshake's admission callback points at it).
//
// Borrowed receive bytes (ConnConfig::borrow_receive, off by default): a
// connection may read stream bytes from the datagram given to on_datagram
// instead of copying them. The owner then keeps each datagram's bytes valid
// and unchanged until it calls on_batch_end(), and calls it before it reuses
// them (the engine's UdpHost: after its Activity callback, before the next
// recvmmsg). The endpoint keeps a list of the connections that borrowed
// (none are scanned), settles them there, and on destruction.
//
// Application calls on a connection take effect at the endpoint's last known
// time; the owner then drains poll_transmit() (the simulator: sim.kick(ep)).
//
// Authentication (EndpointConfig::psk set): every connection of the endpoint,
// both roles, is authenticated (connection.h, wire/handshake.h): INITIALs
// without a valid proof get no answer and create nothing, short packets are
// sealed with per-connection keys. The handshake nonces come from the seeded
// rng (unique per attempt and per accepted connection; they need not be
// secret: the PSK is). A keyless peer and a keyed endpoint never connect.
#pragma once

#include <algorithm>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/common/sansio.h"
#include "core/mces/conn/chain.h"
#include "core/mces/conn/connection.h"
#include "core/mces/wire/handshake.h"

namespace gs::mces {

// Connection IDs this endpoint hands out (client and server side alike).
constexpr std::size_t kCidLen = 8;

// REFUSE code when the endpoint is full (connections or accept queue).
constexpr std::uint64_t kRefuseBusy = 0x100;
// REFUSE code when no chain exists for the class asked (realtime, group).
constexpr std::uint64_t kRefuseNoChain = 0x101;
// REFUSE code once the owner has stopped taking new connections (refuse_new:
// a closed UDP socket's endpoint that lingers for its last messages).
constexpr std::uint64_t kRefuseClosed = 0x102;
// REFUSE code an owner's AdmitFn gives when this host cannot reserve the rate
// asked (the engine's, core/engine/mces_admit.h; docs/mces.md).
constexpr std::uint64_t kRefuseHostCapacity = 1;

// Gives back what an AdmitFn set aside (wire::Admission::held, never 0).
using ReleaseFn = std::function<void(std::uint64_t held)>;

// Whether a connection with `chain` to `peer` goes without the CRC32C on its
// short packets (a client offers it, a server agrees; the packets go without
// it only when both sides said yes):
//   - the chain has no `checksum`: its owner chose to rely on UDP's checksum;
//   - or the chain is the class's default (explicit_chain false: no element
//     list was given), cfg.loopback_no_checksum is on, and the peer is at a
//     loopback address: then every packet of the connection crosses the
//     loopback device (the kernel routes 127/8 and ::1 only there, and drops
//     such sources arriving on any other interface), which hands the
//     sender's buffer to the receiver with no wire or NIC in between, so
//     nothing can corrupt the bytes a checksum would catch (the kernel marks
//     such packets CHECKSUM_UNNECESSARY; TCP over loopback computes none).
//     The peer's address alone decides, so a server bound to a wildcard
//     address agrees too.
// An explicit chain that lists `checksum` always keeps it.
bool skip_checksum(const Chain& chain, bool explicit_chain, const ConnConfig& cfg,
                   const sansio::Addr& peer) noexcept;

struct EndpointConfig {
    sansio::Addr local;                  // the one UDP address it owns
    std::uint64_t seed = 1;              // connection IDs and the cookie key
    ConnConfig conn{};                   // for every connection it makes
    // The chain accepted connections run, as element names (empty: the
    // granted class's default chain). A class it does not fit is refused
    // (kRefuseNoChain, with the chain's message).
    std::vector<std::string> accept_elements;
    std::size_t max_connections = 4096;  // live connections (any state), both roles
    std::size_t accept_backlog = 128;    // admitted, not yet accept()ed
    std::size_t max_pending_replies = 1024;   // stateless replies (RETRY, VN, REFUSE) waiting
    // Authentication: the pre-shared key (auth::load_psk reads a key file
    // into one: `auto k = std::make_shared<auth::Psk>(); load_psk(path, *k,
    // err); cfg.psk = k;`), or null for none. Shared, read-only, in guarded
    // memory; every connection derives its own keys from it. A key that
    // failed to load must not be set: a set but empty one fails closed
    // (nothing is sent, nothing accepted). Both peers need the same key and
    // the same mode (a mismatch of either: every packet fails, fail closed).
    std::shared_ptr<const auth::Psk> psk;
    auth::Mode auth_mode = auth::Mode::encrypt;
};

struct EndpointCounters {
    std::uint64_t datagrams_in = 0, bytes_in = 0;
    std::uint64_t datagrams_out = 0, bytes_out = 0;
    std::uint64_t dropped_runt = 0;          // too short to carry a destination ID
    std::uint64_t dropped_unknown_cid = 0;   // short packet for no connection of ours
    std::uint64_t dropped_long_unknown = 0;  // RETRY/ACCEPT/... for no connecting client
    std::uint64_t dropped_not_listening = 0; // INITIAL while not listening
    std::uint64_t dropped_replies = 0;       // stateless reply not queued (queue full)
    std::uint64_t dropped_cid_collision = 0; // accepted handshake whose ID is taken
    std::uint64_t dropped_reflected = 0;     // INITIAL naming one of our own IDs as its source: ours, sent back
    std::uint64_t refused_busy = 0;          // admission refused: full
    std::uint64_t refused_no_chain = 0;      // admission refused: no chain for the class
    std::uint64_t refused_closed = 0;        // admission refused: refuse_new() was called
    std::uint64_t connections_created = 0;
    std::uint64_t connections_removed = 0;
    std::uint64_t accept_resent = 0;         // ACCEPT sent again for an existing connection
    std::uint64_t accept_resend_limited = 0; // ... not sent: over the unvalidated connection's 3x budget
    // Address validation (wire::RetryPolicy::under_load): connections
    // admitted without a cookie; of those, validated by a short packet from
    // the client, or a cookie in a repeated INITIAL; and forgotten without
    // ever being validated (the handshake timeout passed: spoofed sources,
    // or a client that vanished).
    std::uint64_t admitted_unvalidated = 0;
    std::uint64_t validated = 0;
    std::uint64_t unvalidated_expired = 0;
};

class Endpoint final : public sansio::Endpoint {
public:
    explicit Endpoint(const EndpointConfig& cfg);
    ~Endpoint() override;
    Endpoint(const Endpoint&) = delete;
    Endpoint& operator=(const Endpoint&) = delete;

    // Starts answering INITIALs. server_cid_len is forced to kCidLen. The
    // cookie key comes from the seed. admit (optional) decides each proved
    // client; the endpoint refuses first when it is full. What admit set
    // aside (Admission::held) goes back to release once: when the connection
    // is forgotten (closed and drained, reset, timed out), when the endpoint
    // is destroyed, or at once when no connection came of the admission (the
    // class has no chain, the reply could not be built, an ID collision).
    // Returns 0, or -EALREADY when already listening.
    int listen(wire::ServerConfig sc, wire::AdmitFn admit = {}, ReleaseFn release = {});
    // From now on a new client is refused (kRefuseClosed: its connect fails
    // with ECONNREFUSED, as a closed UDP port answers); the connections
    // there are go on. A repeated INITIAL of one already admitted gets its
    // ACCEPT again.
    void refuse_new() noexcept { refusing_ = true; }

    // Opens a connection to `peer` asking for `service_class` and `qos`, with
    // the chain `elements` (empty: the class's default). Returns 0 and sets
    // `out`; -EINVAL when the chain is impossible (error, if given, says
    // why); -EMFILE when max_connections exist.
    int connect(const sansio::Addr& peer, std::uint8_t service_class, const wire::Qos& qos,
                sansio::Time now, std::shared_ptr<Connection>& out,
                std::span<const std::string> elements = {}, std::string* error = nullptr);

    // The next admitted connection, or nullptr.
    std::shared_ptr<Connection> accept();

    // Whether `bytes` (one received datagram) is MCES for this endpoint: a
    // long header whose version is 0 (version negotiation) or an MCES
    // version, or a short header whose destination ID names one of its
    // connections. For an owner that shares its socket with plain UDP (the
    // engine's UDP bridge, core/engine/mces_dgram.h): what this says no to
    // is not MCES, or not for any connection here. Reads nothing but the
    // first bytes and the connection table; no counter moves.
    bool claims(std::span<const std::uint8_t> bytes) const noexcept;

    // ---- sansio::Endpoint ---------------------------------------------------
    void on_datagram(const sansio::Addr& from, const sansio::Addr& to,
                     std::span<const std::uint8_t> bytes, sansio::Time now) override;
    void on_timeout(sansio::Time now) override;
    sansio::Time next_timeout() const override;
    bool poll_transmit(sansio::Datagram& out) override;
    void advance(sansio::Time now) override { now_ = std::max(now_, now); }
    void on_batch_end() override;

    const sansio::Addr& local() const noexcept { return cfg_.local; }
    std::size_t connection_count() const noexcept { return conns_.size(); }
    std::size_t accept_queue_size() const noexcept { return accept_q_.size(); }
    // Server connections whose client address is not yet proved.
    std::size_t unvalidated_count() const noexcept { return unvalidated_; }
    const EndpointCounters& counters() const noexcept { return counters_; }
    // Whether the endpoint has a pre-shared key (all its connections are authenticated).
    bool authenticated() const noexcept { return cfg_.psk != nullptr; }
    // The handshake's counters (cookies issued, parse errors ...), when listening.
    const wire::ServerCounters* server_counters() const noexcept;
    // Sum of every live connection's drop counters (diagnostics).
    std::uint64_t connection_drops() const;

private:
    friend class Connection;
    struct Entry {
        std::shared_ptr<Connection> conn;
        sansio::Time armed = sansio::kNever;
        bool queued = false;
        std::uint64_t held = 0;   // the owner's admission handle, for release_
    };

    static std::uint64_t key(const wire::ConnectionId& cid) noexcept;
    static std::string client_key(const sansio::Addr& a, const wire::ConnectionId& cid);
    void wake(Connection& c);
    void enqueue(std::uint64_t k, Entry& e);
    void rearm(std::uint64_t k, Entry& e);
    void remove(std::uint64_t k);
    // A connection's address got proved (it leaves the unvalidated count).
    void note_validated();
    void handle_initial(const sansio::Addr& from, std::span<const std::uint8_t> bytes, sansio::Time now);
    // The chain an accepted connection of class `cls` runs.
    ChainResult accept_chain(std::uint8_t cls) const;
    wire::Admission admit(const wire::AdmissionRequest& req);
    // Hands `held` (if any) back to the owner's release callback.
    void give_back(std::uint64_t held) noexcept;
    void queue_reply(const sansio::Addr& to, std::span<const std::uint8_t> bytes);
    wire::ConnectionId fresh_cid();
    auth::HandshakeNonce fresh_nonce();
    // What a new connection needs to be authenticated (empty when keyless).
    ConnAuth conn_auth();

    EndpointConfig cfg_;
    std::uint64_t rng_;
    std::uint64_t nonce_rng_;
    // Authenticated: the handshake proof made from cfg_.psk (shared with
    // the server handshake and every client connection).
    std::shared_ptr<auth::HandshakeProof> proof_;
    sansio::Time now_ = 0;
    std::unique_ptr<wire::ServerHandshake> server_;
    wire::AdmitFn user_admit_;
    bool refusing_ = false;   // refuse_new()
    ReleaseFn release_;
    // What user_admit_ set aside for the INITIAL being handled: admit() runs
    // inside ServerHandshake::on_initial, handle_initial() then ties it to
    // the connection it creates, or gives it back.
    std::uint64_t pending_held_ = 0;
    std::unordered_map<std::uint64_t, Entry> conns_;
    // The entry the last packet went to: a GRO batch is many packets of one
    // connection. Elements of an unordered_map keep their address; remove()
    // forgets it.
    std::uint64_t last_key_ = 0;
    Entry* last_ = nullptr;
    std::unordered_map<std::string, std::uint64_t> by_client_;   // server side: (addr, client ID)
    std::size_t unvalidated_ = 0;   // server connections awaiting their client's first short packet
    std::set<std::pair<sansio::Time, std::uint64_t>> timers_;
    std::deque<std::uint64_t> ready_;
    std::deque<std::shared_ptr<Connection>> accept_q_;
    std::deque<sansio::Datagram> replies_;
    std::vector<std::uint8_t> buf_;
    // Connections holding views of datagrams given since the last
    // on_batch_end (each once: Connection::borrow_listed_). Strong
    // references: one removed meanwhile still gets settled.
    std::vector<std::shared_ptr<Connection>> borrowers_;
    EndpointCounters counters_;
};

}  // namespace gs::mces
