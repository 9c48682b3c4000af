#!/usr/bin/env bash
# Isolation of a realtime flow from a bulk flow in the same process: one client
# process (build/bench/isolation) times 64-byte ping-pongs on one TCP flow while,
# when loaded, a second thread saturates another TCP flow with 256 KiB writes.
# Four configurations per round, interleaved (order reversed every other
# round): native idle/loaded, and under gsrun (realtime rule: class realtime,
# latency 5ms, transport native; bulk rule: class reliable; bridge = always, so
# the engine thread relays both flows) idle/loaded. Reports per configuration
# the medians over rounds of p50 and p99, and p99(loaded)/p99(idle) for native
# and gsocket against the target (<= 2x, issue 3); writes
# bench/results/DATE-isolation-PLACEMENT-HOST.{md,svg}. Builds nothing: ninja -C build first.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3
rounds=5 count=20000 placement=same
usage() { echo "usage: bench/isolation.sh [--rounds R] [--count N] [--placement same|free]"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=${2:?}; shift 2;; --count) count=${2:?}; shift 2;;
        --placement) placement=${2:?}; shift 2;;
        -h|--help) usage; sed -n '2,11p' "$0"; exit 0;;
        *) usage >&2; exit 2;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ && $rounds -le 1000 ]] || { echo "--rounds: 1-1000" >&2; exit 2; }
[[ $count =~ ^[1-9][0-9]*$ && $count -le 10000000 ]] || { echo "--count: 1-10000000" >&2; exit 2; }
# same: server and client both pinned to CPU 0 (the engine thread too, it is the
# client's); free: the scheduler places everything on the 2 CPUs.
case $placement in same) cpu_s=0 cpu_c=0;; free) cpu_s="" cpu_c="";; *) usage >&2; exit 2;; esac
B=${BUILD:-$ROOT/build}
ISO=$B/bench/isolation GSRUN=$B/tools/gsrun GSCTL=$B/tools/gsctl LIB=$B/shim/libgsocket-preload.so
for f in "$ISO" "$GSRUN" "$GSCTL"; do
    [[ -x $f ]] || { echo "missing $f: build first (meson setup build && ninja -C build)" >&2; exit 1; }
done
[[ -f $LIB ]] || { echo "missing $LIB: build first" >&2; exit 1; }
[[ -x $PY ]] || { echo "$PY is missing" >&2; exit 1; }

T=$(mktemp -d) server=
cleanup() {
    if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
        kill "$server" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$server" 2>/dev/null || true
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r port_rt port_bulk < <($PY -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')
POLICY=$T/isolation.ini
cat >"$POLICY" <<EOF
; bench/isolation.sh: the realtime flow and the bulk flow of one process
[general]
bridge = always

[flow rt]
proto = tcp
dport = $port_rt
class = realtime
latency = 5ms
transport = native

[flow bulk]
proto = tcp
dport = $port_bulk
class = reliable
EOF
"$GSCTL" policy check "$POLICY" >&2 || { echo "the policy is refused:" >&2; cat "$POLICY" >&2; exit 1; }

pin() { if [[ -n $1 ]]; then echo taskset -c "$1"; fi; }
# shellcheck disable=SC2046
$(pin "$cpu_s") "$ISO" server "$port_rt" "$port_bulk" 2>"$T/server.err" &
server=$!
ready=0
for _ in $(seq 1 50); do   # at most 5 s for both ports to listen
    kill -0 "$server" 2>/dev/null || break
    if $PY - "$port_rt" "$port_bulk" <<'PY' 2>/dev/null; then ready=1; break; fi
import sys
ports = {int(p) for p in sys.argv[1:]}
up = set()
for f in ("/proc/net/tcp",):
    for line in open(f).readlines()[1:]:
        loc, st = line.split()[1], line.split()[3]
        if st == "0A":   # LISTEN
            up.add(int(loc.split(":")[1], 16))
sys.exit(0 if ports <= up else 1)
PY
    sleep 0.1
done
[[ $ready -eq 1 ]] || { echo "the isolation server did not come up:" >&2; cat "$T/server.err" >&2; exit 1; }
echo "server pid $server on ports $port_rt (realtime) and $port_bulk (bulk), placement $placement" >&2

client() {   # client native|gsocket on|off -> the client's result line
    local mode=$1 bulk=$2 out rc=0 cmd
    # shellcheck disable=SC2207
    cmd=($(pin "$cpu_c"))
    [[ $mode == gsocket ]] && cmd+=("$GSRUN" --quiet --policy "$POLICY" --)
    cmd+=("$ISO" client 127.0.0.1 "$port_rt" "$port_bulk" -n "$count" --bulk "$bulk" --rate-limit none)
    out=$(timeout -k 5 180 "${cmd[@]}" 2>"$T/client.err") || rc=$?
    if [[ $rc -ne 0 || $out != rtt_us* ]]; then
        echo "client $mode bulk $bulk failed (exit $rc): $out" >&2; cat "$T/client.err" >&2; return 1
    fi
    [[ -s $T/client.err ]] && sed "s/^/  [$mode bulk $bulk] /" "$T/client.err" >&2
    kill -0 "$server" 2>/dev/null || { echo "the server died:" >&2; cat "$T/server.err" >&2; return 1; }
    echo "$out"
}
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }

declare -A p50 p99 gbit
configs=(native:off native:on gsocket:off gsocket:on)
for r in $(seq 1 "$rounds"); do
    order=("${configs[@]}")
    (( r % 2 == 0 )) && order=(gsocket:on gsocket:off native:on native:off)
    for c in "${order[@]}"; do
        line=$(client "${c%%:*}" "${c##*:}")
        p50[$c]+="$(field p50 "$line") " p99[$c]+="$(field p99 "$line") " gbit[$c]+="$(field bulk_gbit "$line") "
        printf 'round %d/%d %-7s bulk %-3s %s\n' "$r" "$rounds" "${c%%:*}" "${c##*:}" "$line" >&2
    done
done

host=$(hostname -s) day=$(date +%F)
mkdir -p "$ROOT/bench/results"
out=$ROOT/bench/results/$day-isolation-$placement-$host
$PY - "$out" "$count" "$placement" "$POLICY" \
    "${p50[native:off]}" "${p50[native:on]}" "${p50[gsocket:off]}" "${p50[gsocket:on]}" \
    "${p99[native:off]}" "${p99[native:on]}" "${p99[gsocket:off]}" "${p99[gsocket:on]}" \
    "${gbit[native:on]}" "${gbit[gsocket:on]}" <<'PY'
import math, os, platform, statistics as st, sys
out, count, placement, policy = sys.argv[1:5]
v = [[float(x) for x in a.split()] for a in sys.argv[5:]]
names = ["native idle", "native loaded", "gsocket idle", "gsocket loaded"]
p50 = dict(zip(names, v[0:4])); p99 = dict(zip(names, v[4:8]))
gbit = {"native loaded": v[8], "gsocket loaded": v[9]}
n = len(p99["native idle"])
med = st.median
ratio = {m: med(p99[f"{m} loaded"]) / med(p99[f"{m} idle"]) for m in ("native", "gsocket")}
def verdict(x): return "meets" if x <= 2.0 else "misses"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
where = {"same": "server and client (with its engine thread) pinned to CPU 0",
         "free": "unpinned, the scheduler places everything"}[placement]
pol = [l for l in open(policy).read().splitlines() if not l.startswith(";")]
L = [
    f"# Isolation of a realtime flow from a bulk flow — {os.path.basename(out)}",
    "",
    f"Date: {os.path.basename(out)[:10]}. Machine: {platform.node()}, {os.cpu_count()} CPUs ({cpu}), "
    f"kernel {platform.release()}; placement: {placement} ({where}).",
    "",
    f"One client process, two TCP flows over loopback: 64-byte ping-pongs x {count} (after 1000 untimed) on the",
    "realtime flow; when loaded, a second thread sends 256 KiB writes on the bulk flow as fast as it can",
    "(server: echo on one port, read-and-discard on the other, never under the shim).",
    f"{n} rounds, the four configurations interleaved (order reversed every other round).",
    "gsocket = the client under gsrun with this policy (ports picked per run):",
    "",
    "```ini", *pol, "```",
    "",
    "| round | native idle p99 us | native loaded p99 us | gsocket idle p99 us | gsocket loaded p99 us | native bulk Gbit/s | gsocket bulk Gbit/s |",
    "|---|---|---|---|---|---|---|",
]
for i in range(n):
    L.append(f"| {i+1} | " + " | ".join(f"{p99[k][i]:.1f}" for k in names)
             + f" | {gbit['native loaded'][i]:.2f} | {gbit['gsocket loaded'][i]:.2f} |")
L += ["", "Medians over rounds:", "",
      "| configuration | p50 us | p99 us | bulk Gbit/s |", "|---|---|---|---|"]
for k in names:
    g = f"{med(gbit[k]):.2f}" if k in gbit else "-"
    L.append(f"| {k} | {med(p50[k]):.1f} | {med(p99[k]):.1f} | {g} |")
L += ["",
      f"**native: p99 loaded/idle = {ratio['native']:.2f}x** ({verdict(ratio['native'])} the target <= 2x); "
      f"**gsocket: p99 loaded/idle = {ratio['gsocket']:.2f}x** ({verdict(ratio['gsocket'])} the target <= 2x).",
      "Per-round ratios: native " + ", ".join(f"{b/a:.2f}" for a, b in zip(p99["native idle"], p99["native loaded"]))
      + "; gsocket " + ", ".join(f"{b/a:.2f}" for a, b in zip(p99["gsocket idle"], p99["gsocket loaded"])) + ".",
      ""]
open(out + ".md", "w").write("\n".join(L))

# SVG: per round, p99 idle (light) vs loaded (dark), native and gsocket, log scale;
# a dashed line at 2x the median idle p99 of each side (the target).
W, H, top, left = 340, 200, 40, 50
allv = [x for k in names for x in p99[k]]
lo = 10 ** math.floor(math.log10(min(allv))); hi = 10 ** math.ceil(math.log10(max(allv) * 2.1))
def y(val): return top + H - (math.log10(val) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * H
def panel(x0, title, idle, loaded, c1, c2):
    s = [f'<g transform="translate({x0},0)"><text x="{left}" y="20" font-size="12">{title}</text>']
    d = lo
    while d <= hi * 1.0001:
        s.append(f'<line x1="{left}" x2="{left + W}" y1="{y(d):.1f}" y2="{y(d):.1f}" stroke="#ddd"/>'
                 f'<text x="{left - 4}" y="{y(d) + 3:.1f}" font-size="9" text-anchor="end">{d:g}</text>')
        d *= 10
    bw = W / (n * 2.5)
    for i, (a, b) in enumerate(zip(idle, loaded)):
        x = left + i * bw * 2.5 + bw * 0.25
        for j, (val, c) in enumerate(((a, c1), (b, c2))):
            s.append(f'<rect x="{x + j * bw:.1f}" y="{y(val):.1f}" width="{bw * 0.95:.1f}" '
                     f'height="{top + H - y(val):.1f}" fill="{c}"><title>{val:.1f} us</title></rect>')
    t = 2 * med(idle)
    s.append(f'<line x1="{left}" x2="{left + W}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#c22" stroke-dasharray="4 3"/>'
             f'<text x="{left + W}" y="{y(t) - 3:.1f}" font-size="9" text-anchor="end" fill="#c22">2x idle p99</text>')
    s.append(f'<text x="{left}" y="{top + H + 16}" font-size="10">light: idle, dark: loaded; one pair per round; '
             f'p99 us, log scale</text></g>')
    return "".join(s)
svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * (W + left + 20)}" height="{top + H + 30}" '
       'font-family="sans-serif">'
       + panel(0, f"native: p99 loaded/idle {ratio['native']:.2f}x", p99["native idle"], p99["native loaded"], "#bbb", "#555")
       + panel(W + left + 20, f"gsocket: p99 loaded/idle {ratio['gsocket']:.2f}x", p99["gsocket idle"],
               p99["gsocket loaded"], "#9bd", "#26a")
       + "</svg>")
open(out + ".svg", "w").write(svg)
print("\n".join(L[-4:-1]))
print("wrote", out + ".md", "and .svg")
PY
