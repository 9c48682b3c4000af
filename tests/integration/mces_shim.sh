#!/usr/bin/env bash
# Unmodified TCP programs over MCES through the shim (docs/mces.md, "Through
# the shim"): socat and curl <-> python3 http.server, both ends under gsrun
# with transport = mces, on loopback and across two network namespaces
# joined by a veth pair; then transport = auto against a server without
# gsocket (falls back to TCP: at once on ICMP unreachable, within 1 s when
# the UDP port is silent) and against one with it (MCES).
source "$(dirname "$0")/lib.sh"
need socat
need curl
need ss

cat >"$T/mces.ini" <<'INI'
[flow over-mces]
proto = tcp
transport = mces
INI
# A chain without `checksum` on both ends: the CRC32C goes even off loopback
# (docs/mces.md "No checksum"; the listener runs the rule's chain too).
cat >"$T/nocrc.ini" <<'INI'
[flow over-mces]
proto = tcp
transport = mces
elements = framing handshake sequencing sack ordering flowcontrol congestion pacing keepalive close
INI
cat >"$T/auto.ini" <<'INI'
[flow try-mces]
proto = tcp
transport = auto
INI
mkdir "$T/www"
head -c 10000000 /dev/urandom >"$T/www/f.bin"
want=$(sha256sum <"$T/www/f.bin" | cut -d' ' -f1)
head -c 3000000 /dev/urandom >"$T/in.bin"

# The server's own view (gsctl flows --json PID): its MCES counters.
server_mces() {   # PID EXPR
    "$GSCTL" flows --json "$1" | "$PY" -c 'import json, sys
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"): continue
    d = json.loads(line)
    m = d["mces"]
    print(eval(sys.argv[1]))
    break' "$2"
}

# ---- loopback ---------------------------------------------------------------
tp=$(free_port)
bg "$GSRUN" --policy "$T/mces.ini" -- socat -b 4096 -T 20 "TCP-LISTEN:$tp,bind=127.0.0.1,reuseaddr,fork" PIPE
wait_port "$tp"
wait_port "$tp" udp    # the MCES listener beside the kernel's
timeout 30 "$GSRUN" --policy "$T/mces.ini" --stats "$T/socat.jsonl" -- \
    socat -T 10 -t 10 - "TCP:127.0.0.1:$tp" <"$T/in.bin" >"$T/out.bin" 2>"$T/err" \
    || { cat "$T/err" >&2; fail "socat over MCES failed"; }
cmp "$T/in.bin" "$T/out.bin" || fail "socat echo over MCES differs"
n=$(stats_query "$T/socat.jsonl" 'sum(1 for f in flows if f["transport"]=="mces" and f["bytes_out"]==3000000 and f["bytes_in"]==3000000)')
[[ $n -eq 1 ]] || fail "the socat client's flow was not carried over MCES"
# The connection under the flow, as gsctl flows shows it (here: the --stats record).
c=$(stats_query "$T/socat.jsonl" '[(f["mces"]["packets_sent"], f["mces"]["packets_received"], f["mces"]["srtt_us"], f["mces"]["cwnd"]) for f in flows if f["transport"]=="mces"][0]')
read -r sent recvd srtt cwnd < <(tr -d '(),' <<<"$c")
[[ $sent -ge 60 && $recvd -ge 60 && $srtt -gt 0 && $srtt -lt 1000000 && $cwnd -gt 0 ]] ||
    fail "the flow's MCES counters are wrong: packets sent $sent, received $recvd, srtt $srtt us, cwnd $cwnd"
# Loopback with the class's default chain on both ends: no CRC32C (docs/mces.md "No checksum").
crc=$(stats_query "$T/socat.jsonl" '[f["mces"]["checksum"] for f in flows if f["transport"]=="mces"][0]')
[[ $crc == False ]] || fail "the client's flow says checksum $crc on loopback with the default chain"
note "loopback: socat echo of 3 MB over MCES intact ($sent packets out, $recvd in, srtt $srtt us, no CRC)"

# gsctl flows shows a live MCES flow's connection under its line, on the
# client and, for the accepted flow, on the server; the server's --stats
# record keeps the accepted flow's figures.
sp=$(free_port)
bg "$GSRUN" --policy "$T/mces.ini" --stats "$T/srv.jsonl" -- \
    socat -u "TCP-LISTEN:$sp,bind=127.0.0.1,reuseaddr" OPEN:/dev/null
SPID=$!
wait_port "$sp"
wait_port "$sp" udp
"$PY" -c 'import sys, time
for _ in range(60):
    sys.stdout.buffer.write(b"x" * 100000); sys.stdout.flush(); time.sleep(0.05)' |
    "$GSRUN" --policy "$T/mces.ini" -- socat -u - "TCP:127.0.0.1:$sp" &
PIDS+=($!)
live="" slive=""
for _ in $(seq 50); do
    table=$("$GSCTL" flows 2>/dev/null || true)
    [[ -n $live ]] || live=$(grep -A1 " connect .*:$sp " <<<"$table" | grep "mces: srtt" || true)
    # The accepted flow (local: the listener's address), once packets came in.
    [[ -n $slive ]] || slive=$(grep -A1 " accept .*127.0.0.1:$sp " <<<"$table" | grep "mces: srtt" |
                               grep -v ", 0 received" || true)
    [[ -n $live && -n $slive ]] && break
    sleep 0.1
done
[[ -n $live ]] || fail "gsctl flows shows no MCES line under the live flow: $("$GSCTL" flows 2>&1)"
[[ -n $slive ]] || fail "gsctl flows shows no MCES line with packets received under the accepted flow: $("$GSCTL" flows 2>&1)"
note "gsctl flows, live:$live"
note "gsctl flows, live, accepted:$slive"
for _ in $(seq 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SPID" 2>/dev/null && fail "the socat server did not exit after its connection"
c=$(stats_query "$T/srv.jsonl" '[(f["mces"]["packets_received"], f["mces"]["packets_sent"], f["mces"]["srtt_us"], f["mces"]["checksum"], f["bytes_in"]) for f in flows if f["direction"]=="accept" and f["transport"]=="mces" and "mces" in f]')
read -r recvd sent srtt crc bin < <(tr -d '[](),' <<<"$c")
# 6 MB came in at <= 9000 bytes a packet.
[[ -n $recvd && $recvd -ge 600 && $sent -gt 0 && $srtt -gt 0 && $crc == False && $bin -eq 6000000 ]] ||
    fail "the server's --stats record: accepted flow's MCES figures wrong or missing: $c"
note "server --stats: the accepted flow received $recvd packets, sent $sent, srtt $srtt us, no CRC, $bin bytes"

hp=$(free_port)
( cd "$T/www" && exec "$GSRUN" --policy "$T/mces.ini" -- "$PY" -m http.server "$hp" --bind 127.0.0.1 ) >"$T/http.log" 2>&1 &
PIDS+=($!)
HPID=$!
wait_port "$hp"
wait_port "$hp" udp
http_client "http://127.0.0.1:$hp/f.bin" "$T/got.bin"
timeout 60 "$GSRUN" --policy "$T/mces.ini" --stats "$T/curl.jsonl" -- "${HTTP_CLIENT[@]}" >/dev/null \
    || fail "http client over MCES failed"
[[ $(sha256sum <"$T/got.bin" | cut -d' ' -f1) == "$want" ]] || fail "10 MB over MCES: sha256 differs"
n=$(stats_query "$T/curl.jsonl" 'sum(1 for f in flows if f["transport"]=="mces")')
[[ $n -ge 1 ]] || fail "the http client's flow was not carried over MCES"
acc=$(server_mces "$HPID" 'm["accepted"]')
udp_out=$(server_mces "$HPID" 'm["udp_bytes_out"]')
[[ $acc -ge 1 && $udp_out -ge 10000000 ]] || fail "the server accepted $acc MCES connections, sent $udp_out UDP bytes"
note "loopback: 10 MB http over MCES, sha256 ok; server: $acc accepted, $udp_out bytes over UDP"

# ---- two namespaces over veth -------------------------------------------------
[[ $(id -u) -eq 0 ]] && command -v ip >/dev/null || { echo "ok mces_shim (loopback only: no root for namespaces)"; exit 0; }
source "$(dirname "$0")/../../scripts/lib/netns.sh"
A=gsmA$$ B=gsmB$$
trap 'netns_del "$A" "$B"; cleanup' EXIT
netns_pair "$A" "$B" 10.78.0 || skip "cannot create network namespaces"
inB() { ip netns exec "$B" "$@"; }
inA() { ip netns exec "$A" "$@"; }

( cd "$T/www" && exec ip netns exec "$B" "$GSRUN" --policy "$T/mces.ini" -- "$PY" -m http.server 8000 ) >"$T/http2.log" 2>&1 &
PIDS+=($!)
HPID2=$!
for i in $(seq 1 100); do inB ss -Hlun "sport = :8000" | has . && break; sleep 0.1; done
http_client "http://10.78.0.2:8000/f.bin" "$T/got2.bin"
timeout 60 ip netns exec "$A" "$GSRUN" --policy "$T/mces.ini" --stats "$T/curl2.jsonl" -- "${HTTP_CLIENT[@]}" >/dev/null \
    || fail "http client across namespaces over MCES failed"
[[ $(sha256sum <"$T/got2.bin" | cut -d' ' -f1) == "$want" ]] || fail "10 MB across veth over MCES: sha256 differs"
# The bytes went over UDP: the server's kernel TCP never saw 10.78.0.1 (its
# connections come from the engine over loopback), and its counters say so.
inB ss -Htn | has "10.78.0.1" && fail "a kernel TCP connection from 10.78.0.1 exists: not over MCES"
grep -q '^10.78.0.1 ' "$T/http2.log" || fail "http.server did not see the MCES peer 10.78.0.1 as the client"
udp_out=$(server_mces "$HPID2" 'm["udp_bytes_out"]')
[[ $udp_out -ge 10000000 ]] || fail "the server sent $udp_out bytes over UDP"
note "veth: 10 MB http over MCES, sha256 ok; http.server saw 10.78.0.1; $udp_out bytes over UDP, no kernel TCP from the peer"

# The http download above ran the default chain off loopback: CRC32C on.
crc=$(stats_query "$T/curl2.jsonl" '[f["mces"]["checksum"] for f in flows if f["transport"]=="mces"][0]')
[[ $crc == True ]] || fail "default chain across veth: checksum $crc"
( exec ip netns exec "$B" "$GSRUN" --policy "$T/nocrc.ini" -- socat -b 4096 -T 20 "TCP-LISTEN:8002,reuseaddr,fork" PIPE ) >/dev/null 2>&1 &
PIDS+=($!)
for i in $(seq 1 100); do inB ss -Hlun "sport = :8002" | has . && break; sleep 0.1; done
timeout 30 ip netns exec "$A" "$GSRUN" --policy "$T/nocrc.ini" --stats "$T/nocrc.jsonl" -- \
    socat -T 10 -t 10 - "TCP:10.78.0.2:8002" <"$T/in.bin" >"$T/out2.bin" \
    || fail "socat across namespaces over MCES failed"
cmp "$T/in.bin" "$T/out2.bin" || fail "socat echo across veth differs"
# Only if the listener ran the rule's chain did it agree to the client's offer.
crc=$(stats_query "$T/nocrc.jsonl" '[f["mces"]["checksum"] for f in flows if f["transport"]=="mces"][0]')
[[ $crc == False ]] || fail "chains without checksum on both ends across veth: checksum $crc"
note "veth: socat echo of 3 MB over MCES intact, both chains without checksum: no CRC (default chain: CRC)"

# ---- auto -----------------------------------------------------------------------
# (Downloads, not socat echoes, for auto: what is measured is the fallback.
# The echo servers above run with -b 4096, see docs/limitations.md.)
( cd "$T/www" && exec ip netns exec "$B" "$PY" -m http.server 8003 ) >/dev/null 2>&1 &
PIDS+=($!)
for i in $(seq 1 100); do inB ss -Hltn "sport = :8003" | has . && break; sleep 0.1; done
# A server without gsocket: ICMP port unreachable, kernel TCP at once.
http_client "http://10.78.0.2:8003/f.bin" "$T/got3.bin"
t0=$(date +%s.%N)
timeout 30 ip netns exec "$A" "$GSRUN" --policy "$T/auto.ini" --stats "$T/auto1.jsonl" -- "${HTTP_CLIENT[@]}" >/dev/null \
    || fail "auto against a plain server failed"
t1=$(date +%s.%N)
[[ $(sha256sum <"$T/got3.bin" | cut -d' ' -f1) == "$want" ]] || fail "auto (fallback) download differs"
fb=$(stats_query "$T/auto1.jsonl" 'sum(1 for f in flows if f["transport"]=="native" and f["requested_transport"]=="auto")')
[[ $fb -ge 1 ]] || fail "auto did not fall back to kernel TCP"
note "auto -> plain server (ICMP unreachable): kernel TCP, 10 MB sha256 ok, whole run $(echo "$t1 - $t0" | bc) s"
# A silent UDP port (something bound there, no answer): the 1 s bound.
ip netns exec "$B" socat -u UDP-RECV:8003 /dev/null >/dev/null 2>&1 &
PIDS+=($!)
for i in $(seq 1 100); do inB ss -Hlun "sport = :8003" | has . && break; sleep 0.1; done
rm -f "$T/got3.bin"
t0=$(date +%s.%N)
timeout 30 ip netns exec "$A" "$GSRUN" --policy "$T/auto.ini" -- "${HTTP_CLIENT[@]}" >/dev/null \
    || fail "auto against a silent UDP port failed"
t1=$(date +%s.%N)
[[ $(sha256sum <"$T/got3.bin" | cut -d' ' -f1) == "$want" ]] || fail "auto (silent) download differs"
el=$(echo "$t1 - $t0" | bc)
[[ $(echo "$el >= 0.9 && $el < 5" | bc) -eq 1 ]] || fail "auto fallback on silence took $el s (bound: 1 s)"
note "auto -> silent UDP port: kernel TCP after the 1 s bound, whole run $el s"
# A server under gsrun (the mces one above): MCES.
http_client "http://10.78.0.2:8000/f.bin" "$T/got4.bin"
timeout 30 ip netns exec "$A" "$GSRUN" --policy "$T/auto.ini" --stats "$T/auto2.jsonl" -- "${HTTP_CLIENT[@]}" >/dev/null \
    || fail "auto against a gsrun server failed"
[[ $(sha256sum <"$T/got4.bin" | cut -d' ' -f1) == "$want" ]] || fail "auto (MCES) download differs"
n=$(stats_query "$T/auto2.jsonl" 'sum(1 for f in flows if f["transport"]=="mces")')
[[ $n -ge 1 ]] || fail "auto against a gsrun server did not use MCES"
note "auto -> gsrun server: MCES, 10 MB sha256 ok"
echo "ok mces_shim"
