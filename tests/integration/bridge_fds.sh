#!/usr/bin/env bash
# A bridged flow takes three fds (the program's end, the engine's end, the
# transport). A program near its RLIMIT_NOFILE must not fail for that: when
# the pair cannot be had, the flow stays native (fail open) and the
# program's connects, sends and receives all work as without the shim.
source "$(dirname "$0")/lib.sh"

cat >"$T/bridge.ini" <<'INI'
[general]
bridge = always
INI
port=$(free_port)
"$PY" - "$port" >"$T/server.log" 2>&1 <<'PY' &
import socket, sys, threading
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(64)
def echo(c):
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close()
while True:
    c, _ = l.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
PY
PIDS+=($!)
wait_port "$port"

# N connections open at once, each echoing a message. The shim keeps its
# own fds at 512 and above, and to half of the numbers there: with a limit
# of 64 nothing can be bridged, with 700 about 47 flows (2 fds each), and
# the program never runs short of fds it would have had without the shim.
cat >"$T/client.py" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
for i, s in enumerate(socks):
    msg = (b"%d:" % i) * 1000
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        d = s.recv(65536)
        if not d: raise SystemExit("flow %d: EOF after %d bytes" % (i, len(got)))
        got += d
    if got != msg: raise SystemExit("flow %d: wrong bytes" % i)
for s in socks: s.close()
print("ok %d flows" % n)
PY
run() {   # run LIMIT N -> "bridged native"
    local out
    rm -f "$T/stats.jsonl"
    out=$(ulimit -n "$1" && "$GSRUN" --policy "$T/bridge.ini" --stats "$T/stats.jsonl" -- "$PY" "$T/client.py" "$port" "$2" 2>"$T/err") \
        || { cat "$T/err" >&2; fail "the program failed with fd limit $1 and $2 flows under the shim"; }
    [[ $out == "ok $2 flows" ]] || fail "client said: $out"
    echo "$(stats_query "$T/stats.jsonl" 'sum(1 for f in flows if f["bridged"])')" \
         "$(stats_query "$T/stats.jsonl" 'sum(1 for f in flows if not f["bridged"] and f["proto"] == "tcp")')"
}
read -r b n < <(run 64 40)
note "limit 64, 40 flows: bridged $b, native $n"
[[ $b -eq 0 && $n -eq 40 ]] || fail "limit 64: expected 0 bridged, 40 native (got $b, $n)"
grep -q "fd limit" "$T/err" || { cat "$T/err" >&2; fail "no log line says why the flows stay native"; }
read -r b n < <(run 700 150)
note "limit 700, 150 flows: bridged $b, native $n"
(( b >= 40 && b <= 94 && b + n == 150 )) || fail "limit 700: expected about 47 bridged and the rest native (got $b, $n)"
echo "ok bridge_fds"
