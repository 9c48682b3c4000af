#!/usr/bin/env bash
# Bridged UDP flows (docs/engine.md "Bridged UDP flows"): the program's UDP
# socket becomes one end of an AF_UNIX SOCK_SEQPACKET pair, each datagram
# behind a header with its address, and the engine carries it over the
# kernel's UDP. What a user of socat, iperf3 or trickle expects:
#  - socat both ways, bridged at both ends, content checksummed (also paced);
#  - an unconnected client talking to two servers sees each one's address;
#  - iperf3 -u -b 100M under a rule's `rate = 20mbit` (the kernel does not
#    pace UDP without fq) and under [general] rate_up: within 5% over 3 s;
#  - a rule's rate_down drops what is beyond it, and --stats counts drops;
#  - fidelity: gsprobe's UDP scenarios through the engine (a send limit, so
#    the datagrams take the pair both ways) print what they print natively,
#    and a probe of names, options and errors answers as the kernel does.
source "$(dirname "$0")/lib.sh"
need socat
need iperf3

within() {   # within MEASURED TARGET PERCENT WHAT
    "$PY" - "$@" <<'PY' || fail "$4: $1 is not within $3% of $2"
import sys
m, t, p = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"# {sys.argv[4]}: {m/1e6:.3f} against {t/1e6:.3f} ({(m/t-1)*100:+.2f}%)")
sys.exit(0 if abs(m / t - 1) <= p / 100 else 1)
PY
}
udp_bridged() {   # udp_bridged STATS: how many UDP flows were bridged
    stats_query "$1" 'sum(1 for f in flows if f["proto"] == "udp" and f["bridged"])'
}

printf '[general]\nbridge = always\n' >"$T/always.ini"
# Every UDP flow with a send limit high enough to change nothing but the path:
# sends go through the pair and the engine, not the transport directly.
cat >"$T/engine.ini" <<'INI'
[general]
bridge = always
[flow udp-through-engine]
proto = udp
rate = 10gbit
INI

# ---- socat both ways, both ends bridged ---------------------------------------
head -c 300000 /dev/urandom >"$T/in.bin"
for pol in always engine; do
    p=$(free_port udp)
    # UDP-LISTEN receives the first datagram, then connects to its sender:
    # bridged at that connect. 1400-byte blocks: one datagram each.
    "$GSRUN" --policy "$T/$pol.ini" --stats "$T/socat-$pol.jsonl" -- \
        socat -b 1400 -T 10 "UDP-LISTEN:$p,bind=127.0.0.1" PIPE 2>"$T/srv.err" &
    srv=$!; PIDS+=($srv)
    wait_port "$p" udp
    # The client paces itself a little (socat writes as fast as it reads):
    # what is compared is the bridge, not the loopback's buffers.
    "$PY" -c 'import sys, time
d = open(sys.argv[1], "rb").read()
for i in range(0, len(d), 1400):
    sys.stdout.buffer.write(d[i:i + 1400]); sys.stdout.flush(); time.sleep(0.0005)
time.sleep(1)' "$T/in.bin" |
        timeout 30 "$GSRUN" --policy "$T/$pol.ini" --stats "$T/socat-$pol.jsonl" -- \
            socat -b 1400 -t 2 - "UDP:127.0.0.1:$p" >"$T/out.bin" 2>"$T/cli.err" \
        || { cat "$T/cli.err" >&2; fail "socat client over a UDP bridge failed ($pol)"; }
    kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true; PIDS=()
    [[ $(md5sum <"$T/in.bin") == $(md5sum <"$T/out.bin") ]] \
        || fail "socat's UDP echo differs over bridges ($pol): $(stat -c %s "$T/out.bin") of 300000 bytes came back"
    n=$(udp_bridged "$T/socat-$pol.jsonl")
    [[ $n -ge 2 ]] || fail "socat's UDP flows were not bridged at both ends ($pol: $n)"
done
note "socat: 300000 bytes echoed intact, client and server bridged (direct sends, and through the engine)"

# ---- one unconnected socket, two servers ----------------------------------------
cat >"$T/two.py" <<'PY'
import socket, sys
# Two native servers answer each datagram with the address they saw it from.
srv = []
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); s.settimeout(5); srv.append(s)
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)
for rnd in range(3):
    for i, s in enumerate(srv):
        c.sendto(b"hello %d %d" % (i, rnd), s.getsockname())
        data, peer = s.recvfrom(100)
        assert data == b"hello %d %d" % (i, rnd), data
        assert peer[1] == c.getsockname()[1], (peer, c.getsockname())   # unbound: 0.0.0.0 here
        s.sendto(("%s:%d" % peer).encode(), peer)
    got = {}
    for _ in srv:
        data, frm = c.recvfrom(100)
        got[frm] = data
    for s in srv:
        assert s.getsockname() in got, (s.getsockname(), got)
        assert got[s.getsockname()] == ("127.0.0.1:%d" % c.getsockname()[1]).encode()
print("ok")
PY
"$GSRUN" --policy "$T/engine.ini" --stats "$T/two.jsonl" -- "$PY" "$T/two.py" >"$T/two.out" 2>&1 \
    || { cat "$T/two.out" >&2; fail "unconnected UDP client with two servers over a bridge"; }
# The client is bridged (it sent first); the servers received first and stay native until they send.
[[ $(udp_bridged "$T/two.jsonl") -ge 1 ]] || fail "the unconnected client was not bridged"
note "unconnected client: each server's address as the source of its answers"

# ---- sockets a bridge cannot follow stay native ------------------------------------
# In an epoll set (epoll watches the open file a bridge would replace), or
# dup'ed, before the first send: native, and they still work.
cat >"$T/exposed.py" <<'PY'
import os, select, socket
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); srv.bind(("127.0.0.1", 0)); srv.settimeout(5)
ep = select.epoll()
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ep.register(a.fileno(), select.EPOLLIN)
a.sendto(b"from-epoll", srv.getsockname())
d, peer = srv.recvfrom(100); srv.sendto(b"reply", peer)
assert ep.poll(5) == [(a.fileno(), select.EPOLLIN)], "epoll did not see the reply"
assert a.recv(100) == b"reply"
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b2 = os.dup(b.fileno())
b.sendto(b"from-dup", srv.getsockname())
d, peer = srv.recvfrom(100); srv.sendto(b"reply2", peer)
assert os.read(b2, 100) == b"reply2"
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # neither: bridged
c.sendto(b"plain", srv.getsockname())
print(a.getsockname()[1], b.getsockname()[1], c.getsockname()[1])
PY
"$GSRUN" --policy "$T/always.ini" --stats "$T/exposed.jsonl" -- "$PY" "$T/exposed.py" >"$T/exposed.out" 2>"$T/exposed.err" \
    || { cat "$T/exposed.out" "$T/exposed.err" >&2; fail "UDP sockets in epoll or dup'ed before their first send"; }
read -r pa pb pc <"$T/exposed.out"
bridged_port() {   # bridged_port PORT: whether the UDP flows bound to PORT were bridged (a dup'ed
                   # socket's other fd has a record of its own when it receives)
    stats_query "$T/exposed.jsonl" "sorted({f['bridged'] for f in flows if f['proto'] == 'udp' and f['local'].endswith(':$1')})"
}
[[ $(bridged_port "$pa") == "[False]" ]] || fail "a UDP socket in an epoll set was bridged: $(bridged_port "$pa")"
[[ $(bridged_port "$pb") == "[False]" ]] || fail "a dup'ed UDP socket was bridged: $(bridged_port "$pb")"
[[ $(bridged_port "$pc") == "[True]" ]] || fail "a plain UDP socket was not bridged: $(bridged_port "$pc")"
has "stays native: it is in an epoll set" "$T/exposed.err" || fail "no log line says why the UDP socket stayed native"
note "epoll'ed and dup'ed UDP sockets stay native (and work, one log line), a plain one is bridged"

# ---- iperf3 -u beyond a rate limit ------------------------------------------------
iperf_udp() {   # iperf_udp POLICY STATS: prints the receiver's bits/s
    local port; port=$(free_port)
    bg iperf3 -s -1 -B 127.0.0.1 -p "$port" >"$T/iperf-server.log"
    wait_port "$port"
    "$GSRUN" --policy "$1" --stats "$2" -- iperf3 -c 127.0.0.1 -p "$port" -u -b 100M -l 1400 -t 3 -J \
        >"$T/iperf.json" || fail "iperf3 -u under $1 failed"
    wait "${PIDS[-1]}" || true
    "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"])' \
        "$T/iperf.json"
}
printf '[flow udp-rate]\nproto = udp\nrate = 20mbit\n' >"$T/rate.ini"
bps=$(iperf_udp "$T/rate.ini" "$T/rate.jsonl")
within "$bps" 20e6 5 "iperf3 -u -b 100M, rule rate = 20mbit (Mbit/s at the receiver)"
[[ $(udp_bridged "$T/rate.jsonl") -eq 1 ]] || fail "iperf3's UDP flow was not bridged for its rate"
printf '[general]\nrate_up = 16mbit\n' >"$T/agg.ini"
bps=$(iperf_udp "$T/agg.ini" "$T/agg.jsonl")
within "$bps" 16e6 5 "iperf3 -u -b 100M, [general] rate_up = 16mbit (Mbit/s at the receiver)"

# ---- a receive limit drops ---------------------------------------------------------
# A native sender offers 4 Mbit/s for 3 s to a receiver whose rule says
# rate_down = 1mbit; the receiver sends first (a receive-only socket is not
# bridged: docs/limitations.md), then counts what reaches it.
cat >"$T/recv.py" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); s.settimeout(2)
s.sendto(b"go", ("127.0.0.1", int(sys.argv[1])))
n = 0; start = None
while True:
    try:
        d = s.recv(2048)
    except socket.timeout:
        break
    if d == b"end": break
    if start is None: start = time.monotonic()
    n += len(d)
print(n, time.monotonic() - start)
PY
sp=$(free_port udp)
"$PY" - "$sp" >"$T/sender.out" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", int(sys.argv[1]))); s.settimeout(10)
_, peer = s.recvfrom(10)
time.sleep(0.2)                      # the receiver's bridge is up
msg = b"d" * 1000; t0 = time.monotonic(); sent = 0
while time.monotonic() - t0 < 3:     # 500 datagrams/s of 1000 B: 4 Mbit/s
    s.sendto(msg, peer); sent += 1
    time.sleep(max(0, t0 + sent / 500 - time.monotonic()))
for _ in range(3): s.sendto(b"end", peer)
print(sent)
PY
PIDS+=($!)
wait_port "$sp" udp
printf '[flow police]\nproto = udp\nrate_down = 1mbit\n' >"$T/down.ini"
"$GSRUN" --policy "$T/down.ini" --stats "$T/down.jsonl" -- "$PY" "$T/recv.py" "$sp" >"$T/recv.out" \
    || fail "receiver under rate_down failed"
wait "${PIDS[-1]}" || true
read -r got secs <"$T/recv.out"
sent=$(cat "$T/sender.out")
drops=$(stats_query "$T/down.jsonl" 'sum(f.get("drops", 0) for f in flows if f["proto"] == "udp")')
note "rate_down = 1mbit: $got bytes in $secs s; $sent datagrams offered, $drops dropped by the engine"
within "$("$PY" -c "print($got * 8 / $secs)")" 1e6 10 "receive at rate_down = 1mbit (Mbit/s)"
[[ $drops -ge $((sent / 2)) ]] || fail "only $drops of $sent datagrams were counted as dropped"
# The 3 "end" datagrams are policed too (and may be among the drops).
[[ $((drops + got / 1000)) -le $((sent + 3)) ]] || fail "drops ($drops) + received ($((got / 1000))) exceed $sent sent and 3 ends"

# ---- fidelity ------------------------------------------------------------------------
scenarios=(udp names ipv6 errors shutdown types)
"$GSPROBE" "${scenarios[@]}" >"$T/plain.out" 2>"$T/plain.err" || { cat "$T/plain.err" >&2; fail "gsprobe fails without the shim"; }
"$GSRUN" --policy "$T/engine.ini" --stats "$T/probe.jsonl" -- "$GSPROBE" "${scenarios[@]}" >"$T/engine.out" \
    2>"$T/engine.err" || { cat "$T/engine.out" "$T/engine.err" >&2; fail "gsprobe fails with UDP through the engine"; }
diff -u "$T/plain.out" "$T/engine.out" || fail "gsprobe's output differs with UDP through the engine"
[[ $(udp_bridged "$T/probe.jsonl") -ge 8 ]] || fail "gsprobe's UDP flows were not bridged"

cat >"$T/fidelity.py" <<'PY'
import errno, socket, sys
def err(f):
    try:
        r = f(); return "ok %r" % (r,)
    except TimeoutError:   # settimeout: Python's own wait, EAGAIN underneath
        return "timeout"
    except OSError as e:
        return errno.errorcode[e.errno]
out = []
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    r = socket.socket(fam, socket.SOCK_DGRAM); r.bind((host, 0)); r.settimeout(5)
    s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(5)
    s.sendto(b"first", r.getsockname())                  # classifies (and bridges) s
    d, frm = r.recvfrom(100)
    out.append(("source port is getsockname's", frm[1] == s.getsockname()[1], frm[0] == host))
    out.append(("SO_TYPE", s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_DGRAM))
    out.append(("SO_PROTOCOL", s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == socket.IPPROTO_UDP))
    out.append(("SO_DOMAIN", s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == fam))
    out.append(("getpeername unconnected", err(lambda: s.getpeername())))
    out.append(("send without address", err(lambda: s.send(b"x"))))
    out.append(("sendto port 0", err(lambda: s.sendto(b"x", (host, 0)))))
    out.append(("sendto too big", err(lambda: s.sendto(b"x" * 65528, r.getsockname()))))
    r.sendto(b"0123456789" * 10, s.getsockname())
    d, _, flags, frm = s.recvmsg(10)
    out.append(("recvmsg truncated", d == b"0123456789", bool(flags & socket.MSG_TRUNC), frm == r.getsockname()))
    r.sendto(b"z" * 100, s.getsockname())
    out.append(("recv MSG_TRUNC length", len(s.recv(10, socket.MSG_TRUNC)) , ))
    s.setblocking(False)
    out.append(("nothing left", err(lambda: s.recv(10))))
    s.settimeout(5)
    s.connect(r.getsockname())
    out.append(("getpeername connected", s.getpeername() == r.getsockname()))
    out.append(("getsockname connected", s.getsockname()[0] == r.getsockname()[0]))
    s.send(b"c")
    out.append(("connected send", r.recvfrom(10) == (b"c", s.getsockname())))
    out.append(("shutdown", err(lambda: s.shutdown(socket.SHUT_WR)), err(lambda: s.send(b"x"))))
    # ICMP port unreachable on a connected socket: ECONNREFUSED, once.
    c = socket.socket(fam, socket.SOCK_DGRAM); c.settimeout(2)
    dead = socket.socket(fam, socket.SOCK_DGRAM); dead.bind((host, 0)); addr = dead.getsockname(); dead.close()
    c.connect(addr)
    c.send(b"anyone?")
    refused = err(lambda: c.recv(10))
    c.setblocking(False)
    out.append(("refused", refused, err(lambda: c.recv(10))))
    c.settimeout(2)
    c.send(b"again?")
    import time; time.sleep(0.2)
    out.append(("refused via SO_ERROR", errno.errorcode.get(c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), 0)))
for o in out: print(*o)
PY
"$PY" "$T/fidelity.py" >"$T/fid-plain.out" 2>&1 || { cat "$T/fid-plain.out" >&2; fail "the fidelity probe fails natively"; }
grep -q "refused ECONNREFUSED EAGAIN" "$T/fid-plain.out" || fail "the fidelity probe does not see ECONNREFUSED natively: $(cat "$T/fid-plain.out")"
for pol in always engine; do
    "$GSRUN" --policy "$T/$pol.ini" --stats "$T/fid-$pol.jsonl" -- "$PY" "$T/fidelity.py" >"$T/fid-$pol.out" 2>&1 \
        || { cat "$T/fid-$pol.out" >&2; fail "the fidelity probe fails over UDP bridges ($pol)"; }
    diff -u "$T/fid-plain.out" "$T/fid-$pol.out" || fail "the fidelity probe answers differently over UDP bridges ($pol)"
    [[ $(udp_bridged "$T/fid-$pol.jsonl") -ge 4 ]] || fail "the fidelity probe's flows were not bridged ($pol)"
done

echo "ok udp_bridge: socat intact both ways, two servers' addresses, iperf3 -u at 20mbit and rate_up within 5%," \
     "rate_down drops counted, gsprobe and the probe identical through the engine"
