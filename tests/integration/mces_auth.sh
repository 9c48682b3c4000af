#!/usr/bin/env bash
# MCES with a pre-shared key through the shim (docs/mces.md, "Authentication
# through the shim"; docs/policy.md, auth_key): on loopback, both ends under
# gsrun with auth_key. TCP (socat echo, curl <-> python3 http.server) and
# UDP (socat <-> a python echo server) with the same key: carried over MCES,
# both ends authenticated. A client with another key, or with none: the
# server creates no connection; with transport = mces the client fails, with
# auto it falls back to the kernel (never MCES). A key file with mode 644:
# the policy is refused, naming the file and chmod 600.
source "$(dirname "$0")/lib.sh"
need socat
need curl
need ss

# Keys as docs/policy.md makes them; relative auth_key paths are from the
# policy file's directory ($T).
mkkey() { (umask 077; head -c 32 /dev/urandom | od -An -vtx1 | tr -d ' \n' >"$1"); }
mkkey "$T/a.key"
mkkey "$T/b.key"
[[ $(stat -c %a "$T/a.key") == 600 && $(wc -c <"$T/a.key") -eq 64 ]] || fail "the documented key command made $(stat -c '%a, %s bytes' "$T/a.key")"
grep -Eq '^[0-9a-f]{64}$' "$T/a.key" || fail "the documented key command did not write 64 hex digits"
cmp -s "$T/a.key" "$T/b.key" && fail "two keys are equal"

# policy FILE PROTO TRANSPORT [KEY [MODE]]
policy() {
    {
        echo "[flow keyed]"
        echo "proto = $2"
        if [[ $2 == udp ]]; then echo "class = datagram"; fi
        echo "transport = $3"
        if [[ -n ${4:-} ]]; then echo "auth_key = $4"; fi
        if [[ -n ${5:-} ]]; then echo "auth = $5"; fi
    } >"$T/$1"
}
policy tcp-a.ini tcp mces a.key
policy tcp-b.ini tcp mces b.key
policy tcp-none.ini tcp mces
policy tcp-auto-b.ini tcp auto b.key
policy udp-a.ini udp mces a.key authenticate
policy udp-b.ini udp mces b.key authenticate
policy udp-none.ini udp mces
policy udp-auto-b.ini udp auto b.key authenticate
"$GSCTL" policy check -q "$T/tcp-a.ini" "$T/udp-a.ini" "$T/tcp-auto-b.ini" || fail "the keyed policies do not check clean"

# A process's own view (gsctl flows --json PID): its first record, EXPR with
# `d` the record, `m` its TCP-over-MCES totals, `flows` its flows.
proc_view() {   # PID EXPR
    "$GSCTL" flows --json "$1" | "$PY" -c 'import json, sys
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"): continue
    d = json.loads(line)
    m, flows = d["mces"], d["flows"]
    print(eval(sys.argv[1]))
    break' "$2"
}

# ---- TCP: socat echo, the same key on both ends ------------------------------------
head -c 1000000 /dev/urandom >"$T/in.bin"
sp=$(free_port)
bg "$GSRUN" --policy "$T/tcp-a.ini" --stats "$T/echo-srv.jsonl" -- \
    socat -b 4096 -T 20 "TCP-LISTEN:$sp,bind=127.0.0.1,reuseaddr" PIPE
SPID=$!
wait_port "$sp"
wait_port "$sp" udp
timeout 30 "$GSRUN" --policy "$T/tcp-a.ini" --stats "$T/echo-cli.jsonl" -- \
    socat -T 10 -t 10 - "TCP:127.0.0.1:$sp" <"$T/in.bin" >"$T/out.bin" 2>"$T/err" \
    || { cat "$T/err" >&2; fail "socat with the server's key failed"; }
cmp -s "$T/in.bin" "$T/out.bin" || fail "socat echo with the key differs"
for _ in $(seq 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
c=$(stats_query "$T/echo-cli.jsonl" '[(f["transport"], f["mces"]["auth"], f["mces"]["auth_failed"]) for f in flows if "mces" in f]')
[[ $c == "[('mces', 'encrypt', 0)]" ]] || fail "the keyed client's flow: (transport, auth, auth_failed) = $c"
c=$(stats_query "$T/echo-srv.jsonl" '[(f["transport"], f["mces"]["auth"], f["bytes_in"]) for f in flows if f["direction"]=="accept" and "mces" in f]')
[[ $c == "[('mces', 'encrypt', 1000000)]" ]] || fail "the keyed server's accepted flow: (transport, auth, bytes in) = $c"
note "tcp: socat echo of 1 MB over MCES with the same key; client and accepted flow: mces, auth encrypt"

# ---- TCP: curl <-> http.server ---------------------------------------------------------
mkdir "$T/www"
head -c 2000000 /dev/urandom >"$T/www/f.bin"
want=$(sha256sum <"$T/www/f.bin" | cut -d' ' -f1)
hp=$(free_port)
( cd "$T/www" && exec "$GSRUN" --policy "$T/tcp-a.ini" -- "$PY" -m http.server "$hp" --bind 127.0.0.1 ) >"$T/http.log" 2>&1 &
PIDS+=($!)
HPID=$!
wait_port "$hp"
wait_port "$hp" udp
http_client "http://127.0.0.1:$hp/f.bin" "$T/got.bin"
timeout 30 "$GSRUN" --policy "$T/tcp-a.ini" --stats "$T/curl.jsonl" -- "${HTTP_CLIENT[@]}" >/dev/null \
    || fail "http client with the server's key failed"
[[ $(sha256sum <"$T/got.bin" | cut -d' ' -f1) == "$want" ]] || fail "2 MB over keyed MCES: sha256 differs"
c=$(stats_query "$T/curl.jsonl" '[(f["transport"], f["mces"]["auth"]) for f in flows if "mces" in f]')
[[ $c == "[('mces', 'encrypt')]" ]] || fail "the keyed http client's flow: (transport, auth) = $c"
acc=$(proc_view "$HPID" 'm["accepted"]')
[[ $acc -eq 1 ]] || fail "the keyed http server accepted $acc MCES connections, not 1"
note "tcp: 2 MB http over MCES with the same key, sha256 ok; server accepted 1"

# Another key, and no key, with transport = mces: no connection on the
# server (no answer at all), the client's connect fails (ETIMEDOUT after 5 s).
for p in tcp-b tcp-none; do
    rm -f "$T/got.bin"
    t0=$(date +%s)
    rc=0
    if [[ "${GS_SANITIZE:-none}" == *address* ]]; then   # curl hangs under the ASan runtime (lib.sh, http_client)
        timeout 30 "$GSRUN" --policy "$T/$p.ini" --stats "$T/$p.jsonl" -- "$PY" -c 'import sys, urllib.request
try:
    open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1], timeout=20).read())
except OSError as e:
    print(e, file=sys.stderr)
    sys.exit(28 if "timed out" in str(e) else 1)' "http://127.0.0.1:$hp/f.bin" "$T/got.bin" 2>"$T/$p.err" || rc=$?
    else
        timeout 30 "$GSRUN" --policy "$T/$p.ini" --stats "$T/$p.jsonl" -- curl -sS --max-time 20 -o "$T/got.bin" \
            "http://127.0.0.1:$hp/f.bin" 2>"$T/$p.err" || rc=$?
    fi
    el=$(( $(date +%s) - t0 ))
    [[ ! -s $T/got.bin ]] || fail "$p: curl got data from a server with another key"
    # 28: connect() said ETIMEDOUT (no answer within the 5 s handshake bound).
    [[ $rc -eq 28 && $el -ge 4 ]] || fail "$p: curl exit $rc after $el s, not 28 (timed out) after 5 s: $(cat "$T/$p.err")"
    c=$(stats_query "$T/$p.jsonl" '(procs[0]["mces"]["connects"], procs[0]["mces"]["established"], procs[0]["mces"]["refused"])')
    [[ $c == "(1, 0, 1)" ]] || fail "$p: client's MCES (connects, established, refused) = $c"
    acc=$(proc_view "$HPID" 'm["accepted"]')
    [[ $acc -eq 1 ]] || fail "$p: the keyed server accepted a connection ($acc)"
    note "tcp: $p against the keyed server: the http client fails after ${el} s ($(tr -d '\n' <"$T/$p.err")); server accepted none"
done

# Another key with transport = auto: no answer, so after the 1 s bound the
# flow goes over kernel TCP to the program's own listener, never MCES.
rm -f "$T/got.bin"
timeout 30 "$GSRUN" --policy "$T/tcp-auto-b.ini" --stats "$T/auto.jsonl" -- "${HTTP_CLIENT[@]}" >/dev/null \
    || fail "auto with another key: the download failed"
[[ $(sha256sum <"$T/got.bin" | cut -d' ' -f1) == "$want" ]] || fail "auto with another key: sha256 differs"
c=$(stats_query "$T/auto.jsonl" '[(f["transport"], f["requested_transport"], "mces" in f) for f in flows if f["proto"]=="tcp"]')
[[ $c == "[('native', 'auto', False)]" ]] || fail "auto with another key: (transport, requested, mces block) = $c"
c=$(stats_query "$T/auto.jsonl" '(procs[0]["mces"]["established"], procs[0]["mces"]["fallbacks"])')
[[ $c == "(0, 1)" ]] || fail "auto with another key: (established, fallbacks) = $c"
acc=$(proc_view "$HPID" 'm["accepted"]')
[[ $acc -eq 1 ]] || fail "auto with another key: the keyed server accepted an MCES connection ($acc)"
note "tcp: auto with another key: kernel TCP after the handshake bound, sha256 ok; server accepted no MCES"

# ---- UDP: socat <-> a python echo server, mode authenticate ----------------------------
cat >"$T/echo.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    d, a = s.recvfrom(70000)
    s.sendto(d, a)
PY
up=$(free_port udp)
"$GSRUN" --policy "$T/udp-a.ini" -- "$PY" "$T/echo.py" "$up" >"$T/echo.log" 2>&1 &
PIDS+=($!)
UPID=$!
wait_port "$up" udp
# The server's socket: (accepted, received over MCES, plain datagrams in, auth).
srv_udp() { proc_view "$UPID" '[(f["mces_udp"]["accepted"], f["mces_udp"]["received"], f["mces_udp"]["plain_in"], f["mces_udp"]["auth"]) for f in flows if "mces_udp" in f]'; }
got=$(printf 'keyed\n' | timeout 10 "$GSRUN" --policy "$T/udp-a.ini" --stats "$T/u-a.jsonl" -- socat -T 2 - "UDP:127.0.0.1:$up")
[[ $got == keyed ]] || fail "udp with the server's key got '$got'"
c=$(stats_query "$T/u-a.jsonl" '[(f["transport"], f["mces_udp"]["established"], f["mces_udp"]["auth"]) for f in flows if "mces_udp" in f]')
[[ $c == "[('mces', 1, 'authenticate')]" ]] || fail "udp keyed client: (transport, established, auth) = $c"
c=$(srv_udp)
[[ $c == "[(1, 1, 0, 'authenticate')]" ]] || fail "udp keyed server: (accepted, received, plain_in, auth) = $c"
note "udp: socat echo over MCES with the same key, mode authenticate, both ends"

# Another key, and none, with transport = mces: nothing comes back, the
# server creates no connection and its program receives nothing.
for p in udp-b udp-none; do
    got=$(printf 'stranger\n' | timeout 15 "$GSRUN" --policy "$T/$p.ini" --stats "$T/$p.jsonl" -- \
        socat -T 3 - "UDP:127.0.0.1:$up" 2>/dev/null || true)
    [[ -z $got ]] || fail "$p: got '$got' from the keyed server"
    c=$(stats_query "$T/$p.jsonl" '[(f["mces_udp"]["connects"], f["mces_udp"]["established"], f["mces_udp"]["received"]) for f in flows if "mces_udp" in f]')
    [[ $c == "[(1, 0, 0)]" ]] || fail "$p: client (connects, established, received) = $c"
    c=$(srv_udp)
    [[ $c == "[(1, 1, 0, 'authenticate')]" ]] || fail "$p: the keyed server: (accepted, received, plain_in, auth) = $c"
    note "udp: $p against the keyed server: no answer, no connection, nothing delivered to the server"
done

# Another key with transport = auto: plain UDP after the bound, which the
# server's program takes as any plain client's (never MCES).
got=$(printf 'auto\n' | timeout 15 "$GSRUN" --policy "$T/udp-auto-b.ini" --stats "$T/u-auto.jsonl" -- \
    socat -T 3 -t 3 - "UDP:127.0.0.1:$up")   # -t: wait for the answer after stdin's end (the 1 s bound)
[[ $got == auto ]] || fail "udp auto with another key got '$got': client $(cat "$T/u-auto.jsonl"); server $(srv_udp)"
c=$(stats_query "$T/u-auto.jsonl" '[(f["mces_udp"]["established"], f["mces_udp"]["fallbacks"], f["mces_udp"]["plain_out"]) for f in flows if "mces_udp" in f]')
[[ $c == "[(0, 1, 1)]" ]] || fail "udp auto with another key: client (established, fallbacks, plain_out) = $c"
c=$(srv_udp)
[[ $c == "[(1, 1, 1, 'authenticate')]" ]] || fail "udp auto with another key: server (accepted, received, plain_in, auth) = $c"
note "udp: auto with another key: plain UDP after the bound, the server accepted no MCES connection"

# ---- a key file with mode 644: the policy is refused -----------------------------------
cp "$T/a.key" "$T/open.key"
chmod 644 "$T/open.key"
policy open.ini tcp mces open.key
"$GSCTL" policy check "$T/open.ini" >"$T/check.out" 2>&1 && fail "gsctl policy check accepted a key file with mode 644"
has -F "open.ini:4: auth_key = open.key: key file '$T/open.key': has mode 0644" "$T/check.out" ||
    fail "gsctl policy check: $(cat "$T/check.out")"
has -F "chmod 600 '$T/open.key'" "$T/check.out" || fail "gsctl policy check does not say chmod 600: $(cat "$T/check.out")"
# The shim says the same when a program starts with it, and the flow stays native.
echo hi | timeout 10 "$GSRUN" --policy "$T/open.ini" --stats "$T/open.jsonl" -- socat -T 2 - "TCP:127.0.0.1:$hp" \
    >/dev/null 2>"$T/open.err" || true
has -F "chmod 600 '$T/open.key'" "$T/open.err" || fail "the shim's log does not name the key file and chmod 600: $(cat "$T/open.err")"
has "every flow stays native" "$T/open.err" || fail "the shim's log does not say the flows stay native: $(cat "$T/open.err")"
c=$(stats_query "$T/open.jsonl" '[f["transport"] for f in flows if f["proto"]=="tcp"]')
[[ $c == "['native']" ]] || fail "with the refused key the flow went $c"
note "mode 644: $(head -1 "$T/check.out")"
echo "ok mces_auth"
