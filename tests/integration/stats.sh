#!/usr/bin/env bash
# --stats counts bytes exactly: TCP from the kernel's counters (a FIN is not a
# byte; data still unacknowledged at close counts), UDP in the hooks; both
# ends agree with what the programs really sent and received.
source "$(dirname "$0")/lib.sh"

port=$(free_port)
cat >"$T/peer.py" <<'PY'
import socket, sys
role, port = sys.argv[1], int(sys.argv[2])
if role == "tcp-server":
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", port)); l.listen(1); l.settimeout(20)
    c, _ = l.accept(); got = 0
    while got < 50: got += len(c.recv(100))
    c.sendall(b"x" * 1000003); c.shutdown(socket.SHUT_WR)
    c.recv(10); c.close()
elif role == "tcp-client":
    s = socket.socket(); s.settimeout(20); s.connect(("127.0.0.1", port)); s.sendall(b"y" * 50)
    n = 0
    while True:
        d = s.recv(65536)
        if not d: break
        n += len(d)
    print(n); s.close()
elif role == "udp-server":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", port)); u.settimeout(20)
    for _ in range(10):
        d, a = u.recvfrom(2000); u.sendto(d * 2, a)
else:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(20)
    for i in range(10):
        u.sendto(b"z" * (100 + i), ("127.0.0.1", port)); u.recvfrom(4000)
PY
bg "$GSRUN" --stats "$T/server.jsonl" -- "$PY" "$T/peer.py" tcp-server "$port"
wait_port "$port"
got=$("$GSRUN" --stats "$T/client.jsonl" -- "$PY" "$T/peer.py" tcp-client "$port")
wait "${PIDS[0]}"; PIDS=()
[[ $got -eq 1000003 ]] || fail "the client received $got bytes"
[[ $(stats_query "$T/server.jsonl" '[(f["bytes_out"], f["bytes_in"]) for f in flows]') == "[(1000003, 50)]" ]] \
    || fail "server stats: $(stats_query "$T/server.jsonl" '[(f["bytes_out"], f["bytes_in"]) for f in flows]'), want [(1000003, 50)]"
[[ $(stats_query "$T/client.jsonl" '[(f["bytes_out"], f["bytes_in"]) for f in flows]') == "[(50, 1000003)]" ]] \
    || fail "client stats: $(stats_query "$T/client.jsonl" '[(f["bytes_out"], f["bytes_in"]) for f in flows]'), want [(50, 1000003)]"

port=$(free_port udp)
bg "$GSRUN" --stats "$T/userver.jsonl" -- "$PY" "$T/peer.py" udp-server "$port"
wait_port "$port" udp
"$GSRUN" --stats "$T/uclient.jsonl" -- "$PY" "$T/peer.py" udp-client "$port"
wait "${PIDS[0]}"; PIDS=()
# 100..109 bytes out (1045), echoed doubled (2090); the server's reply flow is a datagram flow.
[[ $(stats_query "$T/uclient.jsonl" '[(f["direction"], f["bytes_out"], f["bytes_in"]) for f in flows]') == "[('datagram', 1045, 2090)]" ]] \
    || fail "UDP client stats: $(stats_query "$T/uclient.jsonl" '[(f["direction"], f["bytes_out"], f["bytes_in"]) for f in flows]')"
[[ $(stats_query "$T/userver.jsonl" '[(f["direction"], f["bytes_out"], f["bytes_in"]) for f in flows]') == "[('datagram', 2090, 1045)]" ]] \
    || fail "UDP server stats: $(stats_query "$T/userver.jsonl" '[(f["direction"], f["bytes_out"], f["bytes_in"]) for f in flows]')"
echo "ok stats: TCP 1000003/50 and UDP 1045/2090 bytes exact on both ends"
