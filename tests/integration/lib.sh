# Shared helpers for the integration tests (sourced). Each test is a bash
# script that exits 0 (pass), 1 (fail) or 77 (skip), bounded in time.
#
# Meson passes: GSRUN, GSCTL, GSPROBE, GS_PRELOAD (paths), GS_SANITIZE (the
# b_sanitize option), GS_SRC (source root).
set -euo pipefail

T=$(mktemp -d "${TMPDIR:-/tmp}/gs-test.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
# `CMD | has PATTERN`: grep -q stops reading at the first match, and under
# pipefail the writer's SIGPIPE would then fail the pipeline; has reads all.
has() { grep "$@" >/dev/null; }
skip() { echo "SKIP: $*"; exit 77; }
note() { echo "# $*"; }

# Debian's python3 for programs run under gsrun (a pyenv shim in PATH would run
# bash and pyenv under the shim too).
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3)

need() { command -v "$1" >/dev/null 2>&1 || skip "$1 is not installed (./scripts/test installs it)"; }

# In sanitizer builds the shim needs the ASan runtime loaded first; host
# programs are not instrumented and their own leaks are not ours to report.
if [[ "${GS_SANITIZE:-none}" == *address* ]]; then
    export LD_PRELOAD="$(gcc -print-file-name=libasan.so)${LD_PRELOAD:+ $LD_PRELOAD}"
    export ASAN_OPTIONS="detect_leaks=0:verify_asan_link_order=0:abort_on_error=1:${ASAN_OPTIONS:-}"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
fi

# A TCP/UDP port nobody listens on right now.
free_port() {
    python3 -c 'import socket,sys
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM)
s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "${1:-tcp}"
}

# wait_port PORT [tcp|udp]: until something listens (10 s at most).
wait_port() {
    local port=$1 proto=${2:-tcp} i
    for i in $(seq 1 200); do
        if [[ $proto == tcp ]]; then
            ss -Hltn "sport = :$port" | has . && return 0
        else
            ss -Hlun "sport = :$port" | has . && return 0
        fi
        sleep 0.05
    done
    fail "nothing listens on $proto port $port after 10 s"
}

# bg CMD...: start in the background, killed at exit.
bg() { "$@" & PIDS+=($!); }

# http_client URL OUT: sets the array HTTP_CLIENT to a command that downloads
# URL to OUT and prints the mean speed in bytes/s. curl, except in ASan builds:
# curl deadlocks in setlocale() with the ASan runtime preloaded (shim or no
# shim), and python3's urllib exercises the shim the same way.
http_client() {
    if [[ "${GS_SANITIZE:-none}" == *address* ]]; then
        HTTP_CLIENT=("$PY" -c 'import sys, time, urllib.request
t = time.monotonic(); d = urllib.request.urlopen(sys.argv[1], timeout=30).read(); open(sys.argv[2], "wb").write(d)
print(len(d) / (time.monotonic() - t))' "$1" "$2")
    else
        HTTP_CLIENT=(curl -sS --max-time 30 -o "$2" -w '%{speed_download}' "$1")
    fi
}

# hold_server PORT SECONDS: a TCP server on 127.0.0.1:PORT that accepts and
# holds every connection, for SECONDS at most (killed at exit).
hold_server() {
    "$PY" - "$1" "$2" >"$T/hold-$1.log" 2>&1 <<'PY' &
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); s.settimeout(float(sys.argv[2]))
conns = []
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        c, _ = s.accept(); conns.append(c)
    except OSError:
        break
PY
    PIDS+=($!)
    wait_port "$1"
}

# guaranteed_policy FILE PORT [ON_REJECT]: a host budget of 100mbit and one
# rule reserving 60mbit (7500000 B/s) for TCP flows to PORT.
guaranteed_policy() {
    cat >"$1" <<INI
[general]
capacity = 100mbit
on_reject = ${3:-fail}

[flow video]
proto = tcp
dport = $2
class = guaranteed
rate = 60mbit
INI
}

# A stats file must show that the shim really classified flows (so a test
# cannot pass with the preload silently absent). Prints the flow count.
stats_flows() {
    python3 - "$1" <<'PY'
import json, sys
n = 0
for line in open(sys.argv[1]):
    rec = json.loads(line)
    n += len(rec["flows"])
print(n)
PY
}

# stats_query FILE PYTHON-EXPR: evaluates EXPR with `flows` (every flow of
# every process in FILE) and `procs`; prints the result.
stats_query() {
    python3 - "$1" "$2" <<'PY'
import json, sys
procs = [json.loads(l) for l in open(sys.argv[1])]
flows = [f | {"process": p["process"], "pid": p["pid"]} for p in procs for f in p["flows"]]
print(eval(sys.argv[2]))
PY
}
