# Shared by scripts/test and scripts/demo (sourced).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# Debian packages the build, the tests and the demo need. Installed only when
# missing, quietly; idempotent.
PACKAGES=(
    meson ninja-build g++ gcc libc6-dev pkg-config   # build (libc6-dev: libc.a for the static-program test)
    liburing-dev libinih-dev doctest-dev             # the fixed dependencies
    libsodium-dev                                    # MAC for MCES cookies (docs/dependencies.md)
    clang libclang-rt-14-dev                         # libFuzzer and clang's sanitizer runtimes
    python3 curl socat iperf3 iproute2               # real programs the tests run under the shim
    nftables                                         # random loss in the tests' namespaces (no netem here)
)

install_missing() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The default tree (build/, shared by scripts/demo and scripts/test): -O2
# with line tables only (-g1). Every report and backtrace still names the
# file and line; compiling takes about a quarter less than with -g
# (connection.cpp: 2.7 s against 3.8 s). For gdb's variables, configure a
# tree of your own with -g.
DEFAULT_OPTS=(-Dc_args=-g1 -Dcpp_args=-g1)

# build DIR [meson options...]: configure once, then build everything.
build() {
    configure "$@" && compile "$1"
}
configure() {
    local dir=$1; shift
    if [[ -f "$dir/build.ninja" ]]; then
        # An existing tree takes the options this script asks for now (a new
        # option, say), so a developer's tree builds what CI's fresh one does.
        [[ $# -eq 0 ]] && return 0
        meson configure "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log" >&2; return 1; }
        return 0
    fi
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log" >&2; return 1; }
}
# compile DIR [TARGETS...]
compile() {
    local dir=$1; shift
    ninja -C "$dir" "$@" >"$dir.build.log" 2>&1 || { tail -50 "$dir.build.log" >&2; return 1; }
}
