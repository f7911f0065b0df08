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
