#!/usr/bin/env bash
# What a connection costs, MCES through the shim against kernel TCP, between
# two network namespaces on a veth pair: connect() to the first byte echoed
# back (the handshake included: TCP's three-way handshake, MCES's INITIAL /
# ACCEPT, or INITIAL / RETRY with cookie / ACCEPT under load), and the client process's resident memory per
# open connection. Client: bench/conn_cost (plain sockets); server:
# bench/echo_server.py (asyncio). MCES: both under gsrun with transport =
# mces; TCP: no gsocket. Rounds interleave. Needs root.
# Writes bench/results/DATE-mces-conn-HOST.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rounds=3 count=300 hold=300
usage() { echo "usage: bench/mces_conn.sh [--rounds R] [--count N] [--hold M]"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2;;
        --count) count=$2; shift 2;;
        --hold) hold=$2; shift 2;;
        -h|--help) usage; sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
        *) usage >&2; exit 2;;
    esac
done
for v in "$rounds" "$count" "$hold"; do [[ $v =~ ^[0-9]+$ ]] || { usage >&2; exit 2; }; done
[[ $(id -u) -eq 0 ]] || { echo "bench/mces_conn.sh: network namespaces need root" >&2; exit 1; }
PY=/usr/bin/python3
B=${BUILD:-$ROOT/build}
GSRUN=$B/tools/gsrun COST=$B/bench/conn_cost
for f in "$GSRUN" "$COST"; do [[ -x $f ]] || { echo "bench/mces_conn.sh: $f is missing: build first" >&2; exit 1; }; done

T=$(mktemp -d)
A=gsc$$-a S=gsc$$-s
source "$ROOT/scripts/lib/netns.sh"
trap 'netns_del "$A" "$S"; rm -rf "$T"' EXIT
netns_pair "$A" "$S" 10.82.0
printf '[flow conn]\nproto = tcp\ntransport = mces\n' >"$T/mces.ini"
ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)"   # --hold connections need fds

port=9100
: >"$T/runs.txt"
for r in $(seq "$rounds"); do
    for kind in tcp mces; do
        port=$((port + 1))
        pre=()
        [[ $kind == mces ]] && pre=("$GSRUN" --policy "$T/mces.ini" --)
        ip netns exec "$S" "${pre[@]}" "$PY" "$ROOT/bench/echo_server.py" "$port" >"$T/srv.log" 2>&1 &
        spid=$!
        for _ in $(seq 100); do ip netns exec "$S" ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.05; done
        if [[ $kind == mces ]]; then
            for _ in $(seq 100); do ip netns exec "$S" ss -Hlun "sport = :$port" | grep -q . && break; sleep 0.05; done
            ip netns exec "$S" ss -Hlun "sport = :$port" | grep -q . || { echo "no MCES listener on UDP $port" >&2; exit 1; }
        fi
        line=$(ip netns exec "$A" "${pre[@]}" "$COST" 10.82.0.2 "$port" --count "$count" --hold "$hold")
        echo "$kind $r $line" | tee -a "$T/runs.txt" >&2
        kill "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
    done
done

host=$(hostname -s); day=$(date +%F)
out=$ROOT/bench/results/$day-mces-conn-$host
"$PY" - "$out" "$T/runs.txt" "$rounds" "$count" "$hold" <<'PY'
import os, platform, statistics, sys
out, runs, rounds, count, hold = sys.argv[1:6]
rows = []
for line in open(runs):
    f = line.split()
    rows.append({"kind": f[0], "round": int(f[1]), "p50": float(f[3]), "p99": float(f[5]), "rss": float(f[7])})
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
med = lambda k, key: statistics.median(r[key] for r in rows if r["kind"] == k)
L = ["# What a connection costs: MCES through the shim vs kernel TCP, across veth\n",
     f"Date: {os.path.basename(out)[:10]}. Machine: {platform.node()}, {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}. "
     f"Command: `bench/mces_conn.sh --rounds {rounds} --count {count} --hold {hold}`.\n",
     "Two namespaces on one veth pair. `bench/conn_cost` (plain sockets) connects, sends one byte and waits for its "
     f"echo from `bench/echo_server.py` (asyncio), {count} times one after another; then holds {hold} such connections "
     "open and reads its own VmRSS growth. MCES: both processes under gsrun with `transport = mces` (the connection "
     "is an MCES class-1 connection over UDP; the server side reaches the program through a loopback TCP connection "
     "into its own listener). TCP: no gsocket. Medians of the rounds.\n",
     "| | TCP | MCES | MCES / TCP |", "|---|---|---|---|"]
for key, name, unit in (("p50", "connect() to first byte back, p50", "us"), ("p99", "connect() to first byte back, p99", "us"),
                        ("rss", "client resident memory per open connection", "KiB")):
    t, m = med("tcp", key), med("mces", key)
    L.append(f"| {name} | {t:.1f} {unit} | {m:.1f} {unit} | {m / t:.2f} |" if t else f"| {name} | {t:.1f} {unit} | {m:.1f} {unit} | - |")
L.append("\nWhat the MCES figures are made of: the handshake takes one round trip, like TCP's (INITIAL, ACCEPT; "
         "two, INITIAL, RETRY, INITIAL with the cookie, ACCEPT, only once the server holds 64 connections whose "
         "client address is unproved; docs/mces.md), plus the engine's thread hand-offs on both "
         "sides (program -> engine -> UDP and back), plus the server's loopback TCP connection into the program's "
         "listener. TCP's per-connection memory is in the kernel (socket buffers are not in the process's RSS); "
         "MCES's is in the process: the connection's state, its send and receive buffers as they fill, the "
         "bridge's flow record and socketpair.\n")
L.append("Every run:\n\n| kind | round | p50 us | p99 us | KiB per connection |\n|---|---|---|---|---|")
for r in rows:
    L.append(f"| {r['kind']} | {r['round']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['rss']:.2f} |")
open(out + ".md", "w").write("\n".join(L) + "\n")
print("wrote", out + ".md")
PY
