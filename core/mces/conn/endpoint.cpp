// The endpoint: demultiplexing by connection ID, the stateless server
// handshake in front, timers and transmit order across connections.
#include "core/mces/conn/endpoint.h"

#include <algorithm>
#include <cerrno>
#include <utility>

#include "core/mces/wire/packet.h"

namespace gs::mces {

using sansio::kNever;
using sansio::Time;

namespace {

std::uint64_t splitmix64(std::uint64_t& s) noexcept {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

}  // namespace

// The one place that decides (endpoint.h has the rule and why it is safe).
bool skip_checksum(const Chain& chain, bool explicit_chain, const ConnConfig& cfg,
                   const sansio::Addr& peer) noexcept {
    if (!chain.has(Element::checksum)) return true;
    return !explicit_chain && cfg.loopback_no_checksum && peer.is_loopback();
}

Endpoint::Endpoint(const EndpointConfig& cfg)
    : cfg_(cfg), rng_(cfg.seed ^ 0x6d63657365656431ull), nonce_rng_(cfg.seed ^ 0x6e6f6e63652d7631ull) {
    if (cfg_.psk) {
        proof_ = std::make_shared<auth::HandshakeProof>();
        // On failure (empty PSK, no memory) the proof stays keyless: every
        // sign and check fails, so nothing connects (fail closed).
        (void)proof_->init(*cfg_.psk, cfg_.auth_mode);   // the mode is in the proof's key
    }
}

Endpoint::~Endpoint() {
    // Handles outlive the endpoint: none may keep a view of the owner's buffers.
    on_batch_end();
    for (auto& [k, e] : conns_) {
        e.conn->ep_ = nullptr;
        give_back(std::exchange(e.held, 0));   // no endpoint runs it any more
    }
}

void Endpoint::give_back(std::uint64_t held) noexcept {
    if (held == 0 || !release_) return;
    try {
        release_(held);
    } catch (...) {   // the owner's callback: nothing to undo here
    }
}

std::uint64_t Endpoint::key(const wire::ConnectionId& cid) noexcept {
    std::uint64_t k = 0;
    for (std::size_t i = 0; i < cid.len && i < 8; ++i) k = (k << 8) | cid.bytes[i];
    return k;
}

std::string Endpoint::client_key(const sansio::Addr& a, const wire::ConnectionId& cid) {
    std::string s(reinterpret_cast<const char*>(a.ip.data()), a.ip.size());
    s += static_cast<char>(a.port >> 8);
    s += static_cast<char>(a.port & 0xff);
    s.append(reinterpret_cast<const char*>(cid.bytes.data()), cid.len);
    return s;
}

wire::ConnectionId Endpoint::fresh_cid() {
    for (;;) {
        const std::uint64_t v = splitmix64(rng_);
        wire::ConnectionId c;
        c.len = kCidLen;
        for (std::size_t i = 0; i < kCidLen; ++i) c.bytes[i] = static_cast<std::uint8_t>(v >> (56 - 8 * i));
        if (!conns_.contains(key(c))) return c;
    }
}

auth::HandshakeNonce Endpoint::fresh_nonce() {
    auth::HandshakeNonce n;
    for (std::size_t i = 0; i < n.size(); i += 8) {
        const std::uint64_t v = splitmix64(nonce_rng_);
        for (std::size_t j = 0; j < 8; ++j) n[i + j] = static_cast<std::uint8_t>(v >> (8 * j));
    }
    return n;
}

ConnAuth Endpoint::conn_auth() {
    ConnAuth a;
    if (!cfg_.psk) return a;
    a.psk = cfg_.psk;
    a.mode = cfg_.auth_mode;
    a.proof = proof_;
    return a;
}

const wire::ServerCounters* Endpoint::server_counters() const noexcept {
    return server_ ? &server_->counters() : nullptr;
}

std::uint64_t Endpoint::connection_drops() const {
    std::uint64_t t = 0;
    for (const auto& [k, e] : conns_) t += e.conn->counters().drops.total();
    return t;
}

int Endpoint::listen(wire::ServerConfig sc, wire::AdmitFn admit, ReleaseFn release) {
    if (server_) return -EALREADY;
    sc.server_cid_len = kCidLen;
    wire::CookieJar::Key key{};
    std::uint64_t s = cfg_.seed ^ 0x636f6f6b69656b79ull;
    for (std::size_t i = 0; i < key.size(); i += 8) {
        const std::uint64_t v = splitmix64(s);
        for (std::size_t j = 0; j < 8; ++j) key[i + j] = static_cast<std::uint8_t>(v >> (8 * j));
    }
    sc.proof = proof_;   // null when keyless
    user_admit_ = std::move(admit);
    release_ = std::move(release);
    server_ = std::make_unique<wire::ServerHandshake>(
        std::move(sc), key, [this](const wire::AdmissionRequest& r) { return this->admit(r); });
    return 0;
}

// Runs inside ServerHandshake::on_initial, for clients whose cookie proved
// their address or (under_load) admitted without one: capacity first, then
// the owner's decision, then whether a chain exists for the class granted.
wire::Admission Endpoint::admit(const wire::AdmissionRequest& req) {
    wire::Admission a;
    if (auto it = by_client_.find(client_key(req.from, req.client_cid)); it != by_client_.end()) {
        // A repeated INITIAL (our ACCEPT was lost, or the client resent
        // before it arrived): the same answer again, with the same ID. The
        // handshake alone would derive the ID from this INITIAL's cookie,
        // which can differ from the first one's (no cookie then, or a
        // RETRY answering an earlier copy in another second): a second
        // connection for one client.
        if (auto c = conns_.find(it->second); c != conns_.end()) {
            a.server_cid = c->second.conn->local_cid();
            a.service_class = c->second.conn->service_class();
            a.granted = c->second.conn->granted();
            a.no_checksum = c->second.conn->checksum() == wire::Checksum::none;
            a.server_nonce = c->second.conn->server_nonce_;   // the same ACCEPT, the same keys
            return a;
        }
    }
    if (refusing_) {
        ++counters_.refused_closed;
        a.admitted = false;
        a.code = kRefuseClosed;
        a.reason = "closed: not taking connections";
        return a;
    }
    if (conns_.size() >= cfg_.max_connections || accept_q_.size() >= cfg_.accept_backlog) {
        ++counters_.refused_busy;
        a.admitted = false;
        a.code = kRefuseBusy;
        a.reason = "server busy";
        return a;
    }
    if (user_admit_) {
        a = user_admit_(req);
        if (!a.admitted) return a;
    } else {
        a.granted = req.qos;
    }
    const std::uint8_t g = a.service_class.value_or(req.service_class);
    const ChainResult r = accept_chain(g);
    if (!r.ok()) {
        ++counters_.refused_no_chain;
        give_back(a.held);   // granted by the owner, refused here: no connection
        wire::Admission no;
        no.admitted = false;
        no.code = kRefuseNoChain;
        no.reason = r.error.substr(0, wire::kMaxReasonLen);
        return no;
    }
    // The handshake honours this only if the client offered it (an
    // authenticated client never does: the AEAD tag replaces the CRC).
    a.no_checksum = !authenticated() &&
                    skip_checksum(*r.chain, !cfg_.accept_elements.empty(), cfg_.conn, req.from);
    if (authenticated()) a.server_nonce = fresh_nonce();   // this connection's, never reused
    pending_held_ = a.held;   // handle_initial ties it to the connection, or gives it back
    return a;
}

ChainResult Endpoint::accept_chain(std::uint8_t cls) const {
    return cfg_.accept_elements.empty() ? default_chain(cls) : make_chain(cfg_.accept_elements, cls);
}

void Endpoint::queue_reply(const sansio::Addr& to, std::span<const std::uint8_t> bytes) {
    if (replies_.size() >= cfg_.max_pending_replies) {
        ++counters_.dropped_replies;
        return;
    }
    replies_.push_back(sansio::Datagram{cfg_.local, to, {bytes.begin(), bytes.end()}});
}

void Endpoint::handle_initial(const sansio::Addr& from, std::span<const std::uint8_t> bytes, Time now) {
    give_back(std::exchange(pending_held_, 0));   // none, unless an exception left one
    server_->set_unvalidated(unvalidated_);   // under_load: RETRY once there are max_unvalidated
    const wire::ServerReply r = server_->on_initial(from, bytes, now);
    // What the owner set aside for this INITIAL (0 unless admit() ran and
    // granted): the connection made below keeps it; every other way out
    // gives it back (a grant the handshake could not encode, a collision).
    std::uint64_t held = std::exchange(pending_held_, 0);
    struct GiveBack {
        Endpoint& ep;
        std::uint64_t& held;
        ~GiveBack() { ep.give_back(held); }
    } give_back_unless_kept{*this, held};
    switch (r.kind) {
    case wire::ServerReply::Kind::drop: return;
    case wire::ServerReply::Kind::send:
    case wire::ServerReply::Kind::refuse: queue_reply(from, r.bytes()); return;
    case wire::ServerReply::Kind::accept: break;
    }
    const std::uint64_t k = key(r.info.server_cid);
    if (auto it = conns_.find(k); it != conns_.end()) {
        Connection& c = *it->second.conn;
        if (c.role() == Connection::Role::server && c.peer() == from && c.peer_cid() == r.info.client_cid) {
            if (r.info.validated && !c.address_validated()) {
                // The repeat carried a valid cookie: the address is proved.
                c.validate();
                note_validated();
            }
            // The repeat counts as received, its ACCEPT as sent (3x budget).
            if (c.amp_resend(bytes.size(), r.len)) {
                ++counters_.accept_resent;
                queue_reply(from, r.bytes());
            } else {
                ++counters_.accept_resend_limited;
            }
        } else {
            ++counters_.dropped_cid_collision;
        }
        return;
    }
    ChainResult chain = accept_chain(r.info.granted_class);
    if (!chain.ok()) return;   // admit() refused these already
    auto conn = std::make_shared<Connection>(cfg_.conn, std::move(*chain.chain), from, r.info, now,
                                             conn_auth());
    conn->ep_ = this;
    Entry& e = conns_[k];
    e.conn = conn;
    e.held = std::exchange(held, 0);   // the connection's now: remove() gives it back
    by_client_[client_key(from, r.info.client_cid)] = k;
    accept_q_.push_back(conn);
    ++counters_.connections_created;
    if (!r.info.validated) {
        conn->await_validation(bytes.size(), r.len, now);
        ++unvalidated_;
        ++counters_.admitted_unvalidated;
    }
    queue_reply(from, r.bytes());
    enqueue(k, e);
}

int Endpoint::connect(const sansio::Addr& peer, std::uint8_t service_class, const wire::Qos& qos, Time now,
                      std::shared_ptr<Connection>& out, std::span<const std::string> elements,
                      std::string* error) {
    now_ = std::max(now_, now);
    ChainResult r = make_chain(elements, service_class);
    if (!r.ok()) {
        if (error != nullptr) *error = r.error;
        return -EINVAL;
    }
    if (conns_.size() >= cfg_.max_connections) {
        if (error != nullptr) *error = "too many MCES connections on this endpoint";
        return -EMFILE;
    }
    const wire::ConnectionId cid = fresh_cid();
    const bool offer = !authenticated() && skip_checksum(*r.chain, !elements.empty(), cfg_.conn, peer);
    ConnAuth ca = conn_auth();
    if (ca.on()) ca.client_nonce = fresh_nonce();   // this attempt's
    auto conn = std::make_shared<Connection>(cfg_.conn, std::move(*r.chain),
                                             std::vector<std::string>(elements.begin(), elements.end()),
                                             peer, cid, qos, now_, offer, std::move(ca));
    conn->ep_ = this;
    const std::uint64_t k = key(cid);
    Entry& e = conns_[k];
    e.conn = conn;
    ++counters_.connections_created;
    enqueue(k, e);
    out = std::move(conn);
    return 0;
}

// A connection admitted without a cookie waits in the queue until its
// client's first packet proves the address: the program never sees a
// connection from a spoofed INITIAL (under retry = under_load up to
// max_unvalidated of them live at a time, each 5 s; through the shim each
// would have been a loopback TCP connection handed to the program's
// accept() and reset). The cost is one round trip for a server that speaks
// first (its banner leaves when the client's first packet arrives, 1.5 RTT
// after connect, as on the cookie path). Those that never prove it are
// dropped from the queue once they expire.
std::shared_ptr<Connection> Endpoint::accept() {
    for (auto it = accept_q_.begin(); it != accept_q_.end();) {
        Connection& c = **it;
        if (!c.address_validated()) {
            if (c.state() == Connection::State::closed)
                it = accept_q_.erase(it);
            else
                ++it;
            continue;
        }
        auto conn = std::move(*it);
        accept_q_.erase(it);
        return conn;
    }
    return nullptr;
}

void Endpoint::wake(Connection& c) {
    const std::uint64_t k = key(c.local_cid());
    if (auto it = conns_.find(k); it != conns_.end() && it->second.conn.get() == &c) enqueue(k, it->second);
}

void Endpoint::enqueue(std::uint64_t k, Entry& e) {
    if (e.queued) return;
    e.queued = true;
    ready_.push_back(k);
}

void Endpoint::rearm(std::uint64_t k, Entry& e) {
    const Time t = e.conn->next_timeout();
    if (t == e.armed) return;
    if (e.armed != kNever) timers_.erase({e.armed, k});
    e.armed = t;
    if (t != kNever) timers_.insert({t, k});
}

void Endpoint::remove(std::uint64_t k) {
    auto it = conns_.find(k);
    if (it == conns_.end()) return;
    Entry& e = it->second;
    if (e.armed != kNever) timers_.erase({e.armed, k});
    if (e.conn->role() == Connection::Role::server) {
        auto b = by_client_.find(client_key(e.conn->peer(), e.conn->peer_cid()));
        if (b != by_client_.end() && b->second == k) by_client_.erase(b);
        if (!e.conn->address_validated()) {
            --unvalidated_;
            ++counters_.unvalidated_expired;
        }
    }
    e.conn->ep_ = nullptr;
    if (last_ == &e) last_ = nullptr;
    const std::uint64_t held = e.held;
    conns_.erase(it);
    give_back(held);   // the connection is gone: so is what was set aside for it
    ++counters_.connections_removed;
}

void Endpoint::note_validated() {
    --unvalidated_;
    ++counters_.validated;
}

bool Endpoint::claims(std::span<const std::uint8_t> bytes) const noexcept {
    if (bytes.empty() || (bytes[0] & 0x40) == 0) return false;   // the fixed bit: every MCES packet has it
    if ((bytes[0] & 0x80) != 0) {
        if (bytes.size() < 6) return false;
        const std::uint32_t version = (std::uint32_t{bytes[1]} << 24) | (std::uint32_t{bytes[2]} << 16) |
                                      (std::uint32_t{bytes[3]} << 8) | bytes[4];
        return version == 0 || wire::is_mces_version(version);
    }
    if (bytes.size() < 1 + kCidLen) return false;
    return conns_.contains(key(wire::ConnectionId::from(bytes.subspan(1, kCidLen))));
}

void Endpoint::on_datagram(const sansio::Addr& from, const sansio::Addr&,
                           std::span<const std::uint8_t> bytes, Time now) {
    now_ = std::max(now_, now);
    ++counters_.datagrams_in;
    counters_.bytes_in += bytes.size();
    if (bytes.empty()) {
        ++counters_.dropped_runt;
        return;
    }
    wire::ConnectionId dcid;
    if ((bytes[0] & 0x80) != 0) {
        // Long header invariants: flags(1) version(4) dcid_len(1) dcid.
        if (bytes.size() < 6) {
            ++counters_.dropped_runt;
            return;
        }
        const std::uint32_t version = (std::uint32_t{bytes[1]} << 24) | (std::uint32_t{bytes[2]} << 16) |
                                      (std::uint32_t{bytes[3]} << 8) | bytes[4];
        const unsigned type = (bytes[0] >> 3) & 3u;
        if (version != 0 && type == static_cast<unsigned>(wire::PacketType::initial)) {
            if (!server_) {
                ++counters_.dropped_not_listening;
                return;
            }
            // Our own INITIAL, sent back by something that echoes datagrams
            // (a plain UDP echo server a client tried MCES with): answering
            // it would connect the endpoint to itself.
            const std::size_t dl = bytes[5];
            if (bytes.size() >= 7 + dl && bytes[6 + dl] == kCidLen && bytes.size() >= 7 + dl + kCidLen &&
                conns_.contains(key(wire::ConnectionId::from(bytes.subspan(7 + dl, kCidLen))))) {
                ++counters_.dropped_reflected;
                return;
            }
            handle_initial(from, bytes, now);
            return;
        }
        const std::size_t len = bytes[5];
        if (len != kCidLen || bytes.size() < 6 + len) {
            ++counters_.dropped_long_unknown;
            return;
        }
        dcid = wire::ConnectionId::from(bytes.subspan(6, len));
    } else {
        if (bytes.size() < 1 + kCidLen) {
            ++counters_.dropped_runt;
            return;
        }
        dcid = wire::ConnectionId::from(bytes.subspan(1, kCidLen));
    }
    const std::uint64_t k = key(dcid);
    if (!last_ || last_key_ != k) {
        auto it = conns_.find(k);
        if (it == conns_.end()) {
            if ((bytes[0] & 0x80) != 0)
                ++counters_.dropped_long_unknown;
            else
                ++counters_.dropped_unknown_cid;
            return;
        }
        last_key_ = k;
        last_ = &it->second;
    }
    Entry& e = *last_;
    const bool was_validated = e.conn->address_validated();
    e.conn->on_packet(from, bytes, now);
    if (!was_validated && e.conn->address_validated()) note_validated();
    if (!e.conn->borrow_listed_ && e.conn->borrows()) {
        e.conn->borrow_listed_ = true;
        borrowers_.push_back(e.conn);
    }
    enqueue(k, e);
}

void Endpoint::on_batch_end() {
    for (auto& c : borrowers_) {
        c->borrow_listed_ = false;
        c->on_batch_end();
    }
    borrowers_.clear();
}

void Endpoint::on_timeout(Time now) {
    now_ = std::max(now_, now);
    while (!timers_.empty() && timers_.begin()->first <= now) {
        const std::uint64_t k = timers_.begin()->second;
        timers_.erase(timers_.begin());
        auto it = conns_.find(k);
        if (it == conns_.end()) continue;
        it->second.armed = kNever;
        it->second.conn->on_timeout(now);
        enqueue(k, it->second);
    }
}

Time Endpoint::next_timeout() const {
    if (!ready_.empty() || !replies_.empty()) return now_;
    return timers_.empty() ? kNever : timers_.begin()->first;
}

bool Endpoint::poll_transmit(sansio::Datagram& out) {
    if (!replies_.empty()) {
        out = std::move(replies_.front());
        replies_.pop_front();
        ++counters_.datagrams_out;
        counters_.bytes_out += out.bytes.size();
        return true;
    }
    while (!ready_.empty()) {
        const std::uint64_t k = ready_.front();
        auto it = conns_.find(k);
        if (it == conns_.end()) {
            ready_.pop_front();
            continue;
        }
        Entry& e = it->second;
        Connection::Held held;
        if (e.conn->poll_transmit(out.bytes, now_, out.may_hold ? &held : nullptr)) {
            out.from = cfg_.local;
            out.to = e.conn->peer();
            out.split = held.split;
            out.held[0] = held.part[0];
            out.held[1] = held.part[1];
            ++counters_.datagrams_out;
            counters_.bytes_out += out.size();
            // Round robin: one packet per connection per turn.
            if (ready_.size() > 1) {
                ready_.pop_front();
                ready_.push_back(k);
            }
            return true;
        }
        ready_.pop_front();
        e.queued = false;
        if (e.conn->drained()) {
            remove(k);
            continue;
        }
        rearm(k, e);
    }
    return false;
}

}  // namespace gs::mces
