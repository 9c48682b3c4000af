#!/usr/bin/env bash
# Overlay members in eight network namespaces, joined through gsoverlayd:
# each member's file names only the server (no Bootstrap); the first CREATEs
# the overlay from its attributes, the others get them and the current
# members from the server. Each says hello to all and must hear the seven
# others exactly once. gsctl overlay status sees the eight with live leases
# (2 s, renewed) while they run, none once they closed (LEAVE); gsctl overlay
# members sees the eight members' own views and a spanning tree for a root
# that reaches each once. In the DT round the server is stopped before the
# members talk (they need it only to join) and restarted after (its overlays
# survive). Then a member
# whose key attribute differs from the overlay's (Protocol) is refused, the
# log naming the attribute. HC and DT.
source "$GS_SRC/tests/integration/lib.sh"
[[ -x ${GS_CHAT:-} && -x ${GSOVERLAYD:-} ]] || skip "overlay_chat or gsoverlayd was not built"
[[ $(id -u) -eq 0 ]] || skip "network namespaces need root"
command -v ip >/dev/null || skip "iproute2 is not installed"

source "$GS_SRC/scripts/lib/netns.sh"

tag=gs$$
hub=$tag-hub
nss=("$tag"-m{0..7})   # member i is 10.77.0.(10+i)
trap 'netns_del "${nss[@]}" "$hub"; cleanup' EXIT
netns_star "$hub" 10.77.0.1/24 10.77.0 "${nss[@]}" || skip "cannot create network namespaces here"
server=
start_server() {
    ip netns exec "$hub" "$GSOVERLAYD" --listen 10.77.0.1:8081 --state-dir "$T/state" >>"$T/d.log" 2>&1 &
    server=$!
    PIDS+=($server)
    for _ in $(seq 100); do ip netns exec "$hub" ss -Hlun "sport = :8081" | has . && break; sleep 0.05; done
}
start_server

id=5000
for proto in HC DT; do
    id=$((id + 1))
    rm -f "$T/go"
    pids=()
    for i in $(seq 0 7); do
        {
            echo "OverlayID = $id"
            echo "Protocol = $proto"
            echo "NodeAddress = 10.77.0.$((10 + i)):7000"
            echo "Server = 10.77.0.1:8081"
            echo "Lease = 2s"
            if [[ $proto == DT ]]; then echo "Coordinates = $((i % 3 * 1000 + i * 7)),$((i / 3 * 1000 + i * 13))"; fi
        } >"$T/m$i.conf"
        # Emptied here, not by the member's own redirection: that happens in
        # the child, after this shell may already have read the last round's
        # "joined" from the file.
        : >"$T/m$i.out"
        GSOCKET_LOG=info GSOCKET_LOG_FILE="$T/m$i.log" ip netns exec "$tag-m$i" \
            "$GS_CHAT" "$T/m$i.conf" --expect 7 --go "$T/go" --timeout 30 >"$T/m$i.out" 2>"$T/m$i.err" &
        pids+=($!); PIDS+=($!)
        for _ in $(seq 300); do grep -q '^joined' "$T/m$i.out" && break; kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.05; done
        grep -q '^joined' "$T/m$i.out" || { st=0; kill -0 "${pids[$i]}" 2>/dev/null || { wait "${pids[$i]}" || st=$?; }; cat "$T/m$i.out" "$T/m$i.err" "$T/m$i.log" >&2; fail "$proto member $i did not join (exit status $st)"; }
    done
    sleep 2.5   # neighbour tables settle; the first members' 2 s leases must have been renewed
    ip netns exec "$hub" "$GSCTL" overlay status --server 10.77.0.1:8081 --json "$id" >"$T/status.json" \
        || fail "gsctl overlay status exited $?"
    n=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(1 for m in d["members"] if m["lease_left_ms"] > 0))' "$T/status.json")
    [[ $n == 8 ]] || { cat "$T/status.json" >&2; fail "$proto: the server lists $n live members, not 8 (leases not renewed?)"; }
    # Each member's own view, from its control socket (the namespaces share
    # the file system): eight members, and the tree of a root reaches every
    # one exactly once (gsctl checks it and exits 1 otherwise).
    "$GSCTL" overlay members "$id" --json >"$T/members.json" || { cat "$T/members.json" >&2; fail "gsctl overlay members exited $?"; }
    root=$("$PY" -c 'import json,sys; m=json.load(open(sys.argv[1]))["members"]; print(len(m), m[-1]["address"] if m else "")' "$T/members.json")
    [[ ${root%% *} == 8 ]] || { cat "$T/members.json" >&2; fail "$proto: gsctl overlay members lists ${root%% *} members, not 8"; }
    root=${root#* }
    "$GSCTL" overlay members "$id" --root "$root" >"$T/tree.txt" 2>&1 || { cat "$T/tree.txt" >&2; fail "$proto: the tree for root $root is broken"; }
    [[ $(grep -cE '^[| ]*([|`]-- )?[0-9]+$' "$T/tree.txt") -eq 8 ]] || { cat "$T/tree.txt" >&2; fail "$proto: the drawn tree does not hold 8 members"; }
    if [[ $proto == DT ]]; then
        # Joined members need no server: stop it (it saves its state) before they talk.
        kill -TERM "$server"
        wait "$server" || fail "gsoverlayd did not exit 0 on SIGTERM"
    fi
    touch "$T/go"
    bad=0
    for i in $(seq 0 7); do
        wait "${pids[$i]}" || { bad=1; echo "member $i:" >&2; cat "$T/m$i.out" "$T/m$i.err" >&2; }
    done
    ((bad == 0)) || fail "$proto: not every member heard the seven others exactly once"
    if [[ $proto == DT ]]; then
        # The members talked with the server down; restarted, it still knows the overlay.
        start_server
        ip netns exec "$hub" "$GSCTL" overlay status --server 10.77.0.1:8081 "$id" >"$T/restarted.txt" \
            || { cat "$T/restarted.txt" "$T/d.log" >&2; fail "the restarted server lost overlay $id"; }
        grep -Eq 'Protocol = DT' "$T/restarted.txt" || { cat "$T/restarted.txt" >&2; fail "overlay $id lost its attributes"; }
    fi
    # Each member said LEAVE when it closed.
    ip netns exec "$hub" "$GSCTL" overlay status --server 10.77.0.1:8081 --json "$id" >"$T/after.json"
    n=$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["members"]))' "$T/after.json")
    [[ $n == 0 ]] || { cat "$T/after.json" >&2; fail "$proto: $n members still listed after every member closed"; }
    note "$proto across 8 namespaces: $(grep -h '^member' "$T"/m*.out | head -1)"
done

# The overlay 5001 is HC at the server: a member that says DT is refused.
printf 'OverlayID = 5001\nProtocol = DT\nNodeAddress = 10.77.0.10:7001\nServer = 10.77.0.1:8081\n' >"$T/wrong.conf"
if GSOCKET_LOG_FILE="$T/wrong.log" ip netns exec "$tag-m0" "$GS_CHAT" "$T/wrong.conf" --timeout 2 >"$T/w.out" 2>"$T/w.err"; then
    fail "a member with another Protocol than the overlay's was admitted"
fi
grep -q "Permission denied" "$T/w.err" || { cat "$T/w.err" >&2; fail "the refusal is not EACCES"; }
grep -q "key attribute Protocol" "$T/wrong.log" || { cat "$T/wrong.log" >&2; fail "the log does not name the key attribute"; }
ip netns exec "$hub" "$GSCTL" overlay status --server 10.77.0.1:8081 >"$T/list.txt"
grep -Eq '^5001 +HC +0' "$T/list.txt" && grep -Eq '^5002 +DT +0' "$T/list.txt" || { cat "$T/list.txt" >&2; fail "gsctl overlay status does not list both overlays"; }
echo "ok overlay_netns: 8 members in 8 namespaces joined through gsoverlayd (HC, DT), each heard the seven others once;" \
     "leases renewed, LEAVE at close (gsctl overlay status); a wrong key attribute refused"
