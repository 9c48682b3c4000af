#!/usr/bin/env bash
# iperf3 TCP and UDP, both ends under gsrun, with a paced TCP flow: the
# transfer completes and the pacing rate from the policy holds (it is the
# kernel's own pacing, so this is a coarse check; precision is in bench/).
source "$(dirname "$0")/lib.sh"
need iperf3

port=$(free_port)
cat >"$T/p.ini" <<INI
[flow iperf-tcp]
process = iperf3
proto = tcp
dport = $port
direction = connect
rate = 200mbit
dscp = AF13
INI
bg "$GSRUN" --policy "$T/p.ini" -- iperf3 -s -1 -B 127.0.0.1 -p "$port"
wait_port "$port"
"$GSRUN" --policy "$T/p.ini" --stats "$T/tcp.jsonl" -- iperf3 -c 127.0.0.1 -p "$port" -t 2 -J >"$T/tcp.json" \
    || fail "iperf3 TCP client failed"
wait "${PIDS[0]}" || true; PIDS=()
bps=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]))' "$T/tcp.json")
note "TCP paced at 200mbit: received $((bps / 1000000)) Mbit/s"
(( bps > 150000000 && bps < 230000000 )) || fail "TCP rate $bps bit/s is not within 200mbit -25%/+15%"
n=$(stats_query "$T/tcp.jsonl" 'sum(1 for f in flows if f["rule"]=="iperf-tcp" and f["qos"].get("rate")==25000000)')
[[ $n -ge 2 ]] || fail "iperf3's control and data flows were not both classified ($n)"

port=$(free_port)
bg "$GSRUN" --policy "$T/p.ini" -- iperf3 -s -1 -B 127.0.0.1 -p "$port"
wait_port "$port"
"$GSRUN" --policy "$T/p.ini" --stats "$T/udp.jsonl" -- iperf3 -u -b 50M -c 127.0.0.1 -p "$port" -t 2 -J >"$T/udp.json" \
    || fail "iperf3 UDP client failed"
wait "${PIDS[0]}" || true; PIDS=()
read -r ubps lost < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["end"]["sum"]; print(int(s["bits_per_second"]), s["lost_percent"])' "$T/udp.json")
note "UDP at 50M: $((ubps / 1000000)) Mbit/s, lost $lost%"
(( ubps > 40000000 )) || fail "UDP rate $ubps too low"
u=$(stats_query "$T/udp.jsonl" 'sum(f["bytes_out"] for f in flows if f["proto"]=="udp")')
(( u > 10000000 )) || fail "the UDP flow's bytes ($u) were not counted"
echo "ok iperf3: TCP $((bps / 1000000)) Mbit/s paced at 200, UDP $((ubps / 1000000)) Mbit/s"
