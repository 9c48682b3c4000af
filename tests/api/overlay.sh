#!/usr/bin/env bash
# Overlay sockets across processes (api/gsocket.h, docs/overlay.md): eight
# overlay_chat processes join one overlay on 127.0.0.1 through a bootstrap
# member, each says hello to all, and each must hear the seven others
# exactly once. HC and DT. Then a member whose file is wrong is refused with
# a message naming the file, line and attribute.
source "$GS_SRC/tests/integration/lib.sh"
[[ -x ${GS_CHAT:-} ]] || skip "overlay_chat was not built"

# Eight ports below the ephemeral range (32768-60999), so that no socket
# another process opens meanwhile can take one between the choice and the
# member's bind; each checked free now.
ports=()
base=$((20000 + ($$ % 700) * 16))
for p in $(seq "$base" $((base + 63))); do
    ((${#ports[@]} == 8)) && break
    "$PY" -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", int(sys.argv[1])))' "$p" \
        2>/dev/null && ports+=("$p")
done
((${#ports[@]} == 8)) || fail "no eight free UDP ports from $base"

for proto in HC DT; do
    rm -f "$T/go"
    pids=()
    for i in $(seq 0 7); do
        {
            echo "OverlayID = 4242"
            echo "Protocol = $proto"
            echo "NodeAddress = 127.0.0.1:${ports[$i]}"
            ((i > 0)) && echo "Bootstrap = 127.0.0.1:${ports[0]}"
            if [[ $proto == DT ]]; then echo "Coordinates = $((i * 37 % 11 * 1000)),$((i * 53 % 13 * 1000))"; fi
        } >"$T/m$i.conf"
        # Emptied here, not by the member's own redirection: that happens in
        # the child, after this shell may already have read the last round's
        # "joined" from the file.
        : >"$T/m$i.out"
        "$GS_CHAT" "$T/m$i.conf" --expect 7 --go "$T/go" --timeout 30 >"$T/m$i.out" 2>"$T/m$i.err" &
        pids+=($!); PIDS+=($!)
        # One at a time: each joins through the first.
        for _ in $(seq 300); do grep -q '^joined' "$T/m$i.out" && break; kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.05; done
        grep -q "^joined" "$T/m$i.out" || { st=0; kill -0 "${pids[$i]}" 2>/dev/null || { wait "${pids[$i]}" || st=$?; }; cat "$T/m$i.out" "$T/m$i.err" >&2; fail "$proto member $i did not join (exit status $st)"; }
    done
    sleep 2   # neighbour tables settle
    touch "$T/go"
    bad=0
    for i in $(seq 0 7); do
        wait "${pids[$i]}" || { bad=1; echo "member $i:" >&2; cat "$T/m$i.out" "$T/m$i.err" >&2; }
    done
    ((bad == 0)) || fail "$proto: not every member heard the seven others exactly once"
    note "$proto: $(grep -h '^member' "$T"/m*.out | head -1)"
done

# A wrong file: refused, with the file, the line and the attribute named.
printf 'OverlayID = 4242\nProtocol = XY\nNodeAddress = 127.0.0.1:%s\n' "${ports[0]}" >"$T/bad.conf"
if GSOCKET_LOG_FILE="$T/bad.log" "$GS_CHAT" "$T/bad.conf" --timeout 2 >"$T/bad.out" 2>"$T/bad.err"; then
    fail "a member with Protocol = XY was not refused"
fi
grep -q "Invalid argument" "$T/bad.err" || { cat "$T/bad.err" >&2; fail "the refusal does not say EINVAL"; }
grep -q "bad.conf:2" "$T/bad.log" || { cat "$T/bad.log" >&2; fail "the log does not name bad.conf:2"; }
grep -q "Protocol" "$T/bad.log" || { cat "$T/bad.log" >&2; fail "the log does not name the attribute"; }
echo "ok overlay: eight processes, HC and DT, each heard the seven others exactly once; a wrong file refused by line"
