# Sourced by the bench scripts that need two hosts: two network namespaces
# joined by one veth pair. Needs root.
#   netns_pair A B NET     A gets NET.1/24, B NET.2/24 (NET like 10.80.0)
#   netns_pair_del A B     kills what runs in them and deletes them
netns_pair() {
    ip netns add "$1"
    ip netns add "$2"
    ip link add va netns "$1" type veth peer name vb netns "$2"
    ip -n "$1" addr add "$3.1/24" dev va
    ip -n "$2" addr add "$3.2/24" dev vb
    local n
    for n in "$1" "$2"; do ip -n "$n" link set lo up; done
    ip -n "$1" link set va up
    ip -n "$2" link set vb up
}
netns_pair_del() {
    local n
    for n in "$@"; do ip netns pids "$n" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
    for n in "$@"; do ip netns del "$n" 2>/dev/null || true; done
}
