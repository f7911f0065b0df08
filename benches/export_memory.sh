#!/usr/bin/env bash
# benches/export_memory.sh — what an export of many bindings and family
# memberships costs the gateway in memory, on the embedded store and on
# Redis.
#
# Imports $N bindings and $N memberships (`revgate admin import`, the
# export's own line format), then runs `revgate admin export` and reads the
# gateway's peak resident memory during it: the peak (VmHWM) is reset
# through /proc/PID/clear_refs right before the export, so the figure is
# the export's own peak, not the import's. Reported per store: RSS before
# the export, the peak during it, the difference, the export's seconds and
# lines.
#
# BEFORE=<path to another revgate binary> measures that binary the same
# way first (an A/B: e.g. a build of the commit before a change).
#
# Usage: benches/export_memory.sh   (env: N=1000000 STORES="embedded redis"
#                                    BEFORE= SKIP_BUILD=1 KEEP=1)
# Installs redis-server from Debian's packages when absent; everything on
# loopback, free ports; kills what it started on exit.

set -euo pipefail

N=${N:-1000000}
STORES=${STORES:-"embedded redis"}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

log() { printf '[export_memory.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v python3 >/dev/null || need_apt+=(python3)
command -v curl >/dev/null || need_apt+=(curl)
. "$ROOT/benches/lib.sh"
install_packages "${need_apt[@]}"

build_release
REVGATE="$ROOT/target/release/revgate"

WORK=$(mktemp -d /tmp/revgate-export.XXXXXX)
cleanup_on_exit "$WORK"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

log "writing $N bindings and $N memberships"
python3 - "$N" "$WORK/input.ndjson" <<'EOF'
import json, sys, time
n, path = int(sys.argv[1]), sys.argv[2]
now = int(time.time())
with open(path, "w") as f:
    for i in range(n):
        f.write(json.dumps({"kind": "bind", "fingerprint": "b1%030x" % i, "sub": "user-%d" % i,
                            "org": "org-%d" % (i % 1000), "issued_at": now - 10,
                            "expires_at": now + 86400}) + "\n")
        f.write(json.dumps({"kind": "join", "fingerprint": "10%030x" % i,
                            "family": "fa%030x" % (i // 2), "generation": 0,
                            "refresh": i % 2 == 1, "expires_at": now + 86400}) + "\n")
EOF

status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# measure LABEL BINARY STORE
measure() {
    local label=$1 bin=$2 store=$3 dir="$WORK/$1-$3" args=() redis_pid=""
    mkdir -p "$dir"
    printf '[log]\naccess_log = false\n[tokens]\nfingerprint_key = "%s"\n[admin.rate_limit]\nenabled = false\n[store]\nkey_prefix = "ex"\n' \
        "6578706f72742d6d656d6f72792d62656e63682d6b65792d33322d6279746573" >"$dir/revgate.toml"
    if [ "$store" = redis ]; then
        local port
        port=$(free_port)
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --dir "$dir" >"$dir/redis.out" 2>&1 &
        redis_pid=$!
        PIDS+=("$redis_pid")
        args=(--store "redis://127.0.0.1:$port")
    else
        args=(--journal "$dir/revocations.journal")
    fi
    "$bin" run --config "$dir/revgate.toml" --upstream http://127.0.0.1:9 \
        --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 "${args[@]}" \
        >"$dir/revgate.out" 2>"$dir/revgate.err" &
    local pid=$!
    PIDS+=("$pid")
    local deadline=$((SECONDS + 30))
    until grep -q '"listening"' "$dir/revgate.out" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { log "revgate did not start"; cat "$dir/revgate.err" >&2; exit 1; }
        sleep 0.1
    done
    local line admin
    line=$(grep -m1 '"listening"' "$dir/revgate.out")
    admin=http://$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["admin"])' "$line")
    deadline=$((SECONDS + 60))
    until curl -sf -o /dev/null "$admin/readyz"; do
        [ $SECONDS -lt $deadline ] || { log "revgate not ready"; exit 1; }
        sleep 0.1
    done
    log "$label/$store: importing"
    timeout 900 "$bin" admin --admin-url "$admin" import --file "$WORK/input.ndjson" \
        >"$dir/import.out" 2>"$dir/import.err"
    sleep 1
    local before
    before=$(status_kb "$pid" VmRSS)
    echo 5 >"/proc/$pid/clear_refs"
    local t0 t1
    t0=$(date +%s.%N)
    timeout 900 "$bin" admin --admin-url "$admin" export --file "$dir/export.ndjson" \
        2>"$dir/export.err"
    t1=$(date +%s.%N)
    local peak lines
    peak=$(status_kb "$pid" VmHWM)
    lines=$(wc -l <"$dir/export.ndjson")
    awk -v l="$label" -v s="$store" -v b="$before" -v p="$peak" -v t0="$t0" -v t1="$t1" -v n="$lines" \
        'BEGIN { printf "%-8s %-8s rss_before_mb=%6.1f export_peak_mb=%6.1f growth_mb=%6.1f seconds=%5.1f lines=%s\n", l, s, b / 1024, p / 1024, (p - b) / 1024, t1 - t0, n }' \
        | tee -a "$WORK/summary"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    if [ -n "$redis_pid" ]; then kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true; fi
}

for store in $STORES; do
    if [ -n "${BEFORE:-}" ]; then measure before "$BEFORE" "$store"; fi
    measure this "$REVGATE" "$store"
done
log "summary (N=$N bindings + $N memberships):"
cat "$WORK/summary"
