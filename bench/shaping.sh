#!/usr/bin/env bash
# Shaping accuracy, gsocket against trickle, side by side in one run: iperf3
# sends for S seconds through each limiter at 100 kB/s, 1, 10 and 50 MB/s;
# the receiving iperf3 reports 100 ms bins. Error of the mean rate and the
# coefficient of variation of the bins (the first 0.5 s left out) per tool.
# Targets (issue 3): error <= 1% at every rate, CoV <= 0.05.
# Writes bench/results/DATE-shaping-HOST.{md,svg}.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
seconds=10
case "${1:-}" in -h|--help) sed -n '2,7p' "$0" | sed 's/^# //'; echo "usage: bench/shaping.sh [SECONDS]"; exit 0;; esac
[[ -n "${1:-}" ]] && seconds=$1
B=${BUILD:-$ROOT/build}
ninja -C "$B" >/dev/null
for t in iperf3 trickle; do command -v $t >/dev/null || { echo "$t is missing: apt-get install $t" >&2; exit 1; }; done
T=$(mktemp -d); trap '[[ -n ${KEEP:-} ]] || rm -rf "$T"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run() {   # run TOOL RATE -> the receiver's JSON in $T/TOOL-RATE.json; prints the target in B/s
    local tool=$1 rate=$2 p; p=$(port)
    iperf3 -s -1 -B 127.0.0.1 -p "$p" -i 0.1 -J >"$T/$tool-$rate.json" 2>/dev/null & local s=$!
    sleep 0.3
    if [[ $tool == gsocket ]]; then
        printf '[general]\nrate_up = %sB/s\n' "$rate" >"$T/p.ini"
        "$B/tools/gsrun" --policy "$T/p.ini" -- iperf3 -c 127.0.0.1 -p "$p" -t "$seconds" >/dev/null
        echo "$rate"
    else
        local kb=$(( (rate + 512) / 1024 ))   # trickle's KB/s are 1024 bytes
        trickle -s -u "$kb" iperf3 -c 127.0.0.1 -p "$p" -t "$seconds" >/dev/null 2>&1
        echo $(( kb * 1024 ))
    fi
    wait $s || true
}
rows=()
for rate in 100000 1000000 10000000 50000000; do
    for tool in gsocket trickle; do
        target=$(run $tool $rate)
        rows+=("$tool $rate $target $T/$tool-$rate.json")
        echo "done: $tool at $rate B/s" >&2
    done
done
out=$ROOT/bench/results/$(date +%F)-shaping-$(hostname -s)
python3 - "$out" "$seconds" "${rows[@]}" <<'PY'
import json, os, platform, statistics as st, sys
out, secs = sys.argv[1], sys.argv[2]
res = []
for row in sys.argv[3:]:
    tool, rate, target, path = row.split()
    d = json.load(open(path))
    ivs = [i["sum"] for i in d["intervals"]]
    bins = [i["bytes"] / i["seconds"] for i in ivs if i["start"] >= 0.5 and i["seconds"] > 0.05]
    total = sum(i["bytes"] for i in ivs); dur = sum(i["seconds"] for i in ivs)
    mean = total / dur
    cov = st.pstdev(bins) / st.mean(bins) if bins else float("nan")
    res.append((tool, int(rate), int(target), mean, (mean / int(target) - 1) * 100, cov))
lines = [f"# Shaping accuracy, gsocket vs trickle — {os.path.basename(out)}", "",
         f"{platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}. iperf3 TCP upload on loopback, "
         f"{secs} s per run, the receiver's 100 ms bins (the first 0.5 s left out for the CoV). gsocket: "
         "`[general] rate_up` (bridged, shaped by the engine); trickle: `trickle -s -u KB` (1 KB = 1024 B).", "",
         "| rate asked | tool | target B/s | measured B/s | error | CoV of 100 ms bins |", "|---|---|---|---|---|---|"]
for tool, rate, target, mean, err, cov in res:
    lines.append(f"| {rate/1e6:g} MB/s | {tool} | {target} | {mean:.0f} | {err:+.2f}% | {cov:.3f} |")
g = [r for r in res if r[0] == "gsocket"]
lines += ["", f"gsocket: worst error {max(abs(r[4]) for r in g):.2f}% (target <= 1%), worst CoV "
          f"{max(r[5] for r in g):.3f} (target <= 0.05).", ""]
open(out + ".md", "w").write("\n".join(lines))
# Plot: error and CoV per rate, both tools.
w, h = 640, 220
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">']
for k, (title, idx, scale) in enumerate((("|error| %", 4, 10.0), ("CoV", 5, 0.5))):
    x0 = 20 + k * 320
    svg.append(f'<text x="{x0}" y="15" font-size="12">{title} (bar height: 0 to {scale})</text>')
    for i, rate in enumerate(sorted({r[1] for r in res})):
        for j, tool in enumerate(("gsocket", "trickle")):
            v = next(abs(r[idx]) for r in res if r[0] == tool and r[1] == rate)
            hh = min(v / scale, 1) * 150
            x = x0 + i * 70 + j * 26
            svg.append(f'<rect x="{x}" y="{180 - hh:.1f}" width="22" height="{hh:.1f}" fill="{"#26a" if tool == "gsocket" else "#c62"}"/>')
        svg.append(f'<text x="{x0 + i * 70}" y="195" font-size="10">{rate/1e6:g}MB/s</text>')
svg.append('<text x="20" y="212" font-size="10">blue: gsocket, orange: trickle</text></svg>')
open(out + ".svg", "w").write("".join(svg))
print("\n".join(lines))
PY
