// libFuzzer target: arbitrary datagrams to a joined DT node (with one
// neighbour) and to a joining one. Input: records of
//   u8 control (bit0: to the joiner, bit1: advance time 300 ms and fire the
//   timers, bit2: then send data, bit3: from the neighbour's address, bit4:
//   feed the datagram even when empty, bit5: then hint a at the sender's
//   address), u16 length (BE), that many bytes.
// Besides "no crash, no sanitizer report" it checks properties that hold for
// any input: bounded tables and queues, neighbour lists sorted without
// duplicates or self, trees that never name the node as its own parent.
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "core/overlay/dt/dt_node.h"

using namespace gs::overlay;
using namespace gs::overlay::dt;
using gs::sansio::Addr;
using gs::sansio::Datagram;
using gs::sansio::kMillisecond;
using gs::sansio::Time;

namespace {

constexpr std::uint64_t kOverlay = 0x0123456789abcdefull;

[[noreturn]] void fail(const char* what) {
    fprintf(stderr, "overlay_dt_fuzz: %s\n", what);
    abort();
}

void check(const DtNode& n) {
    auto nb = n.neighbors();
    for (std::size_t i = 0; i < nb.size(); ++i) {
        if (nb[i] == n.address()) fail("self in neighbours");
        if (i > 0 && nb[i - 1] >= nb[i]) fail("neighbours not sorted/unique");
    }
    if (n.known_count() > kMaxKnown) fail("knowledge unbounded");
    if (n.joined()) {
        for (LogicalAddress r : nb) {
            auto p = n.parent(r);
            if (p && *p == n.address()) fail("own parent");
        }
        if (n.parent(n.address())) fail("root has a parent");
    }
}

void drain(DtNode& n) {
    Datagram d;
    std::size_t k = 0;
    while (n.poll_transmit(d)) {
        if (d.bytes.size() < kPrefixSize) fail("sent a datagram without prefix");
        ++k;
    }
    if (k > kMaxTransmits) fail("transmit queue unbounded");
    Delivery del;
    while (n.poll_deliver(del)) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const Addr a_addr = Addr::v4(0x7f000001, 5000), b_addr = Addr::v4(0x7f000002, 5000);
    const Addr j_addr = Addr::v4(0x7f000003, 5000), x_addr = Addr::v4(0x7f000009, 6000);
    Time now = 0;
    DtNode a(a_addr, kOverlay, pack({0, 0}), 1);
    a.join(now);
    DtNode b(b_addr, kOverlay, pack({100, 0}), 2, {}, {a_addr});
    b.join(now);
    DtNode j(j_addr, kOverlay, pack({50, 50}), 3, {}, {a_addr});
    j.join(now);
    // Join b to a by hand so that a has a neighbour with a list.
    for (int round = 0; round < 6; ++round) {
        Datagram d;
        while (b.poll_transmit(d)) a.on_datagram(b_addr, a_addr, d.bytes, now);
        while (a.poll_transmit(d))
            if (d.to == b_addr) b.on_datagram(a_addr, b_addr, d.bytes, now);
        now += 300 * kMillisecond;
        a.on_timeout(now);
        b.on_timeout(now);
    }
    drain(j);

    std::size_t at = 0;
    while (at + 3 <= size) {
        const std::uint8_t ctl = data[at];
        const std::size_t len = (std::size_t{data[at + 1]} << 8) | data[at + 2];
        at += 3;
        const std::size_t n = std::min(len, size - at);
        std::span<const std::uint8_t> bytes(data + at, n);
        at += n;
        DtNode& to = (ctl & 1) ? j : a;
        if (n > 0 || (ctl & 0x10)) to.on_datagram((ctl & 8) ? b_addr : x_addr, to.underlay(), bytes, now);
        if (ctl & 0x20) a.hint((ctl & 8) ? b_addr : x_addr, now);
        if (ctl & 2) {
            now += 300 * kMillisecond;
            a.on_timeout(now);
            j.on_timeout(now);
        }
        if (ctl & 4) {
            const std::uint8_t p[3] = {1, 2, 3};
            (void)a.send(SendTo::all, p, now);
            (void)a.send(SendTo::node, p, now, kNoAddress, pack({100, 0}));
            (void)j.send(SendTo::neighbors, p, now);
        }
        check(a);
        check(j);
        drain(a);
        drain(j);
    }
#ifdef DT_FUZZ_REPORT
    // Seed check (not in the fuzzer): how each node took the input.
    fprintf(stderr, "a: malformed %llu foreign %llu delivered %llu | j: malformed %llu joined %d\n",
            (unsigned long long)a.stats().dropped_malformed, (unsigned long long)a.stats().dropped_foreign,
            (unsigned long long)a.stats().delivered, (unsigned long long)j.stats().dropped_malformed, j.joined());
#endif
    return 0;
}
