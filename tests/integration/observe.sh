#!/usr/bin/env bash
# Live observability: a program under gsrun that holds a guaranteed flow opens
# its control socket; `gsctl flows --json` shows the flow and its reservation,
# `gsctl flows` the table, `gsctl top` the rates; the socket answers ping; at
# the program's exit the socket file goes and gsctl says nobody answers; a
# socket left by a SIGKILLed process is removed by gsctl; gsctl pointed at a
# missing or empty directory says so clearly.
source "$(dirname "$0")/lib.sh"

export GSOCKET_LEDGER="$T/ledger"
export XDG_RUNTIME_DIR="$T/xdg"
mkdir -m 700 "$XDG_RUNTIME_DIR"
dir="$XDG_RUNTIME_DIR/gsocket"

# Nothing there yet: a clear message, exit 0, an empty JSON array.
"$GSCTL" flows >"$T/none.out" 2>"$T/none.err" || fail "gsctl flows with no directory exited $?"
grep -q "$dir does not exist: no gsocket process" "$T/none.err" || { cat "$T/none.err" >&2; fail "no message for a missing directory"; }
[[ $("$GSCTL" flows --json 2>/dev/null) == "[]" ]] || fail "gsctl flows --json with nothing is not []"
mkdir -m 700 "$dir"
"$GSCTL" flows 2>"$T/empty.err" || fail "gsctl flows on an empty directory exited $?"
grep -q "no gsocket process answers in $dir" "$T/empty.err" || { cat "$T/empty.err" >&2; fail "no message for an empty directory"; }
"$GSCTL" top --iterations 1 --interval 0.1 >"$T/empty.top" || fail "gsctl top on an empty directory exited $?"
grep -q "no gsocket process answers" "$T/empty.top" || fail "gsctl top says nothing about an empty directory"
if "$GSCTL" flows 999999 2>"$T/named.err"; then fail "gsctl flows PID for a missing pid exited 0"; fi
grep -q "no process 999999" "$T/named.err" || fail "gsctl flows PID: $(cat "$T/named.err")"
"$GSCTL" top --interval 0 2>/dev/null && fail "top --interval 0 accepted"
[[ $? -eq 2 ]] || fail "a bad --interval is not a usage error"

# A server that accepts and reads everything (so the client's bytes count).
port=$(free_port)
"$PY" - "$port" >"$T/server.log" 2>&1 <<'PY' &
import socket, sys, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); s.settimeout(60)
def drain(c):
    while c.recv(65536): pass
while True:
    try: c, _ = s.accept()
    except OSError: break
    threading.Thread(target=drain, args=(c,), daemon=True).start()
PY
PIDS+=($!)
wait_port "$port"

guaranteed_policy "$T/policy.ini" "$port"

# The holder: connects (reserving 60mbit = 7500000 B/s up), then sends 64 KiB
# every 50 ms until $T/stop appears, then exits normally (exit() runs the
# shim's atexit handlers, which remove the socket).
holder='import os, socket, sys, time
s = socket.socket()
s.connect(("127.0.0.1", int(sys.argv[1])))
print("connected", flush=True)
end = time.time() + 60
while not os.path.exists(sys.argv[2]) and time.time() < end:
    s.sendall(b"x" * 65536); time.sleep(0.05)
s.close()'
"$GSRUN" --policy "$T/policy.ini" -- "$PY" -c "$holder" "$port" "$T/stop" >"$T/holder.out" 2>"$T/holder.err" &
holder_pid=$!; PIDS+=($holder_pid)
sock="$dir/$holder_pid.sock"
for _ in $(seq 200); do [[ -S $sock ]] && break; sleep 0.05; done
[[ -S $sock ]] || { cat "$T/holder.out" "$T/holder.err" >&2; fail "no control socket at $sock"; }
[[ $(stat -c %a "$sock") == 600 ]] || fail "the control socket is mode $(stat -c %a "$sock"), not 600"
[[ $(stat -c %a "$dir") == 700 ]] || fail "$dir is mode $(stat -c %a "$dir"), not 700"

# The protocol by hand: ping, and a bad request.
ask() { "$PY" - "$sock" "$1" <<'PY'
import socket, sys
c = socket.socket(socket.AF_UNIX); c.settimeout(5); c.connect(sys.argv[1])
c.sendall(sys.argv[2].encode().decode("unicode_escape").encode())
out = b""
while True:
    b = c.recv(65536)
    if not b: break
    out += b
sys.stdout.write(out.decode())
PY
}
[[ $(ask 'ping\n') == pong ]] || fail "ping was not answered pong"
[[ $(ask 'hello\n') == "error: unknown request 'hello': send flows, overlays [ROOT] or ping" ]] || fail "a bad request: $(ask 'hello\n')"

# gsctl flows --json: the flow, its class and its reservation.
sleep 0.3
"$GSCTL" flows --json >"$T/flows.json" 2>"$T/flows.err" || { cat "$T/flows.err" >&2; fail "gsctl flows --json exited $?"; }
check=$("$PY" - "$T/flows.json" "$holder_pid" "$port" <<'PY'
import json, sys
procs = json.load(open(sys.argv[1]))
mine = [p for p in procs if p["pid"] == int(sys.argv[2])]
if len(mine) != 1: print("process not listed:", procs); sys.exit()
fl = [f for f in mine[0]["flows"] if f["peer"].endswith(":" + sys.argv[3])]
if len(fl) != 1: print("flow not listed:", mine[0]["flows"]); sys.exit()
f = fl[0]
want = {"proto": "tcp", "direction": "connect", "rule": "video", "class": "guaranteed",
        "admission": "granted", "reserved_up": 7500000, "reserved_down": 0}
bad = {k: f.get(k) for k in want if f.get(k) != want[k]}
if bad: print("wrong fields:", bad); sys.exit()
if f["bytes_out"] <= 0: print("no bytes counted:", f); sys.exit()
print("ok")
PY
)
[[ $check == ok ]] || fail "gsctl flows --json: $check"

# The table names the process, the class and the reservation.
"$GSCTL" flows >"$T/flows.txt" 2>&1 || fail "gsctl flows exited $?"
grep -q "python3\[$holder_pid\].*guaranteed.*granted up 60mbit" "$T/flows.txt" || { cat "$T/flows.txt" >&2; fail "gsctl flows table"; }
"$GSCTL" flows "$holder_pid" | has "guaranteed" || fail "gsctl flows PID does not show the flow"

# top: two tables (not a TTY: no escape codes), the second with a rate.
"$GSCTL" top --iterations 2 --interval 0.5 >"$T/top.txt" 2>&1 || fail "gsctl top exited $?"
[[ $(grep -c "^gsctl top" "$T/top.txt") -eq 2 ]] || { cat "$T/top.txt" >&2; fail "gsctl top did not print two tables"; }
if grep -q $'\x1b' "$T/top.txt"; then fail "gsctl top wrote escape codes to a pipe"; fi
grep -q "python3\[$holder_pid\]" "$T/top.txt" || { cat "$T/top.txt" >&2; fail "gsctl top does not show the process"; }
grep -q "guaranteed.*granted up 60mbit" "$T/top.txt" || { cat "$T/top.txt" >&2; fail "gsctl top does not show the reservation"; }
# The holder sends ~1.3 MB/s: the second table has an outgoing rate in kB/s or MB/s.
sed -n '/\[2\]$/,$p' "$T/top.txt" | grep "guaranteed" | grep -Eq "[0-9.]+[kM]B/s" \
    || { cat "$T/top.txt" >&2; fail "gsctl top shows no rate on its second table"; }

# A process with bridged flows and no reservation answers too; a flow the
# engine shapes shows what waits in the bridge (queue) and the bridge mark.
sink=$(free_port)
"$PY" - "$sink" <<'PY' &
import socket, sys, time
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(1)
c, _ = l.accept()
while c.recv(65536): pass
PY
PIDS+=($!)
wait_port "$sink"
printf '[general]\nrate_up = 200kB/s\n' >"$T/shaped.ini"
"$GSRUN" --policy "$T/shaped.ini" -- "$PY" -c 'import socket, sys, time
s = socket.socket(); s.connect(("127.0.0.1", int(sys.argv[1])))
s.setblocking(False)
try: s.send(b"x" * 4000000)
except BlockingIOError: pass
time.sleep(30)' "$sink" &
shaped=$!; PIDS+=($shaped)
for _ in $(seq 100); do [[ -S $dir/$shaped.sock ]] && break; sleep 0.05; done
[[ -S $dir/$shaped.sock ]] || fail "a process with a bridged flow and no reservation has no control socket"
# The control socket appears at connect, before the program's send: ask
# until the send has been made (at most 5 s).
for _ in $(seq 50); do
    "$GSCTL" flows --json "$shaped" >"$T/shaped.json" || fail "gsctl flows --json $shaped exited $?"
    q=$("$PY" -c 'import json, sys
procs = json.load(open(sys.argv[1]))
f = [f for p in procs for f in p["flows"] if f["proto"] == "tcp" and f["bridged"]]
print(f[0].get("queue", -1) if f else -2)' "$T/shaped.json")
    (( q > 100000 )) && break
    sleep 0.1
done
(( q > 100000 )) || { cat "$T/shaped.json" >&2; fail "a shaped bridged flow reports queue $q (want what waits in the bridge)"; }
"$GSCTL" top --iterations 1 --interval 0.2 >"$T/shaped.top" 2>&1 || fail "gsctl top exited $?"
grep -q "QUEUE *DROPS" "$T/shaped.top" || { cat "$T/shaped.top" >&2; fail "gsctl top has no QUEUE/DROPS columns"; }
grep -Eq "native\+br .* [0-9.]+[kM]B +- " "$T/shaped.top" || { cat "$T/shaped.top" >&2; fail "gsctl top does not show the bridged flow's queue"; }
kill "$shaped" 2>/dev/null; wait "$shaped" 2>/dev/null || true

# The holder exits normally: its socket goes, gsctl finds nobody.
touch "$T/stop"
wait "$holder_pid" || { cat "$T/holder.err" >&2; fail "the holder failed"; }
[[ ! -e $sock ]] || fail "$sock is still there after the holder exited"
"$GSCTL" flows >"$T/after.out" 2>"$T/after.err" || fail "gsctl flows after exit exited $?"
grep -q "no gsocket process answers" "$T/after.err" || { cat "$T/after.err" >&2; fail "gsctl flows after exit"; }
[[ ! -s $T/after.out ]] || fail "gsctl flows printed a table with nobody there"

# A holder killed with SIGKILL leaves its socket; gsctl removes it and says so.
rm -f "$T/stop"
"$GSRUN" --policy "$T/policy.ini" -- "$PY" -c "$holder" "$port" "$T/stop" >"$T/k.out" 2>"$T/k.err" &
k=$!; PIDS+=($k)
for _ in $(seq 200); do [[ -S $dir/$k.sock ]] && break; sleep 0.05; done
[[ -S $dir/$k.sock ]] || { cat "$T/k.err" >&2; fail "no control socket for the second holder"; }
kill -KILL "$k"; wait "$k" 2>/dev/null || true
[[ -S $dir/$k.sock ]] || fail "the SIGKILLed holder's socket vanished by itself (the test needs it stale)"
"$GSCTL" flows >/dev/null 2>"$T/stale.err" || fail "gsctl flows with a stale socket exited $?"
grep -q "removed $dir/$k.sock: process $k is gone" "$T/stale.err" || { cat "$T/stale.err" >&2; fail "the stale socket was not reported"; }
[[ ! -e $dir/$k.sock ]] || fail "the stale socket is still there"
echo "ok observe: control socket, gsctl flows (table, --json, PID), top, removal at exit and after SIGKILL, nothing found"
