#!/usr/bin/env bash
# The engine enforces what the kernel cannot: the process's aggregate limits
# ([general] rate_up / rate_down, like trickle's -u / -d) and a flow's receive
# rate (rate_down). iperf3 both ways and curl, through bridged flows, within
# 5% of the asked rate over a few seconds (precision belongs to bench/).
source "$(dirname "$0")/lib.sh"
need iperf3

within() {   # within MEASURED TARGET PERCENT WHAT
    "$PY" - "$@" <<'PY' || fail "$4: $1 is not within $3% of $2"
import sys
m, t, p = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"# {sys.argv[4]}: {m/1e6:.2f} against {t/1e6:.2f} ({(m/t-1)*100:+.2f}%)")
sys.exit(0 if abs(m / t - 1) <= p / 100 else 1)
PY
}

cat >"$T/agg.ini" <<'INI'
[general]
rate_up = 40mbit
rate_down = 80mbit
INI
port=$(free_port)
bg iperf3 -s -1 -B 127.0.0.1 -p "$port"
wait_port "$port"
"$GSRUN" --policy "$T/agg.ini" --stats "$T/up.jsonl" -- iperf3 -c 127.0.0.1 -p "$port" -t 4 -J >"$T/up.json" \
    || fail "iperf3 upload under rate_up failed"
wait "${PIDS[0]}" || true; PIDS=()
up=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"])' "$T/up.json")
within "$up" 40e6 5 "upload, rate_up = 40mbit (Mbit/s)"
[[ $(stats_query "$T/up.jsonl" 'sum(1 for f in flows if f["bridged"])') -ge 2 ]] || fail "iperf3's flows were not bridged"

port=$(free_port)
bg iperf3 -s -1 -B 127.0.0.1 -p "$port"
wait_port "$port"
"$GSRUN" --policy "$T/agg.ini" -- iperf3 -c 127.0.0.1 -p "$port" -t 4 -R -J >"$T/down.json" \
    || fail "iperf3 download under rate_down failed"
wait "${PIDS[0]}" || true; PIDS=()
down=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"])' "$T/down.json")
within "$down" 80e6 5 "download, rate_down = 80mbit (Mbit/s)"

# A flow's own receive rate, for one program only.
need curl
port=$(free_port)
mkdir "$T/www"; head -c $((6 * 1024 * 1024)) /dev/urandom >"$T/www/blob.bin"
(cd "$T/www" && exec "$PY" -m http.server --bind 127.0.0.1 "$port" >/dev/null 2>&1) &
PIDS+=($!)
wait_port "$port"
cat >"$T/flow.ini" <<INI
[flow slow-download]
proto = tcp
dport = $port
rate_down = 16mbit
INI
http_client "http://127.0.0.1:$port/blob.bin" "$T/got.bin"
speed=$("$GSRUN" --policy "$T/flow.ini" -- "${HTTP_CLIENT[@]}") || fail "download with rate_down failed"
cmp "$T/www/blob.bin" "$T/got.bin" || fail "content differs under rate_down"
# Bytes per second over the whole download, including the initial burst.
within "$("$PY" -c "print($speed * 8)")" 16e6 5 "one flow, rate_down = 16mbit (Mbit/s)"
echo "ok shaping: upload, download and one flow's receive rate within 5%"
