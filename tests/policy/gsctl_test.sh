#!/bin/sh
# gsctl's command line: exit codes, where output goes, and what explain says.
#   gsctl_test.sh GSCTL POLICY_TEST_DIR
set -u
gsctl=$1 dir=$2
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

expect() {   # expect RC DESCRIPTION -- command...
    want=$1 what=$2
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ "$rc" != "$want" ]; then
        echo "FAIL: $what: exit $rc, want $want"; cat "$tmp/out" "$tmp/err"; fails=$((fails + 1))
    fi
}
has() {      # has FILE TEXT DESCRIPTION
    if ! grep -qF -- "$2" "$tmp/$1"; then
        echo "FAIL: $3: '$2' not in $1:"; cat "$tmp/$1"; fails=$((fails + 1))
    fi
}

expect 0 "--help" -- "$gsctl" --help;                 has out "usage: gsctl" "--help to stdout"
expect 0 "policy --help" -- "$gsctl" policy --help;   has out "policy check" "policy --help"
expect 0 "check --help" -- "$gsctl" policy check --help
expect 0 "explain --help" -- "$gsctl" policy explain --help; has out "--direction" "explain --help"
expect 0 "show --help" -- "$gsctl" policy show --help
expect 2 "no command" -- "$gsctl";                    has err "usage:" "usage on stderr"
expect 2 "unknown option" -- "$gsctl" --frobnicate;   has err "unknown option '--frobnicate'" "names the option"
expect 2 "unknown subcommand" -- "$gsctl" policy lint x
expect 2 "check without file" -- "$gsctl" policy check
expect 2 "check bad option" -- "$gsctl" policy check --strict x.ini
expect 2 "explain bad url" -- "$gsctl" policy explain "$dir/good/design_example.ini" http://x:80
expect 2 "explain bad direction" -- "$gsctl" policy explain --direction up "$dir/good/design_example.ini" tcp://1.2.3.4:80

expect 0 "check good" -- "$gsctl" policy check "$dir/good/design_example.ini"
has out "design_example.ini: ok, 2 rules, 1 overlays" "ok line"
expect 0 "check -q" -- "$gsctl" policy check -q "$dir/good/design_example.ini"
[ -s "$tmp/out" ] && { echo "FAIL: check -q printed something"; fails=$((fails + 1)); }
expect 1 "check bad" -- "$gsctl" policy check "$dir/bad/port_range_empty.ini"
has err "port_range_empty.ini:2: dport = 9000-8000: empty range" "diagnostic on stderr"
expect 1 "check chain not available" -- "$gsctl" policy check "$dir/bad/elements_not_available.ini"
has err "elements_not_available.ini:12: elements = framing checksum handshake sequencing fec: fec protects the messages of class realtime" "chain diagnostic"
expect 1 "check realtime over mces" -- "$gsctl" policy check "$dir/bad/elements_realtime.ini"
has err "elements_realtime.ini:16: elements = framing checksum handshake sequencing pacing: class realtime needs deadline" "realtime chain"
expect 0 "check chains" -- "$gsctl" policy check "$dir/good/elements.ini"
has out "elements.ini: ok, 9 rules" "chains the connection builds"
expect 0 "explain newreno" -- "$gsctl" policy explain "$dir/good/elements.ini" tcp://10.0.0.1:80
has out "congestion:newreno" "the parameter survives"
expect 1 "check missing" -- "$gsctl" policy check "$tmp/none.ini"
has err "cannot read" "unreadable file"

expect 0 "explain web" -- "$gsctl" policy explain "$dir/good/design_example.ini" --process curl tcp://10.1.2.3:443
has out "[flow web] at" "rule and file:line"
has out "design_example.ini:9" "line of the rule"
has out "rate = 20mbit (2500000 B/s)" "rate with units"
has out "transport: auto" "transport"
expect 0 "explain any process" -- "$gsctl" policy explain "$dir/good/design_example.ini" tcp://10.1.2.3:443
has out "process: (any)" "any process"
has out "no rule matched: fallback" "fallback"
expect 0 "explain v6" -- "$gsctl" policy explain "$dir/good/design_example.ini" --process=wget "tcp://[::1]:8080"
has out "[flow web]" "v6 literal"
expect 0 "explain udp" -- "$gsctl" policy explain "$dir/good/design_example.ini" --src 192.0.2.1:4000 udp://127.0.0.1:5004
has out "class:     realtime" "udp rule"
has out "latency = 120ms (120000 us)" "duration with units"
expect 1 "explain broken" -- "$gsctl" policy explain "$dir/bad/on_error_misspelt.ini" tcp://10.0.0.1:80
has out "on_error = open" "says what the shim does"
expect 0 "show" -- "$gsctl" policy show "$dir/good/every_key.ini"
has out "rate_down = 2MiB/s" "canonical units"

[ "$fails" = 0 ] && echo "gsctl: all checks passed"
[ "$fails" = 0 ]
