#!/usr/bin/env bash
# A realtime UDP stream (bench/rt_stream: paced messages carrying their
# sequence number and send time) carried side by side, in one run, by
#   udp      plain kernel UDP, rt_stream send -> rt_stream recv;
#   srt      SRT (Debian's srt-tools): rt_stream -> udp:// srt-live-transmit
#            (caller, latency) -> srt:// srt-live-transmit (listener) -> udp://
#            rt_stream; SRT's own FEC off;
#   srt-fec  the same with SRT's packet filter `fec,cols:10,rows:1`;
#   gsocket  rt_stream send and recv both under gsrun with a policy
#            `class = realtime, latency = ..., transport = mces`; a run whose
#            flows gsrun's --stats does not show on MCES is marked "not carried
#            over MCES" (its figures are then the kernel's, not gsocket's);
# between two network namespaces joined by a veth pair, with random loss from
# nftables in the receiver's namespace (as bench/mces_veth.sh) and, with
# --delay, a one-way delay each way from tools/gsimpair on the receiver's side.
# Per loss rate and round, interleaved: on-time ratio (arrived by send time +
# latency + tolerance), late, lost, one-way delay, wire overhead (bytes on the
# veth towards the receiver over payload bytes sent, minus 1: headers, FEC,
# retransmissions; the reverse direction beside it) and goodput. Medians of
# the rounds. --ceiling instead: each carrier at rising rates on loopback, to
# find the highest rate carried without loss.
# Needs root. Writes bench/results/DATE-realtime[-ceiling][-N]-HOST.{md,svg}
# (the first N from 2 that is free: never overwrites).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rate=20mbit size=1316 losses="0 5" latency=120 seconds=10 rounds=3 delay=0 tolerance=15
srt_latency="" configs="udp srt srt-fec gsocket" ceiling=0 crates="200 400 600 800 1000" srt_opts="" gs_policy=""
usage() {
    cat <<'EOF'
usage: bench/realtime.sh [--rate R] [--size B] [--loss 'L...'] [--latency MS] [--seconds S] [--rounds R]
                         [--delay MS] [--tolerance MS] [--configs 'udp srt srt-fec gsocket']
                         [--srt-latency MS] [--srt-opts 'k=v&...'] [--gs-policy FILE]
       bench/realtime.sh --ceiling [--rates 'M...'] [--seconds S] [--rounds R] [--configs ...]
Defaults: --rate 20mbit (payload; also 1.5gbit, 800kbit), --size 1316 (bytes per message, 7 TS
packets), --loss '0 5' (percent, random, receiver's side), --latency 120 (ms: SRT's latency and
gsocket's policy latency, and the on-time bound), --seconds 10 per run, --rounds 3, --delay 0
(ms one way, each direction, through gsimpair; 0: no relay), --tolerance 15 (ms added to the
bound when counting a message on time, for every carrier alike: a gateway releases at its latency
and hands on after it; the strict ratio is in the per-run table). --srt-opts: more URI parameters
for both SRT ends (e.g. 'maxbw=0&inputbw=3000000'). --gs-policy: the policy for the gsocket runs
instead of the built-in one. --srt-latency: SRT's latency, default the bound minus --delay (SRT
counts its latency from a time base taken at the handshake's arrival, so its messages arrive about
one-way delay + latency after they were sent). --ceiling: rates in Mbit/s (default '200 400 600 800 1000') on
loopback in one namespace, no loss, --seconds 3 unless given. BUILD=DIR uses another build
(default build/), RT_STREAM=PATH another rt_stream.
EOF
}
seconds_given=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --rate) rate=$2; shift 2;;
        --size) size=$2; shift 2;;
        --loss) losses=$2; shift 2;;
        --latency) latency=$2; shift 2;;
        --seconds) seconds=$2; seconds_given=1; shift 2;;
        --rounds) rounds=$2; shift 2;;
        --delay) delay=$2; shift 2;;
        --tolerance) tolerance=$2; shift 2;;
        --configs) configs=$2; shift 2;;
        --srt-opts) srt_opts=$2; shift 2;;
        --srt-latency) srt_latency=$2; shift 2;;
        --gs-policy) gs_policy=$2; shift 2;;
        --ceiling) ceiling=1; shift;;
        --rates) crates=$2; shift 2;;
        -h|--help) usage; echo; sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
        *) usage >&2; exit 2;;
    esac
done
die() { echo "bench/realtime.sh: $*" >&2; exit 1; }
[[ $ceiling -eq 1 && $seconds_given -eq 0 ]] && seconds=3
[[ -n $srt_latency ]] || srt_latency=$((latency > delay ? latency - delay : 1))
[[ $srt_latency =~ ^[0-9]+$ ]] || { usage >&2; exit 2; }
for v in "$rounds" "$latency" "$seconds" "$delay" "$tolerance" "$size"; do
    [[ $v =~ ^[0-9]+$ ]] || { usage >&2; exit 2; }
done
[[ $rounds -ge 1 && $seconds -ge 1 && $size -ge 40 && $size -le 1456 ]] || { echo "rounds, seconds >= 1; size 40..1456 (one SRT packet)" >&2; exit 2; }
for l in $losses; do [[ $l =~ ^[0-9]+$ && $l -lt 100 ]] || { echo "bench/realtime.sh: loss '$l' is not 0..99" >&2; exit 2; }; done
for r in $crates; do [[ $r =~ ^[0-9]+$ && $r -ge 1 ]] || { echo "bench/realtime.sh: rate '$r' is not Mbit/s" >&2; exit 2; }; done
for c in $configs; do [[ $c =~ ^(udp|srt|srt-fec|gsocket)$ ]] || { echo "bench/realtime.sh: unknown config '$c'" >&2; exit 2; }; done
[[ -z $gs_policy || -r $gs_policy ]] || die "cannot read --gs-policy $gs_policy"
[[ $(id -u) -eq 0 ]] || die "network namespaces need root"
PY=/usr/bin/python3
B=${BUILD:-$ROOT/build}
RT=${RT_STREAM:-$B/bench/rt_stream}
GSRUN=$B/tools/gsrun
IMPAIR=$B/tools/gsimpair/gsimpair
[[ -x $RT ]] || die "$RT is missing: build first (ninja -C build bench/rt_stream)"
[[ " $configs " == *" gsocket "* && ! -x $GSRUN ]] && die "$GSRUN is missing: build first"
[[ $delay -gt 0 && ! -x $IMPAIR ]] && die "$IMPAIR is missing: build first"
if [[ " $configs " == *" srt"* ]] && ! command -v srt-live-transmit >/dev/null; then
    # As scripts/lib/common.sh's install_missing does: quietly, only what is missing.
    echo "bench/realtime.sh: installing srt-tools" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends srt-tools >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends srt-tools >/dev/null; } ||
        die "cannot install srt-tools"
fi
SLT=$(command -v srt-live-transmit || true)
srt_version=$([[ -n $SLT ]] && "$SLT" -version 2>&1 | grep -o 'version: [0-9.]*' | head -1 | cut -d' ' -f2 || true)

T=$(mktemp -d)
tag=gsrt$$
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
if [[ $ceiling -eq 1 ]]; then
    ip netns add "$A" || die "cannot create a network namespace"
    ip -n "$A" link set lo up
    S=$A
else
    netns_pair "$A" "$S" 10.83.0 || die "cannot create network namespaces"
    # Loss per packet, as on a wire: nftables otherwise sees a sender's GSO
    # run as one packet and drops it whole (up to 64 packets at a time).
    ip -n "$A" link set dev va gso_max_segs 1
fi
if [[ -n $gs_policy ]]; then
    cp "$gs_policy" "$T/rt.ini"
else
    printf '[flow rt]\nproto = udp\nclass = realtime\nlatency = %sms\ntransport = mces\n' "$latency" >"$T/rt.ini"
fi

set_loss() {   # percent, on everything the receiver's namespace receives from the sender
    ip netns exec "$S" nft delete table inet gsrtloss 2>/dev/null || true
    [[ $1 -eq 0 ]] && return 0
    ip netns exec "$S" nft -f - <<NFT
table inet gsrtloss {
  chain in { type filter hook input priority 0; policy accept;
    ip saddr 10.83.0.1 numgen random mod 100 < $1 drop
  }
}
NFT
}

# UDP datagrams the kernel dropped for a full receive buffer (/proc/net/snmp
# RcvbufErrors), in both namespaces: where a gateway or receiver fell behind.
rcvbuf_errors() {
    local n t=0
    for n in $(printf '%s\n' "$A" "$S" | sort -u); do
        n=$(ip netns exec "$n" awk '/^Udp:/ { if (++k == 2) print $6 }' /proc/net/snmp)
        t=$((t + n))
    done
    echo "$t"
}

# Bytes on the sender's veth end: tx towards the receiver, rx from it.
wire() {
    [[ $ceiling -eq 1 ]] && { echo "0 0 0 0"; return; }
    local d=/sys/class/net/va/statistics
    ip netns exec "$A" sh -c "cat $d/tx_bytes $d/rx_bytes $d/tx_packets $d/rx_packets" | tr '\n' ' '
}

wait_udp() {   # NS PORT: until something is bound to UDP PORT in NS (5 s at most)
    local _
    for _ in $(seq 100); do ip netns exec "$1" ss -Hlun "sport = :$2" | grep -q . && return 0; sleep 0.05; done
    return 1
}

bg() {   # NS OUT ERR CMD...: runs CMD in NS in the background; its pid in $bgpid
    local ns=$1 out=$2 err=$3; shift 3
    ip netns exec "$ns" "$@" >"$out" 2>"$err" &
    bgpid=$!
    pids+=("$bgpid")
}

stop() {   # PID...: SIGTERM, then a bounded wait
    local p _
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for p in "$@"; do
        for _ in $(seq 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}

port=47000
# one KIND LOSS ROUND RATE_BITS -> one JSON line on stdout (progress on stderr)
one() {
    local kind=$1 loss=$2 round=$3 bits=$4
    local count note="" ok=1 srt_pids=() relay_pid="" pre_s=() pre_a=()
    count=$("$PY" -c "import sys; print(max(1, int(float(sys.argv[1]) * int(sys.argv[2]) / (int(sys.argv[3]) * 8))))" "$bits" "$seconds" "$size")
    local pr=$port p_udp=$((port + 1)) p_srt=$((port + 2)) p_in=$((port + 3))
    local raddr=10.83.0.2 rlisten=0.0.0.0
    [[ $ceiling -eq 1 ]] && raddr=127.0.0.1
    : >"$T/recv.json"; : >"$T/send.json"; rm -f "$T/stats-s.jsonl" "$T/stats-a.jsonl"
    if [[ $kind == gsocket ]]; then
        pre_s=("$GSRUN" -q --policy "$T/rt.ini" --stats "$T/stats-s.jsonl" --)
        pre_a=("$GSRUN" -q --policy "$T/rt.ini" --stats "$T/stats-a.jsonl" --)
    fi
    # Where the stream enters the receiver's side: the receiver itself, or SRT's listener.
    local inport=$p_udp
    [[ $kind == srt* ]] && inport=$p_srt
    local target=$raddr:$inport
    bg "$S" "$T/recv.json" "$T/recv.err" timeout $((seconds * 3 + 30)) "${pre_s[@]}" "$RT" recv \
        --listen "$([[ $kind == srt* ]] && echo 127.0.0.1 || echo $rlisten):$p_udp" --latency "${latency}ms" \
        --tolerance "${tolerance}ms" --count "$count" --timeout 2 --progress 0
    local rpid=$bgpid
    wait_udp "$S" "$p_udp" || { note="receiver did not start"; ok=0; }
    if [[ $kind == srt* ]]; then
        local q="latency=$srt_latency"
        [[ $kind == srt-fec ]] && q="$q&packetfilter=fec,cols:10,rows:1"
        [[ -n $srt_opts ]] && q="$q&$srt_opts"
        bg "$S" "$T/srt-l.out" "$T/srt-l.err" stdbuf -oL -eL "$SLT" -a no -t $((seconds * 3 + 30)) \
            "srt://:$p_srt?mode=listener&$q" "udp://127.0.0.1:$p_udp"
        srt_pids+=("$bgpid")
        wait_udp "$S" "$p_srt" || { note="SRT listener did not start"; ok=0; }
    fi
    if [[ $delay -gt 0 ]]; then   # the relay listens where the stream enters and passes it on, delayed
        bg "$S" "$T/relay.json" "$T/relay.err" "$IMPAIR" --listen "$raddr:$pr" --to "127.0.0.1:$inport" \
            --delay "${delay}ms" --stats-interval 0 --duration "$((seconds * 3 + 30))s"
        relay_pid=$bgpid
        wait_udp "$S" "$pr" || { note="relay did not start"; ok=0; }
        target=$raddr:$pr
    fi
    local sendto=$target
    if [[ $kind == srt* ]]; then
        local q="latency=$srt_latency"
        [[ $kind == srt-fec ]] && q="$q&packetfilter=fec,cols:10,rows:1"
        [[ -n $srt_opts ]] && q="$q&$srt_opts"
        bg "$A" "$T/srt-c.out" "$T/srt-c.err" stdbuf -oL -eL "$SLT" -a no -t $((seconds * 3 + 30)) \
            "udp://127.0.0.1:$p_in?rcvbuf=33554432" "srt://$target?mode=caller&$q"
        srt_pids+=("$bgpid")
        local _
        for _ in $(seq 100); do grep -q "connected" "$T/srt-c.out" "$T/srt-c.err" 2>/dev/null && break; sleep 0.05; done
        # Not fatal: the run fails below only if nothing arrives (the line has been seen to come late).
        grep -q "connected" "$T/srt-c.out" "$T/srt-c.err" 2>/dev/null || note="SRT caller's connection not reported within 5 s"
        wait_udp "$A" "$p_in" || true
        sendto=127.0.0.1:$p_in
    fi
    local w0 w1 e0 e1
    w0=$(wire); e0=$(rcvbuf_errors)
    timeout $((seconds * 2 + 30)) ip netns exec "$A" "${pre_a[@]}" "$RT" send --to "$sendto" --rate "$bits" \
        --size "$size" --count "$count" --progress 0 >"$T/send.json" 2>"$T/send.err" || { ok=0; note="${note:-sender failed}"; }
    wait "$rpid" || { ok=0; note="${note:-receiver failed}"; }
    w1=$(wire); e1=$(rcvbuf_errors)
    [[ ${#srt_pids[@]} -gt 0 ]] && stop "${srt_pids[@]}"
    [[ -n $relay_pid ]] && stop "$relay_pid"
    [[ -s $T/recv.json ]] || { ok=0; note="${note:-no result from the receiver: $(tail -1 "$T/recv.err")}"; }
    if [[ $kind == srt* ]] && grep -hiE "error|fail|reject|invalid" "$T"/srt-[cl].{out,err} 2>/dev/null | grep -qv "Media path"; then
        note="${note:-SRT said: $(grep -hiE "error|fail|reject|invalid" "$T"/srt-[cl].{out,err} | grep -v "Media path" | head -1)}"
    fi
    "$PY" - "$kind" "$loss" "$round" "$bits" "$ok" "$note" "$T/recv.json" "$T/send.json" "$w0" "$w1" \
        "$T/stats-a.jsonl" "$T/stats-s.jsonl" $((e1 - e0)) <<'PY'
import json, sys
kind, loss, rnd, bits, ok, note, rj, sj, w0, w1, sa, ss, rcvbuf_err = sys.argv[1:14]
def load(p):
    try:
        return json.loads(open(p).read().strip().splitlines()[-1])
    except Exception:
        return {}
r, s = load(rj), load(sj)
w0 = [int(x) for x in w0.split()]; w1 = [int(x) for x in w1.split()]
d = [b - a for a, b in zip(w0, w1)]
out = {"kind": kind, "loss": int(loss), "round": int(rnd), "rate_mbit": float(bits) / 1e6,
       "ok": ok == "1" and bool(r) and (r.get("received") or 0) > 0}
if r and not r.get("received"):
    note = note or "nothing arrived"
out.update({k: r.get(k) for k in ("count", "received", "lost", "duplicates", "reordered", "on_time", "on_time_ratio",
            "late", "on_time_strict_ratio", "delay_p50_ms", "delay_p99_ms", "delay_max_ms", "jitter_ms", "bytes",
            "goodput_mbit", "late_first", "late_last")})
out["rcvbuf_errors"] = int(rcvbuf_err)
out.update({"sent": s.get("sent"), "send_mbit": s.get("mbit"), "behind_p99_us": s.get("behind_p99_us")})
payload = (s.get("sent") or 0) * (s.get("size") or 0)
out.update({"wire_fwd_bytes": d[0], "wire_rev_bytes": d[1], "wire_fwd_pkts": d[2], "wire_rev_pkts": d[3],
            "overhead": (d[0] / payload - 1) if payload and d[0] else None,
            "reverse": (d[1] / payload) if payload and d[0] else None})
carried = "-"
if kind == "gsocket":
    # Carried over MCES only when both ends' UDP flows say so in gsrun --stats.
    def flows(p):
        try:
            return [f for l in open(p) if l.strip() for f in json.loads(l).get("flows", []) if f.get("proto") == "udp"]
        except Exception:
            return []
    fa, fs = flows(sa), flows(ss)
    if not fa or not fs:
        carried, why = "native", "gsrun --stats has no UDP flow (shim not loaded?)"
    else:
        ta = {f.get("transport") for f in fa}; ts = {f.get("transport") for f in fs}
        cls = {f.get("class") for f in fa + fs}
        carried = "mces" if ta == {"mces"} and ts == {"mces"} else "native"
        why = f"transport sender {'/'.join(sorted(map(str, ta)))}, receiver {'/'.join(sorted(map(str, ts)))}, class {'/'.join(sorted(map(str, cls)))}"
        # A class-0 style block that shows the stream went as plain UDP (peer fallback).
        mu = [f.get("mces_udp") for f in fa if isinstance(f.get("mces_udp"), dict)]
        if carried == "mces" and mu and all(m.get("sent", 0) == 0 and m.get("plain_out", 0) > 0 for m in mu):
            carried, why = "native", why + ", but the sender's messages went as plain UDP"
    out["why"] = why
    if carried != "mces":
        note = note or "not carried over MCES"
out["carried"] = carried
out["note"] = note
print(json.dumps(out))
f = lambda k, spec: "-" if out.get(k) is None else format(out[k], spec)
late_at = "" if (out.get("late_last") or -1) < 0 else f" (seq {out['late_first']}-{out['late_last']})"
print(f"  {kind}: on time {f('on_time_ratio', '.4f')}, lost {f('lost', 'd')}, late {f('late', 'd')}{late_at}, "
      f"delay p50/p99 {f('delay_p50_ms', '.1f')}/{f('delay_p99_ms', '.1f')} ms, wire overhead {f('overhead', '.3f')}, "
      f"goodput {f('goodput_mbit', '.1f')} Mbit/s{'' if carried == '-' else ', ' + carried} {note}", file=sys.stderr)
PY
}

bits_of() { "$PY" -c '
import re, sys
m = re.fullmatch(r"([0-9.]+)\s*([kmg]?)(bit|bps)?", sys.argv[1].lower())
if not m: sys.exit(1)
print(int(float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]))' "$1"; }

: >"$T/runs.jsonl"
runs_total=0 runs_done=0
if [[ $ceiling -eq 1 ]]; then
    runs_total=$(( $(wc -w <<<"$crates") * rounds * $(wc -w <<<"$configs") ))
    for r in $(seq "$rounds"); do
        for m in $crates; do
            for kind in $configs; do
                runs_done=$((runs_done + 1))
                echo "[$runs_done/$runs_total] $kind at $m Mbit/s, round $r" >&2
                port=$((port + 10))
                one "$kind" 0 "$r" $((m * 1000000)) >>"$T/runs.jsonl"
            done
        done
    done
else
    bits=$(bits_of "$rate") || { echo "bench/realtime.sh: bad --rate '$rate'" >&2; exit 2; }
    runs_total=$(( $(wc -w <<<"$losses") * rounds * $(wc -w <<<"$configs") ))
    for loss in $losses; do
        set_loss "$loss"
        for r in $(seq "$rounds"); do
            for kind in $configs; do
                runs_done=$((runs_done + 1))
                echo "[$runs_done/$runs_total] $kind at $loss% loss, round $r" >&2
                port=$((port + 10))
                one "$kind" "$loss" "$r" "$bits" >>"$T/runs.jsonl"
            done
        done
    done
    set_loss 0
fi

host=$(hostname -s); day=$(date +%F)
base=$ROOT/bench/results/$day-realtime
[[ $ceiling -eq 1 ]] && base=$base-ceiling
out=$base-$host n=2
while [[ -e $out.md || -e $out.svg ]]; do out=$base-$n-$host; n=$((n + 1)); done
cmd="bench/realtime.sh $([[ $ceiling -eq 1 ]] && echo "--ceiling --rates '$crates'" || echo "--rate $rate --loss '$losses' --delay $delay") --latency $latency --seconds $seconds --rounds $rounds --size $size --tolerance $tolerance --srt-latency $srt_latency --configs '$configs'${srt_opts:+ --srt-opts '$srt_opts'}${gs_policy:+ --gs-policy $gs_policy}"
"$PY" - "$out" "$T/runs.jsonl" "$ceiling" "$cmd" "$srt_version" "$T/rt.ini" "$latency" "$tolerance" "$delay" "$srt_latency" <<'PY'
import json, os, platform, statistics, sys
out, runs, ceiling, cmd, srtv, ini, latency, tol, delay, srtlat = sys.argv[1:11]
ceiling = ceiling == "1"
rs = [json.loads(l) for l in open(runs) if l.strip()]
kinds = list(dict.fromkeys(r["kind"] for r in rs))
xs = sorted({r["rate_mbit"] if ceiling else r["loss"] for r in rs})
xkey = "rate_mbit" if ceiling else "loss"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
name = {"udp": "plain UDP", "srt": "SRT", "srt-fec": "SRT + FEC 10x1", "gsocket": "gsocket realtime"}
def sel(k, x):
    return [r for r in rs if r["kind"] == k and r[xkey] == x and r["ok"]]
def med(k, x, f):
    v = [r[f] for r in sel(k, x) if r.get(f) is not None]
    return statistics.median(v) if v else None
def fmt(v, spec, scale=1):
    return "-" if v is None else format(v * scale, spec)
def carried(k, x):
    c = {r["carried"] for r in rs if r["kind"] == k and r[xkey] == x}
    return "" if c <= {"-"} else ("" if c == {"mces"} else " (**not carried over MCES**)")
policy = open(ini).read().strip().replace("\n", "; ")
L = [f"# Realtime stream: plain UDP, SRT and gsocket's realtime class{' — ceiling on loopback' if ceiling else ''}\n",
     f"Date: {os.path.basename(out)[:10]}. Machine: {platform.node()}, {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}. "
     f"SRT: srt-live-transmit {srtv or '-'}. Command: `{cmd}`.\n"]
if ceiling:
    L.append("One network namespace, loopback only, no loss. bench/rt_stream sends paced messages at each rate; "
             "SRT: rt_stream -> udp:// srt-live-transmit (caller) -> srt:// srt-live-transmit (listener) -> udp:// rt_stream, "
             f"latency {srtlat} ms, SRT's defaults otherwise (maxbw: 1 Gbit/s in live mode), the caller's UDP input with a 32 MiB "
             "receive buffer (`rcvbuf=33554432`: with the default buffer, srt-live-transmit's input loses half the stream at "
             "200 Mbit/s before SRT sees it); gsocket: both ends under gsrun "
             f"with `{policy}`. Lost: messages that never reached the receiver (SRT drops what is too late). "
             "Loss-free ceiling: the highest rate at which no round lost a message. Medians of the rounds.\n")
else:
    L.append("Two namespaces joined by one veth pair; nftables in the receiver's namespace drops that share of every packet "
             "from the sender at random (the reverse direction is not impaired)"
             + (f"; gsimpair on the receiver's side delays each direction by {delay} ms" if delay != "0" else "") + ". "
             "bench/rt_stream sends paced messages, each with its sequence number and send time (CLOCK_MONOTONIC, shared by "
             f"the namespaces). On time: arrived by send time + {latency} ms + {tol} ms tolerance (a gateway that releases at "
             "exactly its latency hands on a little later; the same for every carrier), as a share of all messages sent. "
             "Late: received after that. Lost: never received (SRT drops what is too late to play). "
             "Wire overhead: bytes the sender's namespace put on the veth (Ethernet, IP, UDP and the carrier's headers, "
             "FEC, retransmissions, handshakes) over payload bytes sent, minus 1; reverse: bytes coming back (ACKs, NAKs) "
             "over payload bytes. SRT: rt_stream -> udp:// srt-live-transmit (caller) -> srt:// srt-live-transmit (listener) "
             f"-> udp:// rt_stream, latency {srtlat} ms (the bound minus the one-way delay: SRT's latency runs from a time base "
             "set when the handshake arrives), the caller's UDP input with `rcvbuf=33554432`, SRT's own FEC off, and with `packetfilter=fec,cols:10,rows:1`. "
             f"gsocket: both rt_stream processes under gsrun with `{policy}`; a row marked not carried over MCES ran on "
             "the kernel's UDP (gsrun --stats). Rounds interleave the carriers; medians of the rounds.\n")
hdr = "rate Mbit/s" if ceiling else "loss"
L += [f"| {hdr} | carrier | on time (+{tol} ms) | on time (strict) | late | lost | delay p50 / p99 ms | wire overhead | reverse | goodput Mbit/s | runs ok |",
      "|---|---|---|---|---|---|---|---|---|---|---|"]
for x in xs:
    for k in kinds:
        n = len(sel(k, x)); tot = len([r for r in rs if r["kind"] == k and r[xkey] == x])
        L.append(f"| {x:g}{'' if ceiling else '%'} | {name.get(k, k)}{carried(k, x)} | {fmt(med(k, x, 'on_time_ratio'), '.2f', 100)}% | "
                 f"{fmt(med(k, x, 'on_time_strict_ratio'), '.2f', 100)}% | "
                 f"{fmt(med(k, x, 'late'), '.0f')} | {fmt(med(k, x, 'lost'), '.0f')} | "
                 f"{fmt(med(k, x, 'delay_p50_ms'), '.1f')} / {fmt(med(k, x, 'delay_p99_ms'), '.1f')} | "
                 f"{fmt(med(k, x, 'overhead'), '.1f', 100)}% | {fmt(med(k, x, 'reverse'), '.2f', 100)}% | "
                 f"{fmt(med(k, x, 'goodput_mbit'), '.1f')} | {n}/{tot} |")
if ceiling:
    L.append("\nLoss-free ceiling (highest rate with no message lost in any round):\n")
    for k in kinds:
        good = [x for x in xs if sel(k, x) and len(sel(k, x)) == len([r for r in rs if r["kind"] == k and r[xkey] == x])
                and all(r["lost"] == 0 for r in sel(k, x))]
        worst = max(xs)
        L.append(f"- {name.get(k, k)}{carried(k, worst)}: {max(good):g} Mbit/s" if good else f"- {name.get(k, k)}: none of the rates")
        lw = med(k, worst, "lost"); cw = med(k, worst, "count")
        if lw is not None and cw:
            L[-1] += f"; at {worst:g} Mbit/s {100 * lw / cw:.1f}% lost, goodput {fmt(med(k, worst, 'goodput_mbit'), '.0f')} Mbit/s"
L.append("\nEvery run (on time strict: without the tolerance; behind p99: how late the sender's sends were against "
         "its schedule; UDP rcvbuf drops: datagrams the kernel dropped at a full socket receive buffer in the namespaces, "
         "rt_stream's or a gateway's):\n")
L.append(f"| {hdr} | round | carrier | count | received | on time | strict | late | lost | dup | reord | p50 ms | p99 ms | max ms | "
         "jitter ms | overhead | reverse | goodput | behind p99 us | UDP rcvbuf drops | carried | note |")
L.append("|" + "---|" * 22)
for r in rs:
    g = lambda f, spec, s=1: fmt(r.get(f), spec, s)
    L.append(f"| {r[xkey]:g} | {r['round']} | {r['kind']} | {g('count', 'd')} | {g('received', 'd')} | {g('on_time_ratio', '.4f')} | "
             f"{g('on_time_strict_ratio', '.4f')} | {g('late', 'd')} | {g('lost', 'd')} | {g('duplicates', 'd')} | {g('reordered', 'd')} | "
             f"{g('delay_p50_ms', '.1f')} | {g('delay_p99_ms', '.1f')} | {g('delay_max_ms', '.1f')} | {g('jitter_ms', '.3f')} | "
             f"{g('overhead', '.3f')} | {g('reverse', '.4f')} | {g('goodput_mbit', '.1f')} | {g('behind_p99_us', '.0f')} | {g('rcvbuf_errors', 'd')} | "
             f"{r['carried']} | {r.get('why', '')} {r['note']} |")
open(out + ".md", "w").write("\n".join(L) + "\n")

# Plot: two panels of grouped bars per x: on-time % (or lost % for the ceiling) and wire overhead % (or goodput).
colors = {"udp": "#777", "srt": "#d62728", "srt-fec": "#ff7f0e", "gsocket": "#1f77b4"}
W, H = 760, 340
panels = ([("lost %", lambda k, x: None if med(k, x, "lost") is None else 100 * med(k, x, "lost") / med(k, x, "count")),
           ("goodput Mbit/s", lambda k, x: med(k, x, "goodput_mbit"))] if ceiling else
          [("on time %", lambda k, x: None if med(k, x, "on_time_ratio") is None else 100 * med(k, x, "on_time_ratio")),
           ("wire overhead %", lambda k, x: None if med(k, x, "overhead") is None else 100 * med(k, x, "overhead"))])
title = ("SRT and gsocket on loopback at rising rates" if ceiling else
         f"Realtime stream across veth, {latency} ms bound: plain UDP, SRT, gsocket")
s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">',
     f'<rect width="{W}" height="{H}" fill="white"/>',
     f'<text x="{W/2}" y="18" text-anchor="middle" font-size="14">{title}</text>']
pw, ph, top0 = W / 2 - 70, H - 110, 40
for pi, (label, fn) in enumerate(panels):
    ml = 55 + pi * W / 2
    vals = {(k, x): fn(k, x) for k in kinds for x in xs}
    hi = max([v for v in vals.values() if v is not None] + [1e-9])
    lo = 0.0
    if label == "on time %":   # zoom to where the differences are
        vmin = min([v for v in vals.values() if v is not None] + [100])
        lo = max(0.0, (int(vmin) // 5) * 5 - 5) if vmin > 10 else 0.0
        hi = 100
    s.append(f'<text x="{ml + pw/2}" y="{top0 - 6}" text-anchor="middle" font-size="12">{label}</text>')
    for t in range(5):
        v = lo + (hi - lo) * t / 4; y = top0 + ph * (1 - t / 4)
        s.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml+pw}" y2="{y:.1f}" stroke="#ddd"/>'
                 f'<text x="{ml-4}" y="{y+4:.1f}" text-anchor="end" font-size="10">{v:.4g}</text>')
    gw = pw / max(1, len(xs))
    for i, x in enumerate(xs):
        for j, k in enumerate(kinds):
            v = vals[(k, x)]
            bw = gw * 0.8 / len(kinds); bx = ml + i * gw + gw * 0.1 + j * bw
            if v is None:
                s.append(f'<text x="{bx + bw/2:.1f}" y="{top0 + ph - 3}" text-anchor="middle" font-size="9">n/a</text>')
                continue
            h = ph * (max(v, lo) - lo) / (hi - lo) if hi > lo else 0
            op = "0.45" if carried(k, x) else "1"
            s.append(f'<rect x="{bx:.1f}" y="{top0 + ph - h:.1f}" width="{bw*0.92:.1f}" height="{h:.1f}" fill="{colors.get(k, "#333")}" opacity="{op}"/>')
        s.append(f'<text x="{ml + i*gw + gw/2:.1f}" y="{top0 + ph + 14}" text-anchor="middle" font-size="11">'
                 f'{x:g}{" Mbit/s" if ceiling else "% loss"}</text>')
lx = 60
for k in kinds:
    s.append(f'<rect x="{lx}" y="{H - 30}" width="12" height="12" fill="{colors.get(k, "#333")}"/>'
             f'<text x="{lx + 16}" y="{H - 20}" font-size="11">{name.get(k, k)}</text>')
    lx += 30 + 7 * len(name.get(k, k))
s.append(f'<text x="{W - 10}" y="{H - 20}" text-anchor="end" font-size="10" fill="#777">pale: not carried over MCES</text></svg>')
open(out + ".svg", "w").write("".join(s))
print("wrote", out + ".md", "and .svg")
PY
