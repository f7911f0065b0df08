#!/usr/bin/env bash
# benches/idle_conns.sh — memory per idle keep-alive client connection:
# revgate's fast path, revgate through hyper (HTTP/1.1 with the fast path
# off, and h2c), and nginx proxy_pass beside it (issue 10's figure).
#
# How: each target starts on loopback (ports the OS picks) in front of an
# nginx `return 200` upstream. A Python client opens $CONNS connections, sends
# one request on each (so every connection has been through a whole
# exchange, buffers and all) and keeps them open and idle. The proxy's RSS
# (VmRSS of the process; for nginx, of its one worker) is read before and
# after (3 s after the last answer), and the difference divided by $CONNS.
# RSS does not depend on what else the machine is doing, so this figure is
# stable on a shared machine. REVGATE_BIN measures another build.
#
# Usage: benches/idle_conns.sh   (env: CONNS=10000 SKIP_BUILD=1 TARGETS=...)
# Installs nginx when absent; raises its own fd limit; about 1 minute; kills
# what it started.

set -euo pipefail

CONNS=${CONNS:-10000}
TARGETS=${TARGETS:-"revgate revgatehy revgateh2c nginx"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf '[idle_conns.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || {
    log "installing nginx"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "${SKIP_BUILD:-}" = 1 ] || cargo build --release --quiet
BIN=${REVGATE_BIN:-$ROOT/target/release/revgate}

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

nginx_conf() { # name listen body
    mkdir -p "$WORK/$1"
    cat >"$WORK/$1/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 20000;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_timeout 300s;
  keepalive_requests 100000;
  client_body_temp_path $WORK/$1; proxy_temp_path $WORK/$1;
  fastcgi_temp_path $WORK/$1; uwsgi_temp_path $WORK/$1; scgi_temp_path $WORK/$1;
  $3
  server { listen 127.0.0.1:$2; $4 }
}
EOF
    "$NGINX" -c "$WORK/$1/nginx.conf" -p "$WORK/$1"
    for _ in $(seq 50); do [ -s "$WORK/$1/nginx.pid" ] && break; sleep 0.1; done
}

UP_PORT=$(free_port)
nginx_conf upstream "$UP_PORT" "" 'location / { return 200 "ok"; }'
PIDS+=("$(cat "$WORK/upstream/nginx.pid")")

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

start_revgate() { # name extra-toml
    local port admin
    port=$(free_port); admin=$(free_port)
    cat >"$WORK/$1.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
max_connections = 50000
$2
[upstream]
url = "http://127.0.0.1:$UP_PORT"
[admin]
listen = "127.0.0.1:$admin"
[log]
access_log = false
EOF
    "$BIN" run --config "$WORK/$1.toml" --journal "$WORK/$1.journal" >"$WORK/$1.out" 2>"$WORK/$1.log" &
    PIDS+=("$!")
    for _ in $(seq 100); do [ -s "$WORK/$1.out" ] && break; sleep 0.1; done
    TARGET_PID=$!
    TARGET_PORT=$port
}

measure() { # name mode
    python3 - "$TARGET_PORT" "$CONNS" "$2" "$TARGET_PID" <<'EOF'
import socket, sys, time
port, n, mode, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
req = b"GET / HTTP/1.1\r\nhost: x\r\nauthorization: Bearer idle-token-1\r\n\r\n"
# h2c prior knowledge: preface, empty SETTINGS, SETTINGS ack, one HEADERS
# frame for GET / (HPACK: :method GET, :path /, :scheme http, :authority x).
h2 = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
      + b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
hdr = bytes([0x82, 0x84, 0x86, 0x41, 0x01, ord("x")])
h2 += len(hdr).to_bytes(3, "big") + b"\x01\x05" + (1).to_bytes(4, "big") + hdr
time.sleep(0.5)
before = rss()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(h2 if mode == "h2c" else req)
    socks.append(s)
    if len(socks) % 500 == 0:
        for t in socks[-500:]:
            t.settimeout(10); t.recv(65536)
for t in socks[len(socks) - len(socks) % 500:]:
    t.settimeout(10); t.recv(65536)
# Past revgate's IDLE_RELEASE (1 s), after which an idle connection has
# given its buffers back: the figure is that of a connection idle a while.
time.sleep(3)
after = rss()
print(f"{before} {after} {(after - before) * 1024 / n:.0f}")
for s in socks: s.close()
EOF
}

printf '| target | connections | RSS before (KiB) | RSS after (KiB) | bytes per idle connection |\n|---|---|---|---|---|\n'
for t in $TARGETS; do
    case $t in
        revgate) start_revgate "$t" "io_threads = 1"; mode=h1 ;;
        revgatehy) start_revgate "$t" $'io_threads = 1\nh1_fast_path = false'; mode=h1 ;;
        revgateh2c) start_revgate "$t" "io_threads = 1"; mode=h2c ;;
        nginx)
            port=$(free_port)
            nginx_conf proxy "$port" "upstream up { server 127.0.0.1:$UP_PORT; keepalive 64; }" \
                'location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }'
            master=$(cat "$WORK/proxy/nginx.pid"); PIDS+=("$master")
            TARGET_PID=$(pgrep -P "$master" | head -1); TARGET_PORT=$port; mode=h1 ;;
        *) log "unknown target $t"; continue ;;
    esac
    read -r before after per < <(measure "$t" "$mode")
    printf '| %s | %s | %s | %s | %s |\n' "$t" "$CONNS" "$before" "$after" "$per"
done
