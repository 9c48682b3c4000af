#include "core/engine/mces_dgram.h"

#include <errno.h>
#include <string.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/engine/dgram_bridge.h"
#include "core/engine/mces_admit.h"
#include "core/engine/mces_peers.h"
#include "core/engine/mces_util.h"
#include "core/engine/udp_host.h"
#include "core/mces/conn/endpoint.h"

namespace gs::engine {
namespace {

constexpr size_t kMaxPeers = 1024;             // peers known at once (MCES or plain)
constexpr size_t kMaxHeld = 1024;              // messages held for a peer while its handshake runs
constexpr size_t kMaxHeldBytes = 2u << 20;      // ... and their bytes (a fast stream fills 64 in a millisecond)
constexpr size_t kMaxPlainOut = 4096;          // plain datagrams waiting for the socket
constexpr size_t kMaxPlainIn = 1024;           // plain datagrams of one receive batch
// A peer heard in plain UDP (or fallen back to it) is answered in plain UDP
// until this long after the last sign of it.
constexpr int64_t kPlainTtl = PeerTable::kNativeTtl;

// A long-header INITIAL (flags: long form, type 0).
bool is_initial(std::span<const uint8_t> b) noexcept {
    return !b.empty() && (b[0] & 0x80) != 0 && ((b[0] >> 3) & 3u) == static_cast<unsigned>(mces::wire::PacketType::initial);
}

// The source connection ID of a long-header packet (flags, version,
// dcid_len, dcid, scid_len, scid); empty when it is cut short.
std::span<const uint8_t> long_scid(std::span<const uint8_t> b) noexcept {
    if (b.size() < 6) return {};
    const size_t dl = b[5];
    if (b.size() < 7 + dl) return {};
    const size_t sl = b[6 + dl];
    if (b.size() < 7 + dl + sl) return {};
    return b.subspan(7 + dl, sl);
}

void inc(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept { c.fetch_add(n, std::memory_order_relaxed); }

// A closed socket's MCES side lingers at most this long beyond its latency
// (McesDgram::release), and looks at its messages this often.
constexpr int64_t kLingerNs = 1'000'000'000;
constexpr int64_t kLingerCheckNs = 10'000'000;

bool discard(void*, const sansio::Addr&, const uint8_t*, size_t) noexcept { return true; }

}  // namespace

// One program's UDP socket, run as an MCES endpoint that lets plain UDP
// through (it is the sans-IO endpoint the UdpHost drives: a splitter in
// front of the mces::Endpoint).
class McesDgram final : public sansio::Endpoint, public Lingering {
public:
    McesDgram(const mces::EndpointConfig& cfg, const McesParams& p, McesDgramStats& st, McesDeliver d, McesError er,
              void* owner)
        : ep_(cfg), params_(p), stats_(&st), deliver_(d), error_(er), owner_(owner) {
        plain_in_.reserve(kMaxPlainIn);   // on_datagram never grows it
    }

    bool start(Engine& e, int fd, int* err) noexcept {
        host_ = UdpHost::start(e, fd, *this, UdpHostOptions{},
                               [](Engine& en, void* self) noexcept { static_cast<McesDgram*>(self)->activity(en); },
                               this, err);
        if (host_ == nullptr) return false;
        // A UDP socket answers whoever sends to it; classes 2 and 3 reserve (mces_admit.h).
        McesAdmission::listen(ep_, params_.admission, ep_.local());
        return true;
    }

    // ---- sansio::Endpoint: the splitter ----
    void on_datagram(const sansio::Addr& from, const sansio::Addr& to, std::span<const uint8_t> bytes,
                     sansio::Time now) override {
        try {   // the host calls this from noexcept code: bad_alloc stops here (the datagram is lost)
            split(from, to, bytes, now);
        } catch (...) {
            inc(stats_->dropped);
        }
    }
    void split(const sansio::Addr& from, const sansio::Addr& to, std::span<const uint8_t> bytes, sansio::Time now) {
        auto it = peers_.find(from);
        // MCES: claimed by the endpoint, or from a peer we speak MCES with
        // (a stale packet of a forgotten connection is MCES's to drop, not
        // the program's to read).
        if (ep_.claims(bytes) || (it != peers_.end() && it->second.mode == Peer::mces)) {
            // An answer to our handshake; an INITIAL is the peer opening,
            // or ours sent back by something that echoes datagrams (the
            // endpoint drops it): then no MCES is there, as if it had
            // answered in plain UDP.
            if (it != peers_.end() && it->second.mode == Peer::opening) {
                Peer& p = it->second;
                if (!is_initial(bytes)) p.answered = true;
                else if (std::ranges::equal(long_scid(bytes), p.conn->local_cid().view())) p.plain_heard = true;
            }
            return ep_.on_datagram(from, to, bytes, now);
        }
        inc(stats_->plain_in);
        if (it == peers_.end() && peers_.size() < kMaxPeers) it = peers_.try_emplace(from).first;
        if (it != peers_.end() && it->second.mode == Peer::opening) {
            it->second.plain_heard = true;   // it speaks plain UDP: auto falls back at once
        } else if (it != peers_.end()) {
            it->second.plain_until = now + kPlainTtl;
            it->second.mode = Peer::plain;
        }
        if (plain_in_.size() < kMaxPlainIn) plain_in_.push_back({from, bytes});
        else inc(stats_->dropped);
    }
    void on_timeout(sansio::Time now) override { ep_.on_timeout(now); }
    sansio::Time next_timeout() const override { return ep_.next_timeout(); }
    void advance(sansio::Time now) override { ep_.advance(now); }
    void on_batch_end() override {
        plain_in_.clear();   // their bytes are the host's again
        ep_.on_batch_end();
    }
    bool poll_transmit(sansio::Datagram& out) override {
        if (plain_out_.empty()) return ep_.poll_transmit(out);
        sansio::Datagram& d = plain_out_.front();
        out.from = ep_.local();
        out.to = d.to;
        out.bytes.swap(d.bytes);   // the host's spare buffer comes back to us, and is dropped
        plain_out_.pop_front();
        return true;
    }

    // ---- the bridge's side ----
    int send(Engine& e, const sansio::Addr& to, const uint8_t* p, size_t n) noexcept {
        if (n > max_payload()) return -EMSGSIZE;
        try {
            return send_to(e, to, std::span<const uint8_t>(p, n));
        } catch (...) {   // bad_alloc: lost, as on a congested link
            inc(stats_->dropped);
            return -ENOBUFS;
        }
    }
    size_t max_payload() const noexcept { return max_payload_; }
    void flush(Engine& e) noexcept {
        if (host_ != nullptr) host_->poke(e);
    }

    // The program's socket is gone (its bridge ended). The kernel would
    // still send a closed UDP socket's last datagrams; here they live in the
    // connections (or wait for a handshake), so the endpoint stays, on the
    // engine's list of lingering work, until they are settled (sent, and
    // for realtime acknowledged or past their deadline), at most its
    // latency + kLingerNs; then it closes and frees itself. Nothing is
    // delivered or counted into the flow's record meanwhile (the record
    // may be another flow's by then), and a peer that opens a connection
    // meanwhile is refused (ECONNREFUSED at its end, as the closed socket's
    // port would answer). Settled already: closed at once.
    void release(Engine& e) noexcept {
        publish_final();
        if (settled(e.now())) {
            close(e);
            delete this;
            return;
        }
        ep_.refuse_new();
        stats_ = &sink_;
        deliver_ = &discard;
        error_ = nullptr;
        owner_ = nullptr;
        linger_until_ = e.now() + static_cast<int64_t>(params_.latency_us) * 1000 + kLingerNs;
        linger_timer_.m = this;
        e.linger(*this);
        e.arm(linger_timer_, e.now() + kLingerCheckNs);
    }

    // ---- Lingering: the engine's exit drain ----
    bool done() const noexcept override { return settled(now_ns()); }
    uint64_t progress() const noexcept override { return host_ != nullptr ? host_->stats().rx_datagrams : 0; }
    void end(Engine& e) noexcept override { finish(e); }

    void close(Engine& e) noexcept {
        for (auto& c : conns_)
            if (c->state() != mces::Connection::State::closed) c->close();
        try {
            flush(e);
        } catch (...) {
        }
        if (host_ != nullptr) host_->close(e);
        host_ = nullptr;
    }

private:
    struct Peer {
        enum Mode : uint8_t { opening, mces, plain, failed };
        Mode mode = plain;
        bool answered = false;                    // an MCES datagram came from it
        bool plain_heard = false;                 // opening: a plain datagram came from it
        std::shared_ptr<mces::Connection> conn;   // the one we send on (opened or accepted)
        struct Held {
            int64_t at;   // when the program sent it: a realtime deadline runs from then
            std::vector<uint8_t> bytes;
        };
        std::deque<Held> held;                    // opening: sent before the handshake ended
        size_t held_bytes = 0;
        int64_t plain_until = 0;                  // plain: answered in plain UDP until then
        int64_t retry_at = 0;                     // failed: dropped until then
    };

    int send_to(Engine& e, const sansio::Addr& to, std::span<const uint8_t> msg) {
        const int64_t now = e.now();
        auto it = peers_.find(to);
        if (it != peers_.end()) {
            Peer& p = it->second;
            switch (p.mode) {
            case Peer::opening:
                if (p.held.size() >= kMaxHeld || p.held_bytes + msg.size() > kMaxHeldBytes) return drop();
                p.held.push_back({now, std::vector<uint8_t>(msg.begin(), msg.end())});
                p.held_bytes += msg.size();
                return 0;
            case Peer::mces:
                if (p.conn->state() == mces::Connection::State::closed) break;   // ended: open again
                return on_conn(p, msg, now);   // now: the connection's own time may be a quiet spell old
            case Peer::plain:
                if (now < p.plain_until) return plain(to, msg);
                break;
            case Peer::failed:
                if (now < p.retry_at) return drop();
                break;
            }
            peers_.erase(it);
        }
        if (peers_.size() >= kMaxPeers && !make_room(now)) return drop();
        // auto: a peer known not to answer MCES gets plain UDP at once.
        if (params_.fallback && PeerTable::process().lookup(to, now) == PeerVerdict::native) {
            Peer& p = peers_[to];
            p.mode = Peer::plain;
            p.plain_until = now + kPlainTtl;
            return plain(to, msg);
        }
        std::shared_ptr<mces::Connection> c;
        static const std::vector<std::string> none;
        const std::vector<std::string>& el = params_.elements ? *params_.elements : none;
        if (ep_.connect(to, params_.service_class, mces_offer(params_), now, c, el) != 0 || !c) return drop();
        inc(stats_->connects);
        conns_.push_back(c);
        Peer& p = peers_[to];
        p.mode = Peer::opening;
        p.conn = std::move(c);
        p.held.push_back({now, std::vector<uint8_t>(msg.begin(), msg.end())});
        p.held_bytes = msg.size();
        opening_.push_back(to);
        return 0;
    }

    // The table is full: forget the peers whose plain-UDP or failed verdict
    // has run out, else those answered in plain UDP (a flood of plain
    // datagrams from many sources must not keep MCES from new peers). False
    // when every entry has a connection.
    bool make_room(int64_t now) noexcept {
        size_t before = peers_.size();
        std::erase_if(peers_, [now](const auto& kv) {
            const Peer& p = kv.second;
            return (p.mode == Peer::plain && now >= p.plain_until) || (p.mode == Peer::failed && now >= p.retry_at);
        });
        if (peers_.size() == before)
            std::erase_if(peers_, [](const auto& kv) { return kv.second.mode == Peer::plain; });
        return peers_.size() < kMaxPeers;
    }

    int on_conn(Peer& p, std::span<const uint8_t> msg, int64_t sent_at = -1) noexcept {
        std::ptrdiff_t r = p.conn->send_datagram(msg, sent_at);
        if (r < 0) return drop();
        inc(stats_->sent);
        return 0;
    }
    int plain(const sansio::Addr& to, std::span<const uint8_t> msg) {
        if (plain_out_.size() >= kMaxPlainOut) return drop();
        plain_out_.emplace_back(ep_.local(), to, std::vector<uint8_t>(msg.begin(), msg.end()));
        inc(stats_->plain_out);
        return 0;
    }
    int drop() noexcept {
        inc(stats_->dropped);
        return -ENOBUFS;
    }

    // After every batch the host fed (and every timeout): new connections,
    // handshakes that ended, messages to the program.
    void activity(Engine& e) noexcept {
        try {
            while (auto c = ep_.accept()) adopt(std::move(c), e.now());
            // What a handshake that ended releases (held messages, or plain
            // UDP after a fallback) goes now: the host flushed before this.
            if (!opening_.empty() && check_opening(e)) host_->poke(e);
        } catch (...) {   // bad_alloc: what could not be recorded is lost
        }
        for (const Plain& d : plain_in_)
            deliver_(owner_, d.from, d.bytes.data(), d.bytes.size());   // a refusal is the bridge's to count
        plain_in_.clear();
        const bool publish = e.now() >= published_at_ + kPublishNs;
        Sums live = ended_;
        for (size_t i = 0; i < conns_.size();) {
            mces::Connection& c = *conns_[i];
            std::ptrdiff_t n;
            while ((n = c.recv_datagram(std::span<uint8_t>(buf_, sizeof buf_))) >= 0) {
                inc(stats_->received);
                deliver_(owner_, c.peer(), buf_, static_cast<size_t>(n));
            }
            // Forgotten once drained: a realtime connection closed by its
            // peer still releases what it holds, each at its time.
            if (c.state() == mces::Connection::State::closed && c.drained()) {
                ended_.add(c, false);
                forget(conns_[i]);
                conns_[i] = std::move(conns_.back());
                conns_.pop_back();
                continue;
            }
            if (publish) live.add(c, true);
            ++i;
        }
        if (publish) {
            published_at_ = e.now();
            live.store(*stats_);
        }
    }

    // Counters summed over connections: packets that failed authentication
    // (keyed sockets), and class realtime's.
    struct Sums {
        uint64_t on_time = 0, late_dropped = 0, fec_repaired = 0, retransmitted = 0, expired = 0, jitter_ns = 0;
        uint64_t late_arrivals = 0, repairs_sent = 0, extra_copies = 0;
        uint64_t auth_failed = 0, replay = 0, overflow = 0;
        void add(const mces::Connection& c, bool live) noexcept {
            const mces::ConnCounters k = c.counters();
            auth_failed += k.drops.auth_failed;
            replay += k.drops.replay;
            overflow += k.drops.datagram_queue_full;
            if (!c.chain().realtime()) return;
            on_time += k.on_time;
            late_dropped += k.late_dropped;
            fec_repaired += k.fec_repaired;
            retransmitted += k.retransmitted;
            expired += k.expired;
            late_arrivals += k.late_arrivals;
            repairs_sent += k.repairs_sent;
            extra_copies += k.extra_copies;
            if (live && static_cast<uint64_t>(k.jitter) > jitter_ns) jitter_ns = static_cast<uint64_t>(k.jitter);
        }
        void store(McesDgramStats& s) const noexcept {
            s.on_time.store(on_time, std::memory_order_relaxed);
            s.late_dropped.store(late_dropped, std::memory_order_relaxed);
            s.fec_repaired.store(fec_repaired, std::memory_order_relaxed);
            s.retransmitted.store(retransmitted, std::memory_order_relaxed);
            s.expired.store(expired, std::memory_order_relaxed);
            s.late_arrivals.store(late_arrivals, std::memory_order_relaxed);
            s.repairs_sent.store(repairs_sent, std::memory_order_relaxed);
            s.extra_copies.store(extra_copies, std::memory_order_relaxed);
            s.jitter_us.store(jitter_ns / 1000, std::memory_order_relaxed);
            s.auth_failed.store(auth_failed, std::memory_order_relaxed);
            s.replay.store(replay, std::memory_order_relaxed);
            s.overflow.store(overflow, std::memory_order_relaxed);
        }
    };

    // A connection a peer opened to us: it becomes the one we answer that
    // peer on, unless we have a live one to it already.
    void adopt(std::shared_ptr<mces::Connection> c, int64_t now) {
        inc(stats_->accepted);
        conns_.push_back(c);
        auto it = peers_.find(c->peer());
        if (it == peers_.end()) {
            if (peers_.size() >= kMaxPeers) return;   // read from, never answered on: sends to it reopen
            it = peers_.try_emplace(c->peer()).first;
        }
        Peer& p = it->second;
        p.answered = true;
        if (p.mode == Peer::mces && p.conn && p.conn->state() != mces::Connection::State::closed) return;
        if (p.mode == Peer::opening) return;   // ours goes on (both ends opened at once: two connections)
        p.mode = Peer::mces;
        p.conn = std::move(c);
        PeerTable::process().record(p.conn->peer(), PeerVerdict::mces, now);
    }

    // True when a handshake ended (something may be queued to send).
    bool check_opening(Engine& e) {
        using St = mces::Connection::State;
        const int64_t now = e.now();
        bool ended = false;
        for (size_t i = 0; i < opening_.size();) {
            auto it = peers_.find(opening_[i]);
            if (it == peers_.end() || it->second.mode != Peer::opening) {
                opening_[i] = opening_.back();
                opening_.pop_back();
                continue;
            }
            Peer& p = it->second;
            St st = p.conn->state();
            if (st == St::connecting && p.plain_heard && !p.answered && params_.fallback) {
                p.conn->abort();   // no MCES there: it answered in plain UDP
                st = St::closed;
            }
            if (st == St::connecting) {
                ++i;
                continue;
            }
            if (st == St::established || st == St::closing) {
                inc(stats_->established);
                PeerTable::process().record(it->first, PeerVerdict::mces, now);
                p.mode = Peer::mces;
                for (auto& m : p.held) on_conn(p, m.bytes, m.at);
                p.held.clear();
                p.held_bytes = 0;
            } else {
                failed(it->first, p, now);
            }
            opening_[i] = opening_.back();
            opening_.pop_back();
            ended = true;
        }
        return ended;
    }

    // The handshake to `addr` did not succeed. auto, and nothing answered:
    // plain UDP from now on. Otherwise what was held is lost, and the
    // program hears of it as of an ICMP error.
    void failed(const sansio::Addr& addr, Peer& p, int64_t now) {
        inc(stats_->failed);
        if (!p.answered) PeerTable::process().record(addr, PeerVerdict::native, now);
        if (params_.fallback && !p.answered) {
            inc(stats_->fallbacks);
            p.mode = Peer::plain;
            p.plain_until = now + kPlainTtl;
            p.conn.reset();
            for (auto& m : p.held) plain(addr, m.bytes);
        } else {
            inc(stats_->dropped, p.held.size());
            p.mode = Peer::failed;
            p.retry_at = now + kRetryAfter;
            p.conn.reset();
            if (error_) error_(owner_, addr, p.answered ? ECONNREFUSED : ETIMEDOUT);
        }
        p.held.clear();
        p.held_bytes = 0;
    }

    void publish_final() noexcept {
        Sums last = ended_;   // the figures as the socket ends
        for (auto& c : conns_) last.add(*c, true);
        last.store(*stats_);
    }
    bool settled(int64_t now) const noexcept {
        if (!plain_out_.empty()) return false;
        for (const auto& c : conns_)
            if (!c->datagrams_settled(now)) return false;
        for (const auto& [addr, p] : peers_)
            if (p.mode == Peer::opening && !p.held.empty()) return false;
        return true;
    }
    void linger_check(Engine& e) noexcept {
        if (settled(e.now()) || e.now() >= linger_until_) return finish(e);
        e.arm(linger_timer_, e.now() + kLingerCheckNs);
    }
    void finish(Engine& e) noexcept {
        e.unlinger(*this);
        e.cancel(linger_timer_);
        close(e);
        delete this;
    }
    struct LingerTimer final : Timer {
        McesDgram* m = nullptr;
        void fire(Engine& e, int64_t) noexcept override { m->linger_check(e); }
    };

    // A closed connection leaves: its peer is opened again at the next send.
    void forget(const std::shared_ptr<mces::Connection>& c) noexcept {
        auto it = peers_.find(c->peer());
        if (it != peers_.end() && it->second.conn == c && it->second.mode == Peer::mces) peers_.erase(it);
    }

    struct Plain {
        sansio::Addr from;
        std::span<const uint8_t> bytes;   // in the host's receive scratch, until on_batch_end
    };

    mces::Endpoint ep_;
    McesParams params_;
    McesDgramStats* stats_;          // the flow record's; sink_ once lingering
    McesDgramStats sink_;
    int64_t linger_until_ = 0;
    LingerTimer linger_timer_;
    Sums ended_;                     // of the connections already forgotten
    int64_t published_at_ = 0;
    McesDeliver deliver_;
    McesError error_;
    void* owner_;
    UdpHost* host_ = nullptr;
    size_t max_payload_ = 0;
    std::unordered_map<sansio::Addr, Peer, sansio::AddrHash> peers_;
    std::vector<std::shared_ptr<mces::Connection>> conns_;   // every live connection, to read from
    std::vector<sansio::Addr> opening_;                      // peers whose handshake runs
    std::vector<Plain> plain_in_;
    std::deque<sansio::Datagram> plain_out_;
    uint8_t buf_[65536];

    friend McesDgram* mces_dgram_start(Engine&, int, const McesParams&, McesDgramStats&, McesDeliver, McesError, void*,
                                       int*) noexcept;
};

McesDgram* mces_dgram_start(Engine& e, int udp_fd, const McesParams& p, McesDgramStats& stats, McesDeliver d,
                            McesError er, void* owner, int* err) noexcept {
    sockaddr_storage me{};
    socklen_t ml = sizeof me;
    if (getsockname(udp_fd, reinterpret_cast<sockaddr*>(&me), &ml) != 0) {
        *err = -errno;
        close_internal_fd(udp_fd);
        return nullptr;
    }
    mces::EndpointConfig cfg;
    cfg.local = to_addr(reinterpret_cast<sockaddr*>(&me), ml);
    cfg.seed = mces_seed();
    // One message, one packet, as large as UDP's (over IPv4, which a v6
    // socket may send to): IP fragments what the path cannot carry whole,
    // as it would the program's own datagram.
    cfg.conn.max_datagram_size = kMaxUdp4;
    // Several messages share a packet only up to 1200 bytes (QUIC's size
    // that every path carries), beyond loopback: a fragmented packet of many
    // messages loses them all with one fragment.
    cfg.conn.coalesce_size = 1200;
    cfg.conn.handshake_timeout = p.handshake_timeout_ns > 0 ? p.handshake_timeout_ns : kMcesWait;
    // Class realtime: the latency asked (the server's grant is what both
    // ends use); the policy's FEC layout, kept throughout, or without one
    // adaptive FEC (ConnConfig::fec_adaptive).
    if (p.latency_us > 0) cfg.conn.latency = static_cast<int64_t>(p.latency_us) * 1000;
    if (p.fec_data > 0 && p.fec_parity > 0) {
        cfg.conn.fec = mces::fec::Layout{p.fec_data, p.fec_parity, 1};
        cfg.conn.fec_adaptive = false;
    }
    cfg.conn.rt_clock_symmetric = p.clock_symmetric;
    cfg.max_connections = kMaxPeers * 2;
    cfg.psk = p.psk;   // keyed: every connection of the socket, both roles (docs/mces.md)
    cfg.auth_mode = p.auth_mode;
    McesDgram* m = nullptr;
    size_t max_message = 0;
    try {
        mces::ChainResult chain = p.elements != nullptr ? mces::make_chain(*p.elements, p.service_class)
                                                        : mces::default_chain(p.service_class);
        if (!chain.ok()) {   // the policy checked it: only a class MCES has no message chain for
            *err = -EINVAL;
            close_internal_fd(udp_fd);
            return nullptr;
        }
        // Keyed: the 16-byte tag in place of the 4-byte CRC.
        max_message = mces::Connection::max_message(*chain.chain, cfg.conn.max_datagram_size, cfg.psk != nullptr);
        if (p.elements != nullptr) cfg.accept_elements = *p.elements;
        m = new McesDgram(cfg, p, stats, d, er, owner);
    } catch (...) {
        *err = -ENOMEM;
        close_internal_fd(udp_fd);
        return nullptr;
    }
    int big = 4 << 20;
    setsockopt(udp_fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(udp_fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (!m->start(e, udp_fd, err)) {   // UdpHost::start closed nothing: the fd is still ours
        close_internal_fd(udp_fd);
        delete m;
        return nullptr;
    }
    m->max_payload_ = max_message;
    return m;
}

int mces_dgram_send(Engine& e, McesDgram& m, const sansio::Addr& to, const uint8_t* p, size_t n) noexcept {
    return m.send(e, to, p, n);
}
void mces_dgram_flush(Engine& e, McesDgram& m) noexcept { m.flush(e); }
size_t mces_dgram_max_payload(const McesDgram& m) noexcept { return m.max_payload(); }
void mces_dgram_close(Engine& e, McesDgram& m) noexcept { m.release(e); }

}  // namespace gs::engine
