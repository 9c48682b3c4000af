// libFuzzer target: the packet parser, the frame reader, re-encoding, and both
// handshake sides, on arbitrary bytes. Anything parsed must re-encode, and a
// re-encoded frame must parse back to the same encoding; the server's reply
// to an unproved address must stay within 3x of what it got.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "core/mces/wire/crc32c.h"
#include "core/mces/wire/frame.h"
#include "core/mces/wire/handshake.h"

using namespace gs::mces::wire;

namespace {

void check(bool ok) {
    if (!ok) std::abort();
}

void frames(PacketType type, std::span<const std::uint8_t> payload) {
    static std::vector<std::uint8_t> a(kMaxPacketSize + 64), b(kMaxPacketSize + 64);
    FrameReader fr(type, payload);
    Frame f;
    while (fr.next(f) == ParseError::ok && !fr.done()) {
        Writer wa(a);
        write_frame(wa, f);
        check(wa.ok());
        FrameReader again(type, wa.written());
        Frame g;
        check(again.next(g) == ParseError::ok && !again.done());
        Writer wb(b);
        write_frame(wb, g);
        check(wb.ok());
        check(wb.size() == wa.size() &&
              std::equal(wa.written().begin(), wa.written().end(), wb.written().begin()));
    }
}

// The key, address and time the seed corpus's initial_cookie was made with
// (tests/mces/wire/samples.cpp), so the seed reaches the ACCEPT path.
CookieJar::Key corpus_key() {
    CookieJar::Key k{};
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(31 + i);
    return k;
}

ServerConfig always() {
    ServerConfig c;
    c.retry = RetryPolicy::always;
    return c;
}

Admission admit(const AdmissionRequest& r) {
    Admission a;
    a.no_checksum = r.no_checksum_offered && (r.client_cid.bytes[0] & 1);
    a.admitted = r.qos.rate.value_or(0) < 1'000'000;
    a.service_class = r.service_class;
    a.granted = r.qos;
    a.available.rate = 999'999;
    a.reason = std::string(300, 'x');   // longer than the wire allows: cut
    return a;
}

void packet(std::span<const std::uint8_t> in) {
    for (std::size_t cid_len : {std::size_t{0}, std::size_t{8}}) {
        // Both short-packet forms: with the CRC32C, and without (a
        // connection that agreed to drop it reads every byte as frames).
        for (Checksum sum : {Checksum::crc32c, Checksum::none}) {
            PacketView v;
            if (parse_packet(in, cid_len, v, sum) != ParseError::ok) continue;
            check(v.payload.size() <= in.size());
            if (v.hdr.type != PacketType::version_negotiation) frames(v.hdr.type, v.payload);
        }
    }
    // Both policies: the cookie path (RETRY, cookie checks), and under_load
    // with a load taken from the input, so both of its branches run.
    static ServerHandshake server(always(), corpus_key(), admit);
    static ServerHandshake direct(ServerConfig{}, corpus_key(), admit);
    const auto from = gs::sansio::Addr::v4(0x0a000002, 40000);
    const ServerReply r = server.on_initial(from, in, 5 * gs::sansio::kSecond);
    if (r.kind == ServerReply::Kind::send) check(r.len <= 3 * in.size());
    check(r.kind != ServerReply::Kind::accept || r.info.validated);
    direct.set_unvalidated(in.empty() ? 0 : in[in.size() / 2] % 128);
    const ServerReply d = direct.on_initial(from, in, 5 * gs::sansio::kSecond);
    // Whatever goes to an unproved address is within 3x what came from it.
    const bool unproved = d.kind == ServerReply::Kind::send ||
                          (d.kind != ServerReply::Kind::drop && !d.info.validated);
    if (unproved) check(d.len <= 3 * in.size());

    ClientConfig cc;
    const std::uint8_t id[8] = {0xc1, 0x1e, 0x47, 0x00, 0x01, 0x02, 0x03, 0x04};
    cc.cid = ConnectionId::from(id);
    cc.versions = {kVersion1, 0x4D430002};
    cc.offer_no_checksum = !in.empty() && (in[in.size() - 1] & 1);   // both ways, and the corpus's ACCEPTs
    ClientHandshake client(cc);
    client.start(0);
    static std::vector<std::uint8_t> out;
    client.poll_transmit(out);
    client.on_datagram(in, 1);
    while (client.poll_transmit(out)) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> in(data, size);
    packet(in);
    // Most mutations break the checksum; to reach the header and frame code
    // the same bytes go in again with a correct trailer...
    if (size >= 1 + kChecksumLen) {
        static std::vector<std::uint8_t> sealed;
        sealed.assign(in.begin(), in.end());
        const std::size_t n = size - kChecksumLen;
        const std::uint32_t c = crc32c(std::span<const std::uint8_t>(sealed).first(n));
        for (std::size_t i = 0; i < 4; ++i)
            sealed[n + i] = static_cast<std::uint8_t>(c >> (24 - 8 * i));
        packet(sealed);
    }
    // ...and as the bare payload of every packet type.
    for (std::uint8_t t = 0; t <= static_cast<std::uint8_t>(PacketType::data); ++t)
        if (t != static_cast<std::uint8_t>(PacketType::version_negotiation))
            frames(static_cast<PacketType>(t), in);
    return 0;
}
