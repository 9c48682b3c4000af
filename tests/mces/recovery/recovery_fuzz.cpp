// libFuzzer target: drives the recovery elements with operations decoded
// from the input, as a hostile peer could (ACK frames with any ranges,
// segments at any offset, any packet numbers, odd ack/loss reports), and
// traps when an invariant breaks. Borrowing (RecvBuffer with max_borrowed)
// runs beside a copying buffer fed the same segments: same answers, same
// bytes, and after settle() the segments' memory is freed (ASan sees a view
// kept past it).
#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "core/mces/recovery/ack_policy.h"
#include "core/mces/recovery/flow_control.h"
#include "core/mces/recovery/loss_detector.h"
#include "core/mces/recovery/range_set.h"
#include "core/mces/recovery/recv_buffer.h"
#include "core/mces/recovery/send_buffer.h"

namespace {

struct Reader {
    const std::uint8_t* p;
    std::size_t n;
    bool more() const { return n > 0; }
    std::uint64_t take(int bytes) {
        std::uint64_t v = 0;
        for (int i = 0; i < bytes && n > 0; ++i, ++p, --n) v = v << 8 | *p;
        return v;
    }
};

void check(bool ok) {
    if (!ok) __builtin_trap();
}

std::uint8_t stream_byte(std::uint64_t off) { return static_cast<std::uint8_t>(off * 13 + (off >> 9)); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace gs::mces;
    using gs::sansio::Time;
    Reader r{data, size};
    LossConfig lc;
    lc.max_tracked = 256;
    LossDetector ld(lc);
    RangeSet rs(8);
    AckPolicy ap;
    FlowReceiver fr({2048, 8192});
    RecvBuffer rb(8192, 16);
    SendBuffer sb(4096);
    std::uint64_t next_pn = 0, flight = 0;
    Time now = 0;
    std::vector<PacketRange> ranges;
    std::vector<std::uint8_t> buf(4096, 0x5a);
    AckOutcome out;
    RecvBuffer borrowing(8192, 16, 4), copying(8192, 16);
    std::deque<std::vector<std::uint8_t>> lent;   // segments borrowing may view, until settle()

    while (r.more()) {
        switch (r.take(1) % 8) {
        case 0: {  // send a few packets
            const auto k = r.take(1) % 16;
            for (std::uint64_t i = 0; i < k; ++i) {
                const std::uint32_t bytes = 1 + static_cast<std::uint32_t>(r.take(1)) * 8;
                if (ld.on_sent(SentPacket{next_pn, now, bytes, true, true, next_pn}) == 0) {
                    ++next_pn;
                    flight += bytes;
                }
                now += 1000;
            }
            break;
        }
        case 1: {  // an ACK frame with arbitrary ranges
            ranges.clear();
            const auto k = r.take(1) % 12;
            for (std::uint64_t i = 0; i < k; ++i) {
                const bool wide = r.take(1) & 1;
                const std::uint64_t a = r.take(wide ? 8 : 1), b = r.take(wide ? 8 : 1);
                ranges.push_back(PacketRange{a, b});
            }
            const std::uint64_t before = ld.bytes_in_flight();
            const int rc = ld.on_ack(ranges, static_cast<Time>(r.take(4)) - (1 << 30), now, out);
            if (rc != 0) check(ld.bytes_in_flight() == before && out.acked.empty());
            check(ld.bytes_in_flight() + out.acked_bytes + out.lost_bytes == before);
            for (const auto& p : out.acked) flight -= p.bytes;
            for (const auto& p : out.lost) flight -= p.bytes;
            check(flight == ld.bytes_in_flight());
            break;
        }
        case 2: {  // time passes; timers fire
            now += static_cast<Time>(r.take(3)) * 1000;
            if (ld.next_timeout() <= now) {
                const std::uint64_t before = ld.bytes_in_flight();
                ld.on_timeout(now, out);
                check(ld.bytes_in_flight() + out.lost_bytes == before);
                flight -= out.lost_bytes;
            }
            break;
        }
        case 3: {  // a stream segment from the peer
            const bool wide = r.take(1) & 1;
            const std::uint64_t off = r.take(wide ? 8 : 2);
            const std::size_t len = static_cast<std::size_t>(r.take(2) % 3000);
            const bool fin = r.take(1) & 1;
            const std::uint64_t read_before = rb.read_offset();
            if (fr.on_data(off + len) == 0 || off + len < off) {
                rb.on_segment(off, std::span(buf).subspan(0, len), fin, fr.limit());
            }
            const std::size_t n = rb.read(buf);
            check(rb.read_offset() == read_before + n);
            check(rb.read_offset() <= fr.limit());
            fr.on_consumed(rb.read_offset());
            if (fr.update_due()) fr.take_update(now, 1000000);
            break;
        }
        case 4: {  // a packet number from the peer
            const std::uint64_t pn = r.take(8);
            if (rs.add(pn) == 1) ap.on_packet(pn, true, now);
            check(rs.ranges().size() <= 8);
            for (std::size_t i = 1; i < rs.ranges().size(); ++i)
                check(rs.ranges()[i].last + 1 < rs.ranges()[i - 1].first);
            if (ap.ack_now()) ap.on_ack_sent(now);
            break;
        }
        case 5: {  // the application writes; segments go out
            sb.write(std::span(buf).subspan(0, static_cast<std::size_t>(r.take(2) % 4096)));
            if (r.take(1) % 8 == 0) sb.finish();
            StreamSegment seg;
            if (sb.next_segment(static_cast<std::size_t>(r.take(2)), r.take(3), seg)) {
                std::vector<std::uint8_t> tmp(seg.length);
                check(sb.copy(seg.offset, tmp) == 0);
            }
            break;
        }
        case 6: {  // acked/lost reports with any range (a corrupt token)
            const std::uint64_t off = r.take(2);
            const auto len = static_cast<std::uint32_t>(r.take(2));
            const bool fin = r.take(1) & 1;
            if (r.take(1) & 1)
                sb.on_acked(off, len, fin);
            else
                sb.on_lost(off, len, fin);
            check(sb.acked_offset() <= sb.sent_offset() && sb.sent_offset() <= sb.write_offset());
            check(sb.write_offset() - sb.acked_offset() <= 4096);
            break;
        }
        case 7: {  // borrowed reassembly: a segment, a partial read, maybe the batch's end
            const std::uint64_t off = r.take(2);
            const std::size_t len = static_cast<std::size_t>(r.take(2) % 3000);
            const bool fin = r.take(1) & 1;
            const std::uint64_t limit = borrowing.read_offset() + 4096 + r.take(1) * 16;
            std::vector<std::uint8_t>& seg = lent.emplace_back(len);
            for (std::size_t i = 0; i < len; ++i) seg[i] = stream_byte(off + i);
            check(borrowing.on_segment(off, seg, fin, limit) == copying.on_segment(off, seg, fin, limit));
            check(borrowing.readable() == copying.readable());
            check(borrowing.finished() == copying.finished());
            std::vector<std::uint8_t> a(static_cast<std::size_t>(r.take(2) % 5000)), b(a.size());
            const std::uint64_t at = borrowing.read_offset();
            const std::size_t n = borrowing.read(a);
            check(copying.read(b) == n);
            for (std::size_t i = 0; i < n; ++i) check(a[i] == b[i] && a[i] == stream_byte(at + i));
            check(borrowing.read_offset() == copying.read_offset());
            if (r.take(1) & 1) {
                borrowing.settle();
                check(borrowing.borrowed() == 0);
                lent.clear();
            }
            break;
        }
        }
    }
    return 0;
}
