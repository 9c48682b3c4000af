#!/usr/bin/env bash
# A broken policy never breaks the program: it runs and does its job with
# every flow native, and the log names the file and the line. With
# on_error = fail, classified calls fail with EACCES (documented) instead.
source "$(dirname "$0")/lib.sh"
need python3

port=$(free_port)
python3 - "$port" >"$T/server.log" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8); s.settimeout(20)
for _ in range(3):
    try:
        c, _ = s.accept()
    except OSError:
        break
    c.sendall(b"hello\n"); c.close()
PY
PIDS+=($!)
wait_port "$port"

client='import socket, sys
s = socket.socket()
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
    print("got", s.recv(64).decode().strip())
except OSError as e:
    print("errno", e.errno)'

cat >"$T/broken.ini" <<INI
[general]
on_error = open

[flow web]
proto = tcp
dport = 9000-8000
dscp = EF
INI
"$GSRUN" --policy "$T/broken.ini" -- "$PY" -c "$client" "$port" >"$T/out" 2>"$T/err"
grep -qx "got hello" "$T/out" || { cat "$T/out" "$T/err" >&2; fail "the program did not do its job under a broken policy"; }
grep -q "broken.ini:6: dport = 9000-8000" "$T/err" || { cat "$T/err" >&2; fail "the log does not name broken.ini:7 and the key"; }
grep -q "every flow stays native" "$T/err" || fail "the log does not say that flows stay native"
[[ $(grep -c . "$T/err") -eq 2 ]] || { cat "$T/err" >&2; fail "expected 2 log lines (the error, the consequence)"; }
note "$(head -1 "$T/err")"

sed 's/on_error = open/on_error = fail/' "$T/broken.ini" >"$T/fail.ini"
"$GSRUN" --policy "$T/fail.ini" -- "$PY" -c "$client" "$port" >"$T/out" 2>"$T/err"
grep -qx "errno 13" "$T/out" || { cat "$T/out" "$T/err" >&2; fail "on_error = fail: connect did not fail with EACCES (13)"; }
grep -q "refused: the policy .*fail.ini has errors" "$T/err" || fail "the refusal is not logged"

# The server accepts three connections: the first run, this one, the next.
python3 -c "$client" "$port" | has -x "got hello" || fail "the server is not reachable without the shim"
# Non-inet sockets are never refused, even with on_error = fail.
"$GSRUN" --policy "$T/fail.ini" -- "$PY" -c 'import socket; a,b = socket.socketpair(); a.send(b"x"); print(b.recv(1))' \
    2>/dev/null | has -x "b'x'" || fail "on_error = fail refused a unix socketpair"
# Environment mistakes, without gsrun: a missing policy file, a bad log level.
GSOCKET_POLICY="$T/nope.ini" LD_PRELOAD="${LD_PRELOAD:+$LD_PRELOAD }$GS_PRELOAD" "$PY" -c "$client" "$port" >"$T/out" 2>"$T/err" || true
grep -qx "got hello" "$T/out" || { cat "$T/out" "$T/err" >&2; fail "the program failed with a missing GSOCKET_POLICY file"; }
grep -q "nope.ini.*cannot read" "$T/err" || { cat "$T/err" >&2; fail "a missing GSOCKET_POLICY file is not named in the log"; }
GSOCKET_LOG=loud LD_PRELOAD="${LD_PRELOAD:+$LD_PRELOAD }$GS_PRELOAD" "$PY" -c 'print("ran")' >"$T/out" 2>"$T/err"
grep -qx ran "$T/out" || fail "a bad GSOCKET_LOG broke the program"
grep -q "GSOCKET_LOG=loud: unknown level" "$T/err" || { cat "$T/err" >&2; fail "a bad GSOCKET_LOG is not reported"; }
echo "ok broken_policy"
