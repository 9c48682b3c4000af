#!/usr/bin/env bash
# From inside the traced program: DSCP, priority, pacing, window, congestion
# and notsent_lowat are set on the sockets the policy names, and not on others;
# the policy keeps its DSCP and priority when the program sets IP_TOS itself
# (the program's ECN bits survive on UDP; Linux clears them on TCP).
source "$(dirname "$0")/lib.sh"

a=$(free_port); b=$(free_port); u=$(free_port udp); v=$(free_port udp); c=$(free_port); r=$(free_port)
cat >"$T/p.ini" <<INI
[general]
capacity = 1gbit

[flow voice]
proto = tcp
direction = connect
dport = $a
class = realtime
latency = 20ms
dscp = EF
priority = high
rate = 20mbit
congestion = reno
window = 40000

[flow media]
proto = udp
dport = $u
class = datagram
dscp = AF41
priority = 5

[flow bulk-v6]
proto = tcp
dst = ::1/128
dport = $c
dscp = CS1
priority = low
rcvbuf = 256KiB
notsent_lowat = 8KiB

[flow served]
direction = accept
proto = tcp
dport = $r
dscp = AF31
INI
"$GSCTL" policy check "$T/p.ini" >/dev/null || fail "the test policy does not check clean"

# rate 20mbit = 2,500,000 bytes/s; EF = 46 -> TOS 184; AF41 = 34 -> 136; CS1 = 8 -> 32; AF31 = 26 -> 104
"$GSRUN" --policy "$T/p.ini" -- "$GSPROBE" qos \
    "tcp://127.0.0.1:$a?tos=184&priority=6&pacing=2500000&cc=reno&window=40000&lowat=16384&accepted.tos=0" \
    "tcp://127.0.0.1:$b?tos=0&priority=0&pacing=unlimited" \
    "udp://127.0.0.1:$u?tos=136&priority=5" \
    "udp://127.0.0.1:$u?tos=136&priority=5&via=sendto" \
    "udp://127.0.0.1:$v?tos=0&priority=0&via=sendto" \
    "tcp://[::1]:$c?tos=32&priority=2&rcvbuf=262144&lowat=8192" \
    "tcp://127.0.0.1:$r?tos=0&accepted.tos=104" \
    "tcp://127.0.0.1:$a?tos=184&priority=6&settos=0x03" \
    "udp://127.0.0.1:$u?tos=139&priority=5&settos=0x03" \
    "tcp://127.0.0.1:$a?tos=184&priority=6&via=fastopen" \
    >"$T/out" 2>"$T/err" || { cat "$T/out" "$T/err" >&2; fail "socket options differ from the policy"; }
cat "$T/out"

# The same checks without the shim must fail: the test can tell.
if "$GSPROBE" qos "tcp://127.0.0.1:$a?tos=184" >/dev/null 2>&1; then
    fail "without the shim the DSCP check passes: it cannot tell whether the shim did anything"
fi
# A class the kernel cannot carry, with no transport written: its default
# auto keeps the kernel's TCP with the class's knobs (MCES is tried only when
# the rule writes auto or mces: docs/policy.md), and the shim says so once.
g=$(free_port)
cat >"$T/g.ini" <<INI
[general]
capacity = 1gbit

[flow reserved]
proto = tcp
dport = $g
class = guaranteed
rate = 8mbit
dscp = AF21
INI
GSOCKET_LOG=info "$GSRUN" --policy "$T/g.ini" -- "$GSPROBE" qos "tcp://127.0.0.1:$g?tos=72&pacing=1000000" \
    "tcp://127.0.0.1:$g?tos=72&pacing=1000000" >"$T/gout" 2>"$T/gerr" \
    || { cat "$T/gout" "$T/gerr" >&2; fail "class guaranteed without transport: not native with its knobs"; }
n=$(grep -c "flow rule reserved (line 4): class guaranteed keeps the kernel's tcp with its QoS knobs; write transport = auto" "$T/gerr")
[[ $n -eq 1 ]] || { cat "$T/gerr" >&2; fail "class guaranteed without transport: $n log lines saying it stays native, want 1"; }
grep -q "transport native" "$T/gerr" || { cat "$T/gerr" >&2; fail "class guaranteed without transport: the flows' records do not say native"; }
echo "ok qos"
