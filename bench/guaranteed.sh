#!/usr/bin/env bash
# A guaranteed flow beside saturating bulk flows of the same process, through
# one bottleneck, side by side in one run:
#   gs-guaranteed  the flow `class = guaranteed, rate = R, transport = mces`,
#                  the bulk flows `class = reliable, transport = mces`;
#   gs-capped      the same flow as `class = reliable, rate = R` over MCES
#                  (capped at R, no floor): what a rate alone gives;
#   tcp-paced      kernel TCP, the flow paced at R (the policy's `rate`, i.e.
#                  SO_MAX_PACING_RATE), the bulk flows plain kernel TCP.
# Two namespaces joined by a veth pair; the sender's side is the bottleneck:
# a tbf qdisc at --link (default 100mbit) with 20 ms of queue, and
# gso_max_segs 1 so it queues and drops per packet. One program
# (bench/gflows.py, under gsrun for the gs-* runs) opens the guaranteed flow
# and the bulk flows to one receiver (gflows.py serve, under gsrun for gs-*),
# which counts each flow's bytes. Cases: R and the number of bulk flows
# (default '60:1 40:3': each R is above the flow's fair share, so only a
# floor under congestion control holds it). Reported per case and config:
# the flow's goodput at the receiving program from second 3 to the end,
# its ratio to R, its worst 1-second bin, and the bulk flows' total; medians
# of the rounds, runs interleaved. Needs root. Writes
# bench/results/DATE-guaranteed[-N]-HOST.{md,svg}.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cases="60:1 40:3" link=100 seconds=12 rounds=3 configs="gs-guaranteed gs-capped tcp-paced"
usage() {
    cat <<'EOF'
usage: bench/guaranteed.sh [--cases 'R:N ...'] [--link MBIT] [--seconds S] [--rounds R]
                           [--configs 'gs-guaranteed gs-capped tcp-paced']
Defaults: --cases '60:1 40:3' (R Mbit/s reserved : N saturating bulk flows beside it),
--link 100 (Mbit/s, the bottleneck), --seconds 12 per run (goodput from second 3 on),
--rounds 3. BUILD=DIR uses another build (default build/).
EOF
}
while [[ $# -gt 0 ]]; do
    case $1 in
        --cases) cases=$2; shift 2;;
        --link) link=$2; shift 2;;
        --seconds) seconds=$2; shift 2;;
        --rounds) rounds=$2; shift 2;;
        --configs) configs=$2; shift 2;;
        -h|--help) usage; echo; sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
        *) usage >&2; exit 2;;
    esac
done
die() { echo "bench/guaranteed.sh: $*" >&2; exit 1; }
for v in "$link" "$seconds" "$rounds"; do [[ $v =~ ^[0-9]+$ ]] || { usage >&2; exit 2; }; done
[[ $seconds -ge 5 && $rounds -ge 1 ]] || die "--seconds at least 5, --rounds at least 1"
for k in $cases; do [[ $k =~ ^[0-9]+:[1-8]$ ]] || die "case '$k' is not R:N (Mbit/s : 1-8 bulk flows)"; done
for c in $configs; do [[ $c =~ ^(gs-guaranteed|gs-capped|tcp-paced)$ ]] || die "unknown config '$c'"; done
[[ $(id -u) -eq 0 ]] || die "network namespaces need root"
PY=/usr/bin/python3
B=${BUILD:-$ROOT/build}
GSRUN=$B/tools/gsrun
FLOWS=$ROOT/bench/gflows.py
[[ -x $GSRUN ]] || die "$GSRUN is missing: build first (ninja -C build)"

T=$(mktemp -d)
tag=gsg$$
A=$tag-a S=$tag-s
source "$ROOT/scripts/lib/netns.sh"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    netns_del "$A" "$S"
    rm -rf "$T"
}
trap cleanup EXIT
netns_pair "$A" "$S" 10.88.0 || die "cannot create network namespaces"
ip -n "$A" link set dev va gso_max_segs 1
ip -n "$A" link set dev va gso_max_size 1500 2>/dev/null || true
tc -n "$A" qdisc add dev va root tbf rate "${link}mbit" burst 32kb latency 20ms ||
    die "cannot add a tbf qdisc (is sch_tbf available?)"
export GSOCKET_LEDGER="$T/ledger-a"   # the sender's host; the receiver gets its own below

base=5300
# policy CONFIG R N: the sender's policy
policy() {
    local cfg=$1 r=$2 n=$3 i
    printf '[general]\ncapacity = 1gbit\n\n'
    case $cfg in
        gs-guaranteed) printf '[flow g]\nproto = tcp\ndport = %d\nclass = guaranteed\nrate = %smbit\ntransport = mces\n\n' $((base + 1)) "$r";;
        gs-capped) printf '[flow g]\nproto = tcp\ndport = %d\nclass = reliable\nrate = %smbit\ntransport = mces\n\n' $((base + 1)) "$r";;
        tcp-paced) printf '[flow g]\nproto = tcp\ndport = %d\nrate = %smbit\ntransport = native\n\n' $((base + 1)) "$r";;
    esac
    for ((i = 2; i <= n + 1; i++)); do
        printf '[flow bulk%d]\nproto = tcp\ndport = %d\ntransport = %s\n\n' "$i" $((base + i)) \
            "$([[ $cfg == tcp-paced ]] && echo native || echo mces)"
    done
}
printf '[general]\ncapacity = 1gbit\n\n[flow serve]\nproto = tcp\ntransport = mces\n' >"$T/serve.ini"

wait_listen() {   # NS PORT KIND: tcp or udp listener up (5 s at most)
    local _ o=-Hltn
    [[ $3 == udp ]] && o=-Hlun
    for _ in $(seq 100); do ip netns exec "$1" ss $o "sport = :$2" | grep -q . && return 0; sleep 0.05; done
    return 1
}

# one CONFIG R N ROUND -> one JSON line
one() {
    local cfg=$1 r=$2 n=$3 round=$4 ports i pre_s=() pre_a=()
    ports=$(seq -s, $((base + 1)) $((base + n + 1)))
    policy "$cfg" "$r" "$n" >"$T/send.ini"
    rm -f "$T/stats-s.jsonl" "$T/stats-a.jsonl"
    if [[ $cfg == gs-* ]]; then
        pre_s=(env GSOCKET_LEDGER="$T/ledger-s" "$GSRUN" -q --policy "$T/serve.ini" --stats "$T/stats-s.jsonl" --)
        pre_a=("$GSRUN" -q --policy "$T/send.ini" --stats "$T/stats-a.jsonl" --)
    else
        pre_a=("$GSRUN" -q --policy "$T/send.ini" --stats "$T/stats-a.jsonl" --)
    fi
    ip netns exec "$S" timeout $((seconds + 70)) "${pre_s[@]}" "$PY" "$FLOWS" serve --ports "$ports" \
        --seconds "$seconds" >"$T/serve.json" 2>"$T/serve.err" &
    local spid=$!
    pids+=("$spid")
    wait_listen "$S" $((base + 1)) tcp || die "the receiver did not listen: $(cat "$T/serve.err")"
    if [[ $cfg == gs-* ]]; then wait_listen "$S" $((base + 1)) udp || die "no MCES listener: $(cat "$T/serve.err")"; fi
    ip netns exec "$A" timeout $((seconds + 30)) "${pre_a[@]}" "$PY" "$FLOWS" send --host 10.88.0.2 \
        --ports "$ports" --seconds $((seconds + 1)) >/dev/null 2>"$T/send.err" ||
        echo "  ($cfg: the sender said: $(tail -1 "$T/send.err"))" >&2
    wait "$spid" || true
    "$PY" - "$cfg" "$r" "$n" "$round" "$T/serve.json" "$T/stats-a.jsonl" "$base" <<'PY'
import json, sys
cfg, r, n, rnd, path, stats, base = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], int(sys.argv[7])
try:
    bins = json.load(open(path))
except Exception:
    bins = {}
def rate(b, lo, hi):   # Mbit/s over bins [lo, hi)
    seg = b[lo:hi]
    return sum(seg) * 8 / 1e6 / (0.1 * (hi - lo)) if hi > lo else 0.0
g = bins.get(str(base + 1), [])
hi = len(g) - 1   # the last bin is cut short when the receiver stops
lo = 30
carried = "?"
try:
    for line in open(stats):
        rec = json.loads(line)
        for f in rec.get("flows", []):
            if f.get("peer", "").endswith(":%d" % (base + 1)):
                carried = f.get("transport", "?")
                gu = f.get("mces", {}).get("guaranteed")
                if gu:
                    carried += " floor=%s shortfalls=%d" % (gu.get("floor"), gu.get("shortfalls", 0))
except OSError:
    pass
out = {"config": cfg, "rate": r, "bulk": n, "round": rnd, "carried": carried}
if hi - lo < 20:
    out["error"] = "the receiver saw %d bins of the guaranteed flow" % len(g)
else:
    out["goodput"] = rate(g, lo, hi)
    out["worst_1s"] = min(rate(g, i, i + 10) for i in range(lo, hi - 9, 10))
    out["bulk_total"] = sum(rate(bins.get(str(base + i), []), lo, hi) for i in range(2, n + 2))
print(json.dumps(out))
PY
}

results=()
total=$(( $(wc -w <<<"$cases") * $(wc -w <<<"$configs") * rounds ))
k=0
for ((round = 1; round <= rounds; round++)); do
    for c in $cases; do
        r=${c%%:*} n=${c##*:}
        for cfg in $configs; do
            k=$((k + 1))
            echo "[$k/$total] round $round, $cfg, $r Mbit/s beside $n bulk" >&2
            line=$(one "$cfg" "$r" "$n" "$round")
            echo "  $line" >&2
            results+=("$line")
        done
    done
done

mkdir -p "$ROOT/bench/results"
host=$(hostname -s 2>/dev/null || echo host)
stamp=$(date +%F)
out=$ROOT/bench/results/$stamp-guaranteed-$host
i=2
while [[ -e $out.md ]]; do out=$ROOT/bench/results/$stamp-guaranteed-$i-$host; i=$((i + 1)); done
printf '%s\n' "${results[@]}" >"$T/all.jsonl"
"$PY" - "$T/all.jsonl" "$out" "$link" "$seconds" "$rounds" "$(nproc)" "$(uname -r)" <<'PY'
import json, statistics, sys
path, out, link, seconds, rounds, cpus, kernel = sys.argv[1:8]
rows = [json.loads(l) for l in open(path) if l.strip()]
cases, cfgs = [], []
for r in rows:
    if (r["rate"], r["bulk"]) not in cases: cases.append((r["rate"], r["bulk"]))
    if r["config"] not in cfgs: cfgs.append(r["config"])
md = ["# Guaranteed rate beside saturating bulk flows of the same process", "",
      "bench/guaranteed.sh: a %s Mbit/s bottleneck (tbf, 20 ms queue, per-packet), %s s runs (goodput from "
      "second 3), %s rounds interleaved; medians. %s CPUs, kernel %s." % (link, seconds, rounds, cpus, kernel), "",
      "| reserved | bulk flows | config | goodput Mbit/s | of the rate | worst 1 s | bulk total Mbit/s | carried (last round) |",
      "|---|---|---|---|---|---|---|---|"]
summary = {}
for (rate, n) in cases:
    for c in cfgs:
        rs = [r for r in rows if r["rate"] == rate and r["bulk"] == n and r["config"] == c]
        ok = [r for r in rs if "goodput" in r]
        if not ok:
            md.append("| %g | %d | %s | failed: %s | | | | |" % (rate, n, c, rs[-1].get("error", "?") if rs else "no run"))
            continue
        gp = statistics.median(r["goodput"] for r in ok)
        worst = statistics.median(r["worst_1s"] for r in ok)
        bulk = statistics.median(r["bulk_total"] for r in ok)
        summary[(rate, n, c)] = gp
        md.append("| %g | %d | %s | %.2f | %.1f%% | %.2f | %.2f | %s |" % (rate, n, c, gp, 100 * gp / rate, worst, bulk, ok[-1]["carried"]))
md += ["", "Every run:", "", "```"] + [json.dumps(r) for r in rows] + ["```"]
open(out + ".md", "w").write("\n".join(md) + "\n")
# A bar chart: each config's goodput as a share of the rate, per case.
W, H, pad = 640, 300, 50
colors = {"gs-guaranteed": "#1f77b4", "gs-capped": "#ff7f0e", "tcp-paced": "#2ca02c"}
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (W, H),
       '<text x="%d" y="16" text-anchor="middle">goodput of the reserved flow, %% of its rate</text>' % (W // 2)]
y0, top = H - pad, 30
scale = (y0 - top) / 120.0
for v in (0, 50, 98, 100, 120):
    y = y0 - v * scale
    svg.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s"/>' % (pad, W - 10, y, y, "#c00" if v == 98 else "#ddd"))
    svg.append('<text x="%d" y="%.1f" text-anchor="end">%d</text>' % (pad - 4, y + 4, v))
gw = (W - pad - 10) / max(1, len(cases))
bw = gw / (len(cfgs) + 1)
for i, (rate, n) in enumerate(cases):
    x = pad + i * gw
    svg.append('<text x="%.1f" y="%d" text-anchor="middle">%g Mbit/s beside %d bulk</text>' % (x + gw / 2, H - pad + 16, rate, n))
    for j, c in enumerate(cfgs):
        v = 100 * summary.get((rate, n, c), 0) / rate
        h = min(v, 120) * scale
        svg.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>' % (x + (j + 0.5) * bw, y0 - h, bw * 0.9, h, colors.get(c, "#888")))
        svg.append('<text x="%.1f" y="%.1f" text-anchor="middle">%.0f</text>' % (x + (j + 0.95) * bw, y0 - h - 3, v))
for j, c in enumerate(cfgs):
    svg.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>' % (pad + j * 130, H - 18, colors.get(c, "#888"), pad + j * 130 + 14, H - 9, c))
svg.append("</svg>")
open(out + ".svg", "w").write("\n".join(svg) + "\n")
print("\n".join(md[:6 + len(cases) * len(cfgs)]))
print("\nwritten: %s.md and .svg" % out)
PY
