#!/usr/bin/env bash
# Priority between a process's flows under its send aggregate ([general]
# rate_up; core/engine/send_queue.h): two flows of one process send as fast
# as they can; the realtime one (rate = 700kB/s) gets its rate, the other
# the rest of the 1 MB/s aggregate. Without priority both would get half.
# TCP and UDP, through the shim, measured at the receiver over 2 s; and TCP
# over MCES (both ends under gsrun), the first flow class guaranteed with
# rate = 700kB/s: MCES client flows are the send queue's flows too.
source "$(dirname "$0")/lib.sh"

export GSOCKET_LEDGER="$T/ledger"   # the realtime flow reserves its rate

# receiver.py PROTO PORT_RT PORT_BULK: counts bytes per port from 1 s to 3 s
# after the first byte; prints "rt bulk" in bytes/s.
cat >"$T/receiver.py" <<'PY'
import select, socket, sys, time
proto, ports = sys.argv[1], [int(sys.argv[2]), int(sys.argv[3])]
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
socks = {}
for p in ports:
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", p))
    if proto == "tcp": s.listen(1)
    socks[s] = p
if proto == "tcp":
    listeners, socks = socks, {}
    for l, p in listeners.items():
        c, _ = l.accept()
        socks[c] = p
count = {p: 0 for p in ports}
first = None
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    r, _, _ = select.select(list(socks), [], [], 0.5)
    now = time.monotonic()
    for s in r:
        n = len(s.recv(65536))
        if first is None: first = now
        if first + 1 <= now < first + 3: count[socks[s]] += n
    if first is not None and now >= first + 3: break
print(count[ports[0]] / 2, count[ports[1]] / 2, flush=True)
PY

# sender.py PROTO PORT_RT PORT_BULK: one thread per flow, sending for 5 s.
cat >"$T/sender.py" <<'PY'
import socket, sys, threading, time
proto, ports = sys.argv[1], [int(sys.argv[2]), int(sys.argv[3])]
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
def send(port):
    s = socket.socket(socket.AF_INET, kind)
    s.connect(("127.0.0.1", port))
    chunk = b"x" * (16384 if proto == "tcp" else 1200)
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try: s.send(chunk)
        except OSError: break
threads = [threading.Thread(target=send, args=(p,)) for p in ports]
for t in threads: t.start()
for t in threads: t.join()
PY

for proto in tcp udp mces; do
    rt=$(free_port "${proto/mces/tcp}") bulk=$(free_port "${proto/mces/tcp}")
    if [[ $proto == mces ]]; then
        cat >"$T/mces.ini" <<INI
[general]
capacity = 1gbit
rate_up = 1MB/s
[flow rt]
proto = tcp
dport = $rt
class = guaranteed
rate = 700kB/s
transport = mces
[flow bulk]
proto = tcp
dport = $bulk
transport = mces
INI
        cat >"$T/mces-server.ini" <<INI
[flow serve]
proto = tcp
dport = $rt,$bulk
transport = mces
INI
        recv=("$GSRUN" --policy "$T/mces-server.ini" -- "$PY")
    else
        recv=("$PY")
        cat >"$T/$proto.ini" <<INI
[general]
capacity = 1gbit
rate_up = 1MB/s
bridge = always
[flow rt]
proto = $proto
dport = $rt
class = realtime
latency = 100ms
rate = 700kB/s
[flow bulk]
proto = $proto
dport = $bulk
class = $([[ $proto == tcp ]] && echo reliable || echo datagram)
INI
    fi
    "${recv[@]}" "$T/receiver.py" "${proto/mces/tcp}" "$rt" "$bulk" >"$T/$proto.out" 2>"$T/$proto-recv.err" &
    recv_pid=$!; PIDS+=($recv_pid)
    wait_port "$rt" "${proto/mces/tcp}"
    wait_port "$bulk" "${proto/mces/tcp}"
    "$GSRUN" --policy "$T/$proto.ini" --stats "$T/$proto.jsonl" -- "$PY" "$T/sender.py" "${proto/mces/tcp}" "$rt" "$bulk" 2>"$T/$proto.err" \
        || { cat "$T/$proto.err" >&2; fail "$proto sender failed"; }
    wait "$recv_pid" || { cat "$T/$proto-recv.err" >&2; fail "$proto receiver failed"; }
    read -r got_rt got_bulk <"$T/$proto.out"
    if [[ $proto == mces ]]; then   # both flows were carried over MCES, each in its class
        c=$("$PY" - "$T/mces.jsonl" <<'PY'
import json, sys
seen = {}
for line in open(sys.argv[1]):
    for f in json.loads(line)["flows"]:
        if f.get("transport") == "mces": seen[f["class"]] = 1
print(" ".join(sorted(seen)))
PY
)
        [[ $c == "guaranteed reliable" ]] || fail "mces: the flows carried over MCES were of classes '$c'"
    fi
    note "$proto under rate_up = 1MB/s: $([[ $proto == mces ]] && echo guaranteed || echo realtime) $got_rt B/s (rate 700kB/s), $([[ $proto == udp ]] && echo datagram || echo reliable) $got_bulk B/s"
    "$PY" - "$got_rt" "$got_bulk" "$proto" <<'PY' || fail "$proto: no priority (realtime $got_rt, other $got_bulk B/s)"
import sys
rt, bulk = float(sys.argv[1]), float(sys.argv[2])
# Priority: 700 kB/s and 300 kB/s. Half each (no priority) would be 500.
ok = rt >= 0.9 * 700e3 and bulk <= 380e3 and 0.9e6 <= rt + bulk <= 1.1e6
sys.exit(0 if ok else 1)
PY
done
echo "ok priority: under rate_up, a realtime flow gets its rate before a reliable (TCP) or datagram (UDP) one, and a guaranteed one over MCES before a reliable one"
