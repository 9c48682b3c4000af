#!/bin/sh
# Runs a libFuzzer target briefly over the committed corpus without writing to
# it: libFuzzer adds new inputs to the FIRST corpus directory, here a temporary
# one, and only reads the committed one. Crash reproducers go to ARTIFACTS.
#   run_fuzz.sh FUZZER CORPUS_DIR ARTIFACTS_DIR [libFuzzer options, e.g. -dict=FILE...]
set -eu
fuzzer=$1 corpus=$2 artifacts=$3
shift 3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$artifacts"
# libFuzzer exits 77 on a finding by default, which meson reads as "skipped":
# a crash must fail the test. GS_FUZZ_SECONDS (default 10) bounds the run; the
# targets run two at a time (one per CPU here), so the stage takes about a minute.
exec_args="-max_total_time=${GS_FUZZ_SECONDS:-10} -runs=2000000 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1"
exec_args="$exec_args -error_exitcode=1 -timeout_exitcode=1"
# shellcheck disable=SC2086
"$fuzzer" $exec_args -artifact_prefix="$artifacts/" "$@" "$tmp" "$corpus"
