#!/usr/bin/env bash
# benches/load.sh — throughput and p99 latency of revgate against nginx
# proxy_pass and against the upstream direct, interleaved in one run.
#
# Everything runs on loopback, on ports the OS picks:
#   upstream : nginx, 1 worker, `return 200 "ok"` (no disk, no logging)
#   nginx    : nginx, 1 worker, proxy_pass to the upstream with
#              `upstream { keepalive 64; }`, proxy_http_version 1.1 and
#              `Connection ""` (the usual keep-alive proxy setup)
#   revgate  : target/release/revgate on the embedded store, access log off
#              (nginx logs nothing either), tokio's default worker count
#              (`server.io_threads` = cores); `revgate1` is the same with
#              `server.io_threads = 1`, so that one target matches nginx's
#              single worker; `revgatehy`
#              is the same binary with `server.h1_fast_path = false` (every
#              request through hyper's server and hyper-util's client, the
#              path before the HTTP/1.1 fast path existed); `revgatejm`
#              is the same binary as `revgate` with jemalloc LD_PRELOADed
#              (Debian's libjemalloc2), to measure the allocator's share;
#              `revgateb` (only when listed in TARGETS) runs the binary at
#              $REVGATE_B (default: target/release's), to compare a change
#              against target/release in one interleaved run; with
#              REVGATE_B_THREADS=1 it runs on one I/O thread (against
#              revgate1), and REVGATE_B_ENV="VAR=value ..." is its
#              environment
#   direct   : wrk straight to the upstream (the ceiling)
# Every request carries `Authorization: Bearer <token>`: a wrk Lua script
# cycles through $TOKENS tokens, 1% of which are revoked through revgate's
# admin API first (revgate answers those 401; nginx, which checks nothing,
# answers 200; the table shows the non-2xx count of each run as a check).
#
# Each round runs every target once (order rotated per round) for $DURATION s
# with `wrk -t1 -c$CONNS --latency`; the table gives the median over rounds of
# req/s and p99, and the ratio revgate/nginx. It also gives, per target, the
# CPU time (user+sys, from /proc/PID/stat) and context switches (from
# /proc/PID/task/*/status) the proxy process spent per request: on a small
# shared machine where wrk, the upstream and the proxy compete for the same
# cores, throughput follows the CPU each request costs, and that figure is
# far less noisy than req/s. Default: 3 rounds x 5 targets x 10 s + warm-up,
# about 3 minutes once revgate is built.
#
# Usage: benches/load.sh            (env: ROUNDS DURATION CONNS TOKENS TARGETS CONNECTION
#                                    REVGATE_B SKIP_BUILD=1 KEEP=1 to keep the
#                                    work dir)
# Installs wrk and nginx from Debian's packages when absent. Stops by itself:
# every wrk run is bounded by -d, every wait by a deadline, and every process
# it started is killed on exit (trap).

set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
TOKENS=${TOKENS:-10000}
# CONNECTION=close: every request asks for `Connection: close`, so each one
# pays a new TCP connection (accept, hand-off to an I/O thread) instead of
# riding a keep-alive connection.
CONNECTION=${CONNECTION:-keep-alive}
TARGETS=${TARGETS:-"direct nginx revgate revgate1 revgatehy"}
# ACCESS_LOG=on: both proxies log every request to a file, as each does by
# default: nginx's `access_log <file>;` (the combined format), revgate's
# `log.access_log = true` (its log output, stderr, goes to a file here). The
# upstream never logs.
ACCESS_LOG=${ACCESS_LOG:-off}
case $ACCESS_LOG in on | off) ;; *) echo "ACCESS_LOG must be on or off" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

log() { printf '[load.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- tools -----------------------------------------------------------------
need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3)
if [[ " $TARGETS " == *" revgatejm "* ]] && ! ls /usr/lib/*/libjemalloc.so.2 >/dev/null 2>&1; then
    need_apt+=(libjemalloc2)
fi
. "$ROOT/benches/lib.sh"
install_packages "${need_apt[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
REVGATE="$ROOT/target/release/revgate"

# --- processes and cleanup ---------------------------------------------------
WORK=$(mktemp -d /tmp/revgate-load.XXXXXX)
PIDS=()
cleanup() {
    # nginx runs in the foreground (daemon off): its master is in PIDS, and
    # SIGTERM makes it stop its worker too.
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

wait_http() { # url, seconds: until it answers anything
    local deadline=$((SECONDS + $2))
    until curl -s -o /dev/null --max-time 1 "$1"; do
        [ $SECONDS -lt $deadline ] || { log "no answer from $1"; return 1; }
        sleep 0.1
    done
}

# nginx_start NAME PORT SERVER_BLOCK_BODY [HTTP_EXTRA] [off|file]
nginx_start() {
    local name=$1 port=$2 body=$3 extra=${4:-} alog=${5:-off}
    local d="$WORK/$name"
    mkdir -p "$d"
    [ "$alog" = off ] || alog="$d/access.log"
    cat >"$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log $alog;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    $extra
    server {
        listen 127.0.0.1:$port;
        $body
    }
}
EOF
    "$NGINX" -p "$d" -c "$d/nginx.conf" -e "$d/error.log" &
    PIDS+=($!)
    printf -v "${name}_MASTER" '%s' "$!"
    wait_http "http://127.0.0.1:$port/" 10
}

# --- upstream, nginx, revgate -----------------------------------------------
UP_PORT=$(free_port)
nginx_start upstream "$UP_PORT" 'location / { return 200 "ok"; }'
UPSTREAM="http://127.0.0.1:$UP_PORT"

NGX_PORT=$(free_port)
nginx_start proxy "$NGX_PORT" \
    'location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }' \
    "upstream backend { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 100000000; }" \
    "$([ "$ACCESS_LOG" = on ] && echo file || echo off)"

RG_ALOG=$([ "$ACCESS_LOG" = on ] && echo true || echo false)
cat >"$WORK/revgate.toml" <<EOF
[log]
access_log = $RG_ALOG
EOF

cat >"$WORK/revgate-one.toml" <<EOF
[server]
io_threads = 1
[log]
access_log = $RG_ALOG
EOF
cat >"$WORK/revgate-hyper.toml" <<EOF
[server]
h1_fast_path = false
[log]
access_log = $RG_ALOG
EOF

# start_revgate NAME BINARY [ENV...]: sets ${NAME}_URL, ${NAME}_ADMIN, ${NAME}_PID
# (CONFIG=path in the environment of the call picks another config file)
start_revgate() {
    local name=$1 bin=$2; shift 2
    local out="$WORK/$name.out"
    env "$@" "$bin" run --config "${CONFIG:-$WORK/revgate.toml}" --upstream "$UPSTREAM" \
        --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --journal "$WORK/$name.journal" \
        >"$out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    printf -v "${name}_PID" '%s' "$!"
    local deadline=$((SECONDS + 30))
    until grep -q '"listening"' "$out" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { log "$name did not start"; cat "$WORK/$name.err" >&2; return 1; }
        sleep 0.1
    done
    local line; line=$(grep -m1 '"listening"' "$out")
    local listen admin
    listen=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["listen"])' "$line")
    admin=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["admin"])' "$line")
    printf -v "${name}_URL" 'http://%s' "$listen"
    printf -v "${name}_ADMIN" 'http://%s' "$admin"
}

start_revgate revgate "$REVGATE"
CONFIG="$WORK/revgate-one.toml" start_revgate revgate1 "$REVGATE"
if [[ " $TARGETS " == *" revgatehy "* ]]; then
    CONFIG="$WORK/revgate-hyper.toml" start_revgate revgatehy "$REVGATE"
fi
# Optional target `revgatejm`: the same binary with jemalloc preloaded (no
# rebuild), to measure what the allocator costs. Debian: libjemalloc2.
JEMALLOC=$(ls /usr/lib/*/libjemalloc.so.2 2>/dev/null | head -1 || true)
if [[ " $TARGETS " == *" revgatejm "* ]]; then
    [ -n "$JEMALLOC" ] || { log "revgatejm needs libjemalloc2 (apt-get install libjemalloc2)"; exit 1; }
    start_revgate revgatejm "$REVGATE" LD_PRELOAD="$JEMALLOC"
fi
# Optional target `revgateb`: another revgate binary (REVGATE_B=path), for an
# A/B comparison of a change in one interleaved run.
if [[ " $TARGETS " == *" revgateb "* ]]; then
    REVGATE_B=${REVGATE_B:-$REVGATE}
    [ -x "$REVGATE_B" ] || { log "revgateb needs REVGATE_B=/path/to/other/revgate"; exit 1; }
    # REVGATE_B_ENV="VAR=value ...": the environment revgateb runs with.
    # shellcheck disable=SC2086
    # REVGATE_B_THREADS=1: revgateb runs with `server.io_threads = 1`.
    B_CONFIG="$WORK/revgate.toml"
    [ "${REVGATE_B_THREADS:-}" != 1 ] || B_CONFIG="$WORK/revgate-one.toml"
    CONFIG="$B_CONFIG" start_revgate revgateb "$REVGATE_B" ${REVGATE_B_ENV:-}
fi

# --- tokens: 1% revoked ------------------------------------------------------
python3 - "$TOKENS" "$WORK/tokens.txt" "$WORK/revoked.txt" <<'EOF'
import secrets, sys
n, path, revoked = int(sys.argv[1]), sys.argv[2], sys.argv[3]
toks = [f"at-{i:06d}-{secrets.token_hex(16)}" for i in range(n)]
open(path, "w").write("\n".join(toks) + "\n")
open(revoked, "w").write("\n".join(t for i, t in enumerate(toks) if i % 100 == 0) + "\n")
EOF
REVOKED_COUNT=$(wc -l <"$WORK/revoked.txt")
log "revoking $REVOKED_COUNT of $TOKENS tokens through the admin API of both revgate instances"
ADMINS=("$revgate_ADMIN" "$revgate1_ADMIN")
URLS=("$revgate_URL" "$revgate1_URL")
if [ -n "${revgatehy_ADMIN:-}" ]; then ADMINS+=("$revgatehy_ADMIN"); URLS+=("$revgatehy_URL"); fi
if [ -n "${revgatejm_ADMIN:-}" ]; then ADMINS+=("$revgatejm_ADMIN"); URLS+=("$revgatejm_URL"); fi
if [ -n "${revgateb_ADMIN:-}" ]; then ADMINS+=("$revgateb_ADMIN"); URLS+=("$revgateb_URL"); fi
for admin in "${ADMINS[@]}"; do
    while read -r tok; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST \
            -H 'content-type: application/json' --data "{\"token\":\"$tok\"}" \
            "$admin/admin/v1/revocations")
        [ "$code" = 200 ] || { log "revoke answered $code"; exit 1; }
    done <"$WORK/revoked.txt"
done
# Check: a revoked token is refused, an unrevoked one passes, through both.
first_revoked=$(head -1 "$WORK/revoked.txt")
first_live=$(sed -n 2p "$WORK/tokens.txt")
for url in "${URLS[@]}"; do
    r=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $first_revoked" "$url/")
    l=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $first_live" "$url/")
    [ "$r" = 401 ] && [ "$l" = 200 ] || { log "sanity check failed at $url: revoked=$r live=$l"; exit 1; }
done

cat >"$WORK/tokens.lua" <<'EOF'
-- Cycles through the tokens file given after `--`, one bearer token a request.
-- Requests are formatted once in init(); request() only picks the next one.
local reqs = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      local h = { ["Authorization"] = "Bearer " .. line }
      if args[2] == "close" then h["Connection"] = "close" end
      reqs[#reqs + 1] = wrk.format("GET", "/", h)
    end
  end
  -- Threads start at different offsets of the cycle.
  i = math.random(#reqs) - 1
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
EOF

url_of() {
    case $1 in
        direct) echo "$UPSTREAM/" ;;
        nginx) echo "http://127.0.0.1:$NGX_PORT/" ;;
        revgate) echo "$revgate_URL/" ;;
        revgate1) echo "$revgate1_URL/" ;;
        revgatehy) echo "$revgatehy_URL/" ;;
        revgatejm) echo "$revgatejm_URL/" ;;
        revgateb) echo "$revgateb_URL/" ;;
        *) log "unknown target $1"; return 1 ;;
    esac
}

# The processes doing a target's work, for CPU and context-switch accounting:
# the proxy (revgate, or nginx's worker), or for `direct` the upstream's worker.
pids_of() {
    case $1 in
        direct) pgrep -P "$upstream_MASTER" ;;
        nginx) pgrep -P "$proxy_MASTER" ;;
        revgate) echo "$revgate_PID" ;;
        revgate1) echo "$revgate1_PID" ;;
        revgatehy) echo "$revgatehy_PID" ;;
        revgatejm) echo "$revgatejm_PID" ;;
        revgateb) echo "$revgateb_PID" ;;
    esac
}
# "cpu_ticks ctx_switches minor_faults" summed over processes (all their
# threads). Page faults per request show an allocator that gives memory back
# to the OS too eagerly (each fault is a page it must take again).
usage_of() {
    local ticks=0 ctx=0 flt=0 pid t v n
    for pid in "$@"; do
        read -r -a t <"/proc/$pid/stat" || continue
        ticks=$((ticks + t[13] + t[14]))
        flt=$((flt + t[9]))
        for f in /proc/"$pid"/task/*/status; do
            while read -r n v; do
                case $n in voluntary_ctxt_switches:|nonvoluntary_ctxt_switches:) ctx=$((ctx + v)) ;; esac
            done <"$f"
        done
    done
    echo "$ticks $ctx $flt"
}
HZ=$(getconf CLK_TCK)

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
run_wrk() { # target seconds round
    local out="$WORK/wrk-$1-$3.txt"
    local pids ups before after ubefore uafter
    mapfile -t pids < <(pids_of "$1")
    mapfile -t ups < <(pgrep -P "$upstream_MASTER")
    before=$(usage_of "${pids[@]}")
    ubefore=$(usage_of "${ups[@]}")
    timeout $(($2 + 30)) wrk -t1 -c"$CONNS" -d"$2"s --timeout 5s --latency \
        -s "$WORK/tokens.lua" "$(url_of "$1")" -- "$WORK/tokens.txt" "$CONNECTION" >"$out" 2>&1 || {
        log "wrk failed against $1"; cat "$out" >&2; return 1; }
    after=$(usage_of "${pids[@]}")
    uafter=$(usage_of "${ups[@]}")
    [ "$3" = warm ] && return 0
    python3 - "$1" "$3" "$out" "$before" "$after" "$HZ" "$ubefore" "$uafter" >>"$RESULTS" <<'EOF'
import re, sys
target, rnd, path, before, after, hz, ubefore, uafter = sys.argv[1:9]
(t0, c0, f0), (t1, c1, f1) = map(int, before.split()), map(int, after.split())
u0, u1 = int(ubefore.split()[0]), int(uafter.split()[0])
text = open(path).read()
unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
p99 = float(m.group(1)) * unit[m.group(2)]
m = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
p50 = float(m.group(1)) * unit[m.group(2)]
total = int(re.search(r"(\d+) requests in", text).group(1))
m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
non2xx = int(m.group(1)) if m else 0
m = re.search(r"Socket errors:.*", text)
errors = m.group(0) if m else ""
cpu_us = (t1 - t0) / int(hz) * 1e6 / max(1, total)
ctx = (c1 - c0) / max(1, total)
flt = (f1 - f0) / max(1, total)
up_us = (u1 - u0) / int(hz) * 1e6 / max(1, total)
print(f"{target}\t{rnd}\t{rps}\t{p50}\t{p99}\t{total}\t{non2xx}\t{cpu_us:.2f}\t{ctx:.3f}\t{flt:.4f}\t{up_us:.2f}\t{errors}")
EOF
    log "$(tail -1 "$RESULTS" | cut -f1-10 | tr '\t' ' ')"
}

read -r -a T <<<"$TARGETS"
log "warm-up: 2 s per target"
for t in "${T[@]}"; do run_wrk "$t" 2 warm; done

log "$ROUNDS rounds x ${#T[@]} targets x ${DURATION}s, wrk -t1 -c$CONNS, connection $CONNECTION, access logs $ACCESS_LOG (load before: $(cut -d' ' -f1-3 /proc/loadavg))"
for ((r = 1; r <= ROUNDS; r++)); do
    # Rotate the order each round, so no target always runs first or last.
    for ((k = 0; k < ${#T[@]}; k++)); do
        t=${T[$(((k + r - 1) % ${#T[@]}))]}
        run_wrk "$t" "$DURATION" "$r"
    done
done

python3 - "$RESULTS" "$CONNS" "$DURATION" "$ROUNDS" "$CONNECTION" "$ACCESS_LOG" <<'EOF'
import statistics, sys
path, conns, dur, rounds, connection, alog = sys.argv[1:7]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
by = {}
for t, r, rps, p50, p99, total, non2xx, cpu, ctx, flt, up, *_ in rows:
    by.setdefault(t, []).append((float(rps), float(p50), float(p99), int(total), int(non2xx),
                                 float(cpu), float(ctx), float(flt), float(up)))
med = {t: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v),
           statistics.median(x[2] for x in v), sum(x[4] for x in v) / max(1, sum(x[3] for x in v)),
           statistics.median(x[5] for x in v), statistics.median(x[6] for x in v),
           statistics.median(x[7] for x in v), statistics.median(x[8] for x in v))
       for t, v in by.items()}
print()
print(f"wrk -t1 -c{conns} -d{dur}s --latency, {rounds} rounds interleaved, connection {connection}, access logs {alog}; medians over rounds")
print()
print("| target | req/s (median) | p50 ms | p99 ms (median) | non-2xx | CPU µs/req | ctx sw/req | faults/req | upstream CPU µs/req | req/s per round |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
targets = ["direct", "nginx", "revgate", "revgate1", "revgatehy", "revgatejm", "revgateb"]
for t in targets:
    if t in med:
        rps, p50, p99, bad, cpu, ctx, flt, up = med[t]
        each = ", ".join(f"{x[0]:.0f}" for x in by[t])
        print(f"| {t} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {bad:.2%} | {cpu:.1f} | {ctx:.2f} | {flt:.4f} | {up:.1f} | {each} |")
print()
print("CPU µs/req, ctx sw/req, faults/req: CPU time (user+sys), context switches and minor page faults of the proxy process")
print("(revgate, or nginx's worker; for direct, the upstream's worker) per request, median over rounds; upstream CPU:")
print("the upstream nginx worker's CPU time per request behind that target (what the proxy's requests cost it).")
print()
# Issue 16's targets: keep-alive throughput >= 1.10x nginx, p99 <= 1.0x, CPU
# per request <= 0.90x; a connection per request: throughput >= 1.0x.
want = 1.0 if connection == "close" else 1.10
if "nginx" in med:
    for t in targets[2:]:
        if t in med:
            r = med[t][0] / med["nginx"][0]
            p = med[t][2] / med["nginx"][2]
            c = med[t][4] / med["nginx"][4]
            line = (f"RESULT {t}/nginx: throughput ratio {r:.3f} (target >= {want:.2f}: {'MET' if r >= want else 'MISSED'}), "
                    f"p99 ratio {p:.3f} (target <= 1: {'MET' if p <= 1 else 'MISSED'}), "
                    f"CPU/req ratio {c:.3f}")
            if connection != "close":
                line += f" (target <= 0.90: {'MET' if c <= 0.90 else 'MISSED'})"
            print(line)
EOF
