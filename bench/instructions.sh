#!/usr/bin/env bash
# Instructions per 64-byte ping-pong round trip in the client's user space,
# without and with the shim, counted by callgrind: deterministic, so the few
# instructions a pass-through hook adds are visible despite a noisy machine.
# Writes bench/results/DATE-instructions-HOST.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "${1:-}" in -h|--help) sed -n '2,5p' "$0" | sed 's/^# //'; echo "usage: bench/instructions.sh [ROUND_TRIPS]"; exit 0;; esac
n=${1:-20000}
B=${BUILD:-$ROOT/build}
ninja -C "$B" >/dev/null
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
LIB=$B/shim/libgsocket-preload.so PP=$B/bench/pingpong
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
count() {   # count N MODE -> total instructions of the client
    local p; p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$PP" server "$p" & local s=$!
    local pre=(); [[ $2 == shim ]] && pre=(env "LD_PRELOAD=$LIB" GSOCKET_POLICY=)
    "${pre[@]}" valgrind --tool=callgrind --callgrind-out-file="$T/cg.out" "$PP" client 127.0.0.1 "$p" -n "$1" -w 0 \
        >/dev/null 2>"$T/vg.log"
    wait $s || true
    grep -m1 '^summary:\|^totals:' "$T/cg.out" | awk '{print $2}'
}
# Two lengths per mode: the difference divided by the extra round trips
# cancels start-up (loading the policy, resolving symbols).
p1=$(count "$n" plain); p2=$(count $((2 * n)) plain)
s1=$(count "$n" shim); s2=$(count $((2 * n)) shim)
out=$ROOT/bench/results/$(date +%F)-instructions-$(hostname -s).md
python3 - "$n" "$p1" "$p2" "$s1" "$s2" <<'PY' | tee "$out"
import sys, os, platform
n, p1, p2, s1, s2 = map(int, sys.argv[1:])
plain = (p2 - p1) / n; shim = (s2 - s1) / n
print(f"# Instructions per ping-pong round trip — {platform.node()}, kernel {platform.release()}")
print()
print("Client user space only (callgrind), 64-byte messages; each figure is the difference")
print(f"between runs of {2*n} and {n} round trips divided by {n}, so start-up cancels out.")
print()
print("| | instructions / round trip |")
print("|---|---|")
print(f"| plain | {plain:.1f} |")
print(f"| shim (built-in policy) | {shim:.1f} |")
print()
print(f"Added by the shim: {shim - plain:.1f} instructions per round trip (one send and one recv hook), "
      f"ratio {shim / plain:.3f}.")
print(f"Start-up (policy load, symbol resolution): {(s1 - shim * n) - (p1 - plain * n):.0f} instructions.")
PY
echo "wrote $out" >&2
