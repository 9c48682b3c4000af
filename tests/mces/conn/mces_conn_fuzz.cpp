// libFuzzer target: arbitrary datagrams against an MCES server endpoint and
// against an established connection pair. Each input is a list of records
//     mode(1) length(1) bytes(length; x8 when mode bit 6 is set)
// mode % 8:
//   0  raw datagram to the server from the client's address
//   1  raw datagram to the server from an address taken from the bytes
//   2  the bytes as frames in a short packet to the server's connection,
//      valid header and CRC (so the fuzzer gets past the checksum); the first
//      two bytes are the packet number
//   3  the same towards the client's connection
//   4  raw datagram to the client from the server's address
//   5  time passes (length ms); timers run
//   6  application calls on both sides (write, read, datagram, shutdown)
//   7  close / abort on one side (first byte)
// When the first byte has bit 6 set, the pair runs class realtime (deadline
// and fec: MESSAGE, REPAIR, TIMESTAMP frames, the timing buffer and the FEC
// decoder on hostile input; time is short, a 20 ms latency).
// When the first byte of the input has bit 7 set, the pair runs on loopback
// addresses, where the default chains agree to short packets without the
// CRC32C: modes 2 and 3 then wrap frames without it, and the raw modes reach
// the parser with nothing checked.
// When the first byte has bit 3 set, the server asks every client for a
// cookie first (RetryPolicy::always); otherwise it admits INITIALs without
// one (under_load, the default), so modes 0 and 1 create unvalidated
// connections (at most max_unvalidated, 4 here) that expire as time passes.
// When the first byte has bit 5 set, both endpoints share a pre-shared key
// (authenticated; bit 4: Mode::authenticate, else encrypt): the handshake
// carries proofs, short packets the AEAD tag; modes 2 and 3 then seal the
// frames with the connection's own keys (derived here from the nonces both
// sides agreed), so the fuzzer reaches the frames behind the tag, and the
// raw modes hit the parser with bit 5 set and the opener with forged tags.
// After every record the two endpoints exchange what they want to send. The
// pair is rebuilt for every input, so a run is deterministic. Traps when an
// invariant breaks; ASan/UBSan catch the rest.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/mces/auth/protect.h"
#include "core/mces/conn/endpoint.h"
#include "core/mces/wire/packet.h"

using namespace gs::mces;
using gs::sansio::Addr;
using gs::sansio::Time;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

std::shared_ptr<const auth::Psk> fuzz_key() {
    static const std::shared_ptr<const auth::Psk> k = [] {
        auto p = std::make_shared<auth::Psk>();
        std::uint8_t b[auth::kPskLen];
        for (std::size_t i = 0; i < sizeof b; ++i) b[i] = static_cast<std::uint8_t>(i * 7 + 1);
        check(p->set(b) == 0);
        return p;
    }();
    return k;
}

struct Rig {
    explicit Rig(bool loopback, bool realtime, bool authed, auth::Mode mode, bool cookie_first)
        : kServer(loopback ? Addr::v4(0x7f000001, 4433) : Addr::v4(0x0a000001, 4433)),
          kClient(loopback ? Addr::v4(0x7f000002, 5000) : Addr::v4(0x0a000002, 5000)),
          mode(mode),
          server(cfg(kServer, 1, authed, mode)),
          client(cfg(kClient, 2, authed, mode)) {
        wire::ServerConfig sc;
        sc.retry = cookie_first ? wire::RetryPolicy::always : wire::RetryPolicy::under_load;
        sc.max_unvalidated = 4;
        server.listen(sc);
        client.connect(kServer, realtime ? kClassRealtime : kClassReliable, {}, now, cconn);
        shuttle();
        sconn = server.accept();
        // Both sides always agree: the checksum is on or off for both. Off
        // with a loopback peer, and for class realtime on any path (its
        // default chain has no `checksum`); never off when keyed (the tag).
        if (sconn && cconn->state() == Connection::State::established) {
            check(sconn->checksum() == cconn->checksum());
            check((cconn->checksum() == wire::Checksum::none) == ((loopback || realtime) && !authed));
            check(sconn->authenticated() == authed && cconn->authenticated() == authed);
        }
    }
    static EndpointConfig cfg(const Addr& a, std::uint64_t seed, bool authed, auth::Mode mode) {
        EndpointConfig c;
        c.local = a;
        c.seed = seed;
        if (authed) c.psk = fuzz_key();
        c.auth_mode = mode;
        c.max_connections = 16;
        c.accept_backlog = 8;
        c.max_pending_replies = 16;
        c.conn.send_buffer = 8192;
        c.conn.recv_window = kInitialCredit;
        c.conn.recv_window_max = 32768;
        c.conn.datagram_queue = 8;
        c.conn.latency = 20 * gs::sansio::kMillisecond;
        c.conn.fec = {3, 2, 2};
        c.conn.rt_window = 64;
        return c;
    }
    // Delivers what each side sends to the other, a bounded number of rounds.
    void shuttle() {
        gs::sansio::Datagram d;
        for (int round = 0; round < 64; ++round) {
            bool any = false;
            for (int i = 0; i < 32 && client.poll_transmit(d); ++i) {
                any = true;
                if (d.to == kServer) server.on_datagram(kClient, kServer, d.bytes, now);
            }
            for (int i = 0; i < 32 && server.poll_transmit(d); ++i) {
                any = true;
                if (d.to == kClient) client.on_datagram(kServer, kClient, d.bytes, now);
            }
            if (!any) break;
        }
    }
    void advance(Time dt) {
        now += dt;
        for (int i = 0; i < 8; ++i) {
            const Time t = std::min(server.next_timeout(), client.next_timeout());
            if (t > now) break;
            server.on_timeout(now);
            client.on_timeout(now);
            shuttle();
        }
    }

    Time now = 0;
    const Addr kServer, kClient;
    const auth::Mode mode;
    Endpoint server, client;
    std::shared_ptr<Connection> cconn, sconn;
};

std::vector<std::uint8_t> wrap(const Rig& r, const Connection& c, std::span<const std::uint8_t> b) {
    const wire::ConnectionId& dcid = c.local_cid();
    std::vector<std::uint8_t> out(4096);
    const std::uint64_t pn = b.size() >= 2 ? (std::uint64_t{b[0]} << 8 | b[1]) : 0;
    const auto frames = b.size() >= 2 ? b.subspan(2) : b.subspan(b.size());
    wire::PacketWriter pw(out);
    // The form the connection reads.
    pw.begin_short(dcid, pn, 2, c.checksum(), c.authenticated() ? wire::Auth::on : wire::Auth::off);
    pw.body().bytes(frames);
    const int n = pw.finish();
    out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    if (n > 0 && c.authenticated()) {
        // Sealed with the peer's send key for c (a fresh Sealer: the
        // fuzzer's packet numbers need not increase).
        auth::HandshakeValues hv;
        hv.mode = r.mode;
        const bool to_server = c.role() == Connection::Role::server;
        hv.client_cid = to_server ? c.peer_cid() : c.local_cid();
        hv.server_cid = to_server ? c.local_cid() : c.peer_cid();
        hv.client_nonce = c.client_nonce();
        hv.server_nonce = c.server_nonce();
        auth::Protection p;
        if (auth::make_protection(*fuzz_key(), hv, to_server ? auth::Role::client : auth::Role::server, p) == 0)
            (void)p.send.seal(out, pw.header_len(), pn);
    }
    return out;
}

void app(Rig& r, std::span<const std::uint8_t> b) {
    std::uint8_t buf[2048];
    for (auto& c : {r.cconn, r.sconn}) {
        if (!c) continue;
        const auto w = c->write(b);
        check(w <= static_cast<std::ptrdiff_t>(b.size()));
        const auto rd = c->read(buf);
        check(rd <= static_cast<std::ptrdiff_t>(sizeof buf));
        (void)c->send_datagram(b);
        (void)c->recv_datagram(buf);
        if (!b.empty() && b[0] == 0xff) c->shutdown_write();
        (void)c->readable();
        (void)c->writable();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Rig r(size > 0 && (data[0] & 0x80), size > 0 && (data[0] & 0x40), size > 0 && (data[0] & 0x20),
          size > 0 && (data[0] & 0x10) ? auth::Mode::authenticate : auth::Mode::encrypt,
          size > 0 && (data[0] & 0x08));
    const Addr kServer = r.kServer, kClient = r.kClient;
    std::size_t i = 0;
    int records = 0;
    while (i + 2 <= size && records++ < 256) {
        const std::uint8_t mode = data[i];
        std::size_t len = data[i + 1];
        if (mode & 0x40) len *= 8;
        i += 2;
        len = std::min(len, size - i);
        const std::span<const std::uint8_t> b(data + i, len);
        i += len;
        // What the engine's UDP bridge asks of every datagram (mces_dgram.h):
        // only the first bytes and the connection table are read.
        (void)r.server.claims(b);
        (void)r.client.claims(b);
        switch (mode % 8) {
        case 0: r.server.on_datagram(kClient, kServer, b, r.now); break;
        case 1: {
            const std::uint32_t ip = b.size() >= 4 ? (std::uint32_t{b[0]} << 24 | std::uint32_t{b[1]} << 16 |
                                                      std::uint32_t{b[2]} << 8 | b[3])
                                                   : 0x0b000001;
            r.server.on_datagram(Addr::v4(ip, 7777), kServer, b, r.now);
            break;
        }
        case 2:
            if (r.sconn) {
                const auto p = wrap(r, *r.sconn, b);
                r.server.on_datagram(kClient, kServer, p, r.now);
            }
            break;
        case 3: {
            const auto p = wrap(r, *r.cconn, b);
            r.client.on_datagram(kServer, kClient, p, r.now);
            break;
        }
        case 4: r.client.on_datagram(kServer, kClient, b, r.now); break;
        case 5: r.advance(static_cast<Time>(len + 1) * gs::sansio::kMillisecond); break;
        case 6: app(r, b); break;
        case 7: {
            auto& c = (!b.empty() && (b[0] & 1)) ? r.sconn : r.cconn;
            if (c) {
                if (!b.empty() && (b[0] & 2))
                    c->abort();
                else
                    c->close();
            }
            break;
        }
        }
        r.shuttle();
        check(r.server.connection_count() <= 16);
        check(r.server.unvalidated_count() <= 4 && r.server.unvalidated_count() <= r.server.connection_count());
        check(r.client.connection_count() <= 16);
    }
    // Time runs out: everything must settle without a crash or a livelock.
    for (int k = 0; k < 20; ++k) r.advance(5 * gs::sansio::kSecond);
    // Unvalidated connections expire with the handshake timeout (5 s).
    check(r.server.unvalidated_count() == 0);
    check(r.cconn->state() == Connection::State::closed || r.cconn->next_timeout() > r.now);
    return 0;
}
