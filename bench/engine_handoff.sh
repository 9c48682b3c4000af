#!/usr/bin/env bash
# One round trip through the engine thread (two wake-ups) beside two plain
# threads doing the same over pipes, for each CPU placement; writes
# bench/results/DATE-engine-handoff-HOST.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "${1:-}" in -h|--help) sed -n '2,4p' "$0" | sed 's/^# //'; echo "usage: bench/engine_handoff.sh [ROUNDS]"; exit 0;; esac
B=${BUILD:-$ROOT/build}
ninja -C "$B" bench/engine_handoff >/dev/null
out=$ROOT/bench/results/$(date +%F)-engine-handoff-$(hostname -s).md
{
    echo "# Engine hand-off — $(date +%F), $(hostname -s), $(nproc) CPUs, kernel $(uname -r)"
    echo
    echo '```'
    for pl in free same split; do "$B/bench/engine_handoff" -n "${1:-20000}" --placement "$pl"; done
    echo '```'
} | tee "$out"
