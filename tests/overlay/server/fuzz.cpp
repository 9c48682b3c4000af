// libFuzzer target gsoverlayd_fuzz: the overlay server's request parser and
// handler (server.h), and its state-file loader. Input:
//   optional state file: 'S', text up to the first NUL (loaded first);
//   then records of u8 control, u16 length (BE), that many bytes: a request
//   from the client numbered control & 3, after advancing the clock by
//   (control >> 2) * 100 ms.
// Besides "no crash, no sanitizer report" it checks what must hold for any
// input: every answer decodes, echoes the txid and fits one datagram; the
// bounds on overlays, members and log lines; the state file round-trips.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tools/gsoverlayd/server.h"

using namespace gs::overlay;
using namespace gs::overlay::server;
using gs::sansio::Addr;

namespace {

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "gsoverlayd_fuzz: %s\n", what);
    std::abort();
}

Limits limits() {
    Limits l;
    l.max_overlays = 8;
    l.max_members = 4;
    l.max_events = 16;
    return l;
}

void check_state(const Server& s) {
    const std::string text = s.save();
    Server t(limits());
    std::vector<std::string> e;
    if (t.load(text, "state", e) != 0) fail("saved state does not load");
    if (t.save() != text) fail("state does not round-trip");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Server s(limits());
    std::size_t pos = 0;
    if (size > 0 && data[0] == 'S') {
        std::size_t end = 1;
        while (end < size && data[end] != 0) ++end;
        std::vector<std::string> e;
        const std::string_view text(reinterpret_cast<const char*>(data + 1), end - 1);
        const int rc = s.load(text, "state", e);
        if (rc != 0 && e.empty()) fail("load failed without a message");
        if (rc != 0 && s.overlay_count() != 0) fail("failed load changed the state");
        pos = end + 1;
    }
    gs::sansio::Time now = 0;
    std::vector<std::uint8_t> reply;
    while (pos + 3 <= size) {
        const std::uint8_t control = data[pos];
        std::size_t len = (std::size_t{data[pos + 1]} << 8) | data[pos + 2];
        pos += 3;
        len = std::min(len, size - pos);
        now += (control >> 2) * 100 * gs::sansio::kMillisecond;
        const Addr from = Addr::v4(0x7f000001, static_cast<std::uint16_t>(40000 + (control & 3)));
        const std::span<const std::uint8_t> req(data + pos, len);
        pos += len;
        if (s.handle(from, req, now, reply)) {
            if (reply.size() > kMaxDatagram) fail("answer larger than a datagram");
            Response a;
            if (decode_response(reply, a) != 0) fail("answer does not decode");
            Request q;
            if (decode_request(req, q) != kNotOurs && a.txid != q.txid) fail("txid not echoed");
        }
        if (s.overlay_count() > 8) fail("overlays unbounded");
        if (s.member_count() > 8 * 4) fail("members unbounded");
        if (s.next_expiry() != gs::sansio::kNever && s.next_expiry() <= now) fail("expired member kept");
    }
    std::string line;
    std::size_t lines = 0;
    while (s.poll_event(line)) ++lines;
    if (lines > 17) fail("log lines unbounded");
    check_state(s);
    return 0;
}
