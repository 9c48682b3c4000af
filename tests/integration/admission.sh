#!/usr/bin/env bash
# GSocket's "connect negotiates, close releases", through the shim: a
# guaranteed flow reserves its rate in the host ledger at connect; a second
# process that does not fit is refused with ENOBUFS (on_reject = fail) or
# settles for what is left and is paced at it (on_reject = downgrade); close
# releases; a holder killed with SIGKILL is reclaimed; a program that closes
# every fd it does not know cannot close the ledger's.
source "$(dirname "$0")/lib.sh"

export GSOCKET_LEDGER="$T/ledger"
port=$(free_port)
hold_server "$port" 30

fail_ini=$T/fail.ini down_ini=$T/downgrade.ini
guaranteed_policy "$fail_ini" "$port" fail
guaranteed_policy "$down_ini" "$port" downgrade

# connect, report errno or the pacing rate the socket got, then hold for $2 s.
client='import socket, sys, time
s = socket.socket()
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError as e:
    print("errno", e.errno, flush=True); sys.exit(0)
rate = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 47, 8), "little")   # SO_MAX_PACING_RATE
print("connected pacing", rate, flush=True)
time.sleep(float(sys.argv[2]))'

reserved() { "$GSCTL" reservations --json | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(sum(e["rate"] for e in d["reservations"] if e["alive"]))'; }

# A holds 60 of 100 Mbit/s (7.5 of 12.5 MB/s).
"$GSRUN" --policy "$fail_ini" -- "$PY" -c "$client" "$port" 30 >"$T/a.out" 2>"$T/a.err" &
a=$!; PIDS+=($a)
for _ in $(seq 100); do grep -q connected "$T/a.out" 2>/dev/null && break; sleep 0.05; done
grep -qx "connected pacing 7500000" "$T/a.out" || { cat "$T/a.out" "$T/a.err" >&2; fail "A was not granted and paced at 60mbit"; }
[[ $(reserved) -eq 7500000 ]] || fail "the ledger does not hold A's 7500000 B/s: $("$GSCTL" reservations)"

# B does not fit: ENOBUFS (105), and the log says asked and available.
"$GSRUN" --policy "$fail_ini" --stats "$T/b.jsonl" -- "$PY" -c "$client" "$port" 0 >"$T/b.out" 2>"$T/b.err"
grep -qx "errno 105" "$T/b.out" || { cat "$T/b.out" "$T/b.err" >&2; fail "B was not refused with ENOBUFS"; }
grep -q "asked 60 Mbit/s up, 40 Mbit/s free of 100 Mbit/s" "$T/b.err" || { cat "$T/b.err" >&2; fail "the refusal does not name asked and available"; }
[[ $(stats_query "$T/b.jsonl" '[(f["admission"], f["denied"]) for f in flows]') == "[('refused', True)]" ]] \
    || fail "B's --stats: $(stats_query "$T/b.jsonl" '[(f.get("admission"), f["denied"]) for f in flows]')"

# C settles for the 40 left, paced at 5 MB/s; its close releases it.
"$GSRUN" --policy "$down_ini" --stats "$T/c.jsonl" -- "$PY" -c "$client" "$port" 0 >"$T/c.out" 2>"$T/c.err"
grep -qx "connected pacing 5000000" "$T/c.out" || { cat "$T/c.out" "$T/c.err" >&2; fail "C was not downgraded to 40mbit"; }
grep -q "settled for 40 Mbit/s" "$T/c.err" || fail "the downgrade is not logged"
[[ $(stats_query "$T/c.jsonl" '[(f["admission"], f["reserved_up"]) for f in flows]') == "[('downgraded', 5000000)]" ]] \
    || fail "C's --stats does not show the downgrade"
[[ $(reserved) -eq 7500000 ]] || fail "C's reservation was not released at exit"

# A dies by SIGKILL: nothing releases its entry, the next reserve reclaims it.
kill -KILL "$a"; wait "$a" 2>/dev/null || true
"$GSRUN" --policy "$fail_ini" -- "$PY" -c "$client" "$port" 0 >"$T/d.out" 2>"$T/d.err"
grep -qx "connected pacing 7500000" "$T/d.out" || { cat "$T/d.out" "$T/d.err" >&2; fail "D was not granted after A's death"; }

# A program that closes every fd it does not know keeps its reservations working.
"$GSRUN" --policy "$fail_ini" -- "$PY" -c 'import os, socket, sys
for fd in range(3, 1024):
    try: os.close(fd)
    except OSError: pass
s = socket.socket()
s.connect(("127.0.0.1", int(sys.argv[1])))
print("ok")' "$port" >"$T/e.out" 2>"$T/e.err"
grep -qx ok "$T/e.out" || { cat "$T/e.err" >&2; fail "a program that closed every fd could not connect"; }
if grep -q "busy\|unavailable\|without admission" "$T/e.err"; then cat "$T/e.err" >&2; fail "closing every fd broke the ledger"; fi
[[ $(reserved) -eq 0 ]] || fail "reservations left behind: $("$GSCTL" reservations)"
echo "ok admission: granted, refused (ENOBUFS), downgraded and paced, released, reclaimed after SIGKILL"
