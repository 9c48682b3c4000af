#!/usr/bin/env bash
# The MCES server's half of "connect negotiates" (docs/reservations.md, "The
# server's half"): a python3 server under gsrun whose policy has [general]
# capacity = 10mbit serves TCP over MCES; clients under gsrun ask class
# guaranteed, rate 6mbit. Client and server use separate ledgers (two hosts).
# The first client is admitted and the server's ledger holds 6mbit down for
# it; a second concurrent one does not fit and is refused (its connect fails
# with ECONNREFUSED, the server logs one line); once the first has gone the
# server's entry is gone too and a new client is admitted. The same for a UDP
# socket carried over MCES (class realtime). Loopback; every wait bounded.
source "$(dirname "$0")/lib.sh"
need ss

port=$(free_port) uport=$(free_port udp)
cat >"$T/server.ini" <<INI
[general]
capacity = 10mbit

[flow serve]
proto = tcp
dport = $port
transport = mces

[flow serve-udp]
proto = udp
dport = $uport
class = realtime
latency = 120ms
transport = mces
INI
cat >"$T/client.ini" <<INI
[general]
capacity = 100mbit

[flow video]
proto = tcp
dport = $port
class = guaranteed
rate = 6mbit
transport = mces

[flow live]
proto = udp
dport = $uport
class = realtime
latency = 120ms
rate = 6mbit
transport = mces
INI
"$GSCTL" policy check -q "$T/server.ini" || fail "the server's policy does not check clean"
"$GSCTL" policy check -q "$T/client.ini" || fail "the client's policy does not check clean"

# TCP: accepts, reads each connection to EOF, then closes it; UDP: echoes
# (60 s at most).
server='import selectors, socket, sys, time
sel = selectors.DefaultSelector()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", int(sys.argv[2])))
sel.register(s, selectors.EVENT_READ); sel.register(u, selectors.EVENT_READ)
end = time.time() + 60
while time.time() < end:
    for k, _ in sel.select(0.2):
        if k.fileobj is s:
            c, a = s.accept(); sel.register(c, selectors.EVENT_READ); print("accepted", a[0], flush=True)
        elif k.fileobj is u:
            d, a = u.recvfrom(2048); u.sendto(d, a)
        elif not k.fileobj.recv(65536):
            sel.unregister(k.fileobj); k.fileobj.close(); print("closed", flush=True)'
# Connects (tcp) or has a datagram echoed (udp); prints "connected" or
# "errno N"; holds the connection until the file $3 exists (30 s at most),
# then closes it and exits.
client='import os, socket, sys, time
udp = sys.argv[1] == "udp"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
try:
    s.connect(("127.0.0.1", int(sys.argv[2])))
    end = time.time() + 10
    s.settimeout(0.2)
    while udp:
        try:
            s.send(b"x"); s.recv(16); break
        except socket.timeout:
            if time.time() > end: print("no echo", flush=True); sys.exit(0)
except OSError as e:
    print("errno", e.errno, flush=True); sys.exit(0)
print("connected", flush=True)
end = time.time() + 30
while time.time() < end and not os.path.exists(sys.argv[3]): time.sleep(0.05)
s.close()'

# ledger WHO: (direction, rate, class, flow) of the live entries in WHO's ledger.
ledger() {
    GSOCKET_LEDGER="$T/$1.ledger" "$GSCTL" reservations --json | "$PY" -c 'import json, sys
print(sorted((e["direction"], e["rate"], e["class"], e["flow"]) for e in json.load(sys.stdin)["reservations"] if e["alive"]))'
}
# until_ledger WHO REGEX: wait (10 s at most) until ledger WHO matches.
until_ledger() {
    local i
    for i in $(seq 1 200); do
        ledger "$1" | has -E "$2" && return 0
        sleep 0.05
    done
    return 1
}
# start NAME tcp|udp PORT: a client in the background, until it has an answer (10 s at most).
declare -A CPID
start() {
    GSOCKET_LEDGER="$T/client.ledger" "$GSRUN" --policy "$T/client.ini" -- "$PY" -c "$client" "$2" "$3" "$T/stop-$1" \
        >"$T/$1.out" 2>"$T/$1.err" &
    PIDS+=($!)
    CPID[$1]=$!
    local i
    for i in $(seq 1 200); do
        [[ -s $T/$1.out ]] && return 0
        sleep 0.05
    done
    fail "client $1 had no answer in 10 s: $(cat "$T/$1.err")"
}
# finish NAME: let a client close and exit (10 s at most).
finish() {
    touch "$T/stop-$1"
    local pid=${CPID[$1]} i
    for i in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
    fail "client $1 did not exit in 10 s"
}
# down CLASS PORT: the regex of the server's ledger holding one 6mbit entry down.
down() { echo "^\[\('down', 750000, '$1', 'mces 127\.0\.0\.1:[0-9]+ -> :$2'\)\]$"; }

bg env GSOCKET_LEDGER="$T/server.ledger" "$GSRUN" --policy "$T/server.ini" -- "$PY" -c "$server" "$port" "$uport" \
    >"$T/server.out" 2>"$T/server.err"
wait_port "$port" tcp
wait_port "$port" udp   # the shim's MCES side of the listener
wait_port "$uport" udp

# ---- TCP over MCES, class guaranteed -----------------------------------------
# A: admitted; the server holds 6mbit (750000 B/s) down for it, the client 6mbit up.
start a tcp "$port"
grep -qx connected "$T/a.out" || { cat "$T/a.err" >&2; fail "A was not admitted: $(cat "$T/a.out")"; }
until_ledger server "$(down guaranteed "$port")" || fail "the server's ledger does not hold A's 6mbit down: $(ledger server)"
[[ $(ledger client) == "[('up', 750000, 'guaranteed', 'tcp connect 127.0.0.1:$port (video)')]" ]] || \
    fail "the client's ledger: $(ledger client)"
note "tcp: A admitted: server $(ledger server)"

# B, while A holds its connection: 6mbit does not fit in the 4mbit left.
start b tcp "$port"
grep -qx "errno 111" "$T/b.out" || { cat "$T/b.err" >&2; fail "B was not refused with ECONNREFUSED: $(cat "$T/b.out")"; }
grep -q "mces listener :$port: refused 127.0.0.1:[0-9]*, class guaranteed, asked 6 Mbit/s down, 4 Mbit/s free of 10 Mbit/s" \
    "$T/server.err" || { cat "$T/server.err" >&2; fail "the server did not log B's refusal"; }
[[ $(grep -c "refused" "$T/server.err") -eq 1 ]] || { cat "$T/server.err" >&2; fail "not one refusal line"; }
ledger server | has -E "$(down guaranteed "$port")" || fail "B's refusal changed the server's ledger: $(ledger server)"
note "tcp: B refused: $(grep -o 'mces listener.*free of 10 Mbit/s' "$T/server.err")"

# A goes: the server's entry goes with its connection; C is admitted in its place.
finish a
until_ledger server '^\[\]$' || fail "A's entry stayed in the server's ledger: $(ledger server)"
start c tcp "$port"
grep -qx connected "$T/c.out" || { cat "$T/c.err" >&2; fail "C was not admitted after A left: $(cat "$T/c.out")"; }
until_ledger server "$(down guaranteed "$port")" || fail "the server's ledger does not hold C's: $(ledger server)"
finish c
until_ledger server '^\[\]$' || fail "C's entry stayed in the server's ledger: $(ledger server)"
until_ledger client '^\[\]$' || fail "the client's ledger kept entries: $(ledger client)"
[[ $(grep -c "^accepted" "$T/server.out") -eq 2 ]] || fail "the server accepted: $(cat "$T/server.out")"
note "tcp: A's entry went at its close, C admitted and released"

# ---- UDP over MCES, class realtime: the socket's endpoint admits the same way --
start ua udp "$uport"
grep -qx connected "$T/ua.out" || { cat "$T/ua.err" >&2; fail "UDP A was not admitted: $(cat "$T/ua.out")"; }
until_ledger server "$(down realtime "$uport")" || fail "the server's ledger does not hold UDP A's: $(ledger server)"
start ub udp "$uport"
grep -qx "errno 111" "$T/ub.out" || { cat "$T/ub.err" >&2; fail "UDP B was not refused with ECONNREFUSED: $(cat "$T/ub.out")"; }
grep -q "mces listener :$uport: refused 127.0.0.1:[0-9]*, class realtime, asked 6 Mbit/s down, 4 Mbit/s free" \
    "$T/server.err" || { cat "$T/server.err" >&2; fail "the server did not log UDP B's refusal"; }
finish ua
until_ledger server '^\[\]$' || fail "UDP A's entry stayed in the server's ledger: $(ledger server)"
note "udp: A admitted and released at its close, B refused"
echo "ok mces_admission: admitted and reserved down, refused with ECONNREFUSED and logged, released at close (tcp, udp)"
