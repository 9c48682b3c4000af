#!/usr/bin/env bash
# Scale: N concurrent idle TCP flows in one process, natively and bridged
# through the engine (gsrun, [general] bridge = always), rounds interleaved.
# Memory per bridged flow, kernel socket buffers excluded, is the growth of the
# client's VmRSS while it opens the flows, less the same growth of a native
# client, divided by N (issue target: 10,000 flows, at most 16 KiB each).
# Also: descriptors per flow, malloc'd bytes per flow, kernel Slab per flow.
# Writes bench/results/DATE-scale-HOST.{md,svg}.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
flows=10000 rounds=3 bytes=1
usage() { echo "usage: bench/scale.sh [--flows N] [--rounds R] [--bytes B]"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --flows) flows=$2; shift 2;; --rounds) rounds=$2; shift 2;;
        --bytes) bytes=$2; shift 2;;   # sent on each flow (default 1): what an idle flow keeps after a burst
        -h|--help) usage; sed -n '2,8p' "$0"; exit 0;;
        *) usage >&2; exit 2;;
    esac
done
[[ $flows =~ ^[1-9][0-9]*$ && $rounds =~ ^[1-9][0-9]*$ && $bytes =~ ^[1-9][0-9]*$ ]] || { usage >&2; exit 2; }
PY=/usr/bin/python3
B=${BUILD:-$ROOT/build}
SF=$B/bench/scale_flows GSRUN=$B/tools/gsrun LIB=$B/shim/libgsocket-preload.so
for f in "$SF" "$GSRUN" "$LIB"; do
    [[ -f $f ]] || { echo "bench/scale.sh: $f is missing: build first: ninja -C build (or meson setup build)" >&2; exit 1; }
done

# Descriptors: a native flow takes one; a bridged flow three (the program's end
# of the socketpair, the engine's end, the TCP socket), all in the client.
hard=$(ulimit -Hn)
if [[ $hard != unlimited && $hard -lt 1048576 ]]; then ulimit -Hn 1048576 2>/dev/null || true; fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
need=$(( flows * 3 + 64 ))
if [[ $nofile != unlimited && $nofile -lt $need ]]; then
    echo "bench/scale.sh: $flows bridged flows need about $need descriptors (3 per flow), but ulimit -n is $nofile" >&2
    echo "  and the hard limit cannot be raised here (root with CAP_SYS_RESOURCE can; or raise LimitNOFILE /" >&2
    echo "  the container's nofile limit). Use --flows $(( (nofile - 64) / 3 )) or fewer." >&2
    exit 1
fi
ports=$(awk '{print $2 - $1 + 1}' /proc/sys/net/ipv4/ip_local_port_range)
(( flows <= ports )) || { echo "bench/scale.sh: $flows flows but only $ports local ports (net.ipv4.ip_local_port_range)" >&2; exit 1; }

T=$(mktemp -d)
spid= cpid=
cleanup() {
    [[ -n $cpid ]] && kill -KILL "$cpid" 2>/dev/null || true
    [[ -n $spid ]] && kill -TERM "$spid" 2>/dev/null || true
    [[ -n $spid ]] && wait "$spid" 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
printf '[general]\nbridge = always\n' >"$T/bridge.ini"
die() { echo "bench/scale.sh: $*" >&2; exit 1; }
slab() { awk '/^Slab:/ {print $2}' /proc/meminfo; }   # KiB
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

"$SF" server "$port" >"$T/server.out" 2>"$T/server.err" & spid=$!
for _ in $(seq 50); do grep -q listening "$T/server.err" && break; kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
grep -q listening "$T/server.err" || { cat "$T/server.err" >&2; die "the server did not start on 127.0.0.1:$port"; }

# server_has N BYTES: wait (10 s at most) until the server holds exactly N open
# connections that carried BYTES bytes in all: every flow really carries data.
server_has() {
    local want=$1 want_bytes=$2 line= lines
    for _ in $(seq 50); do
        lines=$(wc -l <"$T/server.out")
        kill -USR1 "$spid"
        for _ in $(seq 20); do (( $(wc -l <"$T/server.out") > lines )) && break; sleep 0.05; done
        line=$(tail -n 1 "$T/server.out")
        [[ $line == "open=$want "*" bytes_open=$want_bytes "* ]] && return 0
        sleep 0.2
    done
    die "the server sees '$line'; expected open=$want bytes_open=$want_bytes"
}

# client MODE ROUND: one client run; appends a line to $T/runs.tsv.
up_timeout=$(( 30 + flows / 50 ))
client() {
    local mode=$1 r=$2 cmd=("$SF" client 127.0.0.1 "$port" -n "$flows" --hold 600 --bytes "$bytes") line= s0 s1 nb=-
    : >"$T/c.out"; : >"$T/c.err"; rm -f "$T/stats.jsonl"
    s0=$(slab)
    if [[ $mode == bridged ]]; then
        "$GSRUN" -q --policy "$T/bridge.ini" --stats "$T/stats.jsonl" -- "${cmd[@]}" >"$T/c.out" 2>"$T/c.err" &
    else
        "${cmd[@]}" >"$T/c.out" 2>"$T/c.err" &
    fi
    cpid=$!
    local t0=$SECONDS
    while ! line=$(grep -m1 '^flows=' "$T/c.out"); do
        kill -0 "$cpid" 2>/dev/null || { tail -n 5 "$T/c.err" >&2; die "round $r $mode: the client exited before all $flows flows were up"; }
        (( SECONDS - t0 < up_timeout )) || { tail -n 5 "$T/c.err" >&2; die "round $r $mode: $flows flows not up within $up_timeout s"; }
        sleep 0.1
    done
    s1=$(slab)
    server_has "$flows" $(( flows * bytes ))
    kill -TERM "$cpid"   # ends the hold: the client exits normally (gsrun's --stats is written at exit)
    for _ in $(seq 300); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$cpid" 2>/dev/null && { kill -KILL "$cpid"; die "round $r $mode: the client did not exit within 30 s of SIGTERM"; }
    wait "$cpid" || die "round $r $mode: the client failed: $(tail -n 3 "$T/c.err")"
    cpid=
    if [[ $mode == bridged ]]; then
        # The stats line holds every flow; a bridged flow has "bridged": true
        # (its "transport" still reads "native": the engine carries the bytes
        # over the same kernel TCP). gsctl cannot see this process: it opens
        # its control socket only when it holds a reservation.
        [[ -s $T/stats.jsonl ]] || die "round $r bridged: gsrun --stats wrote nothing: is the shim loaded?"
        nb=$("$PY" - "$T/stats.jsonl" <<'PY'
import json, sys
n = 0
for l in open(sys.argv[1]):
    for f in json.loads(l).get("flows", []):
        if f.get("proto") == "tcp" and f.get("direction") == "connect" and f.get("state") == "open" \
                and (f.get("bridged") is True or f.get("transport") not in (None, "native")):
            n += 1
print(n)
PY
)
        [[ $nb -eq $flows ]] || die "round $r bridged: only $nb of $flows flows were bridged (gsrun --stats); the numbers would be a native client's"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$mode" "$line" "$s0" "$s1" "$nb" >>"$T/runs.tsv"
    printf 'round %d/%d %-7s %s slab_kib %d -> %d%s\n' "$r" "$rounds" "$mode" "$line" "$s0" "$s1" \
        "$([[ $mode == bridged ]] && echo "; $nb flows bridged")" >&2
}

for r in $(seq 1 "$rounds"); do
    order=(native bridged); (( r % 2 == 0 )) && order=(bridged native)
    for m in "${order[@]}"; do client "$m" "$r"; done
done

host=$(hostname -s); day=$(date +%F)
out=$ROOT/bench/results/$day-scale-$host
"$PY" - "$out" "$flows" "$bytes" "$T/runs.tsv" <<'PY'
import os, platform, statistics as st, sys
out, n, nbytes, tsv = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
runs = {}
for l in open(tsv):
    r, mode, line, s0, s1, nb = l.rstrip("\n").split("\t")
    v = {k: int(x) for k, x in (kv.split("=") for kv in line.split())}
    v["slab0"], v["slab1"], v["bridged"] = int(s0), int(s1), nb
    runs[(int(r), mode)] = v
rounds = sorted({r for r, _ in runs})
TARGET = 16 * 1024   # bytes per flow
def per(v, a, b): return (v[a] - v[b]) * 1024 / n   # KiB fields -> bytes per flow
rows = []
for r in rounds:
    nat, br = runs[(r, "native")], runs[(r, "bridged")]
    rows.append(dict(
        r=r,
        nat=per(nat, "rss_kib", "rss_before_kib"), br=per(br, "rss_kib", "rss_before_kib"),
        heap_nat=per(nat, "heap_kib", "heap_before_kib"), heap_br=per(br, "heap_kib", "heap_before_kib"),
        fd_nat=(nat["fds"] - nat["fds_before"]) / n, fd_br=(br["fds"] - br["fds_before"]) / n,
        slab_nat=per(nat, "slab1", "slab0"), slab_br=per(br, "slab1", "slab0"),
        base_nat=nat["rss_before_kib"], base_br=br["rss_before_kib"], hwm_br=br["hwm_kib"]))
for x in rows:
    x["flow"] = x["br"] - x["nat"]
    x["heap"] = x["heap_br"] - x["heap_nat"]
med = lambda k: st.median(x[k] for x in rows)
m_flow, m_heap = med("flow"), med("heap")
ok = m_flow <= TARGET
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
kib = lambda b: f"{b / 1024:.2f}"
lines = [
    f"# Scale: {n} concurrent idle flows in one process — {os.path.basename(out)}",
    "",
    f"Machine: {platform.node()}, {os.cpu_count()} CPUs ({cpu}), kernel {platform.release()}.",
    f"`scale_flows client` opens {n} TCP connections to a local epoll server one after the other and sends "
    f"{nbytes} byte{'s' if nbytes != 1 else ''} on each (the server checks every byte arrived), natively and under "
    f"gsrun with `[general] bridge = always` (gsrun --stats: all {n} flows bridged in every bridged run); "
    f"{len(rounds)} rounds, interleaved. Memory is measured 0.5 s after the last connect, flows idle.",
    "",
    "Memory per flow = (VmRSS growth of the bridged client - VmRSS growth of the native client) / N: user memory "
    "only (kernel socket buffers live outside VmRSS). Allocated = the same difference of malloc'd bytes "
    "(mallinfo2), resident or not: memory a flow holds that becomes resident once it carries data. "
    "Kernel memory = growth of Slab in /proc/meminfo, both ends of each connection (client and server), "
    "informative and not counted.",
    "",
    "| round | native RSS B/flow | bridged RSS B/flow | **memory per flow** B (KiB) | allocated per flow KiB | fds/flow native | fds/flow bridged | kernel Slab B/flow native (not counted) | kernel Slab B/flow bridged (not counted) |",
    "|---|---|---|---|---|---|---|---|---|",
]
for x in rows:
    lines.append(f"| {x['r']} | {x['nat']:.0f} | {x['br']:.0f} | {x['flow']:.0f} ({kib(x['flow'])}) | {kib(x['heap'])} | "
                 f"{x['fd_nat']:.2f} | {x['fd_br']:.2f} | {x['slab_nat']:.0f} | {x['slab_br']:.0f} |")
lines.append(f"| median | {med('nat'):.0f} | {med('br'):.0f} | {m_flow:.0f} ({kib(m_flow)}) | {kib(m_heap)} | "
             f"{med('fd_nat'):.2f} | {med('fd_br'):.2f} | {med('slab_nat'):.0f} | {med('slab_br'):.0f} |")
lines += [
    "",
    f"Fixed cost, not per flow: VmRSS before the first connect {st.median(x['base_nat'] for x in rows)} KiB native, "
    f"{st.median(x['base_br'] for x in rows)} KiB under gsrun (the shim's tables); bridged VmHWM "
    f"{st.median(x['hwm_br'] for x in rows)} KiB.",
    "",
    f"**memory per bridged flow = {m_flow:.0f} B = {kib(m_flow)} KiB** (median of {len(rounds)} rounds; target "
    f"<= 16 KiB with 10,000 flows: {'met' if ok else 'NOT met'}{'' if n == 10000 else f', but this run had {n} flows'}); "
    f"allocated per flow {kib(m_heap)} KiB{' (more than the target: idle flows that once carried data keep it resident)' if m_heap > TARGET else ''}.",
    "",
]
open(out + ".md", "w").write("\n".join(lines))
# One pair of bars per round: RSS per flow, native (grey) and bridged (blue),
# with the 16 KiB target as a dashed line.
w, h, top = 520, 200, 40
m = max([x["br"] for x in rows] + [x["nat"] for x in rows] + [TARGET]) * 1.15
bw = w / (len(rows) * 3)
s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w + 80}" height="{h + top + 60}" font-family="sans-serif">',
     f'<text x="10" y="20" font-size="13">VmRSS per flow, {n} idle TCP flows (bytes): native vs bridged</text>']
y0 = top + h
for i, x in enumerate(rows):
    x0 = 60 + i * bw * 3
    for j, (v, c) in enumerate(((x["nat"], "#888"), (x["br"], "#26a"))):
        hh = max(v, 0) / m * h
        s.append(f'<rect x="{x0 + j * bw:.1f}" y="{y0 - hh:.1f}" width="{bw:.1f}" height="{hh:.1f}" fill="{c}"/>')
        s.append(f'<text x="{x0 + j * bw + bw / 2:.1f}" y="{y0 - hh - 4:.1f}" font-size="10" text-anchor="middle">{v:.0f}</text>')
    s.append(f'<text x="{x0 + bw:.1f}" y="{y0 + 14}" font-size="10" text-anchor="middle">round {x["r"]}</text>')
ty = y0 - TARGET / m * h
s.append(f'<line x1="50" x2="{w + 60}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#c22" stroke-dasharray="5,4"/>')
s.append(f'<text x="{w + 58}" y="{ty - 4:.1f}" font-size="10" fill="#c22" text-anchor="end">target 16 KiB</text>')
s.append(f'<line x1="50" x2="50" y1="{top}" y2="{y0}" stroke="#000"/><line x1="50" x2="{w + 60}" y1="{y0}" y2="{y0}" stroke="#000"/>')
s.append(f'<text x="10" y="{y0 + 40}" font-size="10">grey: native, blue: bridged (gsrun, bridge = always); '
         f'median memory per bridged flow {m_flow:.0f} B, allocated {kib(m_heap)} KiB</text></svg>')
open(out + ".svg", "w").write("".join(s))
print("\n".join(lines[-2:]))
print("wrote", out + ".md", "and .svg")
PY
