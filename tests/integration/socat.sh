#!/usr/bin/env bash
# socat TCP and UDP echo, server and client under gsrun: data comes back intact.
source "$(dirname "$0")/lib.sh"
need socat

cat >"$T/p.ini" <<'INI'
[flow echo-tcp]
proto = tcp
dscp = AF22
[flow echo-udp]
proto = udp
dscp = CS4
INI
head -c 2000000 /dev/urandom >"$T/in.bin"

tp=$(free_port)
bg "$GSRUN" --policy "$T/p.ini" --stats "$T/tcp-server.jsonl" -- socat -b 4096 -T 20 "TCP-LISTEN:$tp,bind=127.0.0.1,reuseaddr" PIPE
wait_port "$tp"
# The client half-closes at the end of its input; the server's PIPE echoes
# everything back, then closes, and the client exits.
timeout 30 "$GSRUN" --policy "$T/p.ini" --stats "$T/tcp-client.jsonl" -- \
    socat -T 10 -t 10 - "TCP:127.0.0.1:$tp" <"$T/in.bin" >"$T/tcp-out.bin" 2>"$T/err" \
    || { cat "$T/err" >&2; fail "socat TCP client failed"; }
cmp "$T/in.bin" "$T/tcp-out.bin" || fail "TCP echo differs"
n=$(stats_query "$T/tcp-client.jsonl" 'sum(1 for f in flows if f["rule"]=="echo-tcp" and f["qos"].get("dscp")==20)')
[[ $n -ge 1 ]] || fail "the socat TCP client's flow was not classified"

up=$(free_port udp)
bg "$GSRUN" --policy "$T/p.ini" --stats "$T/udp-server.jsonl" -- socat -T 10 "UDP-RECVFROM:$up,bind=127.0.0.1,fork" PIPE
wait_port "$up" udp
for i in $(seq 1 10); do echo "datagram $i $RANDOM"; done >"$T/udp-in.txt"
# One socat client per datagram (socat waits -t after its input ends).
UP=$up timeout 30 "$GSRUN" --policy "$T/p.ini" --stats "$T/udp-client.jsonl" -- bash -c '
    while read -r line; do
        printf "%s\n" "$line" | socat -t 0.5 - "UDP:127.0.0.1:$UP" 2>/dev/null || true
    done' <"$T/udp-in.txt" >"$T/udp-out.txt"
cmp "$T/udp-in.txt" "$T/udp-out.txt" || { diff "$T/udp-in.txt" "$T/udp-out.txt" | head >&2; fail "UDP echo differs"; }
n=$(stats_query "$T/udp-client.jsonl" 'sum(1 for f in flows if f["process"]=="socat" and f["rule"]=="echo-udp" and f["qos"].get("dscp")==32 and f["bytes_out"]>0 and f["bytes_in"]>0)')
[[ $n -eq 10 ]] || fail "expected 10 classified UDP client flows with bytes both ways, got $n"
echo "ok socat: TCP 2 MB echo intact, UDP 10 datagrams echoed"
