#!/usr/bin/env bash
# benches/loadtest.sh — the one-command load run of issue 18: revgate as a
# load-test target on its built-in upstream, filled in bulk, driven by wrk.
#
#   1. starts target/release/revgate with config/loadtest.toml (embedded
#      store, terminate mode, `builtin:ok`) on ports the OS picks, with a
#      fresh journal in a temp dir;
#   2. imports $REVOKED revocations (raw tokens, one per line) with
#      `revgate admin import` and prints its summary (accepted, rate);
#   3. drives wrk for $DURATION s with $CONNS connections over $TOKENS
#      request tokens of which $SHARE % are revoked ones;
#   4. prints a table: req/s, p50, p99, the 401 share (from revgate's own
#      `revgate_requests_total{outcome="revoked"}` over all requests, so it
#      is exact) and the import's rate.
#
# UPSTREAMS="builtin:ok nginx" also runs the same load with an nginx upstream
# (`return 200 "ok"`, one worker, as in benches/load.sh) in place of the
# built-in one, interleaved, to show what the built-in upstream saves a load
# test; ROUNDS repeats each (median reported).
#
# Usage: benches/loadtest.sh   (env: REVOKED=1000000 SHARE=10 TOKENS=10000
#                               DURATION=10 CONNS=64 THREADS=1 ROUNDS=1
#                               UPSTREAMS=builtin:ok SKIP_BUILD=1 KEEP=1)
# Loopback only; every wrk run is bounded by -d, every wait by a deadline,
# and every process it started is killed on exit (trap).

set -euo pipefail

REVOKED=${REVOKED:-1000000}
SHARE=${SHARE:-10}
TOKENS=${TOKENS:-10000}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-1}
UPSTREAMS=${UPSTREAMS:-builtin:ok}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf '[loadtest.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

command -v wrk >/dev/null || { log "needs wrk (apt-get install wrk)"; exit 1; }
command -v curl >/dev/null || { log "needs curl"; exit 1; }
command -v python3 >/dev/null || { log "needs python3"; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [[ " $UPSTREAMS " == *" nginx "* ]] && [ ! -x "$NGINX" ]; then
    log "UPSTREAMS has nginx: apt-get install nginx-light (or nginx)"; exit 1
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
REVGATE="$ROOT/target/release/revgate"

WORK=$(mktemp -d /tmp/revgate-loadtest.XXXXXX)
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
wait_http() { # url seconds
    local deadline=$((SECONDS + $2))
    until curl -s -o /dev/null --max-time 1 "$1"; do
        [ $SECONDS -lt $deadline ] || { log "no answer from $1"; return 1; }
        sleep 0.1
    done
}

# --- an nginx upstream, when asked for -------------------------------------------
if [[ " $UPSTREAMS " == *" nginx "* ]]; then
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
    wait_http "http://127.0.0.1:$UP_PORT/" 10
fi

# --- revgate, one per upstream (same config, same revocations) --------------------
# start NAME UPSTREAM_URL: sets ${NAME}_URL ${NAME}_ADMIN ${NAME}_PID
start() {
    local name=$1 upstream=$2 out="$WORK/$1.out"
    "$REVGATE" run --config config/loadtest.toml --upstream "$upstream" \
        --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --journal "$WORK/$name.journal" \
        >"$out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    printf -v "${name}_PID" '%s' "$!"
    local deadline=$((SECONDS + 60))
    until grep -q '"listening"' "$out" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { log "$name did not start"; cat "$WORK/$name.err" >&2; return 1; }
        sleep 0.1
    done
    local line; line=$(grep -m1 '"listening"' "$out")
    printf -v "${name}_URL" 'http://%s' "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["listen"])' "$line")"
    printf -v "${name}_ADMIN" 'http://%s' "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["admin"])' "$line")"
}

# --- tokens: REVOKED to import, TOKENS to request (SHARE % of them revoked) ------
python3 - "$REVOKED" "$TOKENS" "$SHARE" "$WORK" <<'EOF'
import random, sys
revoked, tokens, share, work = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
with open(f"{work}/revoked.txt", "w") as f:
    for i in range(revoked):
        f.write(f"lt-revoked-{i:09d}-5f1c0e\n")
n_rev = round(tokens * share / 100)
if revoked == 0:
    n_rev = 0
rng = random.Random(18)
req = [f"lt-revoked-{rng.randrange(revoked):09d}-5f1c0e" for _ in range(n_rev)]
req += [f"lt-valid-{i:09d}-9a2b7d" for i in range(tokens - n_rev)]
rng.shuffle(req)
open(f"{work}/requests.txt", "w").write("\n".join(req) + "\n")
EOF

cat >"$WORK/tokens.lua" <<'EOF'
-- Cycles through the request tokens, one bearer token a request; requests
-- are formatted once in init().
local reqs, i = {}, 0
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

# outcomes ADMIN: "total revoked" from revgate's request counter.
outcomes() {
    curl -s --max-time 5 "$1/metrics" | python3 -c '
import re, sys
total = revoked = 0
for line in sys.stdin:
    if line.startswith("revgate_requests_total{"):
        v = float(line.rsplit(" ", 1)[1])
        total += v
        if "outcome=\"revoked\"" in line:
            revoked += v
print(int(total), int(revoked))'
}

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
k=0
for up in $UPSTREAMS; do
    k=$((k + 1))
    name="g$k"
    case $up in
        nginx) url="http://127.0.0.1:$UP_PORT" ;;
        *) url=$up ;;
    esac
    start "$name" "$url"
    admin_var="${name}_ADMIN"; url_var="${name}_URL"
    log "$name ($up): importing $REVOKED revocations"
    "$REVGATE" admin --admin-url "${!admin_var}" -o json import --file "$WORK/revoked.txt" \
        >"$WORK/$name.import.json" 2>"$WORK/$name.import.err" || {
        log "import failed"; cat "$WORK/$name.import.err" >&2; exit 1; }
    # Sanity: a revoked token is refused, a valid one passes.
    if [ "$REVOKED" -gt 0 ]; then
        r=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer lt-revoked-000000000-5f1c0e" "${!url_var}/")
        [ "$r" = 401 ] || { log "a revoked token was answered $r"; exit 1; }
    fi
    v=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer lt-valid-sanity" "${!url_var}/")
    [ "$v" = 200 ] || { log "a valid token was answered $v"; exit 1; }
    timeout 30 wrk -t1 -c"$CONNS" -d2s -s "$WORK/tokens.lua" "${!url_var}/" -- "$WORK/requests.txt" >/dev/null 2>&1 || true
done

log "$ROUNDS round(s) x $(wc -w <<<"$UPSTREAMS") upstream(s) x ${DURATION}s, wrk -t$THREADS -c$CONNS (load: $(cut -d' ' -f1-3 /proc/loadavg))"
for ((r = 1; r <= ROUNDS; r++)); do
    k=0
    for up in $UPSTREAMS; do
        k=$((k + 1))
        name="g$k"; admin_var="${name}_ADMIN"; url_var="${name}_URL"
        read -r t0 v0 < <(outcomes "${!admin_var}")
        out="$WORK/wrk-$name-$r.txt"
        timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNS" -d"$DURATION"s --timeout 5s --latency \
            -s "$WORK/tokens.lua" "${!url_var}/" -- "$WORK/requests.txt" >"$out" 2>&1 || {
            log "wrk failed"; cat "$out" >&2; exit 1; }
        read -r t1 v1 < <(outcomes "${!admin_var}")
        python3 - "$up" "$r" "$out" "$t0" "$v0" "$t1" "$v1" "$WORK/$name.import.json" >>"$RESULTS" <<'EOF'
import json, re, sys
up, rnd, path, t0, v0, t1, v1, imp = sys.argv[1:9]
text = open(path).read()
unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
def pct(p):
    m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(m.group(1)) * unit[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
total, revoked = int(t1) - int(t0), int(v1) - int(v0)
s = json.load(open(imp))
rate = s["accepted"] / s["seconds"] if s["seconds"] else 0
print(f"{up}\t{rnd}\t{rps}\t{pct(50)}\t{pct(99)}\t{revoked / max(1, total)}\t{s['accepted']}\t{s['seconds']}\t{rate}")
EOF
        log "$(tail -1 "$RESULTS" | tr '\t' ' ')"
    done
done

python3 - "$RESULTS" "$CONNS" "$THREADS" "$DURATION" "$SHARE" "$TOKENS" <<'EOF'
import statistics, sys
path, conns, threads, dur, share, tokens = sys.argv[1:7]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
by = {}
for up, r, rps, p50, p99, s401, acc, secs, rate in rows:
    by.setdefault(up, []).append((float(rps), float(p50), float(p99), float(s401), int(acc), float(secs), float(rate)))
print()
print(f"wrk -t{threads} -c{conns} -d{dur}s --latency over {tokens} tokens, {share} % of them revoked; median over rounds")
print()
print("| upstream | req/s | p50 ms | p99 ms | 401 share | imported | import s | import /s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for up, v in by.items():
    med = lambda i: statistics.median(x[i] for x in v)
    print(f"| {up} | {med(0):.0f} | {med(1):.2f} | {med(2):.2f} | {med(3):.1%} | {v[0][4]} | {v[0][5]:.2f} | {v[0][6]:.0f} |")
EOF
