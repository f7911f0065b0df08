#!/usr/bin/env bash
# benches/allocs_per_request.sh — heap allocations revgate makes per proxied
# request, counted by jemalloc.
#
# Why: on the small shared machine these benches run on, req/s and even CPU
# time per request move by ±20% from run to run with what else is running.
# An allocation count does not: it is a property of the code path, so it is
# the figure to compare before and after a change to src/proxy.rs and the
# layers under it (hyper, hyper-util's pooled client, tokio).
#
# How: the release binary runs with Debian's jemalloc LD_PRELOADed and
# `MALLOC_CONF=stats_print:true`, in front of an nginx upstream (1 worker,
# `return 200 "ok"`), access log off. It is started twice: once with no
# traffic, stopped with SIGTERM (the baseline: start-up and shutdown), and
# once with `wrk -t1 -c64` for $DURATION s carrying bearer tokens (10,000
# tokens cycled, none revoked), then SIGTERM. jemalloc prints its merged
# statistics at exit; `nrequests` counts every allocation, including those
# served from its thread caches. Allocations per request =
# (nrequests with traffic - baseline) / requests wrk completed.
#
# Usage: benches/allocs_per_request.sh   (env: DURATION=5 SKIP_BUILD=1
#                                         REVGATE_BIN=/path/to/revgate)
# Installs wrk, nginx and libjemalloc2 when absent; about 15 s; stops by
# itself and kills what it started.

set -euo pipefail

DURATION=${DURATION:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf '[allocs_per_request.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v python3 >/dev/null || need_apt+=(python3)
command -v curl >/dev/null || need_apt+=(curl)
ls /usr/lib/*/libjemalloc.so.2 >/dev/null 2>&1 || need_apt+=(libjemalloc2)
. "$ROOT/benches/lib.sh"
install_packages "${need_apt[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
JEMALLOC=$(ls /usr/lib/*/libjemalloc.so.2 | head -1)

if [ "${SKIP_BUILD:-0}" != 1 ] && [ -z "${REVGATE_BIN:-}" ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
# REVGATE_BIN measures another build (e.g. a patched copy) instead.
REVGATE=${REVGATE_BIN:-$ROOT/target/release/revgate}

WORK=$(mktemp -d /tmp/revgate-allocs.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

UP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/up"
cat >"$WORK/up/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/up/nginx.pid;
error_log $WORK/up/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/up/body;
    proxy_temp_path $WORK/up/proxy;
    fastcgi_temp_path $WORK/up/fastcgi;
    uwsgi_temp_path $WORK/up/uwsgi;
    scgi_temp_path $WORK/up/scgi;
    keepalive_requests 100000000;
    server { listen 127.0.0.1:$UP_PORT; location / { return 200 "ok"; } }
}
EOF
"$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf" -e "$WORK/up/error.log" &
PIDS+=($!)
deadline=$((SECONDS + 10))
until curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$UP_PORT/"; do
    [ $SECONDS -lt $deadline ] || { log "upstream did not start"; exit 1; }
    sleep 0.1
done

printf '[log]\naccess_log = false\n' >"$WORK/revgate.toml"
python3 -c '
import secrets, sys
open(sys.argv[1], "w").write("\n".join(f"at-{i:06d}-{secrets.token_hex(16)}" for i in range(10000)) + "\n")
' "$WORK/tokens.txt"
cat >"$WORK/tokens.lua" <<'EOF'
local reqs = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do
    reqs[#reqs + 1] = wrk.format("GET", "/", { ["Authorization"] = "Bearer " .. line })
  end
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
EOF

# run LABEL SECONDS: prints "requests allocations" for one revgate lifetime.
run() {
    local label=$1 secs=$2 out="$WORK/$1.out" err="$WORK/$1.err"
    LD_PRELOAD=$JEMALLOC MALLOC_CONF=stats_print:true,stats_print_opts:dablxe \
        "$REVGATE" run --config "$WORK/revgate.toml" --upstream "http://127.0.0.1:$UP_PORT" \
        --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --journal "$WORK/$label.journal" \
        >"$out" 2>"$err" &
    local pid=$!
    PIDS+=($pid)
    local deadline=$((SECONDS + 30))
    until grep -q '"listening"' "$out" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { log "revgate did not start"; cat "$err" >&2; return 1; }
        sleep 0.1
    done
    local listen requests=0
    listen=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["listen"])' "$out")
    if [ "$secs" -gt 0 ]; then
        timeout $((secs + 30)) wrk -t1 -c64 -d"$secs"s -s "$WORK/tokens.lua" \
            "http://$listen/" -- "$WORK/tokens.txt" >"$WORK/$label.wrk"
        requests=$(grep -oE '[0-9]+ requests in' "$WORK/$label.wrk" | cut -d' ' -f1)
    fi
    kill -TERM "$pid"
    local waited=0
    while kill -0 "$pid" 2>/dev/null && [ $waited -lt 100 ]; do sleep 0.1; waited=$((waited + 1)); done
    # The merged arenas' "total:" line: allocated, nmalloc, (#/s), ndalloc,
    # (#/s), nrequests, ...
    local total
    total=$(grep -m1 -E '^ *total: ' "$err" || true)
    [ -n "$total" ] || { log "no jemalloc statistics from the $label run"; return 1; }
    echo "$requests $(awk '{print $7}' <<<"$total")"
}

read -r _ base <<<"$(run idle 0)"
read -r requests busy <<<"$(run busy "$DURATION")"
python3 - "$base" "$busy" "$requests" <<'EOF'
import sys
base, busy, requests = map(int, sys.argv[1:4])
print(f"allocations: {base} at start-up and shutdown alone, {busy} with {requests} proxied requests")
print(f"RESULT allocations_per_request: {(busy - base) / requests:.1f} "
      f"(jemalloc nrequests, wrk -t1 -c64, bearer token on every request, none revoked)")
EOF
