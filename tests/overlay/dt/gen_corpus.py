#!/usr/bin/env python3
"""Writes the overlay_dt_fuzz seed corpus: one file per message type (and
data kind), each a record stream as tests/overlay/dt/fuzz.cpp reads it.
Usage: gen_corpus.py OUT_DIR (tests/fuzz/corpus/overlay_dt)."""
import os
import struct
import sys

OVERLAY = 0x0123456789abcdef
NO_ADDR = 0xffffffffffffffff


def pack(x, y):
    return ((x & 0xffffffff) << 32) | (y & 0xffffffff)


def addr(last, port):
    return bytes(10) + b"\xff\xff" + bytes([127, 0, 0, last]) + struct.pack(">H", port)


def prefix(t):
    return struct.pack(">HBBQB", 0x4753, 1, 1, OVERLAY, t)


def hello(sender, flags, entries):
    b = prefix(0x01) + struct.pack(">QBB", sender, flags, len(entries))
    for coords, a in entries:
        b += struct.pack(">Q", coords) + a
    return b


def data(kind, source, root, dest, epoch, seq, payload):
    return prefix(0x80) + struct.pack(">BBQQQIIH", kind, 255, source, root, dest, epoch, seq,
                                      len(payload)) + payload


def record(ctl, msg):
    return struct.pack(">BH", ctl, len(msg)) + msg


A, B, J = pack(0, 0), pack(100, 0), pack(50, 50)
A_ADDR, B_ADDR = addr(1, 5000), addr(2, 5000)
FROM_B, TO_J, TICK, SEND = 8, 1, 2, 4

seeds = {
    "hello_from_neighbour": record(FROM_B, hello(B, 1, [(A, A_ADDR)])),
    "hello_new_nodes": record(0, hello(pack(40, -30), 1, [(A, A_ADDR), (pack(80, -60), addr(7, 7000)),
                                                            (pack(-20, 90), addr(8, 7000))])) + record(TICK, b""),
    "hello_not_neighbour_stable": record(0, hello(pack(500, 500), 2, [])),
    "hello_to_joiner": record(TO_J | TICK, hello(A, 1, [(B, B_ADDR)])) + record(TO_J | SEND, b""),
    "join_request": record(0, prefix(0x02) + struct.pack(">Q", pack(30, 30)) + addr(9, 9000) + b"\x40"),
    "join_reject": record(TO_J, prefix(0x03) + struct.pack(">Q", J)),
    "goodbye": record(FROM_B, prefix(0x04) + struct.pack(">Q", B)) + record(TICK | SEND, b""),
    "data_all": record(FROM_B, data(0, B, B, NO_ADDR, 7, 1, b"hello all")),
    "data_parent": record(FROM_B, data(1, B, A, NO_ADDR, 7, 2, b"p")),
    "data_children": record(FROM_B, data(2, B, B, NO_ADDR, 7, 3, b"c")),
    "data_neighbors": record(FROM_B, data(3, B, B, NO_ADDR, 7, 4, b"n")),
    "data_node": record(FROM_B, data(4, B, B, A, 7, 5, b"to a")) +
                 record(FROM_B, data(4, B, B, pack(-5, -5), 7, 6, b"onward")),
    "timers_and_sends": record(TICK | SEND, b"") * 20,
    # partition merge: a probe from a far member of another partition, one
    # naming the node's own position, and one with TTL 1
    "merge_probe": record(0, prefix(0x05) + struct.pack(">Q", pack(500, 500)) + addr(9, 9000) + b"\xff") +
                   record(TICK, b""),
    "merge_probe_clash": record(FROM_B, prefix(0x05) + struct.pack(">Q", A) + addr(9, 9000) + b"\x40"),
    "hint_then_probe": record(0x20 | FROM_B, b"") + record(0x20, prefix(0x05) + struct.pack(">Q", pack(-400, 9)) +
                                                    addr(9, 9000) + b"\x10"),
    "merge_probe_ttl1": record(0, prefix(0x05) + struct.pack(">Q", pack(150, 0)) + addr(9, 9000) + b"\x01"),
}

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, blob in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(blob)
