# Sourced by the load scripts in benches/: what they share.

# install_packages PKG...: installs the named Debian packages (none: does
# nothing), as root or through sudo; nginx-light, gone from newer Debian
# releases, falls back to plain nginx. Needs the caller's `log`.
install_packages() {
    [ $# -gt 0 ] || return 0
    log "installing $*"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"; then
        local pkgs=("${@/nginx-light/nginx}")
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}"
    fi
}

# build_release: `cargo build --release` unless SKIP_BUILD=1. Needs `log`.
build_release() {
    [ "${SKIP_BUILD:-0}" != 1 ] || return 0
    log "cargo build --release"
    cargo build --release --quiet
}

# cleanup_on_exit WORK: on exit, kills every pid in the caller's PIDS array
# (TERM, then KILL 0.2 s later) and removes WORK, unless KEEP=1.
cleanup_on_exit() {
    CLEANUP_WORK=$1
    PIDS=()
    trap _cleanup EXIT
    trap 'exit 130' INT TERM HUP PIPE
}
_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.2
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ]; then log "kept $CLEANUP_WORK"; else rm -rf "$CLEANUP_WORK"; fi
}
