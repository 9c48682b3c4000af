// The connection: the recovery elements driven by packets as
// tests/mces/recovery/e2e_test.cpp drives them by abstract segments, with
// several frames per packet, the handshake in front and the close exchange
// behind.
#include "core/mces/conn/connection.h"

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstring>

#include "core/mces/conn/endpoint.h"
#include "core/mces/fec/rate.h"
#include "core/mces/wire/frame.h"
#include "core/mces/wire/packet.h"

namespace gs::mces {

using sansio::kNever;
using sansio::Time;

static_assert(wire::kAuthTagLen == auth::kTagLen && wire::kAuthProofLen == auth::kProofTrailerLen,
              "packet.h's auth trailers are auth's");

namespace {

ConnConfig sanitize(ConnConfig c) {
    c.max_datagram_size = std::clamp<std::size_t>(c.max_datagram_size, wire::kMinInitialSize,
                                                  wire::kMaxPacketSize);
    c.send_buffer = std::max<std::size_t>(c.send_buffer, 1);
    c.recv_window = std::max(c.recv_window, kInitialCredit);
    c.recv_window_max = std::max(c.recv_window_max, c.recv_window);
    c.datagram_queue = std::max<std::size_t>(c.datagram_queue, 1);
    c.close_tries = std::max<std::uint32_t>(c.close_tries, 1);
    return c;
}

IdleConfig idle_config(const ConnConfig& cfg, const Chain& chain) {
    IdleConfig ic = cfg.idle;
    if (!chain.has(Element::keepalive)) ic.keepalive = 0;
    return ic;
}

PacerConfig pacer_config(const ConnConfig& cfg) {
    PacerConfig pc;
    pc.mss = static_cast<std::uint32_t>(cfg.max_datagram_size);
    pc.burst_time = sansio::kMillisecond;   // bursts of 1 ms at the rate, up to 64 packets
    return pc;
}

}  // namespace

Connection::Connection(const ConnConfig& cfg, Chain chain, std::vector<std::string> names,
                       const sansio::Addr& peer, const wire::ConnectionId& cid, const wire::Qos& qos,
                       Time now, bool offer_no_checksum, ConnAuth auth)
    : cfg_(sanitize(cfg)),
      chain_(std::move(chain)),
      names_(std::move(names)),
      role_(Role::client),
      now_(now),
      peer_(peer),
      local_cid_(cid),
      pacer_(pacer_config(cfg_)),
      ap_(cfg_.ack),
      idle_(idle_config(cfg_, chain_), now),
      rt_epoch_(now) {
    wire::ClientConfig hc;
    hc.cid = cid;
    hc.service_class = chain_.service_class;
    hc.qos = qos;
    hc.initial_rto = cfg_.handshake_rto;
    if (chain_.has(Element::deadline)) {
        // Realtime: a lost INITIAL must not cost the stream's first quarter
        // second (everything sent meanwhile would miss its deadline); a
        // spurious one costs the stateless server a RETRY.
        const Time lat = qos.latency_us ? static_cast<Time>(*qos.latency_us) * sansio::kMicrosecond : cfg_.latency;
        hc.initial_rto = std::min(hc.initial_rto, std::max<Time>(lat / 4, 20 * sansio::kMillisecond));
    }
    hc.max_rto = cfg_.handshake_max_rto;
    hc.give_up_after = cfg_.handshake_timeout;
    auth_ = std::move(auth);
    if (auth_.on()) {
        // The AEAD tag replaces the CRC32C; sealing needs the whole packet
        // in one buffer and opening writes the plaintext to rx_plain_, so
        // neither zero-copy path applies (Held: poll_transmit).
        offer_no_checksum = false;
        cfg_.borrow_receive = false;
        hc.proof = auth_.proof;
        hc.nonce = auth_.client_nonce;
        client_nonce_ = auth_.client_nonce;
    }
    hc.offer_no_checksum = offer_no_checksum;
    hs_ = std::make_unique<wire::ClientHandshake>(std::move(hc));
    hs_->start(now);
    cache_elements();
}

Connection::Connection(const ConnConfig& cfg, Chain chain, const sansio::Addr& peer,
                       const wire::AcceptInfo& info, Time now, ConnAuth auth)
    : cfg_(sanitize(cfg)),
      chain_(std::move(chain)),
      role_(Role::server),
      now_(now),
      peer_(peer),
      local_cid_(info.server_cid),
      peer_cid_(info.client_cid),
      granted_(info.granted),
      sum_(info.no_checksum ? wire::Checksum::none : wire::Checksum::crc32c),
      pacer_(pacer_config(cfg_)),
      ap_(cfg_.ack),
      idle_(idle_config(cfg_, chain_), now),
      rt_epoch_(now) {
    auth_ = std::move(auth);
    version_ = info.version;
    if (auth_.on()) {
        sum_ = wire::Checksum::crc32c;   // not used: the tag stands there (the endpoint never agrees)
        cfg_.borrow_receive = false;     // as for the client
        client_nonce_ = info.client_nonce;
        server_nonce_ = info.server_nonce;
    }
    cache_elements();
    establish(now);
}

Connection::~Connection() = default;

// Element tests run several times per packet: a bit mask, not a search.
static_assert(kElementCount <= 32, "Connection::elements_ holds one bit per element");
void Connection::cache_elements() noexcept {
    elements_ = 0;
    for (Element e : chain_.elements) elements_ |= std::uint32_t{1} << static_cast<unsigned>(e);
    coalesce_ = cfg_.coalesce_size == 0 || peer_.is_loopback() ? mss() : std::min(cfg_.coalesce_size, mss());
}

void Connection::wake() noexcept {
    if (ep_ != nullptr) ep_->wake(*this);
}

Time Connection::pto() const noexcept { return ld_.rtt().pto(0); }

std::size_t Connection::max_datagram_payload() const noexcept {
    return max_message(chain_, cfg_.max_datagram_size, authenticated());
}

std::size_t Connection::max_message(const Chain& chain, std::size_t size, bool authenticated) noexcept {
    // header: flags, the peer's ID (at most 20), a 4-byte packet number; CRC
    // (counted even when the connection has none: the answer must not
    // change when the handshake ends) or the AEAD tag; the DATAGRAM frame's
    // type and length varint.
    const std::size_t fixed =
        1 + wire::kMaxCidLen + 4 + (authenticated ? wire::kAuthTagLen : wire::kChecksumLen) + 1;
    const std::size_t room = size - fixed;
    if (chain.has(Element::deadline)) {
        // A message goes whole in one MESSAGE frame, and with fec its
        // repair symbol (2 + stamp + message, behind a 15-byte header) in
        // one REPAIR frame: the larger overhead of the two bounds it. A
        // packet may start with a TIMESTAMP frame (type and a varint).
        // A message that fills the packet is its last frame: MESSAGE_LAST.
        std::size_t over = wire::kMessageLastOverhead;
        if (chain.has(Element::fec))
            over = std::max(over, wire::kMaxRepairCarrier + fec::kRepairHeaderSize + fec::kLengthPrefix +
                                      wire::kMessageTimestampLen);
        return room + 1 - over - (1 + 8);
    }
    return room - wire::varint_size(room);
}

const wire::ClientCounters* Connection::handshake_counters() const noexcept {
    return hs_ ? &hs_->counters() : nullptr;
}

ConnCounters Connection::counters() const {
    ConnCounters c = counters_;
    c.srtt = ld_.rtt().has_sample() ? ld_.rtt().smoothed() : 0;
    c.min_rtt = ld_.rtt().has_sample() ? ld_.rtt().min_rtt() : 0;
    c.cwnd = cc_ ? cc_->cwnd() : 0;
    c.spurious = ld_.spurious_losses();
    if (gt_) {
        c.reserved_rate = static_cast<std::uint64_t>(gt_->rate());
        c.delivered_rate = static_cast<std::uint64_t>(gt_->status().delivered);
        c.rate_shortfalls = gt_->status().shortfalls;
        c.rate_floor = gt_->floor();
    }
    if (rb_) {
        c.borrowed_packets = rb_->borrowed_segments();
        c.settled_bytes = rb_->settled_bytes();
    }
    if (tb_) {
        c.late_dropped = tb_->counters().skipped;
        c.late_arrivals = tb_->counters().late;
        c.jitter = tb_->jitter();
        c.clock_low = tb_->has_clock() ? tb_->clock_low() : 0;
    }
    return c;
}

// The handshake is over (client: ACCEPT arrived; server: at creation). The
// chain is final now: the server may have granted another class.
void Connection::establish(Time now) {
    if (role_ == Role::client) {
        peer_cid_ = hs_->server_cid();
        granted_ = hs_->granted();
        version_ = hs_->version();
        server_nonce_ = hs_->server_nonce();
        // The server's ACCEPT agreed (it only does when we offered): from
        // now on both sides build and parse short packets without the CRC.
        sum_ = hs_->no_checksum() ? wire::Checksum::none : wire::Checksum::crc32c;
        const std::uint8_t g = hs_->granted_class();
        if (g != chain_.service_class) {
            ChainResult r = names_.empty() ? default_chain(g) : make_chain(names_, g);
            if (!r.ok()) {
                // Tell the server, which already counts us as connected.
                state_ = State::established;
                reset_code_ = kResetAborted;
                reset_pending_ = true;
                reset_sent_ = true;
                enter_closed(ECONNREFUSED, now,
                             "the MCES server granted class " + class_name(g) + " instead of " +
                                 class_name(chain_.service_class) + ": " + r.error);
                return;
            }
            chain_ = std::move(*r.chain);
            cache_elements();
        }
    }
    state_ = State::established;
    if (role_ == Role::client && hs_->counters().retries == 0) {
        // No RETRY: the server may have admitted us without a cookie, and
        // holds its sending to 3x our INITIAL until a short packet from us
        // proves our address. Send one now even if the program has nothing
        // to say (a server that speaks first waits on it); with sack the
        // loss detector resends it, without, confirm_at_ does.
        ping_pending_ = true;
        if (!chain_.has(Element::sack)) {
            confirm_rto_ = cfg_.handshake_rto;
            confirm_at_ = now + confirm_rto_;
            confirm_until_ = now + cfg_.handshake_timeout;
        }
    }
    if (auth_.on()) make_keys();
    idle_ = IdleTimer(idle_config(cfg_, chain_), now);
    if (has(Element::congestion)) {
        CcConfig cc;
        cc.mss = static_cast<std::uint32_t>(mss());
        // The chain's names were checked: the factory knows the algorithm.
        if (make_congestion_controller(chain_.cc, cc, cc_) != 0) cc_.reset();
    }
    if (chain_.stream()) {
        sb_ = std::make_unique<SendBuffer>(cfg_.send_buffer);
        rb_ = std::make_unique<RecvBuffer>(static_cast<std::size_t>(cfg_.recv_window_max), 1024,
                                           cfg_.borrow_receive ? kMaxBorrowedSegments : 0);
        fr_ = std::make_unique<FlowReceiver>(FlowConfig{cfg_.recv_window, cfg_.recv_window_max});
        fs_ = std::make_unique<FlowSender>(kInitialCredit);
        // The peer assumes kInitialCredit until it hears our window.
        max_data_pending_ = fr_->limit() > kInitialCredit;
    }
    if (sb_ && chain_.service_class == kClassGuaranteed && granted_.rate && *granted_.rate > 0) {
        GuaranteeConfig g;
        g.rate = static_cast<double>(*granted_.rate);
        g.mss = static_cast<std::uint32_t>(mss());
        gt_ = std::make_unique<Guarantee>(g, now);
    }
    if (has(Element::pacing) && !cc_ && granted_.rate && *granted_.rate > 0)
        pacer_.set_rate_bytes_per_sec(gt_ ? gt_->wire_rate() : static_cast<double>(*granted_.rate));
    if (realtime()) rt_establish(now);
}

// ---- address validation (server admitted without a cookie) -------------------

namespace {
// Below this much budget a packet is not worth building (an ACK with a few
// ranges, a PING): the connection waits for the client instead.
constexpr std::size_t kMinAmpPacket = 64;
}  // namespace

void Connection::await_validation(std::size_t initial_bytes, std::size_t accept_bytes, Time now) noexcept {
    unvalidated_ = true;
    amp_rx_ = initial_bytes;
    amp_tx_ = accept_bytes;
    // The handshake timeout, not a few PTOs: the client keeps resending its
    // INITIAL (each gets the ACCEPT again) until it gives up after this same
    // time, and with no RTT sample yet a PTO is a guess (1 s), so anything
    // shorter could forget an honest client on a lossy path whose ACCEPT
    // got through late. The state a spoofer pins this way is bounded by
    // ServerConfig::max_unvalidated.
    validate_by_ = now + cfg_.handshake_timeout;
}

std::size_t Connection::amp_room() const noexcept {
    if (!unvalidated_) return SIZE_MAX;
    const std::uint64_t budget = kAmplificationFactor * amp_rx_;
    return budget > amp_tx_ ? static_cast<std::size_t>(budget - amp_tx_) : 0;
}

bool Connection::amp_resend(std::size_t initial_bytes, std::size_t accept_bytes) noexcept {
    if (!unvalidated_) return true;
    amp_rx_ += initial_bytes;
    if (accept_bytes > amp_room()) return false;
    amp_tx_ += accept_bytes;
    wake();   // more budget: what waited may go
    return true;
}

void Connection::validate() noexcept {
    unvalidated_ = false;
    validate_by_ = kNever;
    wake();   // what the budget held back may go now
}

// ---- authentication ---------------------------------------------------------

void Connection::make_keys() {
    auth::HandshakeValues hv;
    hv.version = version_;
    hv.mode = auth_.mode;
    const bool client = role_ == Role::client;
    hv.client_cid = client ? local_cid_ : peer_cid_;
    hv.server_cid = client ? peer_cid_ : local_cid_;
    hv.client_nonce = client_nonce_;
    hv.server_nonce = server_nonce_;
    // On failure (no memory for guarded keys) prot_ stays keyless: nothing
    // is sent (seal() closes the connection) and nothing opens (no_key).
    (void)auth::make_protection(*auth_.psk, hv, client ? auth::Role::client : auth::Role::server, prot_);
}

bool Connection::seal(std::vector<std::uint8_t>& out, std::size_t header_len, std::uint64_t pn) {
    const int r = prot_.send.seal(out, header_len, pn);
    if (r == 0) return true;
    // -ENOKEY (keys not derived), -EKEYEXPIRED (2^62 packets): the
    // connection cannot send safely any more.
    enter_closed(ECONNABORTED, now_,
                 std::string("MCES connection closed: cannot seal packet ") + std::to_string(pn) + " (" +
                     std::strerror(-r) + "); the packet keys are " +
                     (r == -ENOKEY ? "missing (out of guarded memory?)" : "used up"));
    return false;
}

bool Connection::open(std::span<const std::uint8_t> bytes, wire::PacketView& v, std::uint64_t& pn) {
    // The full packet number from the largest one that authenticated (a
    // forged packet must not move the decoding window).
    pn = wire::decode_packet_number(prot_.recv.largest(), v.hdr.pn_truncated, v.hdr.pn_len);
    const std::size_t header_len = static_cast<std::size_t>(v.payload.data() - bytes.data());
    if (rx_plain_.size() < v.payload.size()) rx_plain_.resize(v.payload.size());
    std::span<const std::uint8_t> plain;
    const auth::OpenStatus st = prot_.recv.open(bytes, header_len, pn, rx_plain_, plain);
    switch (st) {
    case auth::OpenStatus::ok: v.payload = plain; return true;
    case auth::OpenStatus::malformed: ++counters_.drops.auth_malformed; break;
    case auth::OpenStatus::replay: ++counters_.drops.replay; break;
    case auth::OpenStatus::too_old: ++counters_.drops.too_old; break;
    case auth::OpenStatus::auth_failed: ++counters_.drops.auth_failed; break;
    case auth::OpenStatus::key_limit: ++counters_.drops.key_limit; break;
    case auth::OpenStatus::no_key: ++counters_.drops.no_key; break;
    case auth::OpenStatus::no_room: ++counters_.drops.auth_malformed; break;   // cannot happen: sized above
    }
    return false;
}

void Connection::enter_closed(int err, Time now, std::string msg) {
    if (state_ == State::closed) return;
    state_ = State::closed;
    error_ = err;
    if (!msg.empty()) message_ = std::move(msg);
    drain_until_ = now + std::max(3 * pto(), cfg_.min_drain);
    replies_left_ = 8;
    probes_ = 0;
    ping_pending_ = pong_pending_ = max_data_pending_ = false;
    pacer_at_ = gt_at_ = close_timer_ = linger_until_ = kNever;
    dg_out_.clear();
    dg_out_bytes_ = 0;
    rt_out_.clear();
    rt_out_base_ = rt_next_new_;
    rt_out_bytes_ = 0;
    rt_rtx_.clear();
    rt_repairs_.clear();
    rt_last_rx_ = kNever;
    if (enc_) enc_.reset();
    if (err != 0) {
        // Abortive: what was buffered is gone (TCP discards it on RST too).
        dg_in_.clear();
        dg_in_bytes_ = 0;
        if (tb_) tb_.reset();
    } else if (tb_) {
        // Graceful: the messages the timing buffer holds are still released
        // at their times (each within one latency from now), so the
        // connection stays until the last of them could be.
        drain_until_ = std::max(drain_until_, now + rt_latency_);
    }
    wake();
}

// ---- application side -----------------------------------------------------

std::size_t Connection::write_room() const noexcept {
    const std::size_t room = sb_->free_space();
    if (cfg_.max_unsent == 0) return room;
    const std::uint64_t cap = std::max<std::uint64_t>(cfg_.max_unsent, ld_.bytes_in_flight());
    const std::uint64_t unsent = sb_->unsent();
    return unsent >= cap ? 0 : static_cast<std::size_t>(std::min<std::uint64_t>(room, cap - unsent));
}

std::ptrdiff_t Connection::write(std::span<const std::uint8_t> data) {
    if (state_ == State::connecting) return -EAGAIN;
    if (state_ == State::closed) return error_ ? -error_ : -EPIPE;
    if (!sb_) return -EOPNOTSUPP;
    if (write_shut_) return -EPIPE;
    const std::size_t n = sb_->write(data.first(std::min(data.size(), write_room())));
    if (n == 0 && !data.empty()) return -EAGAIN;
    if (n > 0) wake();
    return static_cast<std::ptrdiff_t>(n);
}

std::ptrdiff_t Connection::read(std::span<std::uint8_t> buf) {
    if (state_ == State::connecting) return -EAGAIN;
    if (error_ != 0) return -error_;
    if (!rb_) return -EOPNOTSUPP;
    if (released_) return -ENOTCONN;
    const std::size_t n = rb_->read(buf);
    if (n > 0) {
        fr_->on_consumed(rb_->read_offset());
        if (fr_->update_due()) wake();
        return static_cast<std::ptrdiff_t>(n);
    }
    if (rb_->finished() || state_ == State::closed) return 0;
    return buf.empty() ? 0 : -EAGAIN;
}

std::ptrdiff_t Connection::write_reserve(std::span<std::uint8_t>& out) {
    out = {};
    if (state_ == State::connecting) return -EAGAIN;
    if (state_ == State::closed) return error_ ? -error_ : -EPIPE;
    if (!sb_) return -EOPNOTSUPP;
    if (write_shut_) return -EPIPE;
    out = sb_->write_space();
    out = out.first(std::min(out.size(), write_room()));
    return out.empty() ? -EAGAIN : static_cast<std::ptrdiff_t>(out.size());
}

std::ptrdiff_t Connection::write_commit(std::size_t n) {
    if (state_ != State::established && state_ != State::closing) return -EINVAL;
    if (!sb_ || write_shut_ || n > sb_->write_space().size()) return -EINVAL;
    if (n == 0) return 0;
    sb_->commit(n);
    wake();
    return static_cast<std::ptrdiff_t>(n);
}

std::ptrdiff_t Connection::read_peek(std::span<const std::uint8_t>& out) {
    out = {};
    if (state_ == State::connecting) return -EAGAIN;
    if (error_ != 0) return -error_;
    if (!rb_) return -EOPNOTSUPP;
    if (released_) return -ENOTCONN;
    out = rb_->peek();
    if (!out.empty()) return static_cast<std::ptrdiff_t>(out.size());
    if (rb_->finished() || state_ == State::closed) return 0;
    return -EAGAIN;
}

std::ptrdiff_t Connection::read_consume(std::size_t n) {
    if (!rb_ || released_ || error_ != 0 || n > rb_->peek().size()) return -EINVAL;
    if (n == 0) return 0;
    rb_->consume(n);
    fr_->on_consumed(rb_->read_offset());
    if (fr_->update_due()) wake();
    return static_cast<std::ptrdiff_t>(n);
}

std::ptrdiff_t Connection::send_datagram(std::span<const std::uint8_t> msg, Time sent_at) {
    if (state_ == State::connecting) return -EAGAIN;
    if (state_ == State::closed) return error_ ? -error_ : -EPIPE;
    if (sb_) return -EOPNOTSUPP;
    if (write_shut_ || released_) return -EPIPE;
    if (msg.size() > max_datagram_payload()) return -EMSGSIZE;
    if (realtime()) {
        const Time at = ep_ != nullptr ? std::max(now_, ep_->now_) : now_;
        const Time sent = sent_at >= 0 ? std::max(sent_at, rt_epoch_) : at;
        const Time now = std::max(at, sent);
        now_ = std::max(now_, now);   // the owner's time, when it passed one
        // Past its deadline already (held through a slow handshake): taken
        // and lost, as the network would lose it.
        if (sent + rt_latency_ < now) {
            ++counters_.expired;
            return static_cast<std::ptrdiff_t>(msg.size());
        }
        rt_trim(now);
        // Room: the queue holds what is within one latency of its send
        // (rt_trim drops the rest), as much as the receiver's timing buffer
        // may (rt_window_max, rt_bytes_max): a burst held through the
        // handshake fits. Sent messages give way to new ones (they would
        // only be resent); unsent ones do not.
        // At most kMaxMessageSpan: every copy sent is then within 2^15 of
        // the largest seq the peer received, which its 16 bits need (frame.h).
        const std::size_t max_n =
            std::min(std::max(cfg_.datagram_queue, cfg_.rt_window_max), wire::kMaxMessageSpan);
        const std::size_t max_b = std::max(cfg_.datagram_queue_bytes, cfg_.rt_bytes_max);
        while (!rt_out_.empty() && rt_out_base_ < rt_next_new_ &&
               (rt_out_.size() >= max_n || rt_out_bytes_ + msg.size() > max_b)) {
            rt_out_bytes_ -= rt_out_.front().body.size();
            rt_out_.pop_front();
            ++rt_out_base_;
        }
        if (rt_out_.size() >= max_n || rt_out_bytes_ + msg.size() > max_b) return -EAGAIN;
        OutMsg m;
        // A message held while the handshake ran keeps the time the
        // program sent it (the receiver's first clock bound comes from
        // TIMESTAMP frames, not from message stamps).
        m.at = sent;
        m.body.resize(wire::kMessageTimestampLen + msg.size());
        wire::put_stamp(m.body, rt_clock_us(m.at));   // the low 32 bits: the peer unwraps them
        std::copy(msg.begin(), msg.end(), m.body.begin() + wire::kMessageTimestampLen);
        rt_out_bytes_ += m.body.size();
        rt_out_.push_back(std::move(m));
        wake();
        return static_cast<std::ptrdiff_t>(msg.size());
    }
    if (dg_out_.size() >= cfg_.datagram_queue || dg_out_bytes_ + msg.size() > cfg_.datagram_queue_bytes)
        return -EAGAIN;
    dg_out_.emplace_back(msg.begin(), msg.end());
    dg_out_bytes_ += msg.size();
    wake();
    return static_cast<std::ptrdiff_t>(msg.size());
}

std::ptrdiff_t Connection::recv_datagram(std::span<std::uint8_t> buf, std::size_t* full_len) {
    if (state_ == State::connecting) return -EAGAIN;
    if (sb_) return -EOPNOTSUPP;
    if (dg_in_.empty()) {
        if (state_ == State::closed) return error_ ? -error_ : -ENOTCONN;
        return -EAGAIN;
    }
    const auto& m = dg_in_.front();
    const std::size_t n = std::min(buf.size(), m.size());
    std::copy_n(m.begin(), n, buf.begin());
    if (full_len != nullptr) *full_len = m.size();
    dg_in_bytes_ -= m.size();
    dg_in_.pop_front();
    return static_cast<std::ptrdiff_t>(n);
}

int Connection::shutdown_write() {
    if (state_ == State::closed) return -ENOTCONN;
    if (state_ == State::connecting) return -ENOTCONN;
    if (write_shut_) return 0;
    write_shut_ = true;
    if (sb_) sb_->finish();
    check_close_progress(now_);
    wake();
    return 0;
}

int Connection::close() {
    if (state_ == State::closed) return -ENOTCONN;
    if (state_ == State::connecting || !has(Element::close)) return abort(kResetAborted);
    write_shut_ = true;
    if (sb_ && !sb_->finished()) sb_->finish();
    released_ = true;
    drain_released();
    state_ = State::closing;
    check_close_progress(now_);
    wake();
    return 0;
}

int Connection::abort(std::uint64_t code) {
    if (state_ == State::closed) return -ENOTCONN;
    if (state_ != State::connecting) {
        reset_code_ = code;
        reset_pending_ = true;
        reset_sent_ = true;
        reset_sends_left_ = 2;   // two more copies, a PTO apart: RESET is not acknowledged
        reset_timer_ = now_ + pto();
    }
    enter_closed(ECONNABORTED, now_, "aborted by this side");
    return 0;
}

bool Connection::readable() const noexcept {
    if (state_ == State::connecting) return false;
    if (state_ == State::closed) return true;
    if (rb_) return released_ || rb_->readable() > 0 || rb_->finished();
    return !dg_in_.empty();
}

bool Connection::writable() const noexcept {
    if (state_ == State::connecting) return false;
    if (state_ == State::closed || write_shut_) return true;   // the call reports the error
    if (sb_) return write_room() > 0;
    if (realtime())
        return rt_out_.size() < cfg_.datagram_queue || rt_out_base_ < rt_next_new_;
    return dg_out_.size() < cfg_.datagram_queue && dg_out_bytes_ < cfg_.datagram_queue_bytes;
}

// ---- input ------------------------------------------------------------------

void Connection::on_packet(const sansio::Addr& from, std::span<const std::uint8_t> bytes, Time now) {
    now_ = std::max(now_, now);
    if (!(from == peer_)) {
        ++counters_.drops.wrong_peer;
        return;
    }
    amp_rx_ += bytes.size();   // the budget counts all the client sent (used while unvalidated)
    const bool is_long = !bytes.empty() && (bytes[0] & 0x80) != 0;
    if (state_ == State::connecting) {
        if (!is_long) {
            ++counters_.drops.not_established;
            return;
        }
        hs_->on_datagram(bytes, now);
        if (hs_->state() == wire::ClientHandshake::State::established) {
            establish(now);
            wake();
        } else if (hs_->state() == wire::ClientHandshake::State::failed) {
            enter_closed(ECONNREFUSED, now, hs_->message());
        }
        return;
    }
    if (is_long) {
        ++counters_.drops.long_header;
        return;
    }
    wire::PacketView v;
    // The handshake settled whether our short packets carry the CRC32C; the
    // parser is told, so a packet without it is read to its last byte.
    // Authenticated: the tag stands there instead, checked by open().
    const wire::ParseError e = wire::parse_packet(bytes, local_cid_.len, v, sum_,
                                                  authenticated() ? wire::Auth::on : wire::Auth::off);
    if (e != wire::ParseError::ok) {
        counters_.drops.parse.count(e);
        return;
    }
    if (v.hdr.type != wire::PacketType::data || !(v.hdr.dcid == local_cid_)) {
        ++counters_.drops.bad_frame;
        return;
    }
    std::uint64_t pn;
    if (authenticated()) {
        if (!open(bytes, v, pn)) return;   // counted; never acknowledged
    } else {
        pn = wire::decode_packet_number(largest_rx_, v.hdr.pn_truncated, v.hdr.pn_len);
    }
    // It carries the ID only our ACCEPT told (and, keyed, opened under this
    // connection's keys): whoever sent it receives at that address.
    if (unvalidated_) validate();
    process(v, pn, now);
}

void Connection::process(const wire::PacketView& v, std::uint64_t pn, Time now) {
    if (pn > RangeSet::kMaxPacketNumber) {
        ++counters_.drops.bad_frame;
        return;
    }
    const bool seq = has(Element::sequencing);
    if (seq && rs_.is_duplicate(pn)) {
        ++counters_.drops.duplicate;
        return;
    }
    // Every frame must parse before any takes effect: garbage drops the
    // whole packet, which is then not acknowledged.
    const wire::ParseError pe = wire::validate_payload(wire::PacketType::data, v.payload);
    if (pe != wire::ParseError::ok) {
        counters_.drops.parse.count(pe);
        return;
    }
    wire::FrameReader fr(wire::PacketType::data, v.payload);
    wire::Frame f;
    if (state_ == State::closed) {
        // Late packets: answer a CLOSE with CLOSE after a graceful end, and
        // anything but a RESET with RESET after an abort, a bounded number of
        // times; everything else is dropped.
        bool has_close = false, has_reset = false;
        while (fr.next(f) == wire::ParseError::ok && !fr.done()) {
            has_close |= f.type == wire::FrameType::close;
            has_reset |= f.type == wire::FrameType::reset;
        }
        ++counters_.drops.after_close;
        if (replies_left_ == 0) return;
        if (reset_sent_ && !has_reset) {
            reset_pending_ = true;
            --replies_left_;
        } else if (!reset_sent_ && error_ == 0 && close_sent_ && has_close) {
            close_pending_ = true;
            --replies_left_;
        }
        return;
    }
    bool eliciting = false;
    pkt_has_time_ = pkt_ping_ = false;
    for (;;) {
        const wire::ParseError fe = fr.next(f);
        if (fe != wire::ParseError::ok || fr.done()) break;
        if (!apply_frame(f, eliciting, now)) return;   // counted; not acknowledged
        if (state_ == State::closed) break;           // RESET
    }
    if (seq) rs_.add(pn);
    largest_rx_ = std::max<std::int64_t>(largest_rx_, static_cast<std::int64_t>(pn));
    if (has(Element::sack)) {
        ap_.on_packet(pn, eliciting, now);
        // A realtime peer's PING measures the round trip and maps the clocks.
        if (pkt_ping_ && realtime()) ap_.request_immediate();
    }
    ++counters_.packets_received;
    confirm_at_ = kNever;   // the server answered: it knows our address
    if (sum_ == wire::Checksum::none) ++counters_.no_checksum_received;
    counters_.bytes_received += v.payload.size();
    if (state_ == State::closed) return;
    idle_.on_received(now);
    drain_released();
    if (tb_) rt_release(now);
    if (close_received_) {
        if (!close_sent_) {
            close_pending_ = true;   // the reply
            close_sent_ = true;
        }
        enter_closed(close_code_ == kCloseNoError ? 0 : EPROTO, now,
                     close_code_ == kCloseNoError ? std::string()
                                                  : "the peer closed with error code " +
                                                        std::to_string(close_code_));
        return;
    }
    check_close_progress(now);
}

bool Connection::apply_frame(const wire::Frame& f, bool& eliciting, Time now) {
    using wire::FrameType;
    switch (f.type) {
    case FrameType::padding: return true;
    case FrameType::ping:
        eliciting = true;
        pkt_ping_ = true;
        if (!has(Element::sack)) pong_pending_ = true;   // no ACKs: answer so its idle timer rests
        return true;
    case FrameType::ack:
        if (!has(Element::sack)) {
            ++counters_.drops.bad_frame;
            return false;
        }
        ++counters_.acks_received;
        if (pkt_has_time_ && tb_) rt_clock_sample(f.ack);
        on_ack_frame(f.ack, now);
        return true;
    case FrameType::reset:
        enter_closed(ECONNRESET, now, "reset by the peer (code " + std::to_string(f.value) + ")");
        return true;
    case FrameType::stream:
    case FrameType::stream_fin: {
        eliciting = true;
        if (!rb_) {
            ++counters_.drops.bad_frame;
            return false;
        }
        const std::uint64_t end = f.offset + f.data.size();   // < 2^62: the parser checked
        if (fr_->on_data(end) != 0) {
            ++counters_.drops.flow_violation;
            return false;
        }
        const int rc = rb_->on_segment(f.offset, f.data, f.fin, fr_->limit());
        if (rc == -ENOBUFS) {
            ++counters_.drops.too_fragmented;
            return false;
        }
        if (rc == -EDQUOT) {
            ++counters_.drops.flow_violation;
            return false;
        }
        if (rc != 0) {
            ++counters_.drops.bad_frame;
            return false;
        }
        return true;
    }
    case FrameType::datagram:
        eliciting = true;
        if (sb_) {
            ++counters_.drops.bad_frame;
            return false;
        }
        if (released_) return true;
        if (dg_in_.size() >= cfg_.datagram_queue ||
            dg_in_bytes_ + f.data.size() > cfg_.datagram_queue_bytes) {
            ++counters_.drops.datagram_queue_full;   // the message is lost, as UDP loses it
            return true;
        }
        dg_in_.emplace_back(f.data.begin(), f.data.end());
        dg_in_bytes_ += f.data.size();
        ++counters_.datagrams_received;
        return true;
    case FrameType::max_data:
        eliciting = true;
        if (fs_ && fs_->on_limit(f.value)) wake();
        return true;
    case FrameType::message:
    case FrameType::message_last:
        eliciting = true;
        if (!realtime()) {
            ++counters_.drops.bad_frame;
            return false;
        }
        if (!released_ && tb_) rt_on_message(f, now);
        return true;
    case FrameType::repair:
        eliciting = true;
        if (!realtime()) {
            ++counters_.drops.bad_frame;
            return false;
        }
        // Without fec in our chain a peer's repairs are of no use, but the
        // packet is honest: taken (and acknowledged), the repair ignored.
        ++counters_.repairs_received;
        if (!released_) rt_on_repair(f, now);
        return true;
    case FrameType::timestamp:
        if (!realtime()) {
            ++counters_.drops.bad_frame;
            return false;
        }
        pkt_has_time_ = true;
        pkt_time_us_ = f.value;
        // The peer built this short packet after it was established, which
        // came after this side's connection was created: the handshake's
        // bound on the clocks (TimingBuffer::epoch_sample).
        if (tb_) tb_->epoch_sample(f.value, rt_epoch_);
        return true;
    case FrameType::close:
        eliciting = true;
        close_received_ = true;
        close_code_ = f.value;
        return true;
    default:
        ++counters_.drops.bad_frame;   // handshake frames: validate_payload refuses them already
        return false;
    }
}

void Connection::on_ack_frame(const wire::AckFrame& a, Time now) {
    // Packets with nothing but an ACK are not given to the loss detector (no
    // one acknowledges them, so they would fill its map); the peer may still
    // acknowledge them, so cut the ranges at the last packet it tracks.
    if (!any_tracked_) return;
    PacketRange ranges[wire::kMaxAckRanges];
    std::size_t n = 0;
    for (std::size_t i = 0; i < a.count && i < wire::kMaxAckRanges; ++i) {
        PacketRange r = a.ranges[i];
        if (r.first > last_tracked_pn_) continue;
        r.last = std::min(r.last, last_tracked_pn_);
        ranges[n++] = r;
    }
    if (n == 0) return;
    AckOutcome& out = ack_out_;   // its vectors keep their capacity
    const Time delay = static_cast<Time>(std::min<std::uint64_t>(a.ack_delay_us, 1u << 30)) *
                       sansio::kMicrosecond;
    if (ld_.on_ack({ranges, n}, delay, now, out) != 0) {
        ++counters_.drops.invalid_ack;
        return;
    }
    settle(out, now);
    idle_.set_pto(pto());
}

void Connection::settle_rec(std::uint64_t token, bool acked) {
    if (token < recs_base_ || token - recs_base_ >= recs_.size()) return;
    Rec& r = recs_[static_cast<std::size_t>(token - recs_base_)];
    if (r.settled) return;
    r.settled = true;
    if (r.stream && sb_) {
        if (acked) {
            counters_.stream_bytes_acked += sb_->on_acked(r.offset, r.len, r.fin);
        } else
            sb_->on_lost(r.offset, r.len, r.fin);
    }
    if (r.messages) rt_settle(r, acked);
    if (!acked && r.max_data) max_data_pending_ = true;   // resend the current limit
    while (!recs_.empty() && recs_.front().settled) {
        recs_.pop_front();
        ++recs_base_;
    }
}

// Congestion undo: the losses of the current recovery episode (the ones
// that reduced the window, and later ones in the same period) are counted;
// each that proves spurious (acknowledged after all: reordered, not lost)
// is taken off; when none is left, every loss of the episode was an
// illusion and the reduction is undone (Linux TCP's undo_retrans with
// DSACK does the same). A real loss keeps the count above zero.
void Connection::track_undo(const AckOutcome& out, Time now) {
    if (!cc_ || !cfg_.cc_undo) return;
    if (undo_open_) {
        for (std::uint64_t pn : out.spurious)
            if (pn >= undo_first_pn_ && undo_left_ > 0) --undo_left_;
    }
    std::uint64_t lost = 0;
    std::uint64_t first = 0;
    for (const auto& p : out.lost) {
        if (!p.in_flight) continue;
        if (lost == 0) first = p.pn;
        ++lost;
    }
    if (lost > 0) {
        if (!cc_->in_recovery(out.largest_lost_sent)) {
            // This outcome starts a new reduction: a new episode.
            undo_open_ = true;
            undo_first_pn_ = first;
            undo_left_ = lost;
        } else if (undo_open_) {
            undo_left_ += lost;
        }
    }
    if (undo_open_ && undo_left_ == 0 && lost == 0) {
        undo_open_ = false;
        if (cc_->undo(now)) ++counters_.cc_undos;
    }
}

void Connection::settle(const AckOutcome& out, Time now) {
    for (const auto& p : out.lost) settle_rec(p.token, false);
    for (const auto& p : out.lost)
        if (p.in_flight) ++counters_.lost;
    if (cc_) {
        track_undo(out, now);
        if (out.lost_bytes > 0) cc_->on_congestion_event(out.largest_lost_sent, now);
        if (out.persistent_congestion) {
            cc_->on_persistent_congestion(now);
            undo_open_ = false;
        }
        cc_->set_app_limited(app_limited_);
    }
    for (const auto& p : out.acked) {
        settle_rec(p.token, true);
        if (cc_ && p.in_flight) cc_->on_ack(p.bytes, p.sent, ld_.rtt(), now);
    }
    if (gt_ && !out.acked.empty())
        (void)gt_->on_acked(counters_.stream_bytes_acked, ld_.rtt().smoothed(), now);   // counters() tell
    if (!out.lost.empty() || !out.acked.empty()) wake();
    check_close_progress(now);
}

void Connection::drain_released() {
    if (!released_) return;
    if (rb_) {
        scratch_.resize(4096);   // bytes read and thrown away after close()
        while (rb_->read(scratch_) > 0) {
        }
        fr_->on_consumed(rb_->read_offset());
    }
    dg_in_.clear();
    dg_in_bytes_ = 0;
}

// Sends CLOSE once both directions are complete: everything we wrote (and the
// FIN) is acknowledged and the peer's FIN and every byte before it arrived.
// Class 0 has no streams: close() alone starts it.
void Connection::check_close_progress(Time now) {
    if (state_ != State::established && state_ != State::closing) return;
    if (!has(Element::close) || close_sent_) return;
    bool done;
    if (sb_) {
        // TCP's FIN_WAIT_2 timeout: once everything we sent is acknowledged,
        // a closed side waits `linger` at most for the peer to finish.
        if (released_ && sb_->all_acked() && linger_until_ == kNever) linger_until_ = now + cfg_.linger;
        done = sb_->all_acked() && rb_->fin_received() &&
               rb_->read_offset() + rb_->readable() == rb_->highest();
    } else {
        // Realtime: what was queued goes out first (within its deadline).
        done = released_ && !(realtime() && rt_want_send());
    }
    if (!done) return;
    state_ = State::closing;
    close_pending_ = true;
    close_sent_ = true;
    close_code_ = kCloseNoError;
    close_timer_ = kNever;   // armed when it goes out
    wake();
}

void Connection::on_batch_end() {
    if (rb_) rb_->settle();
}

// ---- timers -------------------------------------------------------------------

Time Connection::next_timeout() const noexcept {
    if (state_ == State::connecting) return hs_ ? hs_->next_timeout() : kNever;
    if (state_ == State::closed) {
        Time t = drain_until_;
        if (reset_sends_left_ > 0) t = std::min(t, reset_timer_);
        if (tb_) t = std::min(t, tb_->next_release());   // a graceful close keeps releasing (enter_closed)
        return t;
    }
    // Unproved and out of budget: nothing can go until the client's packet
    // (an event) or the deadline; no other timer may fire meanwhile (a PING
    // or an ACK due could never leave, and its timer would stay in the past).
    if (unvalidated_ && amp_room() < kMinAmpPacket) return validate_by_;
    Time t = std::min({idle_.next_timeout(), linger_until_, close_timer_, pacer_at_, gt_at_, validate_by_, confirm_at_});
    if (tb_) t = std::min({t, tb_->next_release(), rt_ping_due()});
    if (enc_) t = std::min(t, enc_->next_timeout());
    if (has(Element::sack)) {
        t = std::min(t, ld_.next_timeout());
        if (ap_.pending()) t = std::min(t, ap_.next_timeout());
    }
    return t;
}

void Connection::on_timeout(Time now) {
    now_ = std::max(now_, now);
    if (state_ == State::connecting) {
        hs_->on_timeout(now);
        if (hs_->state() == wire::ClientHandshake::State::failed)
            enter_closed(ECONNREFUSED, now, hs_->message());
        return;
    }
    if (state_ == State::closed) {
        if (reset_sends_left_ > 0 && now >= reset_timer_) {
            --reset_sends_left_;
            reset_pending_ = true;
            reset_timer_ = now + pto();
        }
        if (tb_) rt_release(now);   // what arrived before a graceful close, at its time
        return;
    }
    if (now >= validate_by_) {
        // Admitted without a cookie and no short packet from the client
        // since: most likely a spoofed source. Nothing to tell it; no drain
        // either (it never had our packets to answer), so the endpoint
        // forgets it now.
        enter_closed(ETIMEDOUT, now, "the MCES client never proved its address (no packet after the ACCEPT)");
        drain_until_ = now;
        return;
    }
    if (now >= confirm_at_) {
        if (now >= confirm_until_) {
            confirm_at_ = kNever;
        } else {
            ping_pending_ = true;
            confirm_rto_ = std::min(confirm_rto_ * 2, cfg_.handshake_max_rto);
            confirm_at_ = now + confirm_rto_;
        }
    }
    if (now >= linger_until_) {
        // close() waited long enough for the peer: give up abortively.
        reset_code_ = kResetLinger;
        reset_pending_ = true;
        reset_sent_ = true;
        enter_closed(ETIMEDOUT, now, "close() gave up waiting for the peer to finish");
        return;
    }
    if (now >= close_timer_) {
        if (close_sends_ >= cfg_.close_tries) {
            // The reply did not come; everything was delivered before CLOSE.
            enter_closed(0, now);
            return;
        }
        close_pending_ = true;
        close_timer_ = kNever;
    }
    if (now >= idle_.next_timeout()) {
        const auto act = idle_.on_timeout(now);
        if (act == IdleTimer::Action::Close) {
            enter_closed(ETIMEDOUT, now, "no packet from the peer within the idle timeout");
            return;
        }
        if (act == IdleTimer::Action::SendPing) ping_pending_ = true;
    }
    if (has(Element::sack) && now >= ld_.next_timeout()) {
        AckOutcome& out = ack_out_;   // its vectors keep their capacity
        const auto act = ld_.on_timeout(now, out);
        if (act == LossDetector::TimerAction::Probe) {
            probes_ = 2;
            ++counters_.ptos;
        }
        settle(out, now);
    }
    if (now >= pacer_at_) pacer_at_ = kNever;
    if (now >= gt_at_) gt_at_ = kNever;
    if (enc_ && now >= enc_->next_timeout()) {
        enc_->on_timeout(now);   // the group's deadline: its repairs go now
        rt_take_repairs(now);
    }
    if (tb_) {
        if (now >= rt_ping_due()) ping_pending_ = true;
        rt_release(now);
    }
}

// ---- output -------------------------------------------------------------------

bool Connection::build_closed_reply(std::vector<std::uint8_t>& out) {
    if (!reset_pending_ && !close_pending_) return false;
    if (amp_room() < kMinAmpPacket) return false;   // unproved address, budget spent: stays pending
    if (peer_cid_.len == 0) {
        reset_pending_ = close_pending_ = false;
        return false;
    }
    out.resize(mss());
    wire::PacketWriter pw(out);
    const std::uint64_t pn = next_pn_++;
    pw.begin_short(peer_cid_, pn, 4, sum_, authenticated() ? wire::Auth::on : wire::Auth::off);
    if (reset_pending_) {
        wire::write_reset(pw.body(), reset_code_, sb_ ? sb_->write_offset() : 0);
        reset_pending_ = false;
    } else {
        wire::write_close(pw.body(), close_code_, {});
        close_pending_ = false;
    }
    const int n = pw.finish();
    if (n <= 0) return false;
    out.resize(static_cast<std::size_t>(n));
    // Already closed: a key that refuses just leaves the reply unsent.
    if (authenticated() && prot_.send.seal(out, pw.header_len(), pn) != 0) return false;
    ++counters_.packets_sent;
    if (sum_ == wire::Checksum::none) ++counters_.no_checksum_sent;
    counters_.bytes_sent += static_cast<std::size_t>(n);
    amp_tx_ += static_cast<std::size_t>(n);
    return true;
}

bool Connection::poll_transmit(std::vector<std::uint8_t>& out, Time now, Held* held) {
    if (held) *held = Held{};
    // Sealing encrypts and tags the whole packet in out: no payload may stay
    // behind in the send buffer (and be encrypted there).
    if (authenticated()) held = nullptr;
    now_ = std::max(now_, now);
    if (state_ == State::connecting) {
        if (!hs_ || !hs_->poll_transmit(out)) {
            // The INITIAL could not be built (signed): the handshake failed
            // here, and no timer would ever tell.
            if (hs_ && hs_->state() == wire::ClientHandshake::State::failed)
                enter_closed(ECONNREFUSED, now, hs_->message());
            return false;
        }
        ++counters_.packets_sent;
        counters_.bytes_sent += out.size();
        return true;
    }
    if (state_ == State::closed) return build_closed_reply(out);
    // Unproved address: each packet within what is left of 3x the client's
    // bytes, copied whole into out (no held payload, so its size is known).
    const std::size_t amp = amp_room();
    if (amp < kMinAmpPacket) return false;
    if (unvalidated_) held = nullptr;

    const bool sack = has(Element::sack);
    const bool ack_due = sack && ap_.pending() && (ap_.ack_now() || ap_.next_timeout() <= now);
    const bool fc_due = fr_ && fr_->update_due();
    const bool control =
        max_data_pending_ || fc_due || ping_pending_ || pong_pending_ || close_pending_ || reset_pending_;
    bool want_data;
    // New stream bytes may go up to the peer's credit and, for a
    // guaranteed stream, what its reserved rate allows by now.
    std::uint64_t send_limit = sb_ ? fs_->limit() : 0;
    gt_at_ = kNever;
    if (gt_) {
        send_limit = std::min(send_limit, gt_->limit(sb_->sent_offset(), now));
        if (sb_->sent_offset() >= send_limit && sb_->unsent() > 0 && sb_->sent_offset() < fs_->limit())
            gt_at_ = gt_->when(std::min<std::uint64_t>(sb_->unsent(), mss()), now);
    }
    if (sb_)
        want_data = sb_->has_pending(send_limit) ||
                    (sb_->flow_blocked(fs_->limit()) && fs_->should_report_blocked(sb_->sent_offset()));
    else if (realtime())
        want_data = rt_want_send();
    else
        want_data = !dg_out_.empty();
    const bool probe = probes_ > 0;
    bool may_data = want_data || probe;
    pacer_at_ = kNever;
    // A guaranteed stream's floor: congestion control does not hold it
    // below its reserved rate while the path delivers it (guarantee.h).
    const bool floor = gt_ && gt_->floor();
    std::uint64_t cwnd = cc_ ? cc_->cwnd() : 0;
    if (cc_ && floor) cwnd = std::max(cwnd, gt_->floor_window(ld_.rtt().smoothed()));
    const bool cwnd_room = !cc_ || ld_.bytes_in_flight() + mss() <= cwnd;
    if (want_data && !probe) {
        if (!cwnd_room) {
            may_data = false;
        } else if (has(Element::pacing)) {
            if (cc_ && floor) {
                pacer_.set_rate_bytes_per_sec(gt_->wire_rate());
            } else if (cc_) {
                pacer_.set_gain(cc_->in_slow_start() ? 2.0 : 1.25);
                pacer_.set_rate(cc_->cwnd(), ld_.rtt().smoothed());
                const double cap = gt_                                        ? gt_->wire_rate()
                                   : granted_.rate && *granted_.rate > 0 ? static_cast<double>(*granted_.rate)
                                                                         : 0;
                if (cap > 0 && pacer_.rate() > cap) pacer_.set_rate_bytes_per_sec(cap);
            }
            const Time t = pacer_.next_send_time(static_cast<std::uint32_t>(mss()), now);
            if (t > now) {
                pacer_at_ = t;
                may_data = false;
            }
        }
    }
    if (!ack_due && !control && !may_data) {
        // RFC 9002 7.8: the window does not grow while we leave it unused.
        app_limited_ = cwnd_room && pacer_at_ == kNever && !want_data;
        gt_note_waiting();
        return false;
    }

    // A packet without data holds control frames only, which fit the
    // smallest datagram (the default mss): sizing the buffer to that, not to
    // a loopback mss of 64 KiB, keeps a recycled buffer from being zeroed
    // again for every ACK.
    // With `held`, stream payload stays in the send buffer: out holds the
    // header and frames only, sized like a control packet (resizing a
    // recycled 30-byte buffer to a 64 KiB mss would zero it every time).
    const bool hold_stream = held && sb_;
    std::size_t cap = std::min(mss(), wire::kMinInitialSize);
    if (may_data && !hold_stream) {
        cap = mss();
    } else if (hold_stream) {
        // Header, control frames and a STREAM header: far less than a
        // control packet's 1200 bytes unless an ACK carries many ranges
        // (zeroing 1200 bytes of a recycled 40-byte buffer per packet showed).
        cap = std::min(cap, 256 + 24 * std::min(rs_.ranges().size(), wire::kMaxAckRanges));
    }
    cap = std::min(cap, amp);
    out.resize(cap);
    wire::PacketWriter pw(out);
    const std::uint64_t pn = next_pn_++;
    const std::int64_t largest_acked =
        sack && ld_.has_largest_acked() ? static_cast<std::int64_t>(ld_.largest_acked()) : -1;
    pw.begin_short(peer_cid_, pn, wire::packet_number_length(pn, largest_acked), sum_,
                   authenticated() ? wire::Auth::on : wire::Auth::off);
    wire::Writer& w = pw.body();
    Rec rec;
    bool eliciting = false, wrote = false;
    std::span<const std::uint8_t> hold[2];

    // Realtime: the time this packet leaves, on our clock, so the peer can
    // bound the offset between the clocks (timing_buffer.h): before every
    // ACK, and in every packet until the peer's first ACK arrives (its
    // first bound, which the first messages need; their stamps may be
    // older than this connection's establishment).
    const bool ack_now = sack && ap_.pending() && !rs_.empty();
    if (realtime() && (ack_now || !ld_.has_largest_acked()))
        wire::write_timestamp(w, rt_clock_us(now));
    if (ack_now) {
        wire::AckFrame a;
        const auto rr = rs_.ranges();
        a.count = std::min(rr.size(), wire::kMaxAckRanges);
        if (realtime()) a.count = std::clamp<std::size_t>(cfg_.rt_ack_ranges, 1, a.count);
        std::copy_n(rr.begin(), a.count, a.ranges.begin());
        a.largest = a.ranges[0].last;
        a.ack_delay_us = static_cast<std::uint64_t>(ap_.ack_delay(now) / sansio::kMicrosecond);
        wire::write_ack(w, a);
        ap_.on_ack_sent(now);
        ++counters_.acks_sent;
        wrote = true;
    }
    if (reset_pending_) {
        wire::write_reset(w, reset_code_, sb_ ? sb_->write_offset() : 0);
        reset_pending_ = false;
        wrote = true;
    }
    if (fr_ && (max_data_pending_ || fc_due)) {
        const std::uint64_t limit = fc_due ? fr_->take_update(now, ld_.rtt().smoothed()) : fr_->limit();
        wire::write_max_data(w, limit);
        rec.max_data = true;
        max_data_pending_ = false;
        eliciting = true;
    }
    max_data_pending_ = false;
    if (close_pending_) {
        wire::write_close(w, close_code_, {});
        close_pending_ = false;
        ++close_sends_;
        close_timer_ = now + (pto() << std::min<std::uint32_t>(close_sends_ - 1, 10));
        eliciting = true;
    }
    if (ping_pending_) {
        wire::write_ping(w);
        ping_pending_ = false;
        ++counters_.pings_sent;
        eliciting = true;
    }
    if (pong_pending_) {
        pong_pending_ = false;
        wrote = true;   // padding below if nothing else
    }
    if (may_data) {
        if (sb_) {
            // What the packet may still take: with held payload, the mss
            // bounds it, not out's size.
            const std::size_t used = w.size() + pw.trailer();
            const std::size_t room = !hold_stream ? pw.room() : mss() > used ? mss() - used : 0;
            const std::size_t over = 1 + 8 + wire::varint_size(room);
            StreamSegment seg{};
            bool have = room > over && sb_->next_segment(room - over, send_limit, seg);
            if (!have && probe && room > over) {
                // Nothing new: probe with the oldest outstanding data.
                if (const SentPacket* o = ld_.oldest_outstanding()) {
                    if (o->token >= recs_base_ && o->token - recs_base_ < recs_.size()) {
                        const Rec& orec = recs_[static_cast<std::size_t>(o->token - recs_base_)];
                        if (orec.stream) {
                            sb_->on_lost(orec.offset, orec.len, orec.fin);
                            have = sb_->next_segment(room - over, send_limit, seg);
                        }
                    }
                }
            } else if (!have && sb_->flow_blocked(fs_->limit()) &&
                       fs_->should_report_blocked(sb_->sent_offset())) {
                // Blocked by the peer's credit: an ack-eliciting packet keeps
                // the PTO armed until its MAX_DATA reaches us.
                fs_->on_blocked_sent();
                wire::write_ping(w);
                eliciting = true;
            }
            if (have && sb_->holds(seg.offset, seg.length)) {
                // The payload goes from the send buffer straight into the
                // packet (one copy; the frame was sized to fit above), or
                // stays there for the caller to send from (none). STREAM is
                // the last frame, so the payload ends the packet.
                wire::write_stream_header(w, seg.offset, seg.length, seg.fin);
                bool ok;
                if (held)
                    ok = w.ok() && sb_->view(seg.offset, seg.length, hold[0], hold[1]) == 0;
                else
                    ok = w.ok() && sb_->copy(seg.offset, w.take(seg.length)) == 0;
                if (ok) {
                    rec.stream = true;
                    rec.offset = seg.offset;
                    rec.len = seg.length;
                    rec.fin = seg.fin;
                    eliciting = true;
                    counters_.stream_bytes_sent += seg.length;
                    if (seg.retransmission) {
                        ++counters_.retransmits;
                        counters_.retransmitted_bytes += seg.length;
                    } else if (gt_) {
                        gt_->on_new_bytes(seg.length);
                    }
                }
            }
        } else if (realtime()) {
            rt_fill(pw, rec, eliciting, now);
        } else {
            bool first = true;
            while (!dg_out_.empty()) {
                const auto& m = dg_out_.front();
                const std::size_t need = wire::datagram_overhead(m.size()) + m.size();
                if (need > pw.room() || (!first && !may_coalesce(mss() - pw.room(), need))) break;
                first = false;
                wire::write_datagram(w, m);
                dg_out_bytes_ -= m.size();
                dg_out_.pop_front();
                ++counters_.datagrams_sent;
                eliciting = true;
            }
        }
        if (probe) {
            if (!eliciting) {
                wire::write_ping(w);
                eliciting = true;
            }
            --probes_;
        }
    }
    if (!eliciting && !wrote) {
        --next_pn_;   // nothing went into it after all
        gt_note_waiting();
        return false;
    }
    if (!eliciting && w.size() == 0) wire::write_padding(w, 1);
    int n;
    if (rec.stream && held) {
        held->split = w.size();   // the header is written; the checksum (if any) follows the payload
        const int here = pw.finish(hold[0], hold[1]);
        if (here <= 0) return false;
        out.resize(static_cast<std::size_t>(here));
        held->part[0] = hold[0];
        held->part[1] = hold[1];
        n = here + static_cast<int>(rec.len);
    } else {
        n = pw.finish();
        if (n <= 0) return false;   // cannot happen: every frame was sized to fit
        out.resize(static_cast<std::size_t>(n));
        if (authenticated() && !seal(out, pw.header_len(), pn)) return false;   // closed
    }

    if (sack && eliciting) {
        const std::uint64_t token = recs_base_ + recs_.size();
        const SentPacket sp{pn, now, static_cast<std::uint32_t>(n), true, true, token};
        if (ld_.on_sent(sp) == 0) {
            recs_.push_back(rec);
            last_tracked_pn_ = pn;
            any_tracked_ = true;
        } else if (rec.stream) {
            // The sent map is full (it cannot be with a sane window): treat as lost.
            sb_->on_lost(rec.offset, rec.len, rec.fin);
        }
    }
    if (!eliciting) ++counters_.ack_only_packets;
    if (!rt_sent_.empty()) rt_sent_[pn % rt_sent_.size()] = {pn, now};
    if (eliciting) rt_last_eliciting_ = now;
    if (eliciting) {
        if (cc_) cc_->on_sent(static_cast<std::uint64_t>(n), ld_.bytes_in_flight(), now);
        if (has(Element::pacing)) pacer_.on_sent(static_cast<std::uint32_t>(n), now);
        idle_.on_ack_eliciting_sent(now);
        app_limited_ = false;
    }
    ++counters_.packets_sent;
    if (sum_ == wire::Checksum::none) ++counters_.no_checksum_sent;
    counters_.bytes_sent += static_cast<std::size_t>(n);
    amp_tx_ += static_cast<std::size_t>(n);
    return true;
}

// The sender stops: is the program held back (bytes unsent, or a full send
// buffer of bytes not acknowledged yet)? Then the rate it is owed and cannot
// use is the path's doing, or the receiving program's: the peer's credit
// runs out when loss leaves holes in its buffer as much as when its program
// reads slowly, and from here the two cannot be told apart (either way the
// rate is not delivered end to end).
void Connection::gt_note_waiting() noexcept {
    if (gt_) gt_->set_waiting(sb_->unsent() > 0 || write_room() == 0);
}

// ---- realtime (class 3: deadline, fec) ------------------------------------------
// docs/mces.md, "Realtime class (class 3)". Send side: messages kept by seq
// until acknowledged or past their deadline, each sent once and resent on
// loss while the copy can still arrive in time; FEC repairs follow their
// group. Receive side: the timing buffer (timing_buffer.h) releases each
// message at its send time + the latency on our clock.

namespace {
// The receiver PINGs this often while messages arrive, so the sender's ACKs
// (each led by a TIMESTAMP) keep mapping the clocks.
Time rt_ping_interval(Time latency) { return std::max<Time>(latency / 8, 5 * sansio::kMillisecond); }
// Repairs waiting longer than this are of no use to a receiver that
// releases within the latency.
Time rt_repair_ttl(Time latency) { return std::max<Time>(latency / 2, sansio::kMillisecond); }
}  // namespace

std::uint64_t Connection::rt_clock_us(Time t) const noexcept {
    return cfg_.rt_clock_origin_us +
           static_cast<std::uint64_t>(std::max<Time>(t - rt_epoch_, 0)) / static_cast<std::uint64_t>(sansio::kMicrosecond);
}

// The reference a stamp unwraps against is the peer's clock now as the
// timing buffer maps it: now - c_low, which is never below the peer's true
// clock (c_low <= c), by at most the mapping's slack (a round trip; the
// handshake's before the first ACK sample). TIMESTAMP frames are what set
// the mapping, and it stays current when they stop coming (a peer that
// sends no ACKs for a while), where the last TIMESTAMP's value would age.
// Every honest stamp is at most that reference, and a copy in flight is
// younger than its deadline (the sender drops it after that), so it
// unwraps right while the latency and the mapping's slack are under 35
// minutes. Before any TIMESTAMP (no mapping) the reference is 0: the
// connection's first 35 minutes are unambiguous. (A TIMESTAMP leads every
// packet until our first ACK reaches the peer, so the first message is
// normally read after one already.)
bool Connection::rt_unwrap(std::span<const std::uint8_t> body, Time now, std::uint64_t& stamp_us) const noexcept {
    const bool mapped = tb_->has_clock();
    const Time peer_now = mapped ? now - tb_->clock_low() : 0;
    const std::uint64_t ref = static_cast<std::uint64_t>(std::max<Time>(peer_now, 0)) /
                              static_cast<std::uint64_t>(sansio::kMicrosecond);
    stamp_us = wire::unwrap_stamp(ref, wire::get_stamp(body));
    // Later than the peer's clock can read: a copy that waited in the
    // network for over 35 minutes (it unwrapped a wrap too far: it would be
    // delivered at a far-off time), or forged. 1 ms: the mapping's rounding.
    return !mapped || stamp_us <= ref + 1000;
}

void Connection::rt_establish(Time now) {
    rt_latency_ = granted_.latency_us ? static_cast<Time>(*granted_.latency_us) * sansio::kMicrosecond
                                      : cfg_.latency;
    rt_latency_ = std::max<Time>(rt_latency_, sansio::kMillisecond);
    TimingBufferConfig tc;
    tc.latency = rt_latency_;
    tc.window = std::max<std::size_t>(cfg_.rt_window, 16);
    tc.max_bytes = cfg_.datagram_queue_bytes;
    // Within kMaxMessageSpan sequence numbers: a copy decodes right only
    // that near the largest received (wire::decode_message_seq).
    tc.max_window = std::min(cfg_.rt_window_max, wire::kMaxMessageSpan);
    tc.window = std::min(tc.window, wire::kMaxMessageSpan);
    tc.max_bytes_limit = cfg_.rt_bytes_max;
    tc.symmetric = cfg_.rt_clock_symmetric;
    rt_margin_ = cfg_.rt_clock_margin > 0 ? cfg_.rt_clock_margin
                                          : std::clamp<Time>(rt_latency_ / 24, sansio::kMillisecond,
                                                             10 * sansio::kMillisecond);
    tc.margin = rt_margin_;
    tb_ = std::make_unique<TimingBuffer>(tc);
    rt_sent_.assign(1024, {~std::uint64_t{0}, 0});
    ap_.set_threshold(cfg_.rt_ack.threshold);   // invalid values leave class 1's
    ap_.set_max_ack_delay(cfg_.rt_ack.max_ack_delay);
    const std::size_t max_source = max_datagram_payload() + wire::kMessageTimestampLen;
    if (has(Element::fec)) {
        fec::EncoderConfig ec;
        ec.layout = cfg_.fec;
        ec.max_packet = max_source;
        ec.max_delay = cfg_.fec_max_delay > 0 ? cfg_.fec_max_delay : rt_latency_ / 4;
        enc_ = std::make_unique<fec::Encoder>(ec);
        if (!enc_->valid()) enc_.reset();   // a bad layout: no repairs, the rest works
        if (enc_) counters_.fec_repairs = ec.layout.r;

        fec::DecoderConfig dc;
        // The peer's messages are at most its max_datagram_size; ours is
        // the guess (longer repairs are refused, counted too_long).
        dc.max_packet = std::min(max_source, fec::kMaxPacket);
        dc.source_window = tc.window;
        dec_ = std::make_unique<fec::Decoder>(dc);
        if (!dec_->valid()) dec_.reset();
    }
    // The first clock sample as soon as the peer answers.
    ping_pending_ = true;
    (void)now;
}

Connection::OutMsg* Connection::rt_msg(std::uint64_t seq) noexcept {
    if (seq < rt_out_base_ || seq - rt_out_base_ >= rt_out_.size()) return nullptr;
    return &rt_out_[static_cast<std::size_t>(seq - rt_out_base_)];
}

// How long before its deadline a message must be sent to be released in
// time: a forward one-way delay for the copy, and how early the peer
// releases. By the strict bound that is up to one reverse one-way delay
// (its clock bound gives that up): a round trip in all. By the symmetric
// estimate (rt_clock_symmetric), the margin: half a round trip and it.
Time Connection::rt_lead() const noexcept {
    const Time rtt = ld_.rtt().has_sample() ? ld_.rtt().smoothed() : 0;
    return cfg_.rt_clock_symmetric ? rtt / 2 + rt_margin_ : rtt;
}

// Whether a copy sent now can still be released in time.
bool Connection::rt_viable(const OutMsg& m, Time now) const noexcept {
    return now + rt_lead() <= m.at + rt_latency_;
}

bool Connection::datagrams_settled(Time now) const noexcept {
    if (state_ == State::closed || sb_) return true;
    if (!realtime()) return dg_out_.empty();
    for (const OutMsg& m : rt_out_)   // unsent ones too: neither acked nor past their time yet
        if (!(m.acked || m.dropped || now > m.at + rt_latency_)) return false;
    return true;
}

// Forgets messages nobody needs any more: acknowledged, dropped, or sent and
// past their deadline.
void Connection::rt_trim(Time now) {
    while (!rt_out_.empty() && rt_out_base_ < rt_next_new_) {
        const OutMsg& m = rt_out_.front();
        if (!(m.acked || m.dropped || now > m.at + rt_latency_)) break;
        rt_out_bytes_ -= m.body.size();
        rt_out_.pop_front();
        ++rt_out_base_;
    }
    while (!rt_repairs_.empty() && now > rt_repairs_.front().at + rt_repair_ttl(rt_latency_))
        rt_repairs_.pop_front();
}

bool Connection::rt_want_send() const noexcept {
    return !rt_rtx_.empty() || rt_next_new_ < rt_out_base_ + rt_out_.size() || !rt_repairs_.empty();
}

void Connection::rt_take_repairs(Time now) {
    if (!enc_) return;
    // Four blocks' worth of the layout the encoder runs now (adaptive FEC
    // changes it: the configured one may ask far fewer repairs).
    const fec::Layout& l = enc_->config().layout;
    const std::size_t cap = 4 * std::size_t{l.depth} * l.r + 4;
    Repair rp;
    while (enc_->poll_repair(rp.body)) {
        rp.at = now;
        if (rt_repairs_.size() >= cap) {
            rt_repairs_.pop_front();
            ++counters_.repairs_dropped;
        }
        rt_repairs_.push_back(std::move(rp));
        rp = Repair{};
    }
}

// One packet's worth: a run of consecutive messages to resend, else new
// messages, else one repair. A packet carries one run, so its record is
// (first seq, count).
void Connection::rt_fill(wire::PacketWriter& pw, Rec& rec, bool& eliciting, Time now) {
    rt_trim(now);
    rt_adapt_fec(now);
    wire::Writer& w = pw.body();
    // Messages are written one behind: whether one is the packet's last
    // frame (MESSAGE_LAST, no length) is known only when the next does not
    // fit or there is none. Nothing follows the messages in the packet
    // (poll_transmit adds a PING or PADDING only to a packet without them;
    // a body always holds its stamp, so `pending` empty means none).
    // `pending` views its OutMsg, which stays put while this runs (rt_out_
    // changes in rt_trim and send_datagram only).
    std::span<const std::uint8_t> pending;
    std::uint64_t pending_seq = 0;
    std::size_t pending_len = 0;   // what it takes as a MESSAGE with its length
    auto fits = [&](std::size_t n) {
        // The candidate as the last frame, after the pending one as a MESSAGE.
        const std::size_t need = wire::message_overhead(n, true) + n;
        return pending_len + need <= pw.room() &&
               (!rec.messages || may_coalesce(mss() - pw.room() + pending_len, need));
    };
    auto put = [&](std::uint64_t seq, std::span<const std::uint8_t> body) {
        if (!pending.empty()) wire::write_message(w, pending_seq, pending, false);
        pending = body;
        pending_seq = seq;
        pending_len = wire::message_overhead(body.size()) + body.size();
        if (!rec.messages) {
            rec.messages = true;
            rec.offset = seq;
        }
        ++rec.len;
    };
    while (!rt_rtx_.empty()) {
        const std::uint64_t seq = rt_rtx_.front();
        OutMsg* m = rt_msg(seq);
        if (m == nullptr || m->acked || m->dropped) {
            rt_rtx_.pop_front();
            continue;
        }
        if (!rt_viable(*m, now)) {
            ++counters_.expired;
            m->dropped = true;
            rt_rtx_.pop_front();
            continue;
        }
        if (rec.messages && seq != rec.offset + rec.len) break;
        if (!fits(m->body.size())) break;
        put(seq, m->body);
        ++counters_.retransmitted;
        rt_rtx_.pop_front();
    }
    if (!rec.messages) {
        while (rt_next_new_ < rt_out_base_ + rt_out_.size()) {
            const std::uint64_t seq = rt_next_new_;
            OutMsg& m = *rt_msg(seq);
            if (!rt_viable(m, now)) {
                // Queued too long (a slow path, a full window): it cannot
                // arrive in time, so it is not sent at all.
                ++counters_.expired;
                m.dropped = true;
                ++rt_next_new_;
                continue;
            }
            if (!fits(m.body.size())) break;
            put(seq, m.body);
            m.sent = true;
            ++rt_next_new_;
            ++counters_.datagrams_sent;
            if (enc_ && fec_on_) {
                enc_->add_source(seq, m.body, now);
                rt_take_repairs(now);
            }
        }
    }
    if (!pending.empty()) wire::write_message(w, pending_seq, pending, true);
    if (!rec.messages && !rt_repairs_.empty()) {
        const Repair& rp = rt_repairs_.front();
        const std::size_t need = wire::repair_overhead(rp.body.size()) + rp.body.size();
        if (need <= pw.room()) {
            wire::write_repair(w, rp.body);
            ++counters_.repairs_sent;
            counters_.repair_bytes_sent += rp.body.size();
            rt_repairs_.pop_front();
            eliciting = true;
        } else if (need + 1 + wire::kMaxCidLen + 4 + wire::kChecksumLen > mss()) {
            rt_repairs_.pop_front();   // larger than any packet could carry: cannot happen, but never stall
        }
    }
    if (rec.messages) eliciting = true;
    rt_trim(now);
}

// Adaptive FEC (ConnConfig::fec_adaptive). A lost message is resent while
// the copy can beat its deadline: each resend takes about a round trip plus
// the time to notice the loss (srtt + 4 rttvar + 2 ms, a margin for ACK
// spacing), and the first copy half a round trip, so `rounds` resends fit
// in the latency. With independent loss p a message still missing after
// them is one FEC left missing, times p per resend: the repairs per block
// are the fewest whose residual loss (fec::residual_loss) times p^rounds is
// at most fec_target. The loss taken is the larger of this window's and
// the smoothed one, so a rise is answered at once and a fall slowly.
void Connection::rt_adapt_fec(Time now) {
    if (!enc_ || !cfg_.fec_adaptive) return;
    if (fa_prior_ && ld_.rtt().has_sample()) {
        // The first RTT sample, before any loss estimate: the rule with
        // the prior loss (until then, the configured layout).
        fa_prior_ = false;
        if (fa_loss_ < 0) rt_choose_fec(std::clamp(cfg_.fec_prior_loss, 0.0, 1.0), now);
    }
    const std::uint64_t sent = counters_.packets_sent - fa_sent_;
    if (sent < std::max<std::uint32_t>(cfg_.fec_adapt_packets, 16)) return;
    const std::uint64_t lost = counters_.lost - std::min(counters_.spurious, counters_.lost);
    const double window = static_cast<double>(lost - std::min(lost, fa_lost_)) / static_cast<double>(sent);
    fa_sent_ = counters_.packets_sent;
    fa_lost_ = lost;
    fa_loss_ = fa_loss_ < 0 ? window : 0.75 * fa_loss_ + 0.25 * window;
    const double p = std::min(std::max(window, fa_loss_), 1.0);
    counters_.fec_loss_ppm = static_cast<std::uint32_t>(p * 1e6);
    rt_choose_fec(p, now);
}

// The cheapest protection that brings loss p, after the resends the latency
// leaves room for, down to fec_target: nothing when resends alone do; else
// either the fewest repairs per block (costing r / k of the stream), or,
// where at least one resend fits, extra copies of each resend (costing
// about `extra` x p): a resend round then fails only when every copy is
// lost. At 5% loss with one resend that fits, 0.63 extra copies (3% of the
// stream) do what 10/2's repairs (20%) did.
//
// Each resend round takes about a round trip plus the time to notice the
// loss (srtt + 4 rttvar + 2 ms, a margin for ACK spacing). They run from
// the first copy's arrival (half a round trip after the send) to the
// release, which the timing buffer puts one reverse one-way delay before
// the deadline (timing_buffer.h: its clock bound gives that up): so the
// budget is the latency minus a whole round trip. With the symmetric
// mapping the release is the margin before the deadline (rt_lead).
namespace {
constexpr unsigned kMaxExtraCopies = 3;   // per resend, beyond the first
}  // namespace

void Connection::rt_choose_fec(double p, Time now) {
    const RttEstimator& rtt = ld_.rtt();
    const Time cycle = rtt.smoothed() + 4 * rtt.rttvar() + 2 * sansio::kMillisecond;
    const Time budget = rt_latency_ - rt_lead();
    unsigned rounds = 0;
    if (cfg_.rt_retransmit && budget > 0) rounds = static_cast<unsigned>(std::min<Time>(budget / cycle, 8));
    double left = 1;   // what the resends leave of a message FEC did not repair
    for (unsigned i = 0; i < rounds; ++i) left *= p;
    const fec::Layout cur = enc_->config().layout;
    const double need = left > 0 ? cfg_.fec_target / left : 1;
    unsigned r = p <= 0 ? 0 : fec::choose_repair(cur.k, cur.depth, fec::LossModel{p, 1}, need, fec::kMaxR);
    double extra = 0;
    if (r > 0 && rounds > 0 && p < 1 && cfg_.rt_resend_copies) {
        // Each round must fail with at most q_max; with n + f extra copies
        // it fails with p^(1 + n) (1 - f (1 - p)).
        const double q_max = std::pow(cfg_.fec_target / p, 1.0 / rounds);
        double pn = p;   // p^(n + 1), n whole extra copies
        unsigned n = 0;
        for (; n <= kMaxExtraCopies && pn > q_max; ++n) pn *= p;
        if (n >= 1 && n <= kMaxExtraCopies) {
            const double f = std::clamp((1 - q_max * p / pn) / (1 - p), 0.0, 1.0);   // pn / p = p^n
            const double e = (n - 1) + f;
            if (e * p < static_cast<double>(r) / cur.k) {
                extra = e;
                r = 0;
            }
        }
    }
    rt_extra_ = extra;
    counters_.resend_extra_milli = static_cast<std::uint32_t>(extra * 1000);
    if (r == 0) {
        if (fec_on_) {
            enc_->flush();   // the open group's repairs still go
            rt_take_repairs(now);
        }
        fec_on_ = false;
    } else {
        if (r != cur.r) enc_->set_layout(fec::Layout{cur.k, r, cur.depth});
        fec_on_ = true;
    }
    counters_.fec_repairs = fec_on_ ? enc_->config().layout.r : 0;
}

void Connection::rt_settle(const Rec& r, bool acked) {
    const std::size_t first = rt_rtx_.size();
    for (std::uint64_t seq = r.offset; seq < r.offset + r.len; ++seq) {
        OutMsg* m = rt_msg(seq);
        if (m == nullptr || m->acked || m->dropped) continue;
        if (acked) {
            m->acked = true;
        } else if (cfg_.rt_retransmit && rt_rtx_.size() < rt_out_.size()) {
            rt_rtx_.push_back(seq);   // rt_fill checks the deadline when it comes to it
        }
    }
    // Extra copies (rt_choose_fec) go after the resends, so in packets of
    // their own: lost independently of the first copy's. One that finds its
    // message acknowledged by then is not sent (rt_fill).
    const std::size_t resends = rt_rtx_.size() - first;
    for (std::size_t i = 0; i < resends && rt_extra_ > 0; ++i) {
        rt_extra_acc_ += rt_extra_;
        for (; rt_extra_acc_ >= 1 && rt_rtx_.size() < rt_out_.size(); rt_extra_acc_ -= 1) {
            rt_rtx_.push_back(rt_rtx_[first + i]);
            ++counters_.extra_copies;
        }
    }
}

// c >= t_L - (T - ack_delay): the peer built this packet at T (its clock)
// after receiving our packet L, the largest it acknowledges, ack_delay
// before; we sent L at t_L. The +1 us covers the peer's rounding down.
void Connection::rt_clock_sample(const wire::AckFrame& a) {
    if (rt_sent_.empty()) return;
    const auto& e = rt_sent_[a.largest % rt_sent_.size()];
    if (e.first != a.largest) return;   // too old, or never sent
    constexpr std::uint64_t kMaxUs = std::uint64_t{1} << 40;
    const Time t_us = static_cast<Time>(std::min(pkt_time_us_, kMaxUs));
    const Time delay_us = static_cast<Time>(std::min<std::uint64_t>(a.ack_delay_us, 1u << 30));
    tb_->clock_sample(e.second - (t_us + 1 - delay_us) * sansio::kMicrosecond);
}

void Connection::rt_on_message(const wire::Frame& f, Time now) {
    rt_last_rx_ = now;
    std::uint64_t stamp = 0;
    if (!rt_unwrap(f.body, now, stamp)) {
        ++counters_.drops.bad_stamp;
        return;
    }
    std::uint64_t seq = wire::decode_message_seq(rt_rx_largest_, f.seq);
    // Late first, before the seq is used for anything: a copy older than
    // the decoding's half range (2^15 messages) decodes to a wrong, newer
    // number, but such a copy is long past its deadline (the sender keeps
    // fewer messages than that in flight, frame.h), so it stops here,
    // counted late, without moving the largest seq, the clock's upper bound,
    // the FEC decoder or the timing buffer's window (TimingBuffer::insert
    // checks lateness first too, for the same reason).
    if (tb_->late(stamp, now)) {
        tb_->insert(seq, stamp, {}, now);   // counted there
        return;
    }
    // On time, yet decoded at or below the largest seq received while sent
    // after it (a newer stamp: stamps grow with seqs): it comes from beyond
    // the 16-bit range, after more than 2^15 messages lost in a row (an
    // outage of 17 s at 20 Mbit/s). Without this its stream would read as
    // duplicates until the seqs caught up. Its seq is the first above the
    // largest with these low bits (exact for outages under 2^16 messages).
    if (static_cast<std::int64_t>(seq) <= rt_rx_largest_ && stamp > rt_rx_largest_stamp_) {
        while (static_cast<std::int64_t>(seq) <= rt_rx_largest_) seq += std::uint64_t{1} << (8 * wire::kMessageSeqLen);
        ++counters_.seq_reanchored;
    }
    rt_note_largest(seq, stamp);
    tb_->observe_arrival(seq, stamp, now);
    // The peer is established: ask for the first strict clock sample now
    // rather than at the next PING timer.
    if (!tb_->has_ack_clock() && now >= rt_last_eliciting_ + sansio::kMillisecond) ping_pending_ = true;
    rt_store(seq, stamp, f.body, now, false);
    if (dec_) {
        dec_->on_source(seq, f.body);
        rt_drain_recovered(now);
    }
}

void Connection::rt_note_largest(std::uint64_t seq, std::uint64_t stamp) noexcept {
    if (static_cast<std::int64_t>(seq) <= rt_rx_largest_) return;
    rt_rx_largest_ = static_cast<std::int64_t>(seq);
    rt_rx_largest_stamp_ = stamp;
}

void Connection::rt_on_repair(const wire::Frame& f, Time now) {
    if (!dec_) return;
    if (dec_->on_repair(f.body) != 0) ++counters_.drops.bad_repair;
    rt_drain_recovered(now);
}

void Connection::rt_drain_recovered(Time now) {
    fec::Recovered r;
    while (dec_->poll_recovered(r)) {
        if (r.bytes.size() < wire::kMessageTimestampLen) continue;   // forged: no stamp
        // The repaired body is stamp + message as the MESSAGE carried it:
        // the same 32-bit stamp, unwrapped the same way (its seq is whole:
        // REPAIR frames name sequence numbers in full).
        std::uint64_t stamp = 0;
        if (!rt_unwrap(r.bytes, now, stamp)) {
            ++counters_.drops.bad_stamp;
            continue;
        }
        rt_store(r.seq, stamp, r.bytes, now, true);
    }
}

void Connection::rt_store(std::uint64_t seq, std::uint64_t stamp_us, std::span<const std::uint8_t> body, Time now,
                          bool recovered) {
    const auto res = tb_->insert(seq, stamp_us, body.subspan(wire::kMessageTimestampLen), now);
    if (res == TimingBuffer::Insert::stored) {
        if (recovered) {
            ++counters_.fec_repaired;
            // A repaired seq (whole in the REPAIR frame) may be above every
            // MESSAGE's: the timing buffer's next seq must stay at most the
            // largest + 1, which the 16-bit decoding's range relies on.
            rt_note_largest(seq, stamp_us);
        } else {
            ++counters_.datagrams_received;
        }
    } else if (res == TimingBuffer::Insert::full) {
        ++counters_.drops.datagram_queue_full;
    }
}

// Moves what is due into the application's queue (recv_datagram).
// The queue holds as much as the timing buffer does now (it grows with the
// peer's rate): what falls due at once after the host was kept from
// running for a few milliseconds is a rate's worth, and a fast stream's
// is more than class 0's bound (1.8 Gbit/s of 1,316-byte messages: 171
// per millisecond). Memory stays within the timing buffer's bound again.
void Connection::rt_release(Time now) {
    const std::size_t before = dg_in_.size();
    const std::size_t max_n = std::max(cfg_.datagram_queue, tb_->window());
    const std::size_t max_b = std::max(cfg_.datagram_queue_bytes, tb_->byte_bound());
    tb_->release(now, [&](std::uint64_t, std::span<const std::uint8_t> msg) {
        if (released_) return;
        if (dg_in_.size() >= max_n || dg_in_bytes_ + msg.size() > max_b) {
            ++counters_.drops.datagram_queue_full;   // the application does not read: lost, as UDP loses it
            return;
        }
        dg_in_.emplace_back(msg.begin(), msg.end());
        dg_in_bytes_ += msg.size();
        ++counters_.on_time;
    });
    if (dg_in_.size() != before) wake();
}

Time Connection::rt_ping_due() const noexcept {
    if (state_ != State::established) return kNever;
    // Until the first clock sample (the PING sent at establishment may be
    // lost, or overtake the ACCEPT), then while the peer's messages flow (a
    // second after the last one).
    const bool flowing = rt_last_rx_ != kNever && now_ <= rt_last_rx_ + sansio::kSecond;
    if (tb_->has_ack_clock() && !flowing) return kNever;
    return rt_last_eliciting_ + rt_ping_interval(rt_latency_);
}

}  // namespace gs::mces
