#!/usr/bin/env bash
# Policy matching with 10,000 rules: median and p99 per decision through the
# index, beside a naive linear scan in the same run; heap allocations while
# matching (must be 0). Writes bench/results/DATE-policy-match-HOST.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "${1:-}" in -h|--help) sed -n '2,4p' "$0" | sed 's/^# //'; echo "usage: bench/policy_match.sh [policy_match options]"; exit 0;; esac
B=${BUILD:-$ROOT/build}
ninja -C "$B" bench/policy_match >/dev/null
out=$ROOT/bench/results/$(date +%F)-policy-match-$(hostname -s).md
{
    echo "# Policy matching — $(date +%F), $(hostname -s), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'))"
    echo
    echo '```'
    "$B/bench/policy_match" "$@"
    echo '```'
} | tee "$out"
echo "wrote $out" >&2
