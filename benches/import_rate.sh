#!/usr/bin/env bash
# benches/import_rate.sh — bulk import rate (issue 18): `revgate admin import`
# of N raw tokens into the embedded store and into a real redis-server,
# durable (each batch of 10,000 fsync'd to the journal, or written to Redis
# with one script call and one stream event, before its request answers),
# and the resident memory of the gateway and of the CLI sampled during it.
#
#   STORES="memory redis"   which stores (redis needs redis-server)
#   N=1000000               tokens per import (a file of N lines, ~30 B each)
#   ROUNDS=3                imports per store, each into a fresh gateway
#   AGAIN=1                 also import the same file a second time into the
#                           last gateway (every rule already there: the
#                           store does not grow, so its RSS shows what the
#                           import path itself holds)
#   SKIP_BUILD=1 KEEP=1
#
# Prints one line per import: store, lines, seconds, accepted/s, the
# gateway's RSS before / peak during / after, the CLI's peak RSS, and the
# CPU seconds the gateway and redis-server spent during it (where the time
# goes); with Redis also the import's `INFO commandstats` (per command:
# calls, µs per call, total ms of Redis's thread). Loopback only; every
# process it started is killed on exit.

set -euo pipefail
STORES=${STORES:-"memory redis"}
N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
AGAIN=${AGAIN:-1}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf '[import_rate.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
# REVGATE=path: another build (e.g. target/debug/revgate: Redis's own figures,
# CPU per rule and commandstats, hold for a debug gateway too).
REVGATE=${REVGATE:-"$ROOT/target/release/revgate"}
WORK=$(mktemp -d /tmp/revgate-import.XXXXXX)
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
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
TICK=$(getconf CLK_TCK)
# CPU seconds (user + system) a process has used so far.
cpu() { awk -v t="$TICK" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }

log "writing $N tokens"
python3 - "$N" "$WORK/tokens.txt" <<'EOF'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w", buffering=1 << 20) as f:
    for i in range(n):
        f.write(f"imp-{i:010d}-3c9a51e7\n")
EOF

KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
REDIS_PID=""
start_redis() {
    local port; port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" --maxmemory-policy noeviction >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=($REDIS_PID)
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    REDIS_URL="redis://127.0.0.1:$port"
    REDIS_PORT=$port
}

# start_gateway STORE: sets GW_PID GW_ADMIN
start_gateway() {
    local store=$1 dir; dir=$(mktemp -d "$WORK/gw.XXXX")
    local args=(run --config config/loadtest.toml --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0
        --journal "$dir/journal")
    if [ "$store" = redis ]; then
        start_redis
        args+=(--store "$REDIS_URL")
    fi
    REVGATE_FINGERPRINT_KEY=$KEY "$REVGATE" "${args[@]}" >"$dir/out" 2>"$dir/err" &
    GW_PID=$!
    PIDS+=($GW_PID)
    local deadline=$((SECONDS + 60))
    until grep -q '"listening"' "$dir/out" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { log "gateway did not start"; cat "$dir/err" >&2; exit 1; }
        sleep 0.1
    done
    GW_ADMIN="http://$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["admin"])' "$dir/out")"
    until curl -sf "$GW_ADMIN/readyz" >/dev/null; do sleep 0.1; done
}

# run_import LABEL: one import of tokens.txt into GW, sampled.
run_import() {
    local label=$1 before peak=0 cpeak=0 r c gw_cpu redis_cpu=0
    before=$(rss "$GW_PID")
    gw_cpu=$(cpu "$GW_PID")
    if [ -n "$REDIS_PID" ]; then
        redis_cpu=$(cpu "$REDIS_PID")
        redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
    fi
    "$REVGATE" admin --admin-url "$GW_ADMIN" -o json import --file "$WORK/tokens.txt" \
        >"$WORK/summary.json" 2>"$WORK/import.err" &
    local cli=$!
    while kill -0 "$cli" 2>/dev/null; do
        r=$(rss "$GW_PID"); [ "$r" -gt "$peak" ] && peak=$r
        c=$(rss "$cli"); [ "$c" -gt "$cpeak" ] && cpeak=$c
        echo "$label $(date +%s.%N) $r $c" >>"$WORK/samples.txt"
        sleep 0.25
    done
    wait "$cli" || { log "import failed"; cat "$WORK/import.err" >&2; exit 1; }
    gw_cpu=$(awk -v a="$gw_cpu" -v b="$(cpu "$GW_PID")" 'BEGIN { printf "%.2f", b - a }')
    local stats=""
    if [ -n "$REDIS_PID" ]; then
        redis_cpu=$(awk -v a="$redis_cpu" -v b="$(cpu "$REDIS_PID")" 'BEGIN { printf "%.2f", b - a }')
        stats=$(redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' | grep '^cmdstat_' || true)
    fi
    python3 - "$label" "$WORK/summary.json" "$before" "$peak" "$(rss "$GW_PID")" "$cpeak" \
        "$gw_cpu" "$redis_cpu" "$stats" <<'EOF'
import json, sys
label, path, before, peak, after, cpeak, gw_cpu, redis_cpu, stats = sys.argv[1:10]
s = json.load(open(path))
mib = lambda k: int(k) / 1024
print(f"{label}: {s['lines']} lines, accepted {s['accepted']} ({s['changed']} new), "
      f"{s['seconds']:.2f} s, {s['accepted'] / s['seconds']:.0f}/s; gateway RSS "
      f"{mib(before):.0f} -> peak {mib(peak):.0f} -> {mib(after):.0f} MiB; CLI peak {mib(cpeak):.1f} MiB; "
      f"CPU s: gateway {gw_cpu}" + (f", redis {redis_cpu}" if stats else ""))
rows = []
for line in stats.splitlines():
    name, _, fields = line.partition(":")
    kv = dict(f.split("=", 1) for f in fields.split(",") if "=" in f)
    calls, usec = int(kv.get("calls", 0)), int(kv.get("usec", 0))
    if usec >= 1000:
        rows.append((usec, f"{name[len('cmdstat_'):]} {calls} calls {usec / max(calls, 1):.2f} us/call {usec / 1000:.0f} ms"))
if rows:
    print("    redis commandstats: " + "; ".join(r for _, r in sorted(rows, reverse=True)))
EOF
}

log "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for store in $STORES; do
    for ((r = 1; r <= ROUNDS; r++)); do
        start_gateway "$store"
        run_import "$store#$r"
        if [ "$r" = "$ROUNDS" ] && [ "$AGAIN" = 1 ]; then run_import "$store#$r-again"; fi
        kill "$GW_PID" 2>/dev/null || true
        [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=""
        sleep 0.5
    done
done
log "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
