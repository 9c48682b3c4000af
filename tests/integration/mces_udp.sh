#!/usr/bin/env bash
# Unmodified UDP programs over MCES class 0 through the shim (docs/mces.md,
# "UDP programs"): socat's echo server (one child per client, fork) and
# connected socat clients, a python client sending to it unconnected with
# sizes up to one packet's, a plain client it serves in plain UDP; then
# transport = auto against a server without gsocket (plain UDP after the
# handshake fails; at once against an echo server), and iperf3 -u across two
# network namespaces, both ends under gsrun.
source "$(dirname "$0")/lib.sh"
need socat
need iperf3

cat >"$T/mces.ini" <<'INI'
[flow udp-mces]
proto = udp
class = datagram
transport = mces
INI
cat >"$T/auto.ini" <<'INI'
[flow udp-auto]
proto = udp
class = datagram
transport = auto
INI

# mces_udp FILE EXPR: EXPR over the first flow in FILE (a --stats record)
# that has MCES counters: `m` its mces_udp block, `f` the flow.
mces_udp() {
    "$PY" - "$1" "$2" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    for f in json.loads(line)["flows"]:
        if "mces_udp" in f:
            print(eval(sys.argv[2], {"m": f["mces_udp"], "f": f}))
            sys.exit(0)
print("none")
PY
}

# ---- loopback: socat echo, both ends under gsrun --------------------------------
up=$(free_port udp)
bg "$GSRUN" --policy "$T/mces.ini" --stats "$T/srv.jsonl" -- \
    socat -b 65536 -T 10 "UDP-RECVFROM:$up,bind=127.0.0.1,fork" PIPE
SRV=$!
wait_port "$up" udp
for i in 1 2 3; do
    got=$(printf 'hello %s\n' "$i" | timeout 10 "$GSRUN" --policy "$T/mces.ini" --stats "$T/cli$i.jsonl" -- \
        socat -T 2 - "UDP:127.0.0.1:$up")
    [[ $got == "hello $i" ]] || fail "socat client $i over MCES got '$got'"
    c=$(mces_udp "$T/cli$i.jsonl" '(f["transport"], m["established"], m["sent"], m["received"], m["plain_out"])')
    [[ $c == "('mces', 1, 1, 1, 0)" ]] || fail "socat client $i: (transport, established, sent, received, plain) = $c"
done
note "loopback: 3 socat clients echoed by socat's forking UDP server, each over its own MCES class-0 connection"

# An unconnected client: whole messages from 0 bytes to what one packet
# carries, each answered from the server's address; one byte more is lost
# and the next call says EMSGSIZE.
cat >"$T/sizes.py" <<'PY'
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
dst = ("127.0.0.1", int(sys.argv[1]))
for n in (1, 1200, 9000, 65473):
    msg = bytes((i * 7 + n) & 0xFF for i in range(n))
    s.sendto(msg, dst)
    got, frm = s.recvfrom(70000)
    print(n, got == msg, frm == dst)
s.sendto(b"x" * 65474, dst)
try:
    for _ in range(200):
        s.sendto(b"y", dst)
        s.recvfrom(10)
    print("no error")
except OSError as e:
    print("error", errno.errorcode.get(e.errno, e.errno))
PY
timeout 30 "$GSRUN" --policy "$T/mces.ini" --stats "$T/sizes.jsonl" -- "$PY" "$T/sizes.py" "$up" >"$T/sizes.out" 2>/dev/null
want=$'1 True True\n1200 True True\n9000 True True\n65473 True True\nerror EMSGSIZE'
[[ $(cat "$T/sizes.out") == "$want" ]] || { cat "$T/sizes.out" >&2; fail "unconnected client: sizes or addresses wrong"; }
[[ $(mces_udp "$T/sizes.jsonl" 'f["transport"]') == mces ]] || fail "the unconnected client was not carried over MCES"
note "loopback: 1 to 65,473-byte messages whole over MCES, answered from the server's address; 65,474 says EMSGSIZE"

# A client without gsocket: served in plain UDP by the same server.
got=$(printf 'plain\n' | timeout 10 socat -T 2 - "UDP:127.0.0.1:$up")
[[ $got == plain ]] || fail "a plain UDP client got '$got' from the MCES server"
note "loopback: a plain UDP client is answered in plain UDP"

# transport = auto against servers without gsocket: plain UDP after the
# handshake bound (1 s) when the port is silent, at once when it echoes
# (our own handshake coming back says nobody speaks MCES there).
pp=$(free_port udp)
bg socat -u "UDP-RECV:$pp,bind=127.0.0.1" "OPEN:$T/plain.bin,creat,append"
wait_port "$pp" udp
timeout 20 "$GSRUN" --policy "$T/auto.ini" --stats "$T/auto.jsonl" -- "$PY" -c 'import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(3): s.sendto(b"a%d;" % i, ("127.0.0.1", int(sys.argv[1])))
time.sleep(1.5)' "$pp" 2>/dev/null
[[ $(tr -d '\0' <"$T/plain.bin" | grep -o 'a[0-9];' | tr -d '\n') == 'a0;a1;a2;' ]] || fail "auto: the plain receiver did not get the three messages after the fallback"
c=$(mces_udp "$T/auto.jsonl" '(m["connects"], m["fallbacks"], m["plain_out"], m["dropped"])')
[[ $c == "(1, 1, 3, 0)" ]] || fail "auto against a plain receiver: (connects, fallbacks, plain_out, dropped) = $c"
note "auto: a receiver without gsocket got the 3 messages in plain UDP, in order, after the handshake bound"

ep=$(free_port udp)
bg socat -T 10 "UDP-RECVFROM:$ep,bind=127.0.0.1,fork" PIPE
wait_port "$ep" udp
t0=$(date +%s%N)
got=$(printf 'echo me\n' | timeout 10 "$GSRUN" --policy "$T/auto.ini" --stats "$T/auto2.jsonl" -- \
    socat -T 2 - "UDP:127.0.0.1:$ep")
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[[ $got == "echo me" ]] || fail "auto against a plain echo server got '$got'"
c=$(mces_udp "$T/auto2.jsonl" '(m["accepted"], m["fallbacks"], m["plain_out"], m["plain_in"])')
[[ $c == "(0, 1, 1, 1)" ]] || fail "auto against a plain echo server: (accepted, fallbacks, plain_out, plain_in) = $c"
note "auto: a plain echo server answered in plain UDP (no MCES connection to ourselves), whole exchange ${ms} ms"

kill "$SRV" 2>/dev/null; wait "$SRV" 2>/dev/null || true
c=$(mces_udp "$T/srv.jsonl" 'f["transport"]')
[[ $c == mces ]] || fail "the server's socket was not carried over MCES ($c)"

# ---- two namespaces over veth: iperf3 -u, both ends under gsrun ----------------
[[ $(id -u) -eq 0 ]] && command -v ip >/dev/null || { echo "ok mces_udp (loopback only: no root for namespaces)"; exit 0; }
source "$(dirname "$0")/../../scripts/lib/netns.sh"
A=gsu$$a B=gsu$$b
trap 'netns_del "$A" "$B"; cleanup' EXIT
netns_pair "$A" "$B" 10.79.0 || skip "cannot create network namespaces"
# Class 0 repairs nothing: what a receiver too slow to read loses is lost.
# Under ASan the engines are several times slower: the same 17,800
# datagrams at half the rate (a run at 100 Mbit/s lost 5.1%).
rate=100M secs=2
[[ "${GS_SANITIZE:-none}" == *address* ]] && rate=50M secs=4
( exec ip netns exec "$B" "$GSRUN" --policy "$T/mces.ini" --stats "$T/isrv.jsonl" -- iperf3 -s -1 -p 5201 ) \
    >"$T/isrv.log" 2>&1 &
ISRV=$!
for _ in $(seq 100); do ip netns exec "$B" ss -Htln | grep -q ':5201 ' && break; sleep 0.05; done
timeout 30 ip netns exec "$A" "$GSRUN" --policy "$T/mces.ini" --stats "$T/icli.jsonl" -- \
    iperf3 -c 10.79.0.2 -p 5201 -u -b "$rate" -l 1400 -t "$secs" --json >"$T/iperf.json" 2>"$T/iperf.err" \
    || { cat "$T/iperf.err" "$T/isrv.log" >&2; fail "iperf3 -u across veth over MCES failed"; }
wait "$ISRV" 2>/dev/null || true
read -r mbit lost total < <("$PY" -c 'import json, sys
e = json.load(open(sys.argv[1]))["end"]["sum"]
print(round(e["bits_per_second"] / 1e6), e["lost_packets"], e["packets"])' "$T/iperf.json")
c=$(mces_udp "$T/icli.jsonl" '(f["transport"], m["established"], m["sent"] >= 15000)')
[[ $c == "('mces', 1, True)" ]] || fail "iperf3 -u client across veth: (transport, established, sent >= 15000) = $c"
s=$(mces_udp "$T/isrv.jsonl" '(m["accepted"], m["received"])')
(( total > 10000 && lost * 20 <= total )) || fail "iperf3 -u across veth over MCES lost $lost of $total datagrams"
note "veth: iperf3 -u at $rate over MCES: $mbit Mbit/s received, $lost of $total lost; server (accepted, received) $s"

# Datagrams larger than the veth's MTU, sent back to back: each goes in its
# own MCES packet, which IP fragments as it would the program's own datagram
# (the kernel refuses them as GSO runs: the engine then sends them one by
# one, nothing is lost).
cat >"$T/big.py" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if sys.argv[1] == "recv":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)   # the burst, as plain UDP would need
    s.bind(("0.0.0.0", 5203))
    s.settimeout(3)
    got = bad = 0
    try:
        while got + bad < 200:
            d = s.recv(70000)
            ok = len(d) == 3000 and d == bytes([d[0]]) * 3000
            got, bad = got + ok, bad + (not ok)
    except socket.timeout:
        pass
    print(got, bad)
else:
    for i in range(200):
        s.sendto(bytes([i]) * 3000, ("10.79.0.2", 5203))
    time.sleep(0.5)
PY
( exec ip netns exec "$B" "$GSRUN" --policy "$T/mces.ini" -- "$PY" "$T/big.py" recv ) >"$T/big.out" 2>&1 &
BIG=$!
for _ in $(seq 100); do ip netns exec "$B" ss -Huln | grep -q ':5203 ' && break; sleep 0.05; done
timeout 20 ip netns exec "$A" "$GSRUN" --policy "$T/mces.ini" --stats "$T/big.jsonl" -- "$PY" "$T/big.py" send \
    || fail "sending 3000-byte datagrams across veth failed"
wait "$BIG" 2>/dev/null || true
[[ $(cat "$T/big.out") == "200 0" ]] || fail "3000-byte datagrams across veth (MTU 1500) over MCES: (whole, damaged) = $(cat "$T/big.out"), want 200 0"
[[ $(mces_udp "$T/big.jsonl" 'f["transport"]') == mces ]] || fail "the 3000-byte sender was not carried over MCES"
note "veth: 200 datagrams of 3,000 bytes (MTU 1,500) back to back over MCES: all 200 whole"

# Class realtime (120 ms) at 5% random loss (nftables in B): FEC and resends
# within the deadline deliver what plain UDP would lose. iperf3 counts as
# lost what its server had not read when the test ended: up to 120 ms of
# messages are still in the timing buffer then, and are not counted at all.
# clock = symmetric: on a path this short (bounds closer than twice the
# margin) it releases as strict does; the rule reaches both ends' timing
# buffers (--stats says which clock they map by).
cat >"$T/rt.ini" <<'INI'
[flow rt]
proto = udp
class = realtime
latency = 120ms
transport = mces
clock = symmetric
INI
# Loss per packet, as on a wire: without this nftables would see (and drop)
# the sender's GSO runs whole, a burst of up to 64 packets at a time.
ip -n "$A" link set dev va gso_max_segs 1
ip netns exec "$B" nft -f - <<'NFT'
table inet gsloss {
  chain in { type filter hook input priority 0; policy accept;
    ip saddr 10.79.0.1 udp dport 5202 numgen random mod 100 < 5 drop
  }
}
NFT
( exec ip netns exec "$B" "$GSRUN" --policy "$T/rt.ini" --stats "$T/rsrv.jsonl" -- iperf3 -s -1 -p 5202 ) \
    >"$T/rsrv.log" 2>&1 &
RSRV=$!
for _ in $(seq 100); do ip netns exec "$B" ss -Htln | grep -q ':5202 ' && break; sleep 0.05; done
timeout 30 ip netns exec "$A" "$GSRUN" --policy "$T/rt.ini" --stats "$T/rcli.jsonl" -- \
    iperf3 -c 10.79.0.2 -p 5202 -u -b 50M -l 1200 -t 3 --json >"$T/rt.json" 2>"$T/rt.err" \
    || { cat "$T/rt.err" "$T/rsrv.log" >&2; fail "iperf3 -u, class realtime, across veth at 5% loss failed"; }
wait "$RSRV" 2>/dev/null || true
read -r lost total < <("$PY" -c 'import json, sys
e = json.load(open(sys.argv[1]))["end"]["sum"]
print(e["lost_packets"], e["packets"])' "$T/rt.json")
c=$(mces_udp "$T/rcli.jsonl" '(f["transport"], f["class"], m["established"], m["clock"])')
[[ $c == "('mces', 'realtime', 1, 'symmetric')" ]] || fail "iperf3 -u class realtime: (transport, class, established, clock) = $c"
c=$(mces_udp "$T/rsrv.jsonl" 'm["clock"]')
[[ $c == symmetric ]] || fail "iperf3 -s, class realtime: clock = $c, want symmetric (the rule's)"
# The server's own view of it (--stats: what gsctl flows shows): on time, and
# what FEC and resends repaired of the 5% nftables dropped.
r=$(mces_udp "$T/rsrv.jsonl" '(m["on_time"], m["late_dropped"], m["fec_repaired"], f["drops"])')
read -r on late fec drops < <(tr -d '(),' <<<"$r")
(( total > 10000 && lost * 100 <= total )) \
    || fail "class realtime at 5% loss: iperf3 lost $lost of $total; server (on_time, late_dropped, fec_repaired, drops toward the program) = $r"
# Repaired by resends or FEC: on this short path resends fit many times over,
# so adaptive FEC sends no repairs (docs/mces.md "Adaptive FEC").
resent=$(mces_udp "$T/rcli.jsonl" 'm["retransmitted"]')
(( on > 10000 && late * 100 <= on && resent + fec > 0 )) \
    || fail "class realtime: nothing repaired (client resent $resent); server (on_time, late_dropped, fec_repaired, drops toward the program) = $r"
note "veth, 5% loss: iperf3 -u at 50 Mbit/s over MCES class realtime (120 ms): $lost of $total lost (plain UDP: about 5%); client: $resent resent; server: $on on time, $late late, $fec repaired by FEC, $drops dropped toward iperf3"
echo "ok mces_udp"
