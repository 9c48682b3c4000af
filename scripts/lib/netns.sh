# Network namespaces for the tests and benchmarks that need more than one
# host (sourced; needs root and iproute2). Only the wiring is here: the
# interface names and addresses are fixed so that scripts can name them;
# routes, nftables rules and what runs inside stay in the scripts.
#   netns_pair A B NET        namespaces A and B joined by one veth pair: va in A
#                             with NET.1/24, vb in B with NET.2/24 (NET like 10.80.0)
#   netns_star HUB ADDR/LEN NET M...
#                             a bridge br0 in namespace HUB holding ADDR/LEN; the
#                             k-th member (k = 0, 1, ...) gets v0 with
#                             NET.(10+k)/LEN, its peer pk in HUB on br0
#   netns_del NS...           kills (SIGTERM) what runs in each and deletes it;
#                             names that do not exist are passed over
# Every link and lo is up. netns_pair and netns_star return 1 when the first
# namespace cannot be created (a test skips then: no namespaces here); any
# later step that fails ends the script (exit 1). Either way, what was made
# is left for netns_del, which the caller's EXIT trap runs.

netns_pair() {
    ip netns add "$1" || return 1
    { ip netns add "$2" &&
      ip link add va netns "$1" type veth peer name vb netns "$2" &&
      ip -n "$1" addr add "$3.1/24" dev va && ip -n "$2" addr add "$3.2/24" dev vb &&
      _netns_up "$1" va && _netns_up "$2" vb; } || _netns_fail "$1, $2"
}

netns_star() {
    local hub=$1 addr=$2 net=$3 len=${2#*/} k=0 m
    shift 3
    ip netns add "$hub" || return 1
    { ip -n "$hub" link add br0 type bridge && ip -n "$hub" addr add "$addr" dev br0 &&
      _netns_up "$hub" br0; } || _netns_fail "$hub"
    for m in "$@"; do
        { ip netns add "$m" && ip -n "$m" link add v0 type veth peer name "p$k" netns "$hub" &&
          ip -n "$hub" link set "p$k" master br0 up &&
          ip -n "$m" addr add "$net.$((10 + k))/$len" dev v0 && _netns_up "$m" v0; } || _netns_fail "$m"
        k=$((k + 1))
    done
}

netns_del() {
    local n
    for n in "$@"; do ip netns pids "$n" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
    for n in "$@"; do ip netns del "$n" 2>/dev/null || true; done
}

_netns_up() {   # NS IF: lo and IF up in NS
    ip -n "$1" link set lo up && ip -n "$1" link set "$2" up
}

# exit, not return: under `netns_pair ... || skip` a half-made network
# must fail the test, not skip it.
_netns_fail() {
    echo "netns: cannot set up $1" >&2
    exit 1
}
