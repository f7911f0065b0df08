#!/usr/bin/env bash
# benches/redis_load.sh — proxy throughput with the Redis store against the
# embedded store (issue 4: "within 5% of the embedded store's"), interleaved
# in one run so both see the same machine.
#
# Everything on loopback, on ports the OS picks:
#   upstream  : nginx, 1 worker, `return 200 "ok"`, no logging
#   redis     : redis-server, no persistence
#   embedded  : target/release/revgate, embedded store (journal in the work dir)
#   redis     : the same binary with REVGATE_STORE=redis://... and
#               REVGATE_FINGERPRINT_KEY in its environment
# Both revgate instances: access log off, tokio's default worker count.
# Every request carries `Authorization: Bearer <token>`; a wrk Lua script
# cycles through $TOKENS tokens, 1% of them revoked through each instance's
# admin API first (both answer those 401: the table's non-2xx column checks
# it). So the Redis instance sees bloom hits (revoked tokens and the filter's
# false positives) that it confirms with Redis once and then caches.
#
# Each round runs both targets (order alternating) for $DURATION s with
# `wrk -t1 -c$CONNS --latency`; the table gives medians over rounds of req/s,
# p50, p99, and the CPU time (user+sys) revgate spent per request.
#
# Usage: benches/redis_load.sh   (env: ROUNDS=3 DURATION=10 CONNS=64
#                                 TOKENS=10000 KEEP=1 to keep the work dir)
# Needs target/release/revgate (cargo build --release), wrk, nginx,
# redis-server, curl, python3. Stops by itself: every wrk run is bounded by
# -d and timeout, every wait by a deadline, every process it started is
# killed on exit (trap).

set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
TOKENS=${TOKENS:-10000}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
REVGATE=${REVGATE_BIN:-$ROOT/target/release/revgate}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
log() { printf '[redis_load.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
for t in wrk redis-server curl python3; do
    command -v "$t" >/dev/null || { log "needs $t"; exit 1; }
done
[ -x "$NGINX" ] || { log "needs nginx (apt-get install -y nginx)"; exit 1; }
[ -x "$REVGATE" ] || { log "needs $REVGATE (cargo build --release)"; exit 1; }

WORK=$(mktemp -d /tmp/revgate-redis-load.XXXXXX)
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
wait_until() { # seconds command...: until the command succeeds
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { log "gave up waiting for: $*"; return 1; }
        sleep 0.1
    done
}

# --- upstream ----------------------------------------------------------------
UP_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    server { listen 127.0.0.1:$UP_PORT; location / { return 200 "ok"; } }
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
PIDS+=($!)
UPSTREAM="http://127.0.0.1:$UP_PORT"
wait_until 10 curl -sf -o /dev/null --max-time 1 "$UPSTREAM/"

# --- redis ---------------------------------------------------------------------
REDIS_PORT=$(free_port)
mkdir -p "$WORK/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --maxmemory-policy noeviction --dir "$WORK/redis" --logfile redis.log &
PIDS+=($!)
wait_until 10 redis-cli -p "$REDIS_PORT" ping
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

# --- revgate ---------------------------------------------------------------------
printf '[log]\naccess_log = false\n' >"$WORK/revgate.toml"
FP_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')

# start_revgate NAME [ENV...]: sets ${NAME}_URL, ${NAME}_ADMIN, ${NAME}_PID
start_revgate() {
    local name=$1; shift
    local out="$WORK/$name.out"
    env -u REVGATE_STORE REVGATE_FINGERPRINT_KEY="$FP_KEY" "$@" \
        "$REVGATE" run --config "$WORK/revgate.toml" --upstream "$UPSTREAM" \
        --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --journal "$WORK/$name.journal" \
        >"$out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    printf -v "${name}_PID" '%s' "$!"
    wait_until 30 grep -q '"listening"' "$out" || { cat "$WORK/$name.err" >&2; return 1; }
    local line; line=$(grep -m1 '"listening"' "$out")
    printf -v "${name}_URL" 'http://%s' "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["listen"])' "$line")"
    printf -v "${name}_ADMIN" 'http://%s' "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["admin"])' "$line")"
    local admin_var="${name}_ADMIN"
    wait_until 30 curl -sf -o /dev/null --max-time 1 "${!admin_var}/readyz"
}
start_revgate embedded
start_revgate redis REVGATE_STORE="$REDIS_URL"

# --- tokens: 1% revoked ----------------------------------------------------------
python3 - "$TOKENS" "$WORK/tokens.txt" "$WORK/revoked.txt" <<'EOF'
import secrets, sys
n, path, revoked = int(sys.argv[1]), sys.argv[2], sys.argv[3]
toks = [f"at-{i:06d}-{secrets.token_hex(16)}" for i in range(n)]
open(path, "w").write("\n".join(toks) + "\n")
open(revoked, "w").write("\n".join(t for i, t in enumerate(toks) if i % 100 == 0) + "\n")
EOF
log "revoking $(wc -l <"$WORK/revoked.txt") of $TOKENS tokens through each instance's admin API"
for admin in "$embedded_ADMIN" "$redis_ADMIN"; do
    while read -r tok; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST \
            -H 'content-type: application/json' --data "{\"token\":\"$tok\"}" \
            "$admin/admin/v1/revocations")
        [ "$code" = 200 ] || { log "revoke answered $code"; exit 1; }
    done <"$WORK/revoked.txt"
done
keys=$(redis-cli -p "$REDIS_PORT" --scan --pattern '{revgate}:tok:*' | wc -l)
log "redis holds $keys token rules"
first_revoked=$(head -1 "$WORK/revoked.txt")
first_live=$(sed -n 2p "$WORK/tokens.txt")
for url in "$embedded_URL" "$redis_URL"; do
    r=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $first_revoked" "$url/")
    l=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $first_live" "$url/")
    [ "$r" = 401 ] && [ "$l" = 200 ] || { log "sanity check failed at $url: revoked=$r live=$l"; exit 1; }
done

cat >"$WORK/tokens.lua" <<'EOF'
-- Cycles through the tokens file given after `--`, one bearer token a request.
local reqs = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      reqs[#reqs + 1] = wrk.format("GET", "/", { ["Authorization"] = "Bearer " .. line })
    end
  end
  i = math.random(#reqs) - 1
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
EOF

HZ=$(getconf CLK_TCK)
cpu_ticks() { local t; read -r -a t <"/proc/$1/stat"; echo $((t[13] + t[14])); }
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
run_wrk() { # target seconds round
    local url_var="${1}_URL" pid_var="${1}_PID"
    local out="$WORK/wrk-$1-$3.txt" before after
    before=$(cpu_ticks "${!pid_var}")
    timeout $(($2 + 30)) wrk -t1 -c"$CONNS" -d"$2"s --timeout 5s --latency \
        -s "$WORK/tokens.lua" "${!url_var}/" -- "$WORK/tokens.txt" >"$out" 2>&1 || {
        log "wrk failed against $1"; cat "$out" >&2; return 1; }
    after=$(cpu_ticks "${!pid_var}")
    [ "$3" = warm ] && return 0
    python3 - "$1" "$3" "$out" "$before" "$after" "$HZ" >>"$RESULTS" <<'EOF'
import re, sys
target, rnd, path, before, after, hz = sys.argv[1:7]
text = open(path).read()
unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
def pct(p):
    m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(m.group(1)) * unit[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
total = int(re.search(r"(\d+) requests in", text).group(1))
m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
non2xx = int(m.group(1)) if m else 0
cpu_us = (int(after) - int(before)) / int(hz) * 1e6 / max(1, total)
print(f"{target}\t{rnd}\t{rps}\t{pct(50)}\t{pct(99)}\t{total}\t{non2xx}\t{cpu_us:.2f}")
EOF
    log "$(tail -1 "$RESULTS" | tr '\t' ' ')"
}

T=(embedded redis)
log "warm-up: 2 s per target"
for t in "${T[@]}"; do run_wrk "$t" 2 warm; done
log "$ROUNDS rounds x 2 targets x ${DURATION}s, wrk -t1 -c$CONNS (load before: $(cut -d' ' -f1-3 /proc/loadavg))"
for ((r = 1; r <= ROUNDS; r++)); do
    for ((k = 0; k < 2; k++)); do run_wrk "${T[$(((k + r - 1) % 2))]}" "$DURATION" "$r"; done
done
log "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
lookups=$(curl -s --max-time 5 "$redis_ADMIN/metrics" | grep '^revgate_redis_lookups_total' | tr '\n' ' ' || true)
log "redis instance: ${lookups:-no lookup counters}"

python3 - "$RESULTS" "$CONNS" "$DURATION" "$ROUNDS" <<'EOF'
import statistics, sys
path, conns, dur, rounds = sys.argv[1:5]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
by = {}
for t, r, rps, p50, p99, total, non2xx, cpu in rows:
    by.setdefault(t, []).append((float(rps), float(p50), float(p99), int(total), int(non2xx), float(cpu)))
med = {t: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v),
           statistics.median(x[2] for x in v), sum(x[4] for x in v) / max(1, sum(x[3] for x in v)),
           statistics.median(x[5] for x in v)) for t, v in by.items()}
print()
print(f"wrk -t1 -c{conns} -d{dur}s --latency, {rounds} rounds interleaved; medians over rounds")
print()
print("| store | req/s (median) | p50 ms | p99 ms | non-2xx | revgate CPU µs/req | req/s per round |")
print("|---|---:|---:|---:|---:|---:|---|")
for t in ("embedded", "redis"):
    if t in med:
        rps, p50, p99, bad, cpu = med[t]
        each = ", ".join(f"{x[0]:.0f}" for x in by[t])
        print(f"| {t} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {bad:.2%} | {cpu:.1f} | {each} |")
if "embedded" in med and "redis" in med:
    r = med["redis"][0] / med["embedded"][0]
    print()
    print(f"RESULT redis/embedded throughput ratio {r:.3f} (target >= 0.95: {'MET' if r >= 0.95 else 'MISSED'})")
EOF
