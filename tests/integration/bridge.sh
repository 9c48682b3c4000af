#!/usr/bin/env bash
# Bridged flows ([general] bridge = always, connected and accepted flows,
# so gsprobe's in-process servers are bridged too): the program's TCP socket becomes
# one end of a socketpair and the engine carries the flow over the kernel's
# TCP. gsprobe's fidelity scenarios must behave exactly as without the shim
# (names, options, non-blocking connect with EINPROGRESS/SO_ERROR, epoll,
# shutdown, refused and reset peers as ECONNREFUSED/ECONNRESET, fork, dup,
# threads, bulk), and real programs (curl with http.server, socat) work.
source "$(dirname "$0")/lib.sh"

cat >"$T/bridge.ini" <<'INI'
[general]
bridge = always
INI
# scm-rights is left out: a bridged fd passed to another process arrives there
# as the AF_UNIX socket it is (docs/limitations.md).
scenarios=(nonblock-connect epoll dup fork threads names ipv6 udp fastopen close-range types shutdown errors bulk)
"$GSPROBE" "${scenarios[@]}" >"$T/plain.out" 2>"$T/plain.err" || { cat "$T/plain.err" >&2; fail "gsprobe fails without the shim"; }
"$GSRUN" --policy "$T/bridge.ini" --stats "$T/stats.jsonl" -- "$GSPROBE" "${scenarios[@]}" >"$T/bridge.out" 2>"$T/bridge.err" \
    || { cat "$T/bridge.out" "$T/bridge.err" >&2; fail "gsprobe fails with bridged flows"; }
diff -u "$T/plain.out" "$T/bridge.out" || fail "gsprobe's output differs with bridged flows"
n=$(stats_query "$T/stats.jsonl" 'sum(1 for f in flows if f["bridged"])')
note "bridged flows: $n"
[[ $n -ge 500 ]] || fail "only $n flows were bridged: the test did not test the bridge"

need curl
port=$(free_port)
mkdir "$T/www"; head -c $((4 * 1024 * 1024)) /dev/urandom >"$T/www/blob.bin"
(cd "$T/www" && exec "$PY" -m http.server --bind 127.0.0.1 "$port" >/dev/null 2>&1) &
PIDS+=($!)
wait_port "$port"
http_client "http://127.0.0.1:$port/blob.bin" "$T/got.bin"
"$GSRUN" --policy "$T/bridge.ini" --stats "$T/curl.jsonl" -- "${HTTP_CLIENT[@]}" >/dev/null \
    || fail "${HTTP_CLIENT[0]} failed over a bridge"
cmp "$T/www/blob.bin" "$T/got.bin" || fail "content differs over a bridge"
[[ $(stats_query "$T/curl.jsonl" 'sum(f["bytes_in"] for f in flows if f["bridged"])') -ge $((4 * 1024 * 1024)) ]] \
    || fail "the bridged flow's bytes were not counted"

need socat
tp=$(free_port)
head -c 1000000 /dev/urandom >"$T/in.bin"
bg socat -b 4096 -T 20 "TCP-LISTEN:$tp,bind=127.0.0.1,reuseaddr" PIPE   # -b 4096: docs/limitations.md
wait_port "$tp"
timeout 30 "$GSRUN" --policy "$T/bridge.ini" -- socat -T 10 -t 10 - "TCP:127.0.0.1:$tp" <"$T/in.bin" >"$T/out.bin" 2>"$T/err" \
    || { cat "$T/err" >&2; fail "socat over a bridge failed"; }
cmp "$T/in.bin" "$T/out.bin" || fail "socat's echo differs over a bridge"
# A program that writes and exits with its socket still open: the engine
# relays everything it wrote before the process goes. Shaped to 1 MB/s, so
# about 200 kB still wait in the bridge when the program calls exit(); a
# dup keeps the socket open through the interpreter's own clean-up.
sp=$(free_port)
"$PY" - "$sp" >"$T/count" <<'PY' &
import socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(1); l.settimeout(20)
c, _ = l.accept(); c.settimeout(20); n = 0
while True:
    d = c.recv(1 << 16)
    if not d: break
    n += len(d)
print(n)
PY
srv=$!; PIDS+=($srv)
wait_port "$sp"
printf '[general]\nrate_up = 1MB/s\n' >"$T/slow.ini"
"$GSRUN" --policy "$T/slow.ini" -- "$PY" -c 'import os, socket, sys
s = socket.socket(); s.connect(("127.0.0.1", int(sys.argv[1])))
keep = os.dup(s.fileno())
s.sendall(b"x" * 600000)' "$sp"
wait "$srv" || true
[[ $(cat "$T/count") -eq 600000 ]] || fail "the server got $(cat "$T/count") of 600000 bytes written before exit"

# A TCP socket put in an epoll set before its connect stays native: epoll
# watches the open file, which a bridge would replace on the fd number
# (an edge-triggered loop would then miss data the engine relays). One put
# there after its connect is bridged, and both flows work.
ep=$(free_port)
"$PY" - "$ep" <<'PY' &
import socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(4)
for _ in range(2):
    c, _ = l.accept()
    c.sendall(c.recv(100)); c.close()
PY
PIDS+=($!)
wait_port "$ep"
out=$("$GSRUN" --policy "$T/bridge.ini" --stats "$T/ep.jsonl" -- "$PY" - "$ep" <<'PY' 2>"$T/ep.err"
import select, socket, sys
port = int(sys.argv[1])
def talk(s, ep):
    ep.register(s.fileno(), select.EPOLLIN | select.EPOLLET) if ep else None
    s.sendall(b"ping")
    if ep:
        assert ep.poll(5), "no readiness from epoll"
    s.settimeout(5)
    assert s.recv(100) == b"ping"
early = socket.socket(); early.setblocking(False)
e1 = select.epoll(); e1.register(early.fileno(), select.EPOLLOUT)   # before connect
early.connect_ex(("127.0.0.1", port)); assert e1.poll(5), "connect never completed"
e1.unregister(early.fileno()); early.setblocking(True); talk(early, e1)
late = socket.create_connection(("127.0.0.1", port)); talk(late, select.epoll())   # after connect
print("ok")
PY
) || { cat "$T/ep.err" >&2; fail "epoll before/after connect under bridge = always"; }
[[ $out == ok ]] || fail "epoll client said: $out"
states=$(stats_query "$T/ep.jsonl" '" ".join(str(f["bridged"]) for f in flows if f["proto"] == "tcp")')
[[ $states == "False True" ]] || fail "expected the socket in epoll before its connect native and the other bridged, got: $states"
grep -q "tcp flow on fd .* stays native: it is in an epoll set" "$T/ep.err" || { cat "$T/ep.err" >&2; fail "no log line for the socket left native"; }

echo "ok bridge: $n flows bridged, gsprobe identical, curl 4 MiB and socat 1 MB intact, epoll before connect native"
