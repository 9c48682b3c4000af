#!/usr/bin/env bash
# gsprobe's scenarios (non-blocking connect, epoll, dup family, fork, threads,
# names, IPv6, UDP families, TCP Fast Open, SCM_RIGHTS, close_range, socket
# type flags, shutdown, errno fidelity, bulk) behave the same with and without
# the shim, the shim stays silent, and it really classified the flows.
source "$(dirname "$0")/lib.sh"

"$GSPROBE" all >"$T/plain.out" 2>"$T/plain.err" || { cat "$T/plain.err" >&2; fail "gsprobe all fails without the shim"; }

policy="$T/p.ini"
cat >"$policy" <<'INI'
[flow everything-tcp]
proto = tcp
dscp = AF21
[flow everything-udp]
proto = udp
dscp = CS1
INI
"$GSRUN" --policy "$policy" --stats "$T/stats.jsonl" -- "$GSPROBE" all >"$T/shim.out" 2>"$T/shim.err" \
    || { cat "$T/shim.err" >&2; fail "gsprobe all fails under gsrun"; }

diff -u "$T/plain.out" "$T/shim.out" || fail "stdout differs under the shim"
if grep -v '^ok\|^skip\|^note' "$T/shim.err" | has .; then
    cat "$T/shim.err" >&2
    fail "the shim wrote to stderr with a clean policy (it must be quiet)"
fi
n=$(stats_flows "$T/stats.jsonl")
note "flows classified: $n"
[[ $n -ge 100 ]] || fail "only $n flows in --stats: the shim did not classify gsprobe's sockets"
# gsprobe's forked children end with _exit(), which runs no destructor: one line.
procs=$(wc -l <"$T/stats.jsonl")
tcp=$(stats_query "$T/stats.jsonl" 'sum(1 for f in flows if f["rule"]=="everything-tcp" and f["qos"].get("dscp")==18)')
udp=$(stats_query "$T/stats.jsonl" 'sum(1 for f in flows if f["rule"]=="everything-udp" and f["qos"].get("dscp")==8)')
note "tcp flows with AF21: $tcp, udp flows with CS1: $udp"
[[ $tcp -ge 50 && $udp -ge 5 ]] || fail "rules did not apply to gsprobe's flows"
bad=$(stats_query "$T/stats.jsonl" 'sum(1 for f in flows if f["qos_failed"])')
[[ $bad -eq 0 ]] || fail "$bad flows report QoS the kernel refused"
echo "ok probe: $n flows, $procs processes"
