#!/usr/bin/env bash
# MCES reliable bulk on loopback beside kernel TCP, side by side in one run:
# 1200, 9000 and 65000-byte datagrams, both MCES ends in one engine thread
# and one engine thread per end, unpinned and with every thread on CPU 0,
# rounds interleaved (build/bench/mces_loopback --help for every option).
# Target (issue 4): MCES at least 0.8 x TCP single stream on loopback.
# Writes bench/results/DATE-mces-loopback[-N]-HOST.{md,svg}, the first N not taken.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rounds=3 bytes=$((256 << 20))
usage() { echo "usage: bench/mces_loopback.sh [--rounds R] [--bytes N] [-- MORE mces_loopback OPTIONS]"; }
extra=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2;;
        --bytes) bytes=$2; shift 2;;
        --) shift; extra=("$@"); break;;
        -h|--help) usage; sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
        *) usage >&2; exit 2;;
    esac
done
[[ $rounds =~ ^[0-9]+$ && $bytes =~ ^[0-9]+$ ]] || { usage >&2; exit 2; }
B=${BUILD:-$ROOT/build}
ninja -C "$B" bench/mces_loopback >/dev/null
# The first free name: DATE-mces-loopback[-N]-HOST (results are never overwritten).
stem=$ROOT/bench/results/$(date +%F)-mces-loopback
out=$stem-$(hostname -s) n=1
while [[ -e $out.md ]]; do n=$((n + 1)); out=$stem-$n-$(hostname -s); done
"$B/bench/mces_loopback" --rounds "$rounds" --bytes "$bytes" --datagram 1200,9000,65000 --engines 1,2 \
    --cpus all/0 --out "$out" "${extra[@]}"
