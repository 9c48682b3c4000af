// The MCES handshake, sans-IO: the owner feeds datagrams and the time in and
// takes datagrams out; nothing here reads a clock or touches a socket.
//
//   client                                     server
//   INITIAL(HELLO, no token)    ---->          retry = always, or under load:
//                               <----  RETRY(RETRY_TOKEN = cookie)   (no state kept)
//   INITIAL(HELLO, cookie)      ---->          cookie valid: admission callback
//                               <----  ACCEPT(granted class + QoS) | REFUSE
//
//   INITIAL(HELLO, no token)    ---->          retry = under_load, not loaded:
//                               <----  ACCEPT | REFUSE   (AcceptInfo::validated false)
//   an unknown version          ---->
//                               <----  VERSION_NEGOTIATION(versions)
//
// Address validation (QUIC's, RFC 9000 8.1): with retry = always the server
// keeps nothing about a client until that client has returned a valid
// cookie (proved it receives at its address). With under_load (the
// default) it admits an INITIAL without a cookie directly, saving a round
// trip, while its owner reports fewer than max_unvalidated connections
// whose address is unproved (set_unvalidated); the owner then limits what
// such a connection sends to 3x what it received until the client's first
// short packet proves the address. Before admission every reply is at most
// amplification_factor (3) times the datagram that caused it.
// docs/mces.md has the details.
//
// No checksum: a client may offer (kOfferNoChecksum after its versions in
// HELLO) that the connection's short packets go without the CRC32C; the
// server's owner agrees or not (Admission::no_checksum), and an ACCEPT that
// agrees carries PARAMS(kParamNoChecksum). Both sides then know, and only
// then: a client that did not offer, or a server that did not agree (or
// predates the offer), keeps the CRC. The handshake packets themselves
// always carry it.
//
// Authenticated (a pre-shared key: ServerConfig::proof, ClientConfig::proof;
// core/mces/auth/proof.h): every handshake packet but VERSION_NEGOTIATION
// has flags bit 5 and ends in the 32-byte proof instead of the CRC32C. The
// client's INITIAL carries its nonce (ClientConfig::nonce, fresh per attempt,
// from the owner); the server checks that proof before anything else that
// answers or costs (before the cookie, a RETRY, a VERSION_NEGOTIATION), so a
// peer without the key gets no answer and leaves no state. RETRY, ACCEPT and
// REFUSE carry proofs bound to that client nonce, the ACCEPT's nonce being
// the server's (Admission::server_nonce, from the owner), and the client
// drops any reply whose proof fails. Both nonces end in AcceptInfo / the
// client's accessors: the connection derives its packet keys from them.
// A keyed and a keyless side never agree: each drops the other's packets
// (parse: unsupported_auth / missing_auth), the client times out.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/common/sansio.h"
#include "core/mces/auth/proof.h"
#include "core/mces/wire/cookie.h"
#include "core/mces/wire/frame.h"
#include "core/mces/wire/packet.h"

namespace gs::mces::wire {

// ---- server ---------------------------------------------------------------

// What a client asks for; given to the admission callback once its address
// is proved.
struct AdmissionRequest {
    sansio::Addr from;
    ConnectionId client_cid;
    std::uint32_t version = 0;
    std::uint8_t service_class = 0;
    Qos qos;
    bool no_checksum_offered = false;   // HELLO lists kOfferNoChecksum
    auth::HandshakeNonce client_nonce{};   // authenticated: the INITIAL's (proved)
    // A valid cookie proved the address; false: admitted without one
    // (RetryPolicy::under_load), the address is still to be proved.
    bool validated = true;
};

// The owner's answer. Admitted: what is granted (may be less than asked; the
// client learns both). Refused: a code, what is available, and why.
struct Admission {
    bool admitted = true;
    std::optional<std::uint8_t> service_class;   // granted class; empty = as asked
    Qos granted;                      // admitted: each field absent = not granted
    std::uint64_t code = 0;           // refused: owner-defined reason code
    Qos available;                    // refused: what could have been granted
    std::string reason;               // refused: one line, cut to kMaxReasonLen
    // admitted: short packets without the CRC32C, if the client offered it
    // (ignored otherwise). Same INITIAL, same answer: a repeated ACCEPT
    // must agree with the first.
    bool no_checksum = false;
    // Authenticated, admitted: the nonce of the ACCEPT (keys.h): fresh for
    // each connection the owner creates, the same in a repeated ACCEPT of
    // that connection. Never derived from the INITIAL alone.
    auth::HandshakeNonce server_nonce{};
    // Admitted: the owner's handle for what it set aside for this client (a
    // reservation in the host ledger), 0 for nothing. The handshake ignores
    // it; mces::Endpoint hands it back to its release callback exactly once,
    // when the connection is gone or was never made (Endpoint::listen).
    std::uint64_t held = 0;
    // Admitted: the server's connection ID for the ACCEPT. Empty (the
    // default): derived from the cookie, or without one from the client's
    // address and ID, under the cookie key. An owner that already has a
    // connection for this client (a repeated INITIAL) sets its ID, so the
    // repeat gets the same ACCEPT whatever cookie it carries (a RETRY
    // answering an earlier copy can hold another one: the cookie's clock
    // ticked, or its key rotated).
    ConnectionId server_cid;
    // Not admitted yet (admitted false): the owner would set something
    // aside for this client (a reservation in the host ledger) and asks
    // that its address be proved first. For an INITIAL without a cookie
    // the handshake answers with a RETRY instead (the client comes back
    // with the cookie, validated); with one it is a refusal like any other.
    // Else a spoofed INITIAL could hold the host's capacity.
    bool prove_address = false;
};

// Called for an INITIAL with a valid cookie, or (RetryPolicy::under_load,
// not loaded) one without a cookie: AdmissionRequest::validated tells
// which. A null AdmitFn admits everything as asked.
using AdmitFn = std::function<Admission(const AdmissionRequest&)>;

// When the server asks for a cookie (RETRY) before it admits a client.
enum class RetryPolicy : std::uint8_t {
    always,       // every client proves its address first: 2 round trips, no state before
    under_load,   // only past max_unvalidated unproved connections: 1 round trip otherwise
};

struct ServerConfig {
    std::vector<std::uint32_t> versions{kVersion1};   // spoken, preferred first (<= 16)
    RetryPolicy retry = RetryPolicy::under_load;
    // under_load: admit without a cookie while the owner has fewer than this
    // many connections whose client address is not yet proved. Why 64: it
    // is the state a spoofer can pin (each such connection lives at most the
    // handshake timeout, 5 s, and its buffers are reserved, not touched) and
    // the reflection it can buy (each sends at most 3x the INITIAL it got:
    // 64 x 3.6 kB), while 64 honest clients opening within one round trip
    // (a burst of reconnects) still get the 1-RTT handshake; the 65th gets a
    // RETRY, one round trip more, never a refusal.
    std::size_t max_unvalidated = 64;
    sansio::Time cookie_lifetime = 10 * sansio::kSecond;
    std::size_t min_initial_size = kMinInitialSize;   // smaller INITIALs get no answer
    std::size_t amplification_factor = 3;             // reply <= factor * received
    std::size_t server_cid_len = 8;                   // IDs this server hands out
    std::size_t min_client_cid_len = 4;
    // Authenticated: the proof made from the pre-shared key (init()ed);
    // null: keyless. A proof that is not valid() answers nothing.
    std::shared_ptr<auth::HandshakeProof> proof;
};

// Every drop and every decision, counted (docs/mces.md, "Counters").
struct ServerCounters {
    ParseCounters parse;                       // malformed datagrams, by error
    std::uint64_t datagrams = 0;               // given to on_initial
    std::uint64_t bytes_in = 0;
    std::uint64_t bytes_out = 0;               // in replies the owner should send
    std::uint64_t not_initial = 0;             // well-formed, but not an INITIAL
    std::uint64_t initial_too_small = 0;       // INITIAL under min_initial_size
    std::uint64_t version_negotiations = 0;    // VERSION_NEGOTIATION sent
    std::uint64_t version_downgrades = 0;      // INITIAL in a version the client did not prefer
    std::uint64_t cookies_issued = 0;          // RETRY sent
    std::uint64_t retries_to_prove = 0;        // ... because the owner asked for a proved address (prove_address)
    std::uint64_t cookies_accepted = 0;
    std::uint64_t cookies_rejected_expired = 0;
    std::uint64_t cookies_rejected_bad_mac = 0;     // forged, other address/port/ID
    std::uint64_t cookies_rejected_unknown_key = 0; // key older than the previous one
    std::uint64_t cookies_rejected_malformed = 0;
    std::uint64_t amplification_limited = 0;   // reply suppressed: over factor * received
    std::uint64_t admitted = 0;
    std::uint64_t admitted_unvalidated = 0;    // ... of which without a cookie (under_load)
    std::uint64_t retries_under_load = 0;      // RETRY sent because max_unvalidated was reached
    std::uint64_t refused = 0;
    std::uint64_t no_checksum_offered = 0;     // admitted INITIALs that offered no checksum
    std::uint64_t no_checksum_agreed = 0;      // ... and whose ACCEPT agreed
    std::uint64_t bad_proof = 0;               // authenticated: INITIAL whose proof failed (no answer)
};

// The handshake's result once a client proved its address.
struct AcceptInfo {
    ConnectionId client_cid;        // what the server puts in short headers it sends
    ConnectionId server_cid;        // what the client puts in short headers it sends
    std::uint32_t version = 0;
    std::uint8_t asked_class = 0;
    std::uint8_t granted_class = 0;
    Qos asked;
    Qos granted;
    bool no_checksum = false;       // agreed: short packets carry no CRC32C, both ways
    auth::HandshakeNonce client_nonce{};   // authenticated: the INITIAL's
    auth::HandshakeNonce server_nonce{};   // authenticated: the ACCEPT's (Admission::server_nonce)
    // A cookie proved the client's address. false: admitted without one;
    // the connection sends at most 3x what it received from the client
    // until a short packet from it arrives (connection.h).
    bool validated = true;
};

constexpr std::size_t kMaxReplyLen = 512;

// What on_initial decided. bytes() is what to send back to `from`:
//   drop    nothing to send (counted)
//   send    VERSION_NEGOTIATION or RETRY; keep no state
//   accept  ACCEPT; the owner creates the connection from `info`
//   refuse  REFUSE; keep no state
struct ServerReply {
    enum class Kind : std::uint8_t { drop, send, accept, refuse };
    Kind kind = Kind::drop;
    std::array<std::uint8_t, kMaxReplyLen> buf{};
    std::size_t len = 0;
    AcceptInfo info;   // accept and refuse
    std::span<const std::uint8_t> bytes() const noexcept { return {buf.data(), len}; }
};

class ServerHandshake {
public:
    // key: the first cookie key (32 random bytes from the owner).
    ServerHandshake(ServerConfig cfg, const CookieJar::Key& key, AdmitFn admit = {});

    // A long-header datagram that arrived at the listener from `from`. Any
    // bytes are accepted; no per-client state is created, ever: a repeated
    // INITIAL with the same cookie (or, admitted without one, from the same
    // address and client ID under the same key) gets the same answer (same
    // server ID), so the owner looks its connection up by (from, client_cid)
    // and may pin the ID (Admission::server_cid).
    ServerReply on_initial(const sansio::Addr& from, std::span<const std::uint8_t> bytes,
                           sansio::Time now);

    // RetryPolicy::under_load: how many connections the owner has whose
    // client address is not yet proved (admitted without a cookie, no short
    // packet from the client yet). At max_unvalidated, INITIALs without a
    // cookie get a RETRY. An owner that never calls it has none.
    void set_unvalidated(std::size_t n) noexcept { unvalidated_ = n; }

    CookieJar& cookies() noexcept { return jar_; }
    const ServerCounters& counters() const noexcept { return counters_; }
    const ServerConfig& config() const noexcept { return cfg_; }

private:
    bool speaks(std::uint32_t v) const noexcept;
    void retry(const sansio::Addr& from, const PacketView& v, std::size_t received,
               const auth::HandshakeNonce& client_nonce, sansio::Time now, ServerReply& out);
    // Sends out only if it fits the amplification budget for `received`.
    void send_limited(std::size_t received, ServerReply& out) noexcept;
    bool keyed() const noexcept { return cfg_.proof != nullptr; }
    Auth auth() const noexcept { return keyed() ? Auth::on : Auth::off; }
    // Writes out's packet (pw, begun) with its trailer: the CRC, or the
    // proof of `kind` bound to the client nonce. False: nothing to send.
    bool finish_reply(PacketWriter& pw, auth::ProofKind kind, const auth::HandshakeNonce& client_nonce,
                      const auth::HandshakeNonce& nonce, ServerReply& out) noexcept;

    ServerConfig cfg_;
    CookieJar jar_;
    AdmitFn admit_;
    ServerCounters counters_;
    std::size_t unvalidated_ = 0;   // the owner's count (set_unvalidated)
};

// ---- client ---------------------------------------------------------------

enum class HandshakeError : std::uint8_t {
    none,
    timeout,            // no usable answer within give_up_after
    version_mismatch,   // the server speaks none of our versions
    refused,            // the server's admission refused the request
    too_many_retries,   // the server kept sending RETRY
    no_key,             // authenticated, but the proof has no key (the PSK was empty)
};
const char* name(HandshakeError e) noexcept;

struct ClientConfig {
    std::vector<std::uint32_t> versions{kVersion1};   // preferred first, 1..8
    ConnectionId cid;                  // ours, from the owner's seed; 4..20 bytes
    std::uint8_t service_class = 1;
    Qos qos;                           // the request
    std::size_t initial_size = kMinInitialSize;       // INITIAL datagram size (>= 1200)
    sansio::Time initial_rto = 250 * sansio::kMillisecond;
    sansio::Time max_rto = 2 * sansio::kSecond;       // back-off doubles up to this
    sansio::Time give_up_after = 5 * sansio::kSecond; // from start(): then timeout
    std::size_t max_retries = 3;                       // RETRYs followed
    // Offer short packets without the CRC32C (kOfferNoChecksum; needs a free
    // slot in HELLO's list: fewer than 8 versions, else nothing is offered).
    bool offer_no_checksum = false;
    // Authenticated: the proof made from the pre-shared key, and this
    // attempt's nonce (fresh random bytes from the owner; the INITIAL and
    // its retransmissions carry it). null: keyless.
    std::shared_ptr<auth::HandshakeProof> proof;
    auth::HandshakeNonce nonce{};
};

struct ClientCounters {
    ParseCounters parse;
    std::uint64_t initials_sent = 0;
    std::uint64_t retries = 0;               // RETRY followed
    std::uint64_t version_negotiations = 0;  // VERSION_NEGOTIATION followed
    std::uint64_t ignored = 0;               // well-formed but not for us / not now
    std::uint64_t bad_proof = 0;             // authenticated: RETRY/ACCEPT/REFUSE whose proof failed
};

class ClientHandshake {
public:
    enum class State : std::uint8_t { idle, connecting, established, failed };

    explicit ClientHandshake(ClientConfig cfg);

    // Queues the first INITIAL and arms the timers.
    void start(sansio::Time now);
    // A datagram from the server. True when it moved the handshake on; false
    // when it was dropped (malformed, for another ID, or late) and counted.
    bool on_datagram(std::span<const std::uint8_t> bytes, sansio::Time now);
    // Retransmits the INITIAL (doubling the interval) or gives up.
    void on_timeout(sansio::Time now);
    sansio::Time next_timeout() const noexcept;
    // Fills out with the next datagram to send to the server; false if none.
    bool poll_transmit(std::vector<std::uint8_t>& out);

    State state() const noexcept { return state_; }
    HandshakeError error() const noexcept { return error_; }
    // One line for the log when failed, e.g. "refused by server: asked class 2
    // rate=...; available rate=... (code 1: host capacity)".
    const std::string& message() const noexcept { return message_; }

    // Once established:
    std::uint32_t version() const noexcept { return version_; }
    const ConnectionId& server_cid() const noexcept { return server_cid_; }
    std::uint8_t granted_class() const noexcept { return granted_class_; }
    const Qos& granted() const noexcept { return granted_; }
    // The server agreed to our offer: short packets carry no CRC32C.
    bool no_checksum() const noexcept { return no_checksum_; }
    // Authenticated: the ACCEPT's nonce (proved), for the connection keys.
    const auth::HandshakeNonce& server_nonce() const noexcept { return server_nonce_; }
    // Once refused:
    const Qos& available() const noexcept { return available_; }
    std::uint64_t refuse_code() const noexcept { return refuse_code_; }

    const ClientCounters& counters() const noexcept { return counters_; }
    const ClientConfig& config() const noexcept { return cfg_; }

private:
    void fail(HandshakeError e, std::string msg);
    void send_now(sansio::Time now) noexcept;
    // Whether our HELLO carries kOfferNoChecksum (asked for, and a slot free).
    bool offering() const noexcept {
        return cfg_.offer_no_checksum && cfg_.versions.size() < kMaxHelloVersions;
    }

    ClientConfig cfg_;
    State state_ = State::idle;
    HandshakeError error_ = HandshakeError::none;
    std::string message_;
    std::uint32_t version_ = 0;
    bool vn_done_ = false;
    std::array<std::uint8_t, kMaxTokenLen> token_{};
    std::size_t token_len_ = 0;
    std::uint64_t next_pn_ = 0;
    bool send_pending_ = false;
    sansio::Time started_ = 0;
    sansio::Time deadline_ = sansio::kNever;
    sansio::Time next_send_ = sansio::kNever;
    sansio::Time rto_ = 0;
    ConnectionId server_cid_;
    std::uint8_t granted_class_ = 0;
    Qos granted_;
    bool no_checksum_ = false;
    auth::HandshakeNonce server_nonce_{};
    Qos available_;
    std::uint64_t refuse_code_ = 0;
    ClientCounters counters_;
};

}  // namespace gs::mces::wire
