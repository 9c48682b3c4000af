#!/usr/bin/env bash
# gsrun: --help, quiet by default, keeps an existing LD_PRELOAD, warns about
# programs LD_PRELOAD cannot reach (static, setuid, Go), clear errors for bad
# options, and the program's exit status passes through.
source "$(dirname "$0")/lib.sh"

help=$("$GSRUN" --help); grep -q "usage: gsrun" <<<"$help" || fail "gsrun --help"
help=$("$GSCTL" --help); grep -qi "usage" <<<"$help" || fail "gsctl --help"

out=$("$GSRUN" -- echo hello 2>"$T/err")
[[ "$out" == "hello" ]] || fail "stdout of a program under gsrun changed: '$out'"
[[ ! -s "$T/err" ]] || { cat "$T/err" >&2; fail "gsrun or the shim printed to stderr for a plain program"; }

rc=0; "$GSRUN" -- sh -c 'exit 7' || rc=$?
[[ $rc -eq 7 ]] || fail "the program's exit status 7 came back as $rc"

preload=$("$GSRUN" -- sh -c 'echo "$LD_PRELOAD"')
[[ "$preload" == *libgsocket-preload.so* ]] || fail "LD_PRELOAD lacks the shim: $preload"
other=$(ldconfig -p | awk '/libm.so.6 .*x86-64/ && !found {print $NF; found = 1}')   # reads it all: no SIGPIPE under pipefail
preload=$(LD_PRELOAD="$other${LD_PRELOAD:+ $LD_PRELOAD}" "$GSRUN" -- sh -c 'echo "$LD_PRELOAD"')
[[ "$preload" == "$other"*libgsocket-preload.so* ]] || fail "an existing LD_PRELOAD was not kept in front: $preload"
nested=$("$GSRUN" -- "$GSRUN" -- sh -c 'echo "$LD_PRELOAD"')
[[ $(grep -o libgsocket-preload.so <<<"$nested" | wc -l) -eq 1 ]] || fail "nested gsrun preloads twice: $nested"

"$GSRUN" --bogus -- true 2>"$T/err" && fail "unknown option accepted"
grep -q "unknown option --bogus" "$T/err" || fail "no message for an unknown option"
"$GSRUN" --policy "$T/missing.ini" -- true 2>"$T/err" && fail "missing policy accepted"
grep -q "missing.ini" "$T/err" || fail "a missing --policy file is not named"
"$GSRUN" --log loud -- true 2>"$T/err" && fail "bad --log accepted"
grep -q "unknown level" "$T/err" || fail "no message for a bad --log"
rc=0; "$GSRUN" -- /nonexistent/cmd 2>"$T/err" || rc=$?
[[ $rc -eq 127 ]] || fail "a missing command exits $rc, not 127"
grep -q "cannot run /nonexistent/cmd" "$T/err" || fail "no message for a missing command"

if [[ -n "${GS_STATIC_PROG:-}" && -x "$GS_STATIC_PROG" ]]; then
    "$GSRUN" -- "$GS_STATIC_PROG" 2>"$T/err" >/dev/null || true
    grep -q "statically linked" "$T/err" || { cat "$T/err" >&2; fail "no warning for a static program"; }
else
    note "no static test program built (libc.a missing): static warning not checked"
fi

if [[ $(id -u) -eq 0 ]] && id nobody >/dev/null 2>&1; then
    cp /bin/true "$T/suid-true"; chown nobody "$T/suid-true"; chmod u+s "$T/suid-true"
    "$GSRUN" -- "$T/suid-true" 2>"$T/err" || true
    grep -q "setuid" "$T/err" || { cat "$T/err" >&2; fail "no warning for a setuid program"; }
fi

# A script's interpreter is what matters.
printf '#!/usr/bin/env sh\necho script-ran\n' >"$T/script.sh"; chmod +x "$T/script.sh"
[[ $("$GSRUN" -- "$T/script.sh" 2>"$T/err") == script-ran ]] || fail "script under gsrun"
[[ ! -s "$T/err" ]] || fail "warning for a dynamically linked interpreter"

# GSOCKET_DISABLE=1 leaves everything alone: no classification at all.
GSOCKET_DISABLE=1 "$GSRUN" --stats "$T/s.jsonl" -- "$PY" -c 'import socket; s=socket.socket(); s.connect_ex(("127.0.0.1", 9)); s.close()'
[[ ! -s "$T/s.jsonl" ]] || fail "GSOCKET_DISABLE=1 still recorded flows"
# The shim's tables cost nothing until used: a process under gsrun stays
# small (its flow records were once initialised data, 37 MiB resident in
# every process). Compared with the same program without the shim (in a
# sanitizer build both carry the runtime's own memory).
anon_kib() {   # anon_kib CMD...: anonymous memory resident once CMD sleeps
    "$@" & local p=$! r=""
    for _ in $(seq 100); do
        if [[ $(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) == S ]] && grep -q ' /usr/bin/sleep\| /bin/sleep' "/proc/$p/maps" 2>/dev/null; then
            r=$(awk '/^RssAnon:/ {print $2}' "/proc/$p/status"); break
        fi
        sleep 0.05
    done
    kill $p 2>/dev/null; wait $p 2>/dev/null || true
    echo "${r:-0}"
}
plain_kib=$(anon_kib sleep 5)
shim_kib=$(anon_kib "$GSRUN" -- sleep 5)
allow=4096
# Under ASan, more: the instrumented library's .data (a descriptor with
# pointers for every global and string literal, relocated, so written, at
# load) and its shadow, which grow with the code: 5.9 MB of .data before the
# overlay API, 11.4 MB with it, 16 MB with MCES through the shim. So the
# allowance is the usual one plus what ASan itself writes at load: .data and
# a quarter more. Without ASan the whole process under gsrun measures
# 332 KiB.
if [[ "${GS_SANITIZE:-none}" == *address* ]]; then
    data_kib=$(size -A "$GS_PRELOAD" | awk '$1 == ".data" {print int($2 / 1024)}')
    allow=$(( allow + ${data_kib:-16384} * 5 / 4 ))
fi
(( shim_kib > 0 && shim_kib - plain_kib < allow )) ||
    fail "a process under gsrun has $shim_kib KiB of anonymous memory resident, $plain_kib without the shim (want less than $allow KiB more)"
# Every thread of the host program gets a copy of the shim's thread_local
# objects (static TLS, set up and touched when the thread starts): scratch
# buffers live on the heap, only pointers are thread_local. A 64 KiB send
# scratch made thread_local once cost every thread of every program 79 KiB.
if command -v readelf >/dev/null; then
    tls=$(readelf -lW "$GS_PRELOAD" | awk '$1 == "TLS" {print $6}')
    [[ -n $tls ]] || tls=0
    (( tls < 0x1000 )) || fail "the shim's static TLS is $((tls)) bytes per thread (want under 4096): keep large thread_local objects on the heap"
fi
echo "ok gsrun"
