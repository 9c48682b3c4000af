#!/usr/bin/env bash
# A DT overlay split by the network merges again once the network heals.
#
# Eight members in eight namespaces join through gsoverlayd (2 s leases)
# and converge to the Delaunay triangulation of their points. Then
# nftables on the hub's bridge drops everything between members 0-3 and
# 4-7 (each side still reaches the server): after the neighbour timeout
# each side repairs into an overlay of its own (`gsctl overlay members`: no
# member with a neighbour across the cut), and 12 s later has forgotten the
# other. The bridge is opened again. Left alone, the two DT halves would
# never find each other (the test fails so with the hints turned off); the
# lease keeper of each half's leader renews with a JOIN and hints the
# members the server names to its node (Node::hint), and the halves merge:
# the members' neighbour sets must be the Delaunay triangulation of all
# eight within kMerge seconds of the heal, and then each member says hello
# to all and must hear the seven others exactly once.
source "$GS_SRC/tests/integration/lib.sh"
[[ -x ${GS_CHAT:-} && -x ${GSOVERLAYD:-} ]] || skip "overlay_chat or gsoverlayd was not built"
[[ $(id -u) -eq 0 ]] || skip "network namespaces need root"
command -v ip >/dev/null || skip "iproute2 is not installed"
command -v nft >/dev/null || skip "nftables is not installed"

source "$GS_SRC/scripts/lib/netns.sh"

tag=gp$$
hub=$tag-hub
nss=("$tag"-m{0..7})   # member i is 10.76.0.(10+i)
trap 'netns_del "${nss[@]}" "$hub"; cleanup' EXIT
netns_star "$hub" 10.76.0.1/24 10.76.0 "${nss[@]}" || skip "cannot create network namespaces here"
ip netns exec "$hub" "$GSOVERLAYD" --listen 10.76.0.1:8081 >"$T/d.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do ip netns exec "$hub" ss -Hlun "sport = :8081" | has . && break; sleep 0.05; done

kMerge=15   # seconds from the heal: a leader renews (and hints) every lease/3 = 0.67 s
pids=()
for i in $(seq 0 7); do
    {
        echo "OverlayID = 6001"
        echo "Protocol = DT"
        echo "NodeAddress = 10.76.0.$((10 + i)):7000"
        echo "Server = 10.76.0.1:8081"
        echo "Lease = 2s"
        # Two clusters, left and right, so that each side of the cut is
        # also a region of the plane (the cut is the network's, not the
        # geometry's: any split must heal).
        # Small irregular offsets keep the points in general position (no
        # four on a circle), so the Delaunay triangulation is unique.
        echo "Coordinates = $((i / 4 * 5000 + i % 2 * 700 + i * i * 37 % 101)),$((i % 4 * 900 + i * 53 % 97))"
    } >"$T/m$i.conf"
    : >"$T/m$i.out"
    GSOCKET_LOG=info GSOCKET_LOG_FILE="$T/m$i.log" ip netns exec "$tag-m$i" \
        "$GS_CHAT" "$T/m$i.conf" --expect 7 --go "$T/go" --timeout 40 >"$T/m$i.out" 2>"$T/m$i.err" &
    pids+=($!); PIDS+=($!)
    for _ in $(seq 300); do grep -q '^joined' "$T/m$i.out" && break; kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.05; done
    grep -q '^joined' "$T/m$i.out" || { cat "$T/m$i.out" "$T/m$i.err" "$T/m$i.log" >&2; fail "member $i did not join"; }
done

# neighbours MEMBERS_JSON: "a b" per member (address, then its neighbours), one line each.
neighbours() {
    "$PY" -c '
import json, sys
for m in json.load(open(sys.argv[1]))["members"]:
    print(m["address"], *m["neighbors"])' "$1"
}
# delaunay: the eight members' neighbour sets (each member's own view, gsctl
# overlay members) are exactly the Delaunay triangulation of their points
# (an edge is Delaunay when a triangle through it has an empty
# circumcircle; the points are in general position).
delaunay() {
    "$GSCTL" overlay members 6001 --json >"$T/members.json" 2>/dev/null || return 1
    "$PY" - "$T/members.json" <<'PY'
import itertools, json, sys
m = {e["address"]: set(e["neighbors"]) for e in json.load(open(sys.argv[1]))["members"]}
if len(m) != 8: sys.exit(1)
def pt(a):
    x, y = a >> 32, a & 0xffffffff
    return (x - (1 << 32) if x >= 1 << 31 else x, y - (1 << 32) if y >= 1 << 31 else y)
p = {a: pt(a) for a in m}
def incircle(a, b, c, d):   # > 0: d inside the circle through a, b, c (counter-clockwise)
    rows = [(q[0] - d[0], q[1] - d[1]) for q in (a, b, c)]
    rows = [(x, y, x * x + y * y) for x, y in rows]
    (a1, a2, a3), (b1, b2, b3), (c1, c2, c3) = rows
    return a1 * (b2 * c3 - b3 * c2) - a2 * (b1 * c3 - b3 * c1) + a3 * (b1 * c2 - b2 * c1)
def ccw(a, b, c): return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
want = {a: set() for a in m}
for a, b, c in itertools.combinations(m, 3):
    A, B, C = p[a], p[b], p[c]
    o = ccw(A, B, C)
    if o == 0: continue
    if o < 0: B, C = C, B
    if all(incircle(A, B, C, p[d]) < 0 for d in m if d not in (a, b, c)):
        for u, v in ((a, b), (b, c), (a, c)): want[u].add(v); want[v].add(u)
sys.exit(0 if want == m else 1)
PY
}

for _ in $(seq 50); do delaunay && break; sleep 0.2; done
delaunay || { neighbours "$T/members.json" >&2; fail "the eight members did not converge to the Delaunay triangulation"; }

# ---- the cut ----------------------------------------------------------------
ip netns exec "$hub" nft -f - <<'NFT' || fail "nft could not cut the bridge"
table bridge gscut {
    chain forward {
        type filter hook forward priority 0; policy accept;
        ip saddr 10.76.0.10-10.76.0.13 ip daddr 10.76.0.14-10.76.0.17 counter drop
        ip saddr 10.76.0.14-10.76.0.17 ip daddr 10.76.0.10-10.76.0.13 counter drop
    }
}
NFT
# Split: every member's neighbours on its own side (addresses of members
# 0-3 are the left cluster's x < 5000, packed in the high 32 bits).
split=0
for _ in $(seq 60); do
    sleep 0.25
    "$GSCTL" overlay members 6001 --json >"$T/split.json" 2>/dev/null || continue
    if "$PY" - "$T/split.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["members"]
side = lambda a: (a >> 32) >= 5000
ok = len(m) == 8 and all(n and all(side(x) == side(e["address"]) for x in n) for e in m for n in [e["neighbors"]])
sys.exit(0 if ok else 1)
PY
    then split=1; break; fi
done
((split)) || { cat "$T/split.json" >&2; fail "the cut did not split the overlay into its two sides within 15 s"; }
# Long enough that each side forgets the other (DtConfig: a silent
# neighbour is dropped after 4 s, second-hand knowledge of it kept 10 s):
# from here on only the hints can bring the halves together.
sleep 12
ip netns exec "$hub" nft delete table bridge gscut || fail "nft could not remove the cut"
t0=$(date +%s%N)

# ---- the heal ---------------------------------------------------------------
merged=0
for _ in $(seq $((kMerge * 5))); do delaunay && { merged=1; break; }; sleep 0.2; done
t=$(( ($(date +%s%N) - t0) / 1000000 ))
((merged)) || { neighbours "$T/members.json" >&2; fail "the two sides did not merge within $kMerge s of the heal"; }
touch "$T/go"
bad=0
for i in $(seq 0 7); do
    wait "${pids[$i]}" || { bad=1; echo "member $i:" >&2; cat "$T/m$i.out" "$T/m$i.err" >&2; }
done
((bad == 0)) || { neighbours "$T/members.json" >&2; fail "after the merge, not every member heard the seven others exactly once"; }
note "DT split by the network into 4 + 4 members; one overlay again $t ms after the heal; sendToAll reached the seven others once each"
echo "ok overlay_partition: a DT overlay split by the network merged again after the heal"
