// One MCES connection (one peer): the elements of a chain (chain.h) composed
// into a service unit. Class 0 carries datagrams (message boundaries kept,
// never retransmitted); classes 1 and 2 carry one reliable ordered byte
// stream each way. docs/mces.md, "Service units", has the state machine.
//
// Sans-IO: the owner (mces::Endpoint, or a test) feeds packets and the time
// in and takes packets out; nothing here reads a clock or touches a socket:
//
//     conn.on_packet(from, bytes, now);     // a short-header packet for us
//     conn.on_timeout(now);                 // now >= conn.next_timeout()
//     while (conn.poll_transmit(buf, now)) send(conn.peer(), buf);
//
// The application side (write/read/send_datagram/recv_datagram/shutdown_write/
// close/abort) acts at the last time the connection was given; after calling
// it the owner polls again (Endpoint does this when the engine or the
// simulator kicks it).
//
// Errors are -errno as a TCP or UDP program knows them: ECONNREFUSED (refused,
// or no answer to the handshake), ECONNRESET (the peer sent RESET), ETIMEDOUT
// (idle timeout, or close() lingered too long), ECONNABORTED (this side
// called abort()), EPROTO (the peer closed with an error code).
//
// Untrusted input: any bytes may be given to on_packet. Malformed packets,
// packets with garbage frames, duplicates and packets from another address
// are dropped and counted (counters().drops); none ends the connection, and
// a dropped packet is never acknowledged. Memory per connection is bounded by
// the configuration (buffers, queues, the loss detector's map).
//
// Authenticated (ConnAuth, from the endpoint's pre-shared key): the
// handshake proves the key both ways (wire/handshake.h), then both sides
// derive per-direction packet keys (auth/keys.h) from the PSK, both IDs and
// both handshake nonces; every short packet is sealed on send and opened on
// receive (auth/protect.h) before anything in it is read. A packet that
// fails (tag, replay window, too old) is dropped, counted in ConnDrops and
// never acknowledged. Such a connection sends every packet from one buffer
// and copies what it receives: the zero-copy paths (Held payload, borrowed
// receive bytes) and the no-checksum offer are off for it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/common/sansio.h"
#include "core/mces/auth/proof.h"
#include "core/mces/auth/protect.h"
#include "core/mces/auth/secret.h"
#include "core/mces/conn/chain.h"
#include "core/mces/conn/timing_buffer.h"
#include "core/mces/fec/decoder.h"
#include "core/mces/fec/encoder.h"
#include "core/mces/recovery/ack_policy.h"
#include "core/mces/recovery/congestion.h"
#include "core/mces/recovery/flow_control.h"
#include "core/mces/recovery/guarantee.h"
#include "core/mces/recovery/idle_timer.h"
#include "core/mces/recovery/loss_detector.h"
#include "core/mces/recovery/pacer.h"
#include "core/mces/recovery/range_set.h"
#include "core/mces/recovery/recv_buffer.h"
#include "core/mces/recovery/send_buffer.h"
#include "core/mces/wire/handshake.h"
#include "core/mces/wire/packet.h"

namespace gs::mces {

class Endpoint;

// Stream credit each side may use before the peer's first MAX_DATA: a
// protocol constant (the handshake carries no transport parameters). Each
// side sends its real window in its first packet.
constexpr std::uint64_t kInitialCredit = 16 * 1024;

// CLOSE codes. 0 is a graceful close; anything else is an error the peer
// reports (the application sees EPROTO).
constexpr std::uint64_t kCloseNoError = 0;
// RESET codes (the application sees ECONNRESET whatever the code).
constexpr std::uint64_t kResetAborted = 0;      // abort() by the application
constexpr std::uint64_t kResetLinger = 1;       // close() waited too long for the peer

// A server connection whose client address is not yet proved sends at most
// this many times the bytes it received from it (QUIC's rule, RFC 9000 8.1):
// a spoofed INITIAL cannot make it a large reflector.
constexpr std::size_t kAmplificationFactor = 3;

struct ConnConfig {
    // The largest UDP payload sent: 1200 by default (QUIC's minimum that
    // every path carries); up to 65527 on loopback. Also the congestion
    // controller's and pacer's packet size.
    std::size_t max_datagram_size = 1200;
    // Several messages (class 0 datagrams, class 3 messages) share a packet
    // only while it stays within this many bytes; one message alone may
    // still fill max_datagram_size (IP fragments it, as it would have the
    // program's own datagram). A packet of several messages that IP had to
    // fragment is lost whole when one fragment is, and the kernel refuses a
    // GSO run of segments larger than the path's MTU. 0: max_datagram_size.
    // Not applied toward a loopback peer (no MTU below 64 KiB there).
    std::size_t coalesce_size = 0;
    std::size_t send_buffer = 1 << 20;             // stream bytes held until acked (backpressure)
    // Bytes written and not yet sent that the application may queue:
    // write/write_reserve take at most max(max_unsent, bytes in flight)
    // minus what is already unsent (and writable() says so). 0: only the
    // send buffer bounds writes. Why: a producer faster than a CPU-bound
    // sender (the engine's bridge recv()ing into a large send buffer) would
    // otherwise run the whole buffer ahead of the packets, and its bytes
    // leave the cache before the kernel copies them out (docs/mces.md,
    // "Performance"). One flight ahead keeps a long path's pipe full.
    std::size_t max_unsent = 0;
    std::uint64_t recv_window = 256 * 1024;        // initial credit given to the peer
    std::uint64_t recv_window_max = 4 << 20;       // auto-tuning ceiling = receive buffer size
    // Class 0 messages held each way, and their bytes. What arrives in one
    // of the engine's receive batches (16 GRO runs of up to 64 KiB) waits
    // here until the batch ends: 1,024 holds a full batch of 1 KiB
    // messages, and the byte bound a batch of any size.
    std::size_t datagram_queue = 1024;
    std::size_t datagram_queue_bytes = 1 << 20;
    AckPolicyConfig ack{};                         // ACK every 2 packets or after 25 ms
    // Undo a window reduction when every loss behind it proves spurious
    // (the packets were reordered, then acknowledged). docs/mces-recovery.md.
    bool cc_undo = true;
    IdleConfig idle{};                             // keepalive 15 s (if in the chain), idle 30 s
    // close(): how long to wait for the graceful exchange (the peer's FIN and
    // CLOSE) before giving up with a RESET.
    sansio::Time linger = 30 * sansio::kSecond;
    // After closing, the connection answers late packets (a lost CLOSE or
    // RESET is sent again) for max(3 PTO, min_drain), then the endpoint
    // forgets it.
    sansio::Time min_drain = sansio::kSecond;
    std::uint32_t close_tries = 5;                 // CLOSE sent at most this often
    // Client handshake (wire::ClientConfig): first retransmission, cap, give-up.
    // (Class realtime: at most a quarter of the latency, at least 20 ms.)
    sansio::Time handshake_rto = 250 * sansio::kMillisecond;
    sansio::Time handshake_max_rto = 2 * sansio::kSecond;
    sansio::Time handshake_timeout = 5 * sansio::kSecond;
    // With the class's default chain, leave the CRC32C off short packets
    // when both addresses are loopback (the device cannot corrupt a packet;
    // kernel TCP does not checksum there either). false: only a chain
    // without `checksum` does. The rule is skip_checksum() (endpoint.h).
    bool loopback_no_checksum = true;
    // Deliver in-order stream bytes from the received packet instead of
    // copying them into the receive buffer first (RecvBuffer, "Borrowing";
    // up to kMaxBorrowedSegments packets at a time). Only for an owner that
    // keeps every packet's bytes valid and unchanged until it calls
    // on_batch_end() (Connection's or Endpoint's), and calls it before
    // reusing them: the engine's UdpHost does. Off: every byte is copied
    // and on_batch_end() is never needed (the simulator, the tests).
    bool borrow_receive = false;

    // Class realtime (chains with `deadline`; docs/mces.md, "Realtime class").
    // The latency both sides use: the QoS latency bound the handshake
    // granted when there is one (the client asks, the server grants: both
    // ends read the same value), else this.
    sansio::Time latency = 120 * sansio::kMillisecond;
    // Resend a lost message while the copy can still beat its deadline.
    // false: FEC alone repairs (the ACKs still map the clocks).
    bool rt_retransmit = true;
    // The FEC layout this side sends with (`fec` in the chain). The peer
    // reads k, r and the interleaving from each REPAIR frame, so the two
    // sides need not agree; a receiver decodes blocks of up to
    // rt_window / 2 sequence numbers (k x depth).
    fec::Layout fec{10, 2, 1};
    // Adaptive FEC (docs/mces.md, "Adaptive FEC"): every fec_adapt_packets
    // packets sent, the sender estimates the path's loss (packets declared
    // lost and not acknowledged after all, over those sent) and how many
    // resends the latency leaves room for (from the smoothed RTT), and sends
    // the fewest repairs per block of fec.k that bring the predicted loss
    // after FEC and those resends down to fec_target: none at all when
    // resends alone do. Until the first estimate the same rule runs with
    // fec_prior_loss from the first RTT sample on: a path where resends fit
    // starts without repairs (the configured layout sent 0.5% of a 5 s
    // stream's bytes as repairs nobody needed), one where they do not
    // starts protected. false: `fec` always (a policy that names a layout).
    bool fec_adaptive = true;
    double fec_target = 1e-3;
    // Adaptive FEC's other tool: extra copies of resends where one resend
    // round fits and leaves too much missing (rt_choose_fec). false: FEC only.
    bool rt_resend_copies = true;
    double fec_prior_loss = 0.05;
    std::uint32_t fec_adapt_packets = 256;
    // A realtime receiver's ACKs: every 32 messages or 10 ms (SRT's ACK
    // period), at once on a gap (losses are seen as soon as with every
    // other packet). Class 1's every-2 would cost 5% of the stream's bytes
    // coming back; every 16 or 5 ms, with 32 ranges each, cost 1.43%
    // against SRT's 0.56% (bench/realtime.sh, veth at 5% loss); every 32
    // or 10 ms with 8 ranges, 0.62% against 0.55%.
    AckPolicyConfig rt_ack{32, 10 * sansio::kMillisecond};
    // ... and the ranges each of them carries, newest first (at most
    // wire::kMaxAckRanges). At 5% loss every ACK had all 32 (about 80
    // bytes): the sender has long declared the older gaps lost (packet and
    // time thresholds), and the newest 8 span about ten ACKs' worth of
    // packets, so a lost ACK is still covered by the next ones.
    std::size_t rt_ack_ranges = 8;
    // A group's repairs go out at the latest this long after its first
    // message (0: latency / 4).
    sansio::Time fec_max_delay = 0;
    // Sequence numbers the receiver's timing buffer spans (messages in
    // flight within one latency, with room to spare); its bytes are bounded
    // by datagram_queue_bytes.
    std::size_t rt_window = 1024;
    // ...which doubles, with its byte bound (datagram_queue_bytes), while a
    // faster stream needs more, up to these: 32,768 messages and 48 MiB,
    // 1.8 Gbit/s of 1,316-byte messages within 120 ms with room to spare.
    // (At most wire::kMaxMessageSpan, 32,767: a MESSAGE names its
    // sequence number by its low 16 bits, frame.h.)
    std::size_t rt_window_max = 32768;
    // How this side's timing buffer maps the peer's clock (policy `clock`;
    // TimingBufferConfig::symmetric): false releases by the strict bound,
    // never after the deadline, giving up one reverse one-way delay of the
    // latency; true at the symmetric estimate less rt_clock_margin, the
    // whole latency where the path's directions take the same time. The
    // sender side plans resends and FEC as if the peer did the same.
    // rt_clock_margin 0: the latency / 24 within 1-10 ms (5 ms at 120 ms),
    // room for the host's own delay in handing a message to the program.
    bool rt_clock_symmetric = false;
    sansio::Time rt_clock_margin = 0;
    std::size_t rt_bytes_max = 48u << 20;
    // Tests: what this side's realtime clock (message stamps, TIMESTAMP
    // frames) reads when the connection is created, instead of 0, so a
    // test crosses the stamps' 2^32-microsecond wrap without running 71
    // minutes. The peer learns the clock from TIMESTAMP frames: any origin works.
    std::uint64_t rt_clock_origin_us = 0;
};

// Packets whose stream bytes a connection borrows at most between two
// on_batch_end() calls; beyond that it copies. A receive batch of the
// engine's UdpHost holds up to 16 GRO batches of up to 64 KiB: 112 packets
// of 9000 bytes (4 KiB of views per connection).
constexpr std::size_t kMaxBorrowedSegments = 256;

// What makes a connection authenticated (the endpoint fills it from
// EndpointConfig; empty: keyless).
struct ConnAuth {
    std::shared_ptr<const auth::Psk> psk;          // null: not authenticated
    auth::Mode mode = auth::Mode::encrypt;
    std::shared_ptr<auth::HandshakeProof> proof;   // client: signs the INITIAL, checks replies
    auth::HandshakeNonce client_nonce{};           // client: this attempt's (fresh, from the endpoint)
    bool on() const noexcept { return psk != nullptr; }
};

struct ConnDrops {
    wire::ParseCounters parse;          // malformed packets and garbage frames, by error
    std::uint64_t wrong_peer = 0;       // from an address that is not the peer's
    std::uint64_t duplicate = 0;        // packet number already seen (sequencing)
    std::uint64_t not_established = 0;  // short packet before the handshake ended
    std::uint64_t long_header = 0;      // handshake packet after the handshake ended
    std::uint64_t bad_frame = 0;        // well-formed frame not valid here (wrong class, bad offsets)
    std::uint64_t flow_violation = 0;   // stream data beyond the credit we gave
    std::uint64_t too_fragmented = 0;   // receive buffer holds too many gaps; resent later
    std::uint64_t after_close = 0;      // arrived after the connection closed
    std::uint64_t datagram_queue_full = 0;   // class 0 message arrived, receive queue full
    std::uint64_t invalid_ack = 0;      // ACK of packets never sent, or malformed ranges
    std::uint64_t bad_repair = 0;       // REPAIR frame the FEC decoder refused (malformed, no room)
    std::uint64_t bad_stamp = 0;        // MESSAGE stamped after the peer's clock now: a copy older
                                        // than the stamp's half range (35 min), or forged; dropped
    // Authenticated connections (auth/protect.h, Opener): short packets that
    // did not open. None is acknowledged.
    std::uint64_t auth_failed = 0;      // tag mismatch: wrong key or mode, tampered, forged
    std::uint64_t replay = 0;           // packet number already authenticated (a copy)
    std::uint64_t too_old = 0;          // below the replay window: cannot tell it from a replay
    std::uint64_t auth_malformed = 0;   // too short for header + tag, or packet number >= 2^62
    std::uint64_t key_limit = 0;        // the receive key is retired (too many failures)
    std::uint64_t no_key = 0;           // keys could not be derived (no memory): nothing opens
    std::uint64_t total() const noexcept {
        return parse.total() + wrong_peer + duplicate + not_established + long_header + bad_frame +
               flow_violation + too_fragmented + after_close + datagram_queue_full + invalid_ack +
               bad_repair + bad_stamp + auth_failed + replay + too_old + auth_malformed + key_limit + no_key;
    }
};

struct ConnCounters {
    std::uint64_t packets_sent = 0, bytes_sent = 0;          // UDP payloads
    std::uint64_t packets_received = 0, bytes_received = 0;  // accepted packets
    std::uint64_t stream_bytes_sent = 0;                     // STREAM payload, retransmits included
    std::uint64_t stream_bytes_acked = 0;                    // STREAM payload acknowledged (each byte once)
    std::uint64_t retransmits = 0;                           // STREAM frames that resend bytes
    std::uint64_t retransmitted_bytes = 0;
    std::uint64_t lost = 0;                                  // packets declared lost
    std::uint64_t spurious = 0;                              // ... and acknowledged later
    std::uint64_t ptos = 0;                                  // probe timeouts
    std::uint64_t cc_undos = 0;                              // window reductions undone (losses all spurious)
    std::uint64_t acks_sent = 0, acks_received = 0;          // ACK frames
    std::uint64_t ack_only_packets = 0;                      // packets with nothing but an ACK
    std::uint64_t datagrams_sent = 0, datagrams_received = 0;
    std::uint64_t pings_sent = 0;
    // Short packets sent / accepted without the CRC32C (checksum() == none;
    // the rest of the packets, the handshake's, carry it).
    std::uint64_t no_checksum_sent = 0, no_checksum_received = 0;
    // borrow_receive: packets whose stream bytes were read from the packet
    // (not copied on arrival), and borrowed bytes copied at on_batch_end
    // (or on reordering) because they were still unread.
    std::uint64_t borrowed_packets = 0, settled_bytes = 0;
    // Class realtime (docs/mces.md, "Realtime class"). Receive side:
    std::uint64_t on_time = 0;          // messages delivered at their release time (by the deadline)
    std::uint64_t late_dropped = 0;     // messages skipped: not there by their deadline, never delivered
    std::uint64_t late_arrivals = 0;    // copies that arrived after their deadline (dropped)
    std::uint64_t seq_reanchored = 0;   // messages after an outage of more than 2^15 (their seq re-anchored)
    std::uint64_t fec_repaired = 0;     // messages the FEC decoder recovered in time
    std::uint64_t repairs_received = 0; // REPAIR frames
    sansio::Time jitter = 0;            // RFC 3550 interarrival jitter of the peer's messages, ns
    sansio::Time clock_low = 0;         // the peer's clock mapped to ours (lower bound), 0 before a sample
    // Send side:
    std::uint64_t retransmitted = 0;    // messages sent again (within their deadline)
    std::uint64_t expired = 0;          // messages dropped unsent: they could no longer arrive in time
    std::uint64_t repairs_sent = 0, repair_bytes_sent = 0;   // REPAIR frames and their bodies
    std::uint64_t repairs_dropped = 0;  // repairs pushed out of a full queue unsent
    std::uint32_t fec_repairs = 0;      // repairs per block sent now (0: none; adaptive FEC's choice)
    std::uint32_t fec_loss_ppm = 0;     // the loss adaptive FEC estimates, parts per million
    std::uint32_t resend_extra_milli = 0;   // extra copies per resend now, x1000 (adaptive FEC's choice)
    std::uint64_t extra_copies = 0;     // extra copies of resends queued (sent, in `retransmitted`, unless acked first)
    // Class guaranteed (recovery/guarantee.h), send side:
    std::uint64_t reserved_rate = 0;    // bytes/s the stream is held to (0: not guaranteed)
    std::uint64_t delivered_rate = 0;   // goodput acknowledged in the last interval judged, bytes/s
    std::uint64_t rate_shortfalls = 0;  // times the path stopped delivering the reserved rate
    bool rate_floor = false;            // the floor holds (false: congestion control governs)
    sansio::Time srtt = 0;                                   // smoothed RTT (0 before a sample)
    sansio::Time min_rtt = 0;                                // smallest RTT sample (0 before one)
    std::uint64_t cwnd = 0;                                  // 0 without congestion control
    ConnDrops drops;
};

class Connection {
public:
    enum class State : std::uint8_t {
        connecting,   // client: handshake in progress
        established,  // data flows
        closing,      // close() called or CLOSE sent: finishing the exchange
        closed,       // done; error() says how (0 = graceful)
    };
    enum class Role : std::uint8_t { client, server };

    // Client side: starts the handshake at `now` (asks for chain.service_class
    // with qos). cid: this side's connection ID (the endpoint's, unique).
    // `names`: the explicit element list the chain came from (empty: the
    // default), kept to rebuild the chain if the server grants another class.
    // offer_no_checksum: ask for short packets without the CRC32C (the
    // Endpoint decides, skip_checksum()); they go without it only if the
    // server agrees.
    // auth.on(): authenticated (the handshake signs and checks, then
    // packets are sealed); offer_no_checksum is then ignored.
    Connection(const ConnConfig& cfg, Chain chain, std::vector<std::string> names,
               const sansio::Addr& peer, const wire::ConnectionId& cid, const wire::Qos& qos,
               sansio::Time now, bool offer_no_checksum = false, ConnAuth auth = {});
    // Server side: the handshake accepted `info` (the chain is for the granted
    // class; info.no_checksum: short packets without the CRC32C, as agreed);
    // established at once. auth.on(): keys from info's nonces.
    Connection(const ConnConfig& cfg, Chain chain, const sansio::Addr& peer,
               const wire::AcceptInfo& info, sansio::Time now, ConnAuth auth = {});
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // ---- application side -------------------------------------------------
    // Class 1/2: queues bytes; returns how many were taken (the send buffer
    // bounds it: backpressure), -EAGAIN when none fit or the handshake is not
    // done, -EPIPE after shutdown_write/close, -EOPNOTSUPP on class 0, or the
    // connection's error once closed.
    std::ptrdiff_t write(std::span<const std::uint8_t> data);
    // Class 1/2: copies in-order bytes; returns how many, 0 at the end of the
    // stream (the peer's FIN, everything read), -EAGAIN when nothing is there
    // yet, or the error once closed abortively (buffered bytes are still read
    // after a graceful close).
    std::ptrdiff_t read(std::span<std::uint8_t> buf);
    // Zero-copy forms of write() and read(), for an owner that moves bytes
    // between the connection and a socket (the engine's bridge): it recv()s
    // straight into the send buffer and send()s straight from the receive
    // buffer, saving a copy through a buffer of its own each way.
    // write_reserve: `out` is free space at the tail of the send buffer
    // (valid until the next call on this connection); returns its size
    // (> 0), or what write() of a non-empty span would return instead
    // (-EAGAIN when full, -EPIPE, ...). write_commit(n), n <= that size,
    // then queues its first n bytes: returns n, or -EINVAL.
    std::ptrdiff_t write_reserve(std::span<std::uint8_t>& out);
    std::ptrdiff_t write_commit(std::size_t n);
    // read_peek: `out` views the next in-order bytes in the receive buffer,
    // or with borrow_receive in the received packet (valid until the next
    // call on this connection or its endpoint); returns their count
    // (> 0), or what read() into a non-empty span would return instead (0
    // at the end of the stream, -EAGAIN, the error). read_consume(n), n <=
    // that count, then releases them as read() would: returns n, or -EINVAL.
    std::ptrdiff_t read_peek(std::span<const std::uint8_t>& out);
    std::ptrdiff_t read_consume(std::size_t n);
    // Class 0 and class 3 (realtime): the message calls below. Class 3 stamps
    // each message with the time of the call (the owner's last advance() or
    // event) and delivers it at that time + the latency, or never.
    // Class 0: queues one message (it goes in one packet, whole). Returns its
    // size, -EMSGSIZE above max_datagram_payload(), -EAGAIN when the queue is
    // full or the handshake is not done, -EPIPE after close, -EOPNOTSUPP on a
    // stream class, or the error. Class realtime: the message's deadline is
    // latency after `sent_at` when given (>= 0: when the application sent
    // it: a message held while the handshake ran is older than the
    // connection's establishment), else after the last time the connection
    // was given (an event, a timer): an owner that may call after a quiet
    // spell passes the time.
    std::ptrdiff_t send_datagram(std::span<const std::uint8_t> msg, sansio::Time sent_at = -1);
    // Class 0: takes the next message, cut to buf.size() like UDP (full_len,
    // when given, receives its real length). Returns the bytes copied,
    // -EAGAIN when none is queued, or once closed with nothing left, the
    // error (-ENOTCONN after a graceful close).
    std::ptrdiff_t recv_datagram(std::span<std::uint8_t> buf, std::size_t* full_len = nullptr);
    // Class 1/2: no more writes; the FIN follows the queued bytes. 0, or
    // -ENOTCONN when closed. Class 0: no more send_datagram.
    int shutdown_write();
    // Graceful close: shutdown_write, and this side reads no more (later
    // bytes are discarded). The connection finishes by itself: every byte
    // written is delivered, the peer's FIN arrives, CLOSE is exchanged, state
    // closed with error 0. Without `close` in the chain, or after `linger`,
    // it aborts instead. 0, or -ENOTCONN when already closed.
    int close();
    // Abortive close: RESET to the peer (it sees ECONNRESET), buffers dropped,
    // closed at once with ECONNABORTED. 0, or -ENOTCONN when already closed.
    int abort(std::uint64_t code = kResetAborted);

    State state() const noexcept { return state_; }
    // 0 while open or after a graceful close; else a positive errno.
    int error() const noexcept { return error_; }
    // One line about why it failed ("" otherwise).
    const std::string& message() const noexcept { return message_; }
    // Poll readiness: readable when read/recv_datagram would not return
    // -EAGAIN (data, end of stream, or an error); writable when
    // write/send_datagram would take something (or report an error).
    bool readable() const noexcept;
    bool writable() const noexcept;

    Role role() const noexcept { return role_; }
    const Chain& chain() const noexcept { return chain_; }
    const sansio::Addr& peer() const noexcept { return peer_; }
    const wire::ConnectionId& local_cid() const noexcept { return local_cid_; }
    const wire::ConnectionId& peer_cid() const noexcept { return peer_cid_; }
    std::uint8_t service_class() const noexcept { return chain_.service_class; }
    const wire::Qos& granted() const noexcept { return granted_; }
    // Whether this connection's short packets, both ways, end in the CRC32C:
    // Checksum::none once a handshake agreed to leave it off; crc32c before
    // and otherwise. Its packets are parsed and built accordingly: a packet
    // in the other form is dropped (parse.bad_checksum, or whatever its
    // last four bytes read as).
    wire::Checksum checksum() const noexcept { return sum_; }
    // Whether packets are sealed (an authenticated endpoint): then the AEAD
    // tag stands where the CRC32C would, and checksum() does not apply.
    bool authenticated() const noexcept { return auth_.on(); }
    // Server side: whether the client's address is proved (a cookie, or a
    // short packet from it for this connection). Until then the connection
    // sends at most kAmplificationFactor x the bytes it received from the
    // client (the INITIALs included), ACCEPTs included, and if no short
    // packet comes within handshake_timeout it closes (ETIMEDOUT) and is
    // forgotten at once. Always true for a client.
    bool address_validated() const noexcept { return !unvalidated_; }
    // Authenticated: the handshake nonces the packet keys came from (public
    // on the wire; for diagnostics and the fuzz target).
    const auth::HandshakeNonce& client_nonce() const noexcept { return client_nonce_; }
    const auth::HandshakeNonce& server_nonce() const noexcept { return server_nonce_; }
    // The largest message send_datagram takes.
    std::size_t max_datagram_payload() const noexcept;
    // The same for any connection that runs `chain` with max_datagram_size
    // `size`, before one exists (the engine's UDP bridge tells the program);
    // authenticated: its packets end in the 16-byte tag, not the 4-byte CRC.
    static std::size_t max_message(const Chain& chain, std::size_t size,
                                   bool authenticated = false) noexcept;
    ConnCounters counters() const;
    // Client handshake counters (RETRYs followed, INITIALs sent), if a client.
    const wire::ClientCounters* handshake_counters() const noexcept;

    // ---- driven by the owner ---------------------------------------------
    // A datagram addressed to this connection (any bytes).
    void on_packet(const sansio::Addr& from, std::span<const std::uint8_t> bytes,
                   sansio::Time now);
    void on_timeout(sansio::Time now);
    // The bytes given to on_packet since the last call are about to be
    // reused: stream bytes borrowed from them and not read yet are copied
    // into the receive buffer. Needed only with borrow_receive; cheap when
    // nothing is borrowed. (Endpoint::on_batch_end calls it for its
    // connections.)
    void on_batch_end();
    // The earliest time on_timeout wants calling; kNever when none.
    sansio::Time next_timeout() const noexcept;
    // Builds the next packet to send at `now` into out (resized to its
    // length); false when nothing may go now. With `held`, stream data is
    // not copied into out but left in the send buffer: the packet is
    // out[0, held->split) + held->part[0] + held->part[1] + out[split, end)
    // (see sansio::Datagram::held; valid until the next call other than
    // poll_transmit).
    struct Held {
        std::size_t split = 0;
        std::span<const std::uint8_t> part[2];
    };
    bool poll_transmit(std::vector<std::uint8_t>& out, sansio::Time now, Held* held = nullptr);
    // Closed and past the drain period: the owner may forget it.
    bool drained() const noexcept { return state_ == State::closed && now_ >= drain_until_; }
    // Messages: nothing the application gave waits for this side any more
    // at `now`. Class 0: every datagram sent; realtime: every message
    // acknowledged, given up, or past its deadline (so its resends within
    // it are done). An owner whose socket closed waits for it: unlike the
    // kernel's UDP, the messages live in the process. Closed: true.
    // Streams: true (their owner closes them and waits for the close).
    bool datagrams_settled(sansio::Time now) const noexcept;

private:
    friend class Endpoint;

    struct Rec {                       // what one sent packet carried (token = pn)
        std::uint64_t offset = 0;      // stream offset; messages: the first seq
        std::uint32_t len = 0;         // stream bytes; messages: how many (consecutive seqs)
        bool stream = false, fin = false, max_data = false, settled = false;
        bool messages = false;
    };
    // A realtime message this side sent (or will): kept until acknowledged
    // or past its deadline, to be resent.
    struct OutMsg {
        sansio::Time at = 0;               // when the application gave it (its deadline is at + latency)
        std::vector<std::uint8_t> body;    // stamp (4 bytes) + the message: the MESSAGE body, FEC's source
        bool sent = false, acked = false, dropped = false;
    };
    struct Repair {
        sansio::Time at = 0;
        std::vector<std::uint8_t> body;
    };

    void establish(sansio::Time now);
    // Server, admitted without a cookie: the INITIAL received and the
    // ACCEPT sent count toward the 3x budget; the address must be proved by
    // handshake_timeout from now (the client gives up by then too).
    void await_validation(std::size_t initial_bytes, std::size_t accept_bytes, sansio::Time now) noexcept;
    // What the connection may still send before its address is proved
    // (SIZE_MAX once it is).
    std::size_t amp_room() const noexcept;
    // A repeated INITIAL (received) and its ACCEPT (sent, if it fits):
    // whether the ACCEPT may go.
    bool amp_resend(std::size_t initial_bytes, std::size_t accept_bytes) noexcept;
    // The client's address is proved: no budget, no deadline any more.
    void validate() noexcept;
    void enter_closed(int err, sansio::Time now, std::string msg = {});
    void wake() noexcept;
    void process(const wire::PacketView& v, std::uint64_t pn, sansio::Time now);
    // Authenticated: derives the packet keys once the handshake is over.
    void make_keys();
    // Seals out (finished by pw) as packet pn; false (connection closed) if
    // the key refuses.
    bool seal(std::vector<std::uint8_t>& out, std::size_t header_len, std::uint64_t pn);
    // Opens v (parsed from bytes) in place of its payload; false: dropped, counted.
    bool open(std::span<const std::uint8_t> bytes, wire::PacketView& v, std::uint64_t& pn);
    bool apply_frame(const wire::Frame& f, bool& eliciting, sansio::Time now);
    void on_ack_frame(const wire::AckFrame& a, sansio::Time now);
    void settle(const AckOutcome& out, sansio::Time now);
    void track_undo(const AckOutcome& out, sansio::Time now);
    void settle_rec(std::uint64_t pn, bool acked);
    void check_close_progress(sansio::Time now);
    void drain_released();
    bool build_closed_reply(std::vector<std::uint8_t>& out);
    sansio::Time pto() const noexcept;
    std::size_t mss() const noexcept { return cfg_.max_datagram_size; }
    // Whether a packet with `used` bytes may take one more message of
    // `need` bytes (frame included) beside the ones it has.
    bool may_coalesce(std::size_t used, std::size_t need) const noexcept { return used + need <= coalesce_; }
    void cache_elements() noexcept;
    bool has(Element e) const noexcept { return (elements_ >> static_cast<unsigned>(e)) & 1u; }
    bool borrows() const noexcept { return rb_ && rb_->borrowed() > 0; }
    // Realtime (deadline) helpers: connection.cpp, "realtime".
    bool realtime() const noexcept { return has(Element::deadline); }
    void rt_establish(sansio::Time now);
    bool rt_want_send() const noexcept;
    sansio::Time rt_lead() const noexcept;
    bool rt_viable(const OutMsg& m, sansio::Time now) const noexcept;
    OutMsg* rt_msg(std::uint64_t seq) noexcept;
    void rt_trim(sansio::Time now);
    void rt_fill(wire::PacketWriter& pw, Rec& rec, bool& eliciting, sansio::Time now);
    void rt_take_repairs(sansio::Time now);
    void rt_adapt_fec(sansio::Time now);
    void rt_choose_fec(double loss, sansio::Time now);
    void rt_settle(const Rec& r, bool acked);
    void rt_on_message(const wire::Frame& f, sansio::Time now);
    void rt_on_repair(const wire::Frame& f, sansio::Time now);
    void rt_clock_sample(const wire::AckFrame& a);
    void rt_store(std::uint64_t seq, std::uint64_t stamp_us, std::span<const std::uint8_t> body, sansio::Time now,
                  bool recovered);
    // This side's realtime clock at t: microseconds since creation (plus
    // ConnConfig::rt_clock_origin_us).
    std::uint64_t rt_clock_us(sansio::Time t) const noexcept;
    // A received body's 32-bit stamp as the peer's full time (against our
    // estimate of its clock now); false when no honest peer could have
    // stamped it yet (a copy older than 35 minutes, or forged).
    bool rt_unwrap(std::span<const std::uint8_t> body, sansio::Time now, std::uint64_t& stamp_us) const noexcept;
    void rt_drain_recovered(sansio::Time now);
    void rt_release(sansio::Time now);
    sansio::Time rt_ping_due() const noexcept;
    // What write() may take now: the send buffer's free space, within max_unsent.
    std::size_t write_room() const noexcept;
    void gt_note_waiting() noexcept;

    ConnConfig cfg_;
    Chain chain_;
    std::uint32_t elements_ = 0;       // bit per Element in chain_ (cache_elements)
    std::vector<std::string> names_;
    Role role_;
    State state_ = State::connecting;
    int error_ = 0;
    std::string message_;
    sansio::Time now_ = 0;
    Endpoint* ep_ = nullptr;           // set by the Endpoint; null when detached
    bool borrow_listed_ = false;       // in the Endpoint's list of connections to settle

    sansio::Addr peer_;
    std::size_t coalesce_ = 0;   // ConnConfig::coalesce_size toward this peer
    wire::ConnectionId local_cid_;
    wire::ConnectionId peer_cid_;
    wire::Qos granted_;
    wire::Checksum sum_ = wire::Checksum::crc32c;   // short packets, both ways
    std::unique_ptr<wire::ClientHandshake> hs_;
    // Authentication: the key, mode and (client) proof; the packet keys
    // once established; the plaintext of the packet being processed.
    ConnAuth auth_;
    std::uint32_t version_ = wire::kVersion1;   // the handshake's
    auth::HandshakeNonce client_nonce_{}, server_nonce_{};
    auth::Protection prot_;
    std::vector<std::uint8_t> rx_plain_;

    // send side
    std::uint64_t next_pn_ = 0;
    LossDetector ld_;
    std::unique_ptr<CongestionController> cc_;
    Pacer pacer_;
    std::deque<Rec> recs_;             // by token, from recs_base_
    AckOutcome ack_out_;               // reused by every ACK and loss timer: no allocation
    std::uint64_t recs_base_ = 0;
    std::uint64_t last_tracked_pn_ = 0;   // the last packet given to ld_
    bool any_tracked_ = false;
    unsigned probes_ = 0;
    sansio::Time pacer_at_ = sansio::kNever;
    bool app_limited_ = false;
    // Class guaranteed with a granted rate: the reserved rate's ceiling and
    // floor; gt_at_: when its bucket lets the next new bytes go.
    std::unique_ptr<Guarantee> gt_;
    sansio::Time gt_at_ = sansio::kNever;
    // The current recovery episode, for undo (track_undo).
    bool undo_open_ = false;
    std::uint64_t undo_first_pn_ = 0;   // the first packet whose loss started it
    std::uint64_t undo_left_ = 0;       // its losses not (yet) proved spurious

    // receive side
    RangeSet rs_;
    AckPolicy ap_;
    std::int64_t largest_rx_ = -1;

    // stream (classes 1, 2)
    std::unique_ptr<SendBuffer> sb_;
    std::unique_ptr<RecvBuffer> rb_;
    std::unique_ptr<FlowReceiver> fr_;
    std::unique_ptr<FlowSender> fs_;

    // datagrams (class 0)
    std::deque<std::vector<std::uint8_t>> dg_out_, dg_in_;
    std::size_t dg_out_bytes_ = 0, dg_in_bytes_ = 0;

    IdleTimer idle_;

    // realtime (class 3)
    sansio::Time rt_epoch_ = 0;        // this side's stamps count microseconds from here
    sansio::Time rt_latency_ = 0;
    sansio::Time rt_margin_ = 0;   // the symmetric clock's (rt_establish)
    std::deque<OutMsg> rt_out_;        // by seq, from rt_out_base_
    std::uint64_t rt_out_base_ = 0;
    std::uint64_t rt_next_new_ = 0;    // the first message not sent yet
    std::size_t rt_out_bytes_ = 0;
    std::deque<std::uint64_t> rt_rtx_; // seqs to resend
    std::deque<Repair> rt_repairs_;    // REPAIR bodies to send
    std::unique_ptr<fec::Encoder> enc_;
    bool fec_on_ = true;                       // repairs sent (adaptive FEC may turn them off)
    std::uint64_t fa_sent_ = 0, fa_lost_ = 0;  // packets sent / truly lost at the last estimate
    double fa_loss_ = -1;                      // smoothed loss estimate (-1: none yet)
    bool fa_prior_ = true;                     // the prior's choice is still to make (at the first RTT sample)
    double rt_extra_ = 0;                      // extra copies per resend (adaptive FEC's other tool)
    double rt_extra_acc_ = 0;                  // its fractional part, accumulated over resends
    std::unique_ptr<fec::Decoder> dec_;
    std::unique_ptr<TimingBuffer> tb_;
    std::vector<std::pair<std::uint64_t, sansio::Time>> rt_sent_;   // (pn, send time) by pn % size
    bool pkt_has_time_ = false;        // the packet being processed carried TIMESTAMP
    std::uint64_t pkt_time_us_ = 0;
    bool pkt_ping_ = false;            // ... and PING
    sansio::Time rt_last_rx_ = sansio::kNever;          // last MESSAGE from the peer
    std::int64_t rt_rx_largest_ = -1;  // largest seq taken from a MESSAGE (its low 16 bits decode against it)
    std::uint64_t rt_rx_largest_stamp_ = 0;   // ... and its send time (us, unwrapped)
    void rt_note_largest(std::uint64_t seq, std::uint64_t stamp) noexcept;
    sansio::Time rt_last_eliciting_ = 0;                // last ack-eliciting packet we sent
    std::vector<std::uint8_t> rt_scratch_;

    // Address validation (server, admitted without a cookie).
    bool unvalidated_ = false;
    std::uint64_t amp_rx_ = 0, amp_tx_ = 0;   // bytes from / to the client meanwhile
    sansio::Time validate_by_ = sansio::kNever;
    // Client: until the server is heard from, a class without sack (whose
    // PING no loss detector resends) PINGs again at confirm_at_, so a
    // server that admitted it without a cookie learns its address.
    sansio::Time confirm_at_ = sansio::kNever;
    sansio::Time confirm_rto_ = 0;
    sansio::Time confirm_until_ = sansio::kNever;

    // control frames waiting for a packet
    bool max_data_pending_ = false;
    bool ping_pending_ = false;
    bool pong_pending_ = false;        // answer a PING when there are no ACKs (class 0)
    bool close_pending_ = false;
    bool reset_pending_ = false;
    std::uint64_t reset_code_ = 0;
    std::uint64_t close_code_ = kCloseNoError;

    // close state
    bool write_shut_ = false;
    bool released_ = false;            // close() called: the application reads no more
    bool close_sent_ = false;
    bool close_received_ = false;
    bool reset_sent_ = false;          // this side aborted
    std::uint32_t close_sends_ = 0;
    sansio::Time close_timer_ = sansio::kNever;
    sansio::Time linger_until_ = sansio::kNever;
    sansio::Time drain_until_ = sansio::kNever;
    std::uint32_t reset_sends_left_ = 0;
    sansio::Time reset_timer_ = sansio::kNever;
    std::uint32_t replies_left_ = 0;   // answers to late packets while closed

    ConnCounters counters_;
    // Scratch for the handshake's datagram (reused).
    std::vector<std::uint8_t> scratch_;
};

}  // namespace gs::mces
