#!/usr/bin/env bash
# Unmodified programs over MCES through the impairment relay (tools/gsimpair),
# across two network namespaces, both ends under gsrun with transport = mces:
# the client in A connects to the relay's address in A, the relay forwards the
# UDP to the server in B with loss, delay, reordering and duplication both
# ways. curl <-> python3 http.server (4 MB, sha256), socat echo (3 MB, cmp)
# iperf3 (2 s; both its connections over MCES), and a sender that exits as
# soon as it has written. docs/mces.md "Through the shim".
source "$(dirname "$0")/lib.sh"
need socat
need ss
[[ -x ${GSIMPAIR:-} ]] || skip "gsimpair was not built"
[[ $(id -u) -eq 0 ]] && command -v ip >/dev/null || skip "network namespaces need root and iproute2"

cat >"$T/mces.ini" <<'INI'
[flow over-mces]
proto = tcp
transport = mces
INI
mkdir "$T/www"
head -c 4000000 /dev/urandom >"$T/www/f.bin"
want=$(sha256sum <"$T/www/f.bin" | cut -d' ' -f1)
head -c 3000000 /dev/urandom >"$T/in.bin"

source "$(dirname "$0")/../../scripts/lib/netns.sh"
A=gsiA$$ B=gsiB$$
trap 'netns_del "$A" "$B"; cleanup' EXIT
netns_pair "$A" "$B" 10.81.0 || skip "cannot create network namespaces"
inA() { ip netns exec "$A" "$@"; }
inB() { ip netns exec "$B" "$@"; }
wait_udp() {   # NS PORT: the shim's MCES listener (or the relay) is up
    for _ in $(seq 100); do ip netns exec "$1" ss -Hlun "sport = :$2" | has . && return 0; sleep 0.05; done
    fail "nothing listens on UDP $2 in $1"
}
# relay PORT TO_PORT IMPAIRMENTS...: gsimpair in A, 127.0.0.1:PORT -> B's TO_PORT.
relay() {
    local port=$1 to=$2
    shift 2
    ( exec ip netns exec "$A" "$GSIMPAIR" --listen "127.0.0.1:$port" --to "10.81.0.2:$to" --seed 7 "$@" ) \
        >"$T/relay$port.log" 2>&1 &
    PIDS+=($!)
    wait_udp "$A" "$port"
}
impair=(--loss 5% --delay 5ms --jitter 1ms --reorder 1% --duplicate 1%)

# curl <-> http.server: 4 MB, 5% loss each way, reordering, duplicates.
( cd "$T/www" && exec ip netns exec "$B" "$GSRUN" --policy "$T/mces.ini" -- "$PY" -m http.server 8000 ) >"$T/http.log" 2>&1 &
PIDS+=($!)
wait_udp "$B" 8000
relay 7000 8000 "${impair[@]}"
http_client "http://127.0.0.1:7000/f.bin" "$T/got.bin"
t0=$(date +%s%N)
timeout 90 ip netns exec "$A" "$GSRUN" --policy "$T/mces.ini" --stats "$T/curl.jsonl" -- "${HTTP_CLIENT[@]}" >/dev/null \
    || { cat "$T/relay7000.log" >&2; fail "http over MCES through the relay failed"; }
t1=$(date +%s%N)
[[ $(sha256sum <"$T/got.bin" | cut -d' ' -f1) == "$want" ]] || fail "4 MB over MCES through the relay: sha256 differs"
n=$(stats_query "$T/curl.jsonl" 'sum(1 for f in flows if f["transport"]=="mces")')
[[ $n -ge 1 ]] || fail "the http client's flow was not carried over MCES"
note "relay (5% loss, 5 ms +-1 ms, 1% reorder, 1% duplicate, both ways): 4 MB http over MCES in $(( (t1 - t0) / 1000000 )) ms, sha256 ok"

# socat echo: 3 MB there and back through the same impairments.
( exec ip netns exec "$B" "$GSRUN" --policy "$T/mces.ini" -- socat -b 4096 -T 30 "TCP-LISTEN:8002,reuseaddr,fork" PIPE ) >/dev/null 2>&1 &
PIDS+=($!)
wait_udp "$B" 8002
relay 7002 8002 "${impair[@]}"
timeout 90 ip netns exec "$A" "$GSRUN" --policy "$T/mces.ini" -- socat -T 30 -t 30 - "TCP:127.0.0.1:7002" \
    <"$T/in.bin" >"$T/out.bin" || fail "socat over MCES through the relay failed"
cmp "$T/in.bin" "$T/out.bin" || fail "socat echo over MCES through the relay differs"
note "relay: socat echo of 3 MB over MCES intact"

# A sender that exits as soon as it has written (socat -u): what it wrote
# lives in its engine, not in a kernel, so the process stays until the peer
# has it all for as long as the peer keeps answering (2 s without progress,
# 30 s at most; docs/engine.md). At 5% loss that takes longer than 2 s.
( exec ip netns exec "$B" "$GSRUN" --policy "$T/mces.ini" -- socat -u "TCP-LISTEN:8003,reuseaddr" "CREATE:$T/sunk.bin" ) >/dev/null 2>&1 &
sink=$!
PIDS+=($sink)
wait_udp "$B" 8003
relay 7003 8003 "${impair[@]}"
t0=$(date +%s%N)
timeout 60 ip netns exec "$A" "$GSRUN" --policy "$T/mces.ini" -- socat -u "FILE:$T/www/f.bin" "TCP:127.0.0.1:7003" \
    || fail "socat -u over MCES through the relay failed"
t1=$(date +%s%N)
for _ in $(seq 100); do kill -0 "$sink" 2>/dev/null || break; sleep 0.1; done
cmp "$T/www/f.bin" "$T/sunk.bin" || fail "a sender that exits right after writing lost data: $(stat -c %s "$T/sunk.bin") of 4000000 bytes arrived"
note "relay: socat -u 4 MB, the sender exiting at once: all delivered; its exit waited $(( (t1 - t0) / 1000000 )) ms"

# iperf3: its control and data connections both over MCES, 1% loss.
if command -v iperf3 >/dev/null; then
    ( exec ip netns exec "$B" "$GSRUN" --policy "$T/mces.ini" -- iperf3 -s -1 -p 5201 ) >"$T/iperf-s.log" 2>&1 &
    PIDS+=($!)
    wait_udp "$B" 5201
    relay 7201 5201 --loss 1% --delay 2ms --reorder 1% --duplicate 1%
    timeout 60 ip netns exec "$A" "$GSRUN" --policy "$T/mces.ini" --stats "$T/iperf.jsonl" -- \
        iperf3 -c 127.0.0.1 -p 7201 -t 2 -J >"$T/iperf.json" 2>"$T/iperf.err" \
        || { cat "$T/iperf.err" "$T/iperf.json" >&2; fail "iperf3 over MCES through the relay failed"; }
    mbit=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(int(d["end"]["sum_received"]["bits_per_second"]/1e6))' "$T/iperf.json")
    [[ $mbit -gt 0 ]] || fail "iperf3 received nothing"
    n=$(stats_query "$T/iperf.jsonl" 'sum(1 for f in flows if f["transport"]=="mces")')
    [[ $n -ge 2 ]] || fail "iperf3's control and data connections were not both over MCES ($n)"
    note "relay (1% loss): iperf3 over MCES, $mbit Mbit/s received, $n connections over MCES"
fi
echo "ok mces_impair: curl/http.server, socat and iperf3 over MCES across namespaces through gsimpair's loss, delay, reordering and duplication"
