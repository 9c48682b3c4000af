#include <doctest/doctest.h>

#include <cerrno>
#include <numeric>
#include <vector>

#include "core/mces/recovery/recv_buffer.h"
#include "core/mces/recovery/send_buffer.h"

using namespace gs::mces;

static std::vector<std::uint8_t> bytes(std::size_t n, std::uint8_t from = 0) {
    std::vector<std::uint8_t> v(n);
    std::iota(v.begin(), v.end(), from);
    return v;
}

TEST_CASE("send buffer: capacity is backpressure, segments in order, limit respected") {
    SendBuffer sb(100);
    const auto data = bytes(150);
    CHECK(sb.write(data) == 100);
    CHECK(sb.free_space() == 0);
    CHECK(sb.unsent() == 100);
    StreamSegment seg;
    REQUIRE(sb.next_segment(30, 1000, seg));
    CHECK((seg.offset == 0 && seg.length == 30 && !seg.fin && !seg.retransmission));
    CHECK(sb.unsent() == 70);
    REQUIRE(sb.next_segment(30, 50, seg));          // flow-control limit 50
    CHECK((seg.offset == 30 && seg.length == 20));
    CHECK(sb.unsent() == 50);
    CHECK_FALSE(sb.next_segment(30, 50, seg));
    CHECK(sb.flow_blocked(50));
    std::vector<std::uint8_t> got(20);
    REQUIRE(sb.copy(30, got) == 0);
    CHECK(got == std::vector<std::uint8_t>(data.begin() + 30, data.begin() + 50));
    sb.on_acked(0, 30, false);
    CHECK(sb.acked_offset() == 30);
    CHECK(sb.free_space() == 30);
    CHECK(sb.copy(0, got) == -ERANGE);              // freed
    CHECK_FALSE(sb.holds(0, 20));                   // holds() says what copy() would
    CHECK(sb.holds(30, 20));
    CHECK(sb.holds(30, 70));
    CHECK_FALSE(sb.holds(30, 71));                  // past what was written
    CHECK(sb.write(std::span(data).subspan(100)) == 30);
    // The ring wraps: bytes 100..129 sit where 0..29 were.
    std::vector<std::uint8_t> tail(30);
    REQUIRE(sb.copy(100, tail) == 0);
    CHECK(tail == std::vector<std::uint8_t>(data.begin() + 100, data.begin() + 130));
}

TEST_CASE("send buffer: unsent() counts bytes never sent, not lost ones waiting again") {
    SendBuffer sb(1000);
    CHECK(sb.write(bytes(300)) == 300);
    StreamSegment seg;
    REQUIRE(sb.next_segment(200, 1000, seg));
    CHECK(sb.unsent() == 100);
    sb.on_lost(0, 200, false);                      // queued again: a retransmission,
    CHECK(sb.unsent() == 100);                      // not new bytes
    REQUIRE(sb.next_segment(500, 1000, seg));
    CHECK((seg.offset == 0 && seg.length == 200 && seg.retransmission));
    CHECK(sb.unsent() == 100);
    REQUIRE(sb.next_segment(500, 1000, seg));
    CHECK((seg.offset == 200 && seg.length == 100 && !seg.retransmission));
    CHECK(sb.unsent() == 0);
}

TEST_CASE("send buffer: lost bytes go first, minus what another copy acknowledged") {
    SendBuffer sb(1000);
    sb.write(bytes(300));
    StreamSegment seg;
    for (int i = 0; i < 3; ++i) sb.next_segment(100, 1000, seg);
    sb.on_acked(150, 20, false);                     // part of segment 2 acked (a probe copy)
    sb.on_lost(100, 100, false);
    CHECK(sb.retransmit_bytes() == 80);
    REQUIRE(sb.next_segment(1000, 1000, seg));
    CHECK((seg.offset == 100 && seg.length == 50 && seg.retransmission));
    REQUIRE(sb.next_segment(1000, 1000, seg));
    CHECK((seg.offset == 170 && seg.length == 30 && seg.retransmission));
    sb.on_lost(0, 100, false);
    sb.on_acked(0, 100, false);                      // acked before resent: nothing to resend
    CHECK(sb.retransmit_bytes() == 0);
    sb.on_acked(100, 200, false);
    CHECK(sb.acked_offset() == 300);
    sb.on_acked(0, 300, false);                      // repeats are harmless
    CHECK(sb.acked_offset() == 300);
}

TEST_CASE("send buffer: fin rides the last segment, is resent when lost, acked last") {
    SendBuffer sb(100);
    sb.write(bytes(10));
    CHECK(sb.finish() == 0);
    CHECK(sb.finish() == -EALREADY);
    CHECK(sb.write(bytes(1)) == 0);
    StreamSegment seg;
    REQUIRE(sb.next_segment(100, 100, seg));
    CHECK((seg.offset == 0 && seg.length == 10 && seg.fin));
    CHECK_FALSE(sb.has_pending(100));
    sb.on_lost(0, 10, true);
    REQUIRE(sb.next_segment(100, 100, seg));
    CHECK((seg.length == 10 && seg.fin && seg.retransmission));
    sb.on_acked(0, 10, false);                       // data acked via a copy without fin
    CHECK_FALSE(sb.all_acked());
    sb.on_lost(0, 10, true);                         // the fin-carrying copy is lost
    REQUIRE(sb.next_segment(100, 100, seg));         // a bare fin
    CHECK((seg.offset == 10 && seg.length == 0 && seg.fin));
    sb.on_acked(10, 0, true);
    CHECK(sb.all_acked());
    SendBuffer empty(10);
    empty.finish();
    REQUIRE(empty.next_segment(0, 0, seg));          // a fin needs no credit
    CHECK((seg.offset == 0 && seg.length == 0 && seg.fin));
}

TEST_CASE("reassembly: out of order, overlaps, duplicates deliver each byte once in order") {
    RecvBuffer rb(64);
    const auto d = bytes(40, 100);
    auto part = [&](std::size_t a, std::size_t b) { return std::span(d).subspan(a, b - a); };
    CHECK(rb.on_segment(10, part(10, 20), false, 64) == 0);
    CHECK(rb.readable() == 0);
    CHECK(rb.on_segment(5, part(5, 15), false, 64) == 0);       // overlaps the front
    CHECK(rb.on_segment(10, part(10, 20), false, 64) == 0);     // exact duplicate
    CHECK(rb.duplicate_bytes() == 15);
    CHECK(rb.on_segment(0, part(0, 5), false, 64) == 0);
    CHECK(rb.readable() == 20);
    std::vector<std::uint8_t> out(8);
    CHECK(rb.read(out) == 8);
    CHECK(out == std::vector<std::uint8_t>(d.begin(), d.begin() + 8));
    CHECK(rb.on_segment(0, part(0, 30), false, 64) == 0);       // old + new bytes
    std::vector<std::uint8_t> rest(100);
    CHECK(rb.read(rest) == 22);
    CHECK(std::vector<std::uint8_t>(rest.begin(), rest.begin() + 22) ==
          std::vector<std::uint8_t>(d.begin() + 8, d.begin() + 30));
    CHECK(rb.on_segment(30, part(30, 40), true, 64) == 0);
    CHECK(rb.read(rest) == 10);
    CHECK(rb.finished());
}

TEST_CASE("reassembly: window violations and final-size errors are refused, not stored") {
    RecvBuffer rb(64);
    const auto d = bytes(100);
    CHECK(rb.on_segment(60, std::span(d).subspan(0, 10), false, 64) == -EDQUOT);   // past limit
    CHECK(rb.on_segment(30, std::span(d).subspan(0, 10), false, 35) == -EDQUOT);
    CHECK(rb.highest() == 0);
    CHECK(rb.on_segment(0, std::span(d).subspan(0, 10), false, 1000) == 0);          // limit > capacity
    CHECK(rb.on_segment(10, std::span(d).subspan(0, 60), false, 1000) == -EDQUOT);
    CHECK(rb.on_segment(20, std::span(d).subspan(0, 5), true, 64) == 0);             // final size 25
    CHECK(rb.on_segment(20, std::span(d).subspan(0, 6), false, 64) == -EPROTO);
    CHECK(rb.on_segment(10, std::span(d).subspan(0, 5), true, 64) == -EPROTO);
    CHECK(rb.on_segment(RecvBuffer::kMaxOffset, std::span(d).subspan(0, 5), false, UINT64_MAX) == -EINVAL);
    RecvBuffer rb2(64);
    rb2.on_segment(0, std::span(d).subspan(0, 30), false, 64);
    CHECK(rb2.on_segment(0, std::span(d).subspan(0, 10), true, 64) == -EPROTO);     // fin below data
    CHECK(rb2.readable() == 30);
}

TEST_CASE("reassembly: gap count is bounded") {
    RecvBuffer rb(1000, 4);
    std::uint8_t one = 7;
    for (std::uint64_t off : {10, 20, 30, 40}) CHECK(rb.on_segment(off, {&one, 1}, false, 1000) == 0);
    CHECK(rb.on_segment(50, {&one, 1}, false, 1000) == -ENOBUFS);
    CHECK(rb.dropped_segments() == 1);
    CHECK(rb.on_segment(41, {&one, 1}, false, 1000) == 0);     // extends a range: fine
    CHECK(rb.on_segment(0, {&one, 1}, false, 1000) == 0);      // the head is always taken
    CHECK(rb.readable() == 1);
}

TEST_CASE("stream buffers in place: write_space/commit and peek/consume wrap like write/read") {
    SendBuffer sb(10);
    auto sp = sb.write_space();
    REQUIRE(sp.size() == 10);
    for (std::size_t i = 0; i < 7; ++i) sp[i] = static_cast<std::uint8_t>(i);
    sb.commit(7);
    CHECK(sb.write_offset() == 7);
    CHECK(sb.write_space().size() == 3);
    StreamSegment seg;
    REQUIRE(sb.next_segment(100, 1000, seg));
    sb.on_acked(0, 6, false);                       // frees 0..5; byte 6 still held
    // The tail runs to the ring's end (3 bytes), then wraps (6 more).
    sp = sb.write_space();
    REQUIRE(sp.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) sp[i] = static_cast<std::uint8_t>(7 + i);
    sb.commit(100);                                 // clamped to what was offered
    CHECK(sb.write_offset() == 10);
    sp = sb.write_space();
    REQUIRE(sp.size() == 6);
    for (std::size_t i = 0; i < 6; ++i) sp[i] = static_cast<std::uint8_t>(10 + i);
    sb.commit(6);
    std::vector<std::uint8_t> got(10);
    REQUIRE(sb.copy(6, got) == 0);
    CHECK(got == bytes(10, 6));
    std::span<const std::uint8_t> a, b;
    REQUIRE(sb.view(6, 10, a, b) == 0);             // the same bytes, in two pieces
    CHECK(a.size() == 4);
    CHECK(b.size() == 6);
    CHECK(std::vector<std::uint8_t>(a.begin(), a.end()) == bytes(4, 6));
    CHECK(std::vector<std::uint8_t>(b.begin(), b.end()) == bytes(6, 10));
    CHECK(sb.view(5, 2, a, b) == -ERANGE);          // byte 5 is acked and freed
    REQUIRE(sb.finish() == 0);
    CHECK(sb.write_space().empty());                // finished: nothing more

    RecvBuffer rb(10);
    const auto data = bytes(20);
    REQUIRE(rb.on_segment(0, std::span(data).first(8), false, 100) == 0);
    auto pk = rb.peek();
    CHECK(pk.size() == 8);
    CHECK(pk[0] == 0);
    rb.consume(5);
    CHECK(rb.read_offset() == 5);
    REQUIRE(rb.on_segment(8, std::span(data).subspan(8, 7), false, 100) == 0);   // 8..14 wraps at 10
    pk = rb.peek();
    REQUIRE(pk.size() == 5);                        // 5..9, up to the wrap
    CHECK(std::vector<std::uint8_t>(pk.begin(), pk.end()) == bytes(5, 5));
    rb.consume(5);
    pk = rb.peek();
    REQUIRE(pk.size() == 5);                        // 10..14 at the ring's start
    CHECK(std::vector<std::uint8_t>(pk.begin(), pk.end()) == bytes(5, 10));
    rb.consume(99);                                 // clamped
    CHECK(rb.read_offset() == 15);
    CHECK(rb.peek().empty());
}

TEST_CASE("stream buffers: once empty, the next byte goes to the ring's start") {
    // A sender and reader that keep up touch the same few bytes of a large
    // ring (cache-warm), not all of it in turn.
    SendBuffer sb(64);
    std::vector<std::uint8_t> in = bytes(40);
    REQUIRE(sb.write(in) == 40);
    const std::uint8_t* start = sb.write_space().data() - 40;
    StreamSegment seg;
    REQUIRE(sb.next_segment(100, 1000, seg));
    sb.on_acked(0, 20, false);
    CHECK(sb.write_space().data() == start + 40);   // not empty: no move
    sb.on_acked(20, 20, false);
    REQUIRE(sb.write_space().size() == 64);         // empty: the whole ring, from its start
    CHECK(sb.write_space().data() == start);
    REQUIRE(sb.write(std::span(in).first(30)) == 30);
    std::vector<std::uint8_t> got(30);
    REQUIRE(sb.copy(40, got) == 0);
    CHECK(got == bytes(30));

    RecvBuffer rb(64);
    REQUIRE(rb.on_segment(0, std::span(in).first(30), false, 1000) == 0);
    const std::uint8_t* rstart = rb.peek().data();
    REQUIRE(rb.on_segment(40, std::span(in).subspan(30, 5), false, 1000) == 0);   // a gap: 30..39
    rb.consume(30);
    CHECK(rb.peek().empty());
    REQUIRE(rb.on_segment(30, std::span(in).first(10), false, 1000) == 0);
    CHECK(rb.peek().data() == rstart + 30);         // data was held beyond the gap: no move
    CHECK(rb.readable() == 15);
    rb.consume(15);
    REQUIRE(rb.on_segment(45, std::span(in).first(20), false, 1000) == 0);
    CHECK(rb.peek().data() == rstart);              // empty: from the start again
    std::vector<std::uint8_t> out(20);
    CHECK(rb.read(out) == 20);
    CHECK(out == bytes(20));
}

// ---- borrowing (RecvBuffer with max_borrowed > 0) ---------------------------

namespace {

// Stream bytes as a function of the offset, so a wrong byte is seen wherever
// it came from.
std::uint8_t at(std::uint64_t off) { return static_cast<std::uint8_t>(off * 7 + (off >> 8) + 1); }

// A "datagram" the caller owns: the bytes of [off, off + n).
std::vector<std::uint8_t> seg(std::uint64_t off, std::size_t n) {
    std::vector<std::uint8_t> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = at(off + i);
    return v;
}

// Reads everything readable; counts bytes that are not the stream's.
std::size_t read_all(RecvBuffer& rb, std::uint64_t& bad) {
    std::vector<std::uint8_t> buf(97);   // odd: reads cross segment ends
    std::size_t total = 0;
    for (std::size_t n; (n = rb.read(buf)) > 0;) {
        for (std::size_t i = 0; i < n; ++i) bad += buf[i] != at(rb.read_offset() - n + i);
        total += n;
    }
    return total;
}

// What the reuse of the caller's buffer does to a borrowed view.
void scribble(std::vector<std::uint8_t>& v) { std::fill(v.begin(), v.end(), std::uint8_t{0xEE}); }

}  // namespace

TEST_CASE("borrowing: in-order segments are read from the caller's bytes, uncopied") {
    RecvBuffer rb(4096, 1024, 8);
    auto a = seg(0, 300), b = seg(300, 200);
    REQUIRE(rb.on_segment(0, a, false, 4096) == 0);
    REQUIRE(rb.on_segment(300, b, false, 4096) == 0);
    CHECK(rb.borrowed() == 500);
    CHECK(rb.readable() == 500);
    CHECK(rb.borrowed_segments() == 2);
    // peek is the caller's own bytes: the first segment, then the next.
    auto p = rb.peek();
    CHECK(p.data() == a.data());
    CHECK(p.size() == 300);
    rb.consume(120);
    p = rb.peek();
    CHECK((p.data() == a.data() + 120 && p.size() == 180));
    rb.consume(180);
    CHECK(rb.peek().data() == b.data());
    std::uint64_t bad = 0;
    CHECK(read_all(rb, bad) == 200);   // read() copies from the view
    CHECK(bad == 0);
    CHECK(rb.borrowed() == 0);
    CHECK(rb.read_offset() == 500);
    rb.settle();   // nothing left: nothing copied
    CHECK(rb.settled_bytes() == 0);
    CHECK(rb.duplicate_bytes() == 0);
}

TEST_CASE("borrowing: settle copies what is unread; the data survives the caller's buffer") {
    for (const bool settle : {true, false}) {
        CAPTURE(settle);
        RecvBuffer rb(4096, 1024, 8);
        auto a = seg(0, 300), b = seg(300, 200);
        REQUIRE(rb.on_segment(0, a, false, 4096) == 0);
        REQUIRE(rb.on_segment(300, b, false, 4096) == 0);
        std::vector<std::uint8_t> first(100);
        CHECK(rb.read(first) == 100);
        if (settle) rb.settle();
        scribble(a);
        scribble(b);
        std::uint64_t bad = 0;
        CHECK(read_all(rb, bad) == 400);
        // Without the settle the bytes read are the scribble: this is the
        // check that fails when settling is missing.
        if (settle) {
            CHECK(bad == 0);
            CHECK(rb.settled_bytes() == 400);
        } else {
            CHECK(bad > 0);
        }
    }
}

TEST_CASE("borrowing: a gap, reordering or a duplicate settles first; every byte once, in order") {
    struct Case {
        const char* what;
        std::uint64_t off;
        std::size_t n;
    };
    // After [0, 400) was borrowed (two segments):
    for (const Case c : {Case{"gap", 600, 100}, Case{"duplicate", 100, 200}, Case{"overlap past the end", 350, 150},
                         Case{"already read", 0, 50}}) {
        CAPTURE(c.what);
        RecvBuffer rb(4096, 1024, 8);
        auto a = seg(0, 200), b = seg(200, 200), x = seg(c.off, c.n);
        REQUIRE(rb.on_segment(0, a, false, 4096) == 0);
        REQUIRE(rb.on_segment(200, b, false, 4096) == 0);
        std::vector<std::uint8_t> first(60);
        REQUIRE(rb.read(first) == 60);
        REQUIRE(rb.on_segment(c.off, x, false, 4096) == 0);
        const bool stores = c.off + c.n > 60;   // a segment all read stores nothing: no settle needed
        CHECK(rb.borrowed() == (stores ? 0u : 340u));
        rb.settle();   // the caller's on_batch_end (nothing left to do when the segment settled)
        CHECK(rb.settled_bytes() == 340);
        scribble(a);
        scribble(b);
        scribble(x);
        std::uint64_t bad = 0;
        CHECK(read_all(rb, bad) ==
              (c.off == 600 ? 340u : static_cast<std::size_t>(std::max<std::uint64_t>(400, c.off + c.n) - 60)));
        CHECK(bad == 0);
    }
    // Reordering: the later segment first, then the one before it, then a
    // continuation (borrowed again once the ring is empty).
    RecvBuffer rb(4096, 1024, 8);
    auto a = seg(0, 100), c = seg(200, 100), b = seg(100, 100), d = seg(300, 100), e = seg(400, 100);
    REQUIRE(rb.on_segment(0, a, false, 4096) == 0);     // borrowed
    REQUIRE(rb.on_segment(200, c, false, 4096) == 0);   // a gap: a settles, c goes to the ring
    CHECK(rb.borrowed() == 0);
    CHECK(rb.settled_bytes() == 100);
    REQUIRE(rb.on_segment(100, b, false, 4096) == 0);   // fills it: copied (the ring is not empty)
    REQUIRE(rb.on_segment(300, d, false, 4096) == 0);
    CHECK(rb.borrowed() == 0);
    scribble(a);
    scribble(b);
    scribble(c);
    scribble(d);
    std::uint64_t bad = 0;
    CHECK(read_all(rb, bad) == 400);
    REQUIRE(rb.on_segment(400, e, false, 4096) == 0);   // the ring is empty again: borrowed
    CHECK(rb.borrowed() == 100);
    CHECK(read_all(rb, bad) == 100);
    CHECK(bad == 0);
}

TEST_CASE("borrowing: FIN inside borrowed bytes; the final size is enforced the same") {
    RecvBuffer rb(4096, 1024, 8);
    auto a = seg(0, 100), b = seg(100, 50);
    REQUIRE(rb.on_segment(0, a, false, 4096) == 0);
    REQUIRE(rb.on_segment(100, b, true, 4096) == 0);
    CHECK(rb.borrowed() == 150);
    CHECK(rb.fin_received());
    CHECK_FALSE(rb.finished());
    auto more = seg(150, 10);
    CHECK(rb.on_segment(150, more, false, 4096) == -EPROTO);   // past the final size: not stored
    CHECK(rb.borrowed() == 150);
    std::vector<std::uint8_t> buf(149);
    CHECK(rb.read(buf) == 149);
    CHECK_FALSE(rb.finished());
    rb.settle();
    scribble(a);
    scribble(b);
    CHECK(rb.read(buf) == 1);
    CHECK(buf[0] == at(149));
    CHECK(rb.finished());
}

TEST_CASE("borrowing: the window and the ring bound borrowed bytes as copied ones") {
    RecvBuffer rb(1000, 1024, 8), copy(1000);
    auto a = seg(0, 600), b = seg(600, 400), c = seg(1000, 1);
    for (RecvBuffer* r : {&rb, &copy}) {
        CHECK(r->on_segment(0, a, false, 800) == 0);
        CHECK(r->on_segment(600, b, false, 800) == -EDQUOT);    // past the flow-control limit
        CHECK(r->on_segment(600, b, false, 2000) == 0);
        CHECK(r->on_segment(1000, c, false, 2000) == -EDQUOT);  // past the ring: held bytes count
        CHECK(r->readable() == 1000);
        CHECK(r->read_offset() == 0);   // FlowReceiver's credit follows it: unchanged by borrowing
        CHECK(r->highest() == 1000);
    }
    CHECK(rb.borrowed() == 1000);
    rb.settle();   // the whole ring's worth fits
    scribble(a);
    scribble(b);
    std::uint64_t bad = 0;
    CHECK(read_all(rb, bad) == 1000);
    CHECK(bad == 0);
}

TEST_CASE("borrowing: beyond max_borrowed segments it copies; the ring wraps under settled bytes") {
    RecvBuffer rb(1000, 1024, 3);
    std::vector<std::vector<std::uint8_t>> segs;
    std::uint64_t off = 0, bad = 0, got = 0;
    // 40 rounds of five 90-byte segments, 60 bytes read, settle: the ring
    // wraps many times, and every settle lands at the read offset.
    for (int round = 0; round < 40; ++round) {
        for (int i = 0; i < 5; ++i) {
            segs.push_back(seg(off, 90));
            REQUIRE(rb.on_segment(off, segs.back(), false, 1 << 30) == 0);
            off += 90;
        }
        std::vector<std::uint8_t> buf(60);
        const std::size_t n = rb.read(buf);
        for (std::size_t i = 0; i < n; ++i) bad += buf[i] != at(got + i);
        got += n;
        rb.settle();
        for (auto& s : segs) scribble(s);
        segs.clear();
        std::vector<std::uint8_t> rest(rb.readable());
        const std::size_t m = rb.read(rest);
        for (std::size_t i = 0; i < m; ++i) bad += rest[i] != at(got + i);
        got += m;
    }
    CHECK(got == off);
    CHECK(bad == 0);
    CHECK(rb.borrowed_segments() == 40 * 3);   // the 4th and 5th of each round were copied
}
