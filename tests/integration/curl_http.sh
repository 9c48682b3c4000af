#!/usr/bin/env bash
# curl downloads from python3 -m http.server, both under gsrun: the content is
# byte-identical, and both processes' flows were classified with their bytes.
source "$(dirname "$0")/lib.sh"
need curl; need python3

port=$(free_port)
mkdir "$T/www"
head -c $((8 * 1024 * 1024)) /dev/urandom >"$T/www/blob.bin"
cat >"$T/p.ini" <<INI
[flow web-client]
process = curl
proto = tcp
dport = $port
direction = connect
dscp = AF11
rate = 400mbit

[flow web-server]
process = python3
direction = accept
proto = tcp
dport = $port
dscp = AF12
INI
(cd "$T/www" && exec "$GSRUN" --policy "$T/p.ini" --stats "$T/server.jsonl" -- \
    "$PY" -m http.server --bind 127.0.0.1 "$port" >/dev/null 2>"$T/server.err") &
PIDS+=($!)
wait_port "$port"
http_client "http://127.0.0.1:$port/blob.bin" "$T/got.bin"
[[ ${HTTP_CLIENT[0]} == curl ]] || sed -i 's/^process = curl$/process = python3/' "$T/p.ini"
"$GSRUN" --policy "$T/p.ini" --stats "$T/client.jsonl" -- "${HTTP_CLIENT[@]}" >/dev/null \
    || fail "${HTTP_CLIENT[0]} failed under gsrun"
kill -INT "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()

want=$(sha256sum <"$T/www/blob.bin"); got=$(sha256sum <"$T/got.bin")
[[ "$want" == "$got" ]] || fail "downloaded content differs"
note "sha256 equal: ${got%% *}"

in=$(stats_query "$T/client.jsonl" 'sum(f["bytes_in"] for f in flows if f["rule"]=="web-client" and f["qos"].get("dscp")==10 and f["qos"].get("rate")==50000000)')
[[ $in -ge $((8 * 1024 * 1024)) ]] || fail "curl's flow shows $in bytes in, expected at least 8 MiB with AF11 and the rate"
# python3 exits through SIGINT's KeyboardInterrupt, so its atexit stats are written.
out=$(stats_query "$T/server.jsonl" 'sum(f["bytes_out"] for f in flows if f["rule"]=="web-server" and f["direction"]=="accept")')
[[ $out -ge $((8 * 1024 * 1024)) ]] || fail "the server's accepted flow shows $out bytes out (sendfile included), expected 8 MiB"
echo "ok curl_http: 8 MiB, checksums equal, client in=$in server out=$out"
