#!/usr/bin/env bash
# The preload exports exactly the hooks in shim/preload.map: no C++ symbol
# leaks out (hidden by default), syscall() is never hooked (PITFALLS 14), and
# the library binds immediately (-z now: no lazy PLT resolution inside a hook
# that a signal handler reached).
source "$(dirname "$0")/lib.sh"

want=$(grep -o '[A-Za-z_0-9]\+;' "$GS_SRC/shim/preload.map" | tr -d ';' | sort)
got=$(nm -D --defined-only "$GS_PRELOAD" | awk '$2 == "T" || $2 == "W" {print $3}' | sort)
diff <(echo "$want") <(echo "$got") || fail "exported symbols differ from shim/preload.map"
grep -qx syscall <<<"$got" && fail "syscall() is hooked"
readelf -d "$GS_PRELOAD" | has 'BIND_NOW\|FLAGS.*NOW' || fail "the preload is not linked with -z now"
echo "ok exports: $(wc -l <<<"$got") hooks"
