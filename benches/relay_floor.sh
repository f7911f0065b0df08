#!/usr/bin/env bash
# The floor of a keep-alive proxy's CPU on this machine (issue 16): revgate
# with one I/O thread and nginx `proxy_pass` (one worker, upstream
# keep-alive) beside a bare byte relay (`benches/relay_floor/`) on epoll and
# on io_uring, all in front of the same `return 200` nginx upstream, each
# under `wrk -t1 -c64 -d5` with a bearer token, ROUNDS rounds interleaved.
# Prints each target's requests, user and system CPU per request (from
# /proc/PID/stat) and the upstream's CPU per request behind it.
#
#   benches/relay_floor.sh                   # builds revgate and the relay
#   SKIP_BUILD=1 ROUNDS=2 MODES="epoll uring uring-plain" benches/relay_floor.sh
#
# Loopback only, free ports, ~15 s per target and round.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-2}
MODES=${MODES:-"epoll uring"}
log() { printf '[relay_floor.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v python3 >/dev/null || need_apt+=(python3)
. "$ROOT/benches/lib.sh"
install_packages "${need_apt[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

RELAY_TARGET=${RELAY_TARGET:-/tmp/relay-floor-target}
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release (revgate, relay_floor)"
    (cd "$ROOT" && cargo build --release --quiet)
    (cd "$ROOT/benches/relay_floor" && CARGO_TARGET_DIR=$RELAY_TARGET cargo build --release --quiet)
fi
REVGATE="$ROOT/target/release/revgate"
RELAY="$RELAY_TARGET/release/relay-floor"

WORK=$(mktemp -d /tmp/revgate-relay.XXXXXX)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

nginx_start() { # name port http-extra server-body
    local d=$WORK/$1; mkdir -p "$d"
    cat > "$d/nginx.conf" <<E
worker_processes 1; daemon off; pid $d/pid; error_log $d/err warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $d/b; proxy_temp_path $d/p; fastcgi_temp_path $d/f; uwsgi_temp_path $d/u; scgi_temp_path $d/s;
keepalive_requests 100000000; $3
server { listen 127.0.0.1:$2; $4 } }
E
    "$NGINX" -p "$d" -c "$d/nginx.conf" -e "$d/err" & PIDS+=($!)
    eval "${1}_MASTER=$!"
}
UP_PORT=$(free_port); NGINX_PORT=$(free_port)
nginx_start upstream "$UP_PORT" '' 'location / { return 200 "ok"; }'
nginx_start proxy "$NGINX_PORT" \
    "upstream b { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 100000000; }" \
    'location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; }'

declare -A PORT PID
for m in $MODES; do
    PORT[$m]=$(free_port)
    "$RELAY" "$m" "${PORT[$m]}" "$UP_PORT" & PIDS+=($!); PID[$m]=$!
done
printf '[server]\nio_threads = 1\n[log]\naccess_log = false\n' > "$WORK/revgate.toml"
"$REVGATE" run --config "$WORK/revgate.toml" --upstream "http://127.0.0.1:$UP_PORT" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --journal "$WORK/journal" \
    > "$WORK/revgate.out" 2> "$WORK/revgate.err" & PIDS+=($!); PID[revgate1]=$!
for _ in $(seq 50); do grep -q listening "$WORK/revgate.out" 2>/dev/null && break; sleep 0.1; done
PORT[revgate1]=$(grep -m1 listening "$WORK/revgate.out" \
    | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["listen"].rsplit(":",1)[1])')
sleep 0.5
PID[nginx]=$(pgrep -P "$proxy_MASTER"); PORT[nginx]=$NGINX_PORT
UPW=$(pgrep -P "$upstream_MASTER")

ticks() { cut -d' ' -f14,15 "/proc/$1/stat"; }
printf '| round | target | req/s | user µs/req | system µs/req | CPU µs/req | upstream CPU µs/req |\n|---|---|---:|---:|---:|---:|---:|\n'
for r in $(seq "$ROUNDS"); do
    for t in nginx revgate1 $MODES; do
        url="http://127.0.0.1:${PORT[$t]}/"
        wrk -t1 -c64 -d1 -H 'Authorization: Bearer at-abc' "$url" > /dev/null
        read -r u0 s0 < <(ticks "${PID[$t]}"); read -r uu0 us0 < <(ticks "$UPW")
        wrk -t1 -c64 -d5 -H 'Authorization: Bearer at-abc' "$url" > "$WORK/wrk.out"
        read -r u1 s1 < <(ticks "${PID[$t]}"); read -r uu1 us1 < <(ticks "$UPW")
        n=$(grep -oE '^ +[0-9]+ requests' "$WORK/wrk.out" | grep -oE '[0-9]+')
        hz=$(getconf CLK_TCK)
        python3 -c "
n=$n; hz=$hz; u=($u1-$u0)*1e6/hz/n; s=($s1-$s0)*1e6/hz/n; up=($uu1+$us1-$uu0-$us0)*1e6/hz/n
print('| $r | $t | %d | %.2f | %.2f | %.2f | %.2f |' % (n/5, u, s, u+s, up))"
    done
done
