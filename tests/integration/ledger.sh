#!/usr/bin/env bash
# The host reservation ledger seen through gsctl: two processes compete for one
# capacity (the second refused, or downgraded with on_reject = downgrade), a
# holder killed with SIGKILL is shown dead and reclaimed (by --reclaim, and by
# the next reservation that needs its room), a holder stopped by SIGTERM
# releases, and a foreign file is reported. `gsctl reservations --hold` stands
# in for a flow's reservation until the shim calls the ledger. Bounded: ~5 s.
source "$(dirname "$0")/lib.sh"

export GSOCKET_LEDGER="$T/ledger"
G=$GSCTL

# json EXPR: evaluate EXPR over `gsctl reservations --json` as `j`.
json() {
    "$G" reservations --json >"$T/j" || fail "gsctl reservations --json failed"
    python3 - "$T/j" "$1" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))
PY
}
# hold NAME ARGS...: a background holder; waits for its first line (5 s at most).
hold() {
    local name=$1; shift
    "$G" reservations --hold "$@" >"$T/$name.out" 2>&1 &
    PIDS+=($!)
    local i
    for i in $(seq 1 100); do
        [[ -s $T/$name.out ]] && return 0
        sleep 0.05
    done
    fail "holder $name printed nothing in 5 s"
}

# Nothing yet: a named, missing ledger is an error; the default one is empty.
if "$G" reservations --ledger "$T/none" 2>"$T/err"; then fail "a missing --ledger FILE passed"; fi
grep -q "no ledger at $T/none" "$T/err" || fail "no clear message for a missing ledger: $(cat "$T/err")"
[[ $(json 'len(j["reservations"])') == 0 ]] || fail "a fresh ledger has reservations"

# A holds 600 of 1000 B/s.
hold a 600B/s --capacity 1000B/s --for 30 --flow "tcp 10.0.0.2:5000"
a=${PIDS[-1]}
grep -q "^granted 600B/s" "$T/a.out" || fail "A not granted: $(cat "$T/a.out")"
[[ $(json '[(r["pid"], r["alive"], r["rate"], r["direction"], r["class"], r["flow"]) for r in j["reservations"]]') == \
   "[($a, True, 600, 'up', 'guaranteed', 'tcp 10.0.0.2:5000')]" ]] || fail "ledger after A: $(cat "$T/j")"
[[ $(json '(j["up"]["capacity"], j["up"]["reserved"])') == "(1000, 600)" ]] || fail "totals after A: $(cat "$T/j")"

# B asks 600 with on_reject = fail: refused, naming asked and available.
if "$G" reservations --hold 600B/s --for 1 >"$T/b.out" 2>&1; then fail "B was admitted: $(cat "$T/b.out")"; fi
grep -q "^refused: asked 600B/s (600 B/s) up, available 400B/s (400 B/s) of capacity 8kbit (1000 B/s) (ENOBUFS)" \
    "$T/b.out" || fail "B's refusal: $(cat "$T/b.out")"

# C asks 600 with a policy that says downgrade: gets the 400 left.
cat >"$T/p.ini" <<INI
[general]
capacity = 8kbit
on_reject = downgrade
INI
"$G" policy check -q "$T/p.ini" || fail "the test policy does not check clean"
hold c 600B/s --policy "$T/p.ini" --class realtime --for 30
c=${PIDS[-1]}
grep -q "^downgraded: asked 600B/s (600 B/s) up, granted 400B/s (400 B/s)" "$T/c.out" || fail "C: $(cat "$T/c.out")"
[[ $(json '(j["up"]["reserved"], j["used"])') == "(1000, 2)" ]] || fail "totals after C: $(cat "$T/j")"
"$G" reservations | has "^up   reserved 8kbit (1000 B/s) of 8kbit (1000 B/s), free 0B/s" || \
    fail "the table does not show the totals"

# A killed with SIGKILL: still listed, dead; --reclaim drops it and says so.
kill -KILL "$a"; wait "$a" 2>/dev/null || true
[[ $(json "[r['alive'] for r in j['reservations'] if r['pid'] == $a]") == "[False]" ]] || \
    fail "A not shown dead: $(cat "$T/j")"
"$G" reservations --reclaim --json >"$T/r"
[[ $(python3 -c 'import json,sys; print([(r["pid"], r["rate"]) for r in json.load(open(sys.argv[1]))["reclaimed"]])' "$T/r") == \
   "[($a, 600)]" ]] || fail "--reclaim: $(cat "$T/r")"
[[ $(json '(j["up"]["reserved"], [r["pid"] for r in j["reservations"]])') == "(400, [$c])" ]] || \
    fail "after reclaim: $(cat "$T/j")"

# D holds 600, is SIGKILLed; E asks 600, which fits only once D's entry is dropped:
# the reservation reclaims it itself.
hold d 600B/s --for 30
d=${PIDS[-1]}
grep -q "^granted" "$T/d.out" || fail "D: $(cat "$T/d.out")"
kill -KILL "$d"; wait "$d" 2>/dev/null || true
"$G" reservations --hold 600B/s --for 0.1 >"$T/e.out" 2>&1 || fail "E refused: $(cat "$T/e.out")"
grep -q "^granted 600B/s (600 B/s) up.*reclaimed 1 dead entry" "$T/e.out" || fail "E: $(cat "$T/e.out")"

# C stopped by SIGTERM releases on the way out: nothing left.
kill -TERM "$c"; wait "$c" 2>/dev/null || true
grep -q "released on TERM" "$T/c.out" || fail "C did not release: $(cat "$T/c.out")"
[[ $(json '(j["up"]["reserved"], j["used"])') == "(0, 0)" ]] || fail "not empty at the end: $(cat "$T/j")"

# A foreign file: a clear message naming it, exit 1.
echo "not a ledger" >"$T/foreign"
if "$G" reservations --ledger "$T/foreign" 2>"$T/err"; then fail "a foreign file was accepted"; fi
grep -q "ledger $T/foreign: too short to be a gsocket ledger" "$T/err" || fail "foreign file: $(cat "$T/err")"
echo "ok ledger"
