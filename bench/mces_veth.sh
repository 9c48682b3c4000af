#!/usr/bin/env bash
# MCES through the shim against kernel TCP, between two network namespaces
# joined by a veth pair, with 0, 1 and 5% random loss injected by nftables in
# the receiver's namespace (the same rule drops TCP and UDP alike). The
# programs are unmodified socat: the sender copies a file into a TCP
# connection and waits for the receiver to close; the receiver copies the
# connection to /dev/null; for MCES both
# run under gsrun with `transport = mces`, for TCP without gsocket. Goodput
# is the file's size over the sender's wall time until the receiver has it
# all (socat -u ends when the receiver closes). Rounds interleave MCES and
# TCP. Needs root. Writes bench/results/DATE-mces-veth-HOST.{md,svg}.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rounds=3 bytes=$((128 * 1024 * 1024)) losses="0 1 5"
usage() { echo "usage: bench/mces_veth.sh [--rounds R] [--bytes N] [--loss 'L1 L2 ...']"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2;;
        --bytes) bytes=$2; shift 2;;
        --loss) losses=$2; shift 2;;
        -h|--help) usage; sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
        *) usage >&2; exit 2;;
    esac
done
[[ $rounds =~ ^[0-9]+$ && $bytes =~ ^[0-9]+$ && $rounds -ge 1 ]] || { usage >&2; exit 2; }
for l in $losses; do [[ $l =~ ^[0-9]+$ && $l -lt 100 ]] || { echo "bench/mces_veth.sh: loss '$l' is not 0..99" >&2; exit 2; }; done
[[ $(id -u) -eq 0 ]] || { echo "bench/mces_veth.sh: network namespaces need root" >&2; exit 1; }
command -v socat >/dev/null || { echo "bench/mces_veth.sh: socat is not installed" >&2; exit 1; }
PY=/usr/bin/python3
B=${BUILD:-$ROOT/build}
GSRUN=$B/tools/gsrun
[[ -x $GSRUN ]] || { echo "bench/mces_veth.sh: $GSRUN is missing: build first (ninja -C build)" >&2; exit 1; }

T=$(mktemp -d)
tag=gsv$$
A=$tag-a S=$tag-s
source "$ROOT/scripts/lib/netns.sh"
trap 'netns_del "$A" "$S"; rm -rf "$T"' EXIT
netns_pair "$A" "$S" 10.80.0
# Loss per packet, as on a wire: nftables otherwise sees a GSO run (MCES's
# UDP_SEGMENT batches) or a TSO segment (TCP's) as one packet and drops it
# whole. Results before 2026-11-23 were measured without this: burst loss
# for both carriers.
ip -n "$A" link set dev va gso_max_segs 1
printf '[flow bulk]\nproto = tcp\ntransport = mces\n' >"$T/mces.ini"
head -c "$bytes" /dev/urandom >"$T/data.bin"

set_loss() {   # percent, on everything the receiver's namespace receives from the sender
    ip netns exec "$S" nft delete table inet gsloss 2>/dev/null || true
    [[ $1 -eq 0 ]] && return 0
    ip netns exec "$S" nft -f - <<NFT
table inet gsloss {
  chain in { type filter hook input priority 0; policy accept;
    ip saddr 10.80.0.1 numgen random mod 100 < $1 drop
  }
}
NFT
}

port=9000
one() {   # KIND LOSS ROUND -> one JSON line
    local kind=$1 loss=$2 round=$3 pre=()
    port=$((port + 1))
    [[ $kind == mces ]] && pre=("$GSRUN" --policy "$T/mces.ini" --)
    : >"$T/recv.err"
    ip netns exec "$S" "${pre[@]}" socat -u "TCP-LISTEN:$port,reuseaddr" "OPEN:/dev/null" 2>"$T/recv.err" &
    local rpid=$!
    for _ in $(seq 100); do ip netns exec "$S" ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.05; done
    local t0 t1 ok=1
    if [[ $kind == mces ]]; then   # the shim's MCES listener beside the kernel's: else this is not MCES
        for _ in $(seq 100); do ip netns exec "$S" ss -Hlun "sport = :$port" | grep -q . && break; sleep 0.05; done
        ip netns exec "$S" ss -Hlun "sport = :$port" | grep -q . || { echo "no MCES listener on UDP $port" >&2; ok=0; }
    fi
    t0=$(date +%s.%N)
    # The sender stays until the receiver has closed (half-close, then -t):
    # a process that exits with bytes still in flight is not what is measured.
    timeout 120 ip netns exec "$A" "${pre[@]}" socat -t 100 "FILE:$T/data.bin!!OPEN:/dev/null" "TCP:10.80.0.2:$port" \
        2>"$T/send.err" || ok=0
    wait "$rpid" || ok=0
    t1=$(date +%s.%N)
    "$PY" -c 'import json,sys; k,l,r,b,t0,t1,ok=sys.argv[1:]; s=float(t1)-float(t0)
print(json.dumps({"kind":k,"loss":int(l),"round":int(r),"bytes":int(b),"seconds":s,"mbit":int(b)*8/s/1e6,"ok":ok=="1"}))' \
        "$kind" "$loss" "$round" "$bytes" "$t0" "$t1" "$ok"
}

: >"$T/runs.jsonl"
for loss in $losses; do
    set_loss "$loss"
    for r in $(seq "$rounds"); do
        for kind in tcp mces; do
            one "$kind" "$loss" "$r" | tee -a "$T/runs.jsonl" >&2
        done
    done
done
set_loss 0

host=$(hostname -s); day=$(date +%F)
out=$ROOT/bench/results/$day-mces-veth-$host
cc=$(ip netns exec "$A" sysctl -n net.ipv4.tcp_congestion_control)
"$PY" - "$out" "$T/runs.jsonl" "$rounds" "$bytes" "$losses" "$cc" <<'PY'
import json, os, platform, statistics, sys
out, runs, rounds, nbytes, losses, cc = sys.argv[1:7]
rs = [json.loads(l) for l in open(runs)]
losses = [int(x) for x in losses.split()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
def med(kind, loss):
    v = [r["mbit"] for r in rs if r["kind"] == kind and r["loss"] == loss and r["ok"]]
    return statistics.median(v) if v else float("nan"), len(v)
L = [f"# MCES through the shim vs kernel TCP across a veth pair, with loss\n",
     f"Date: {os.path.basename(out)[:10]}. Machine: {platform.node()}, {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}. "
     f"Command: `bench/mces_veth.sh --rounds {rounds} --bytes {nbytes} --loss '{' '.join(map(str, losses))}'`.\n",
     "Two namespaces joined by one veth pair. Unmodified socat copies the file into a TCP connection "
     "and waits for the receiver to close, the receiver copies it to /dev/null; MCES: both under gsrun with `transport = mces` "
     f"(the shim carries the connection over MCES/UDP, accept() included; MCES's default CUBIC); TCP: no gsocket, the kernel's "
     f"default congestion control here, {cc}. Loss: nftables in the receiver's namespace drops that percentage of every packet from "
     "the sender (data; ACKs travel the other way unharmed). Goodput: file size over the time until the receiver "
     "had it all. Rounds interleave TCP and MCES; medians of the rounds.\n",
     "| loss | TCP Mbit/s | MCES Mbit/s | MCES / TCP | runs ok (TCP, MCES) |", "|---|---|---|---|---|"]
for l in losses:
    t, nt = med("tcp", l); m, nm = med("mces", l)
    L.append(f"| {l}% | {t:.0f} | {m:.0f} | {m / t:.2f} | {nt}, {nm} |")
L.append("\nEvery run:\n\n| loss | round | kind | seconds | Mbit/s | ok |\n|---|---|---|---|---|---|")
for r in rs:
    L.append(f"| {r['loss']}% | {r['round']} | {r['kind']} | {r['seconds']:.2f} | {r['mbit']:.0f} | {r['ok']} |")
open(out + ".md", "w").write("\n".join(L) + "\n")
# Plot: grouped bars per loss rate.
W, H, ml, mb = 560, 320, 60, 50
vals = {(k, l): med(k, l)[0] for k in ("tcp", "mces") for l in losses}
top = max([v for v in vals.values() if v == v] + [1])
s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">',
     f'<rect width="{W}" height="{H}" fill="white"/>',
     f'<text x="{W/2}" y="20" text-anchor="middle" font-size="14">Goodput across veth, socat: kernel TCP vs MCES through the shim</text>']
pw, ph = W - ml - 20, H - mb - 40
for k in range(5):
    v = top * k / 4; y = 30 + ph * (1 - k / 4)
    s.append(f'<line x1="{ml}" y1="{y}" x2="{ml+pw}" y2="{y}" stroke="#ddd"/><text x="{ml-5}" y="{y+4}" text-anchor="end" font-size="11">{v:.0f}</text>')
gw = pw / len(losses)
for i, l in enumerate(losses):
    for j, (k, c) in enumerate((("tcp", "#777"), ("mces", "#1f77b4"))):
        v = vals[(k, l)]
        if v != v: continue
        h = ph * v / top; x = ml + i * gw + gw * (0.15 + 0.35 * j)
        s.append(f'<rect x="{x:.1f}" y="{30 + ph - h:.1f}" width="{gw*0.33:.1f}" height="{h:.1f}" fill="{c}"/>')
    s.append(f'<text x="{ml + i*gw + gw/2}" y="{30 + ph + 16}" text-anchor="middle" font-size="12">{l}% loss</text>')
s.append(f'<text x="{ml+8}" y="44" font-size="12" fill="#777">TCP</text><text x="{ml+48}" y="44" font-size="12" fill="#1f77b4">MCES</text>')
s.append(f'<text x="14" y="{30+ph/2}" font-size="12" transform="rotate(-90 14 {30+ph/2})" text-anchor="middle">Mbit/s</text></svg>')
open(out + ".svg", "w").write("".join(s))
print("wrote", out + ".md", "and .svg")
PY
