#include "core/mces/wire/handshake.h"

#include <algorithm>
#include <cstdio>

namespace gs::mces::wire {

namespace {

// The single handshake frame of type `want` in a handshake packet's payload;
// anything else there but PADDING (and PING in an INITIAL, one PARAMS in an
// ACCEPT: its flags go to *params, 0 without one) is bad_handshake.
ParseError find_one(PacketType in, std::span<const std::uint8_t> payload, FrameType want,
                    Frame& out, std::uint64_t* params = nullptr) noexcept {
    FrameReader fr(in, payload);
    Frame f;
    bool found = false, have_params = false;
    if (params != nullptr) *params = 0;
    for (;;) {
        const ParseError e = fr.next(f);
        if (e != ParseError::ok) return e;
        if (fr.done()) break;
        if (f.type == FrameType::padding || f.type == FrameType::ping) continue;
        if (f.type == FrameType::params && params != nullptr && !have_params) {
            have_params = true;
            *params = f.value;
            continue;
        }
        if (f.type != want || found) return ParseError::bad_handshake;
        out = f;
        found = true;
    }
    return found ? ParseError::ok : ParseError::bad_handshake;
}

std::string hex_version(std::uint32_t v) {
    char b[16];
    std::snprintf(b, sizeof b, "0x%08x", v);
    return b;
}

}  // namespace

// ---- server ---------------------------------------------------------------

ServerHandshake::ServerHandshake(ServerConfig cfg, const CookieJar::Key& key, AdmitFn admit)
    : cfg_(std::move(cfg)), jar_(key, cfg_.cookie_lifetime), admit_(std::move(admit)) {
    // An offer is never a version: speaking one would let it win the
    // downgrade check.
    std::erase_if(cfg_.versions, [](std::uint32_t v) { return is_offer(v); });
    if (cfg_.versions.empty()) cfg_.versions.push_back(kVersion1);
    if (cfg_.versions.size() > kMaxVnVersions) cfg_.versions.resize(kMaxVnVersions);
    if (cfg_.server_cid_len > kMaxCidLen) cfg_.server_cid_len = kMaxCidLen;
    if (cfg_.server_cid_len == 0) cfg_.server_cid_len = 1;
}

bool ServerHandshake::speaks(std::uint32_t v) const noexcept {
    return std::find(cfg_.versions.begin(), cfg_.versions.end(), v) != cfg_.versions.end();
}

void ServerHandshake::send_limited(std::size_t received, ServerReply& out) noexcept {
    // The address is unproved: answer with no more than factor x what came in.
    if (out.len > cfg_.amplification_factor * received) {
        ++counters_.amplification_limited;
        out.kind = ServerReply::Kind::drop;
        out.len = 0;
        return;
    }
    out.kind = ServerReply::Kind::send;
    counters_.bytes_out += out.len;
}

bool ServerHandshake::finish_reply(PacketWriter& pw, auth::ProofKind kind,
                                   const auth::HandshakeNonce& client_nonce,
                                   const auth::HandshakeNonce& nonce, ServerReply& out) noexcept {
    const int n = pw.finish();
    if (n < 0) return false;
    out.len = static_cast<std::size_t>(n);
    // Bound to the INITIAL's nonce: good for this handshake attempt only.
    if (keyed() && cfg_.proof->sign(kind, client_nonce, nonce, {out.buf.data(), out.len}) != 0) {
        out.len = 0;
        return false;
    }
    return true;
}

void ServerHandshake::retry(const sansio::Addr& from, const PacketView& v, std::size_t received,
                            const auth::HandshakeNonce& client_nonce, sansio::Time now,
                            ServerReply& out) {
    std::array<std::uint8_t, kCookieLen> cookie;
    jar_.issue(from, v.hdr.scid, now, cookie);
    PacketWriter pw(out.buf);
    pw.begin_long(PacketType::retry, v.hdr.version, v.hdr.scid, ConnectionId{}, 0, 1, auth());
    write_retry_token(pw.body(), cookie);
    // Cannot fail but for a keyless proof: a RETRY is ~60-90 bytes.
    if (!finish_reply(pw, auth::ProofKind::retry, client_nonce, auth::HandshakeNonce{}, out)) return;
    send_limited(received, out);
    if (out.kind == ServerReply::Kind::send) ++counters_.cookies_issued;
}

ServerReply ServerHandshake::on_initial(const sansio::Addr& from,
                                        std::span<const std::uint8_t> bytes, sansio::Time now) {
    ServerReply out;
    ++counters_.datagrams;
    counters_.bytes_in += bytes.size();

    PacketView v;
    ParseError e = parse_packet(bytes, cfg_.server_cid_len, v, Checksum::crc32c, auth());
    if (e != ParseError::ok) {
        counters_.parse.count(e);
        return out;
    }
    // Short packets belong to connections (the owner routes them first);
    // RETRY, ACCEPT, REFUSE and VN only ever go to clients.
    if (v.hdr.type == PacketType::data || v.hdr.type == PacketType::version_negotiation ||
        (speaks(v.hdr.version) && v.hdr.type != PacketType::initial)) {
        ++counters_.not_initial;
        return out;
    }
    // QUIC's rule: a small INITIAL gets no answer at all, so no reply, even a
    // VERSION_NEGOTIATION, can amplify it.
    if (bytes.size() < cfg_.min_initial_size) {
        ++counters_.initial_too_small;
        return out;
    }
    // Authenticated: the proof before anything that answers or looks
    // further (even a VERSION_NEGOTIATION): a peer without the key learns
    // nothing, not even that something listens.
    auth::HandshakeNonce client_nonce{};
    if (keyed() && cfg_.proof->check(auth::ProofKind::initial, {}, bytes, &client_nonce) !=
                       auth::ProofStatus::ok) {
        ++counters_.bad_proof;
        return out;
    }
    // A version we do not speak: only the invariants (flags, version, IDs,
    // checksum) are known, whatever the type bits say.
    if (!speaks(v.hdr.version)) {
        PacketWriter pw(out.buf);
        pw.begin_version_negotiation(v.hdr.scid, v.hdr.dcid, cfg_.versions);
        const int n = pw.finish();
        if (n < 0) return out;
        out.len = static_cast<std::size_t>(n);
        send_limited(bytes.size(), out);
        if (out.kind == ServerReply::Kind::send) ++counters_.version_negotiations;
        return out;
    }
    Frame hello;
    e = find_one(PacketType::initial, v.payload, FrameType::hello, hello);
    if (e != ParseError::ok) {
        counters_.parse.count(e);
        return out;
    }
    if (v.hdr.scid.len < cfg_.min_client_cid_len) {
        counters_.parse.count(ParseError::bad_cid_length);
        return out;
    }
    // Downgrade check: the version in use must be the client's most preferred
    // one that we speak, or someone forged a VERSION_NEGOTIATION.
    const HelloFrame& h = hello.hello;
    const auto end = h.versions.begin() + static_cast<std::ptrdiff_t>(h.version_count);
    const auto best = std::find_if(h.versions.begin(), end,
                                    [this](std::uint32_t x) { return speaks(x); });
    if (best == end || *best != v.hdr.version) {
        ++counters_.version_downgrades;
        return out;
    }

    // No cookie: admitted at once (one round trip) unless the policy says
    // always or the owner holds max_unvalidated unproved connections (a
    // flood of spoofed sources, or a burst): then a RETRY, and no state.
    const bool direct = h.token.empty() && cfg_.retry == RetryPolicy::under_load &&
                        unvalidated_ < cfg_.max_unvalidated;
    if (h.token.empty() && !direct) {
        if (cfg_.retry == RetryPolicy::under_load) ++counters_.retries_under_load;
        retry(from, v, bytes.size(), client_nonce, now, out);
        return out;
    }
    if (!direct) {
        const CookieStatus cs = jar_.check(from, v.hdr.scid, h.token, now);
        switch (cs) {
        case CookieStatus::ok: break;
        case CookieStatus::malformed: ++counters_.cookies_rejected_malformed; break;
        case CookieStatus::unknown_key: ++counters_.cookies_rejected_unknown_key; break;
        case CookieStatus::bad_mac: ++counters_.cookies_rejected_bad_mac; break;
        case CookieStatus::expired: ++counters_.cookies_rejected_expired; break;
        }
        if (cs != CookieStatus::ok) {
            // Still unproved: a fresh cookie (an honest client whose cookie
            // expired recovers), under the same amplification limit.
            retry(from, v, bytes.size(), client_nonce, now, out);
            return out;
        }
        ++counters_.cookies_accepted;
    }

    // The address is proved, or (direct) the owner will hold the connection
    // to 3x what it received until it is: from here on it may keep state.
    AcceptInfo& info = out.info;
    info.validated = !direct;
    info.client_cid = v.hdr.scid;
    info.server_cid = direct ? jar_.derive_cid(from, v.hdr.scid, cfg_.server_cid_len)
                             : jar_.derive_cid(h.token, cfg_.server_cid_len);
    info.version = v.hdr.version;
    info.asked_class = h.service_class;
    info.asked = h.qos;
    info.client_nonce = client_nonce;
    const bool offered =
        std::find(h.versions.begin(), end, kOfferNoChecksum) != end;
    Admission a;
    a.granted = h.qos;
    if (admit_) {
        AdmissionRequest req{from, v.hdr.scid, v.hdr.version, h.service_class, h.qos, offered,
                             client_nonce, !direct};
        a = admit_(req);
    }
    if (direct && !a.admitted && a.prove_address) {
        // The owner would reserve for this client: a cookie first.
        ++counters_.retries_to_prove;
        retry(from, v, bytes.size(), client_nonce, now, out);
        return out;
    }
    // The owner's connection for this client (a repeat): its ID, whatever
    // this INITIAL's cookie would derive.
    if (a.admitted && a.server_cid.len > 0 && a.server_cid.len <= kMaxCidLen) info.server_cid = a.server_cid;
    PacketWriter pw(out.buf);
    if (a.admitted) {
        const std::uint8_t cls = a.service_class.value_or(h.service_class);
        info.granted_class = cls > kMaxServiceClass ? h.service_class : cls;
        info.granted = a.granted;
        // Agreed only to what was offered: a client that did not offer (or
        // predates the offer) must never see PARAMS, and keeps its CRCs.
        info.no_checksum = offered && a.no_checksum;
        info.server_nonce = a.server_nonce;
        pw.begin_long(PacketType::accept, v.hdr.version, info.client_cid, info.server_cid, 0, 1,
                      auth());
        write_accept(pw.body(), info.granted_class, info.granted);
        if (info.no_checksum) write_params(pw.body(), kParamNoChecksum);
        out.kind = ServerReply::Kind::accept;
        ++counters_.admitted;
        if (direct) ++counters_.admitted_unvalidated;
        if (offered) ++counters_.no_checksum_offered;
        if (info.no_checksum) ++counters_.no_checksum_agreed;
    } else {
        RefuseFrame rf;
        rf.code = a.code;
        rf.service_class = h.service_class;
        rf.asked = h.qos;
        rf.available = a.available;
        const std::size_t rlen = std::min(a.reason.size(), kMaxReasonLen);
        rf.reason = {reinterpret_cast<const std::uint8_t*>(a.reason.data()), rlen};
        pw.begin_long(PacketType::refuse, v.hdr.version, info.client_cid, ConnectionId{}, 0, 1,
                      auth());
        write_refuse(pw.body(), rf);
        out.kind = ServerReply::Kind::refuse;
        ++counters_.refused;
    }
    const bool accepted = out.kind == ServerReply::Kind::accept;
    if (!finish_reply(pw, accepted ? auth::ProofKind::accept : auth::ProofKind::refuse, client_nonce,
                      accepted ? info.server_nonce : auth::HandshakeNonce{}, out)) {
        // The owner's grant could not be encoded (a field out of range):
        // nothing is sent, the client retries and times out visibly.
        out.kind = ServerReply::Kind::drop;
        out.len = 0;
        return out;
    }
    // Unproved address: the ACCEPT or REFUSE (tens of bytes against 1200)
    // is held to the same budget as a RETRY, whatever the owner's reason.
    if (direct && out.len > cfg_.amplification_factor * bytes.size()) {
        ++counters_.amplification_limited;
        out.kind = ServerReply::Kind::drop;
        out.len = 0;
        return out;
    }
    counters_.bytes_out += out.len;
    return out;
}

// ---- client ---------------------------------------------------------------

const char* name(HandshakeError e) noexcept {
    switch (e) {
    case HandshakeError::none: return "none";
    case HandshakeError::timeout: return "timeout";
    case HandshakeError::version_mismatch: return "version_mismatch";
    case HandshakeError::refused: return "refused";
    case HandshakeError::too_many_retries: return "too_many_retries";
    case HandshakeError::no_key: return "no_key";
    }
    return "?";
}

ClientHandshake::ClientHandshake(ClientConfig cfg) : cfg_(std::move(cfg)) {
    std::erase_if(cfg_.versions, [](std::uint32_t v) { return is_offer(v); });
    if (cfg_.versions.empty()) cfg_.versions.push_back(kVersion1);
    if (cfg_.versions.size() > kMaxHelloVersions) cfg_.versions.resize(kMaxHelloVersions);
    cfg_.initial_size = std::clamp(cfg_.initial_size, kMinInitialSize, kMaxPacketSize);
    if (cfg_.service_class > kMaxServiceClass) cfg_.service_class = kMaxServiceClass;
    version_ = cfg_.versions.front();
    rto_ = cfg_.initial_rto;
}

void ClientHandshake::start(sansio::Time now) {
    state_ = State::connecting;
    started_ = now;
    deadline_ = now + cfg_.give_up_after;
    send_now(now);
}

void ClientHandshake::send_now(sansio::Time now) noexcept {
    send_pending_ = true;
    next_send_ = now + rto_;
}

void ClientHandshake::fail(HandshakeError e, std::string msg) {
    state_ = State::failed;
    error_ = e;
    message_ = std::move(msg);
    send_pending_ = false;
}

sansio::Time ClientHandshake::next_timeout() const noexcept {
    if (state_ != State::connecting) return sansio::kNever;
    return std::min(next_send_, deadline_);
}

void ClientHandshake::on_timeout(sansio::Time now) {
    if (state_ != State::connecting) return;
    if (now >= deadline_) {
        std::string why;
        // A keyed server drops a keyless INITIAL (and the reverse) without
        // a word: say what to check.
        if (cfg_.proof)
            why = counters_.bad_proof > 0
                      ? "; " + std::to_string(counters_.bad_proof) +
                            " replies failed the handshake proof: the server has another MCES key"
                      : "; this side authenticates (auth key): the server may have another key or auth mode, or none";
        fail(HandshakeError::timeout,
             "no answer from the MCES server after " +
                 std::to_string((now - started_) / sansio::kMillisecond) + " ms (" +
                 std::to_string(counters_.initials_sent) + " INITIALs sent" + why + ")");
        return;
    }
    if (now >= next_send_) {
        rto_ = std::min(rto_ * 2, cfg_.max_rto);
        send_now(now);
    }
}

bool ClientHandshake::poll_transmit(std::vector<std::uint8_t>& out) {
    if (!send_pending_ || state_ != State::connecting) return false;
    send_pending_ = false;
    out.assign(cfg_.initial_size, 0);
    PacketWriter pw(out);
    const std::uint64_t pn = next_pn_++;
    pw.begin_long(PacketType::initial, version_, ConnectionId{}, cfg_.cid, pn,
                  packet_number_length(pn, -1), cfg_.proof ? Auth::on : Auth::off);
    HelloFrame h;
    h.version_count = cfg_.versions.size();
    std::copy(cfg_.versions.begin(), cfg_.versions.end(), h.versions.begin());
    if (offering()) h.versions[h.version_count++] = kOfferNoChecksum;   // after every version
    h.service_class = cfg_.service_class;
    h.qos = cfg_.qos;
    h.token = {token_.data(), token_len_};
    write_hello(pw.body(), h);
    // Padding makes the server's budget (3x) cover its reply, and shows the
    // path carries datagrams this large.
    pw.pad_to(cfg_.initial_size);
    const int n = pw.finish();
    if (n < 0) {
        fail(HandshakeError::timeout, "cannot encode INITIAL (QoS request out of range)");
        out.clear();
        return false;
    }
    out.resize(static_cast<std::size_t>(n));
    if (cfg_.proof && cfg_.proof->sign(auth::ProofKind::initial, {}, cfg_.nonce, out) != 0) {
        fail(HandshakeError::no_key,
             "cannot sign the MCES INITIAL: the authentication key is not loaded (empty PSK)");
        out.clear();
        return false;
    }
    ++counters_.initials_sent;
    return true;
}

bool ClientHandshake::on_datagram(std::span<const std::uint8_t> bytes, sansio::Time now) {
    PacketView v;
    const ParseError e =
        parse_packet(bytes, cfg_.cid.len, v, Checksum::crc32c, cfg_.proof ? Auth::on : Auth::off);
    if (e != ParseError::ok) {
        counters_.parse.count(e);
        return false;
    }
    if (state_ != State::connecting || !(v.hdr.dcid == cfg_.cid)) {
        ++counters_.ignored;
        return false;
    }
    // Authenticated: a reply must prove the key, for this kind of packet and
    // for our nonce, before it counts (VERSION_NEGOTIATION carries no proof).
    if (cfg_.proof && v.hdr.type != PacketType::version_negotiation) {
        auth::ProofKind kind;
        switch (v.hdr.type) {
        case PacketType::retry: kind = auth::ProofKind::retry; break;
        case PacketType::accept: kind = auth::ProofKind::accept; break;
        case PacketType::refuse: kind = auth::ProofKind::refuse; break;
        default: ++counters_.ignored; return false;
        }
        auth::HandshakeNonce nonce{};
        if (cfg_.proof->check(kind, cfg_.nonce, bytes, &nonce) != auth::ProofStatus::ok) {
            ++counters_.bad_proof;
            return false;
        }
        if (kind == auth::ProofKind::accept) server_nonce_ = nonce;
    }
    switch (v.hdr.type) {
    case PacketType::version_negotiation: {
        // Follow one VERSION_NEGOTIATION only, and ignore one that lists the
        // version we used: it is stale or forged.
        bool lists_ours = false;
        for (std::size_t i = 0; i < v.vn_count(); ++i) lists_ours |= v.vn_version(i) == version_;
        if (vn_done_ || lists_ours) {
            ++counters_.ignored;
            return false;
        }
        for (std::uint32_t mine : cfg_.versions) {
            for (std::size_t i = 0; i < v.vn_count(); ++i) {
                if (v.vn_version(i) == mine) {
                    version_ = mine;
                    vn_done_ = true;
                    token_len_ = 0;
                    ++counters_.version_negotiations;
                    send_now(now);
                    return true;
                }
            }
        }
        std::string theirs, ours;
        for (std::size_t i = 0; i < v.vn_count(); ++i)
            theirs += (i ? " " : "") + hex_version(v.vn_version(i));
        for (std::size_t i = 0; i < cfg_.versions.size(); ++i)
            ours += (i ? " " : "") + hex_version(cfg_.versions[i]);
        fail(HandshakeError::version_mismatch,
             "no common MCES version: server speaks " + theirs + ", we speak " + ours);
        return true;
    }
    case PacketType::retry: {
        Frame f;
        const ParseError fe = find_one(PacketType::retry, v.payload, FrameType::retry_token, f);
        if (fe != ParseError::ok) {
            counters_.parse.count(fe);
            return false;
        }
        if (v.hdr.version != version_) {
            ++counters_.ignored;
            return false;
        }
        if (counters_.retries >= cfg_.max_retries) {
            fail(HandshakeError::too_many_retries,
                 "the MCES server sent " + std::to_string(counters_.retries + 1) +
                     " RETRYs; giving up");
            return true;
        }
        ++counters_.retries;
        token_len_ = f.token.size();
        std::copy(f.token.begin(), f.token.end(), token_.begin());
        // The server answered, so the path works: back to the first interval.
        rto_ = cfg_.initial_rto;
        send_now(now);
        return true;
    }
    case PacketType::accept: {
        Frame f;
        std::uint64_t params = 0;
        const ParseError fe = find_one(PacketType::accept, v.payload, FrameType::accept, f, &params);
        if (fe != ParseError::ok) {
            counters_.parse.count(fe);
            return false;
        }
        // Agreement to something we did not offer: the server would send
        // what we cannot read. Not an answer to our INITIAL.
        if ((params & kParamNoChecksum) && !offering()) {
            counters_.parse.count(ParseError::bad_handshake);
            return false;
        }
        if (v.hdr.version != version_ || v.hdr.scid.len == 0) {
            ++counters_.ignored;
            return false;
        }
        state_ = State::established;
        send_pending_ = false;
        server_cid_ = v.hdr.scid;
        granted_class_ = f.service_class;
        granted_ = f.qos;
        no_checksum_ = (params & kParamNoChecksum) != 0;
        return true;
    }
    case PacketType::refuse: {
        Frame f;
        const ParseError fe = find_one(PacketType::refuse, v.payload, FrameType::refuse, f);
        if (fe != ParseError::ok) {
            counters_.parse.count(fe);
            return false;
        }
        if (v.hdr.version != version_) {
            ++counters_.ignored;
            return false;
        }
        const RefuseFrame& r = f.refuse;
        available_ = r.available;
        refuse_code_ = r.code;
        std::string reason(reinterpret_cast<const char*>(r.reason.data()), r.reason.size());
        // The reason is the peer's text: keep it printable for the log line.
        for (char& c : reason)
            if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e)
                c = '?';
        fail(HandshakeError::refused,
             "refused by the MCES server: asked class " + std::to_string(r.service_class) + " " +
                 describe(r.asked) + "; available " + describe(r.available) + " (code " +
                 std::to_string(r.code) + (reason.empty() ? "" : ": " + reason) + ")");
        return true;
    }
    case PacketType::initial:
    case PacketType::data: break;
    }
    ++counters_.ignored;
    return false;
}

}  // namespace gs::mces::wire
