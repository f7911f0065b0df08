#!/usr/bin/env bash
# benches/revoke_rate.sh — revocations per second that revgate acknowledges
# durably, on the embedded store, in terminate mode.
#
# Every acknowledged revocation is in the journal and fsync'd (fdatasync)
# before its 200; the journal's writer thread batches every append waiting
# at that moment into one write + one fdatasync (group commit), so the rate
# grows with the number of revocations in flight. wrk drives it with many
# connections, each request a new unique token (a Lua script: per-thread
# random prefix + counter), and counts the 200s itself (the figure counts
# only acknowledged revocations, not requests). At the end it walks the
# journal's records and checks there are at least as many as revocations
# were acknowledged (a 200 that is not on disk would be a lie).
#
# Endpoint: `POST /oauth/revoke` (RFC 7009, form body `token=...`) on the
# gateway's listener, started with `--revoke-mode terminate`. If that
# endpoint does not revoke yet (the RFC 7009 dialect is a stub until it
# lands), the script says so and measures `POST /admin/v1/revocations`
# (`{"token":"..."}`) on the admin listener instead: the same store path
# (MemoryStore::apply -> journal append -> group commit), a different parser.
# Force one with ENDPOINT=rfc7009|admin.
#
# Runs one wrk per concurrency level in $CONNS_LIST (default 1 16 64 256,
# 10 s each, plus a 2 s warm-up): under a minute once revgate is built.
# The journal lives in a fresh directory under $JOURNAL_DIR (default: a
# mktemp dir on /tmp, which here is the root disk, not tmpfs: fsync is real).
#
# Rate limits (issue 10): all load comes from one address (127.0.0.1), so
# the default per-IP limit (100/s, burst 200) would measure the limiter's
# 429s. RATE_LIMIT picks the `[revoke.rate_limit]` / `[admin.rate_limit]`:
#   on       enabled, per_second = 1e9, burst = 1000000: every call takes a
#            token from its bucket and none is refused (the limiter's cost)
#   off      enabled = false (no limiter in the path)
#   default  the shipped defaults (100/s, burst 200): most answers are 429,
#            counted under "other"
# (default: on).
#
# Usage: benches/revoke_rate.sh   (env: DURATION CONNS_LIST ENDPOINT RATE_LIMIT
#                                  JOURNAL_DIR SKIP_BUILD=1 KEEP=1)
# Installs wrk from Debian's packages when absent; stops by itself; kills
# everything it started on exit.

set -euo pipefail

DURATION=${DURATION:-10}
CONNS_LIST=${CONNS_LIST:-"1 16 64 256"}
ENDPOINT=${ENDPOINT:-auto}
export RATE_LIMIT=${RATE_LIMIT:-on}
TARGET_RATE=20000

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

log() { printf '[revoke_rate.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3)
. "$ROOT/benches/lib.sh"
install_packages "${need_apt[@]}"

build_release
REVGATE="$ROOT/target/release/revgate"

WORK=$(mktemp -d "${JOURNAL_DIR:-/tmp}/revgate-revoke.XXXXXX")
cleanup_on_exit "$WORK"

# The upstream is never reached in terminate mode; a closed port will do.
cat >"$WORK/revgate.toml" <<EOF
[log]
access_log = false
EOF
case $RATE_LIMIT in
    on) limits='enabled = true
per_second = 1e9
burst = 1000000' ;;
    off) limits='enabled = false' ;;
    default) limits='enabled = true' ;;
    *) log "RATE_LIMIT must be on, off or default"; exit 2 ;;
esac
printf '[revoke.rate_limit]\n%s\n[admin.rate_limit]\n%s\n' "$limits" "$limits" >>"$WORK/revgate.toml"
"$REVGATE" run --config "$WORK/revgate.toml" --upstream http://127.0.0.1:9 \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --journal "$WORK/revocations.journal" \
    --revoke-mode terminate >"$WORK/revgate.out" 2>"$WORK/revgate.err" &
PIDS+=($!)
deadline=$((SECONDS + 30))
until grep -q '"listening"' "$WORK/revgate.out" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { log "revgate did not start"; cat "$WORK/revgate.err" >&2; exit 1; }
    sleep 0.1
done
line=$(grep -m1 '"listening"' "$WORK/revgate.out")
LISTEN=http://$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["listen"])' "$line")
ADMIN=http://$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["admin"])' "$line")

probe() { # endpoint -> HTTP status of one revocation
    case $1 in
        rfc7009) curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST \
            -H 'content-type: application/x-www-form-urlencoded' \
            --data "token=probe-$RANDOM-$RANDOM&token_type_hint=access_token" "$LISTEN/oauth/revoke" ;;
        admin) curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST \
            -H 'content-type: application/json' \
            --data "{\"token\":\"probe-$RANDOM-$RANDOM\"}" "$ADMIN/admin/v1/revocations" ;;
    esac
}
if [ "$ENDPOINT" = auto ]; then
    code=$(probe rfc7009 || true)
    if [ "$code" = 200 ]; then
        ENDPOINT=rfc7009
        AUTO_PROBED=1
    else
        log "POST /oauth/revoke answered $code (the RFC 7009 dialect is not in this build):"
        log "measuring POST /admin/v1/revocations instead (same store path)"
        ENDPOINT=admin
    fi
fi
code=$(probe "$ENDPOINT" || true)
[ "$code" = 200 ] || { log "$ENDPOINT revocation answered $code"; exit 1; }
# Revocations acknowledged outside wrk: the probes (one or two).
PROBES=1
[ "${AUTO_PROBED:-0}" = 1 ] && PROBES=2
case $ENDPOINT in
    rfc7009) URL="$LISTEN/oauth/revoke" ;;
    admin) URL="$ADMIN/admin/v1/revocations" ;;
    *) log "ENDPOINT must be rfc7009 or admin"; exit 2 ;;
esac

cat >"$WORK/revoke.lua" <<'EOF'
-- Each request revokes a token never seen before: a per-thread random
-- prefix and a counter. Counts the answers by status; done() prints them.
local threads = {}
local next_id = 1
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end
local mode, prefix
local n = 0
ok, other = 0, 0
function init(args)
  mode = args[1]
  math.randomseed(os.time() + id * 7919)
  prefix = string.format("rr-%d-%d-%d-", id, os.time(), math.random(1, 2^30))
end
function request()
  n = n + 1
  local tok = prefix .. n
  if mode == "admin" then
    return wrk.format("POST", nil, { ["Content-Type"] = "application/json" },
      '{"token":"' .. tok .. '"}')
  end
  return wrk.format("POST", nil, { ["Content-Type"] = "application/x-www-form-urlencoded" },
    "token=" .. tok .. "&token_type_hint=access_token")
end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local okc, otherc = 0, 0
  for _, t in ipairs(threads) do
    okc = okc + t:get("ok")
    otherc = otherc + t:get("other")
  end
  io.write(string.format("ACKED %d OTHER %d SECONDS %.3f P50_US %d P99_US %d\n",
    okc, otherc, summary.duration / 1e6, latency:percentile(50), latency:percentile(99)))
end
EOF

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
run() { # conns seconds label
    local out="$WORK/wrk-$1-$3.txt"
    timeout $(($2 + 30)) wrk -t1 -c"$1" -d"$2"s --timeout 10s --latency \
        -s "$WORK/revoke.lua" "$URL" -- "$ENDPOINT" >"$out" 2>&1 || {
        log "wrk failed"; cat "$out" >&2; return 1; }
    python3 - "$1" "$out" "$3" >>"$RESULTS" <<'EOF'
import re, sys
conns, path, label = sys.argv[1:4]
if label == "warm":
    conns = "warm-up"
m = re.search(r"ACKED (\d+) OTHER (\d+) SECONDS ([\d.]+) P50_US (\d+) P99_US (\d+)", open(path).read())
acked, other, secs, p50, p99 = int(m[1]), int(m[2]), float(m[3]), int(m[4]), int(m[5])
print(f"{conns}\t{acked}\t{other}\t{secs}\t{acked / secs:.0f}\t{p50 / 1000:.2f}\t{p99 / 1000:.2f}")
EOF
    log "$(tail -1 "$RESULTS" | tr '\t' ' ')"
}

log "rate limits: $RATE_LIMIT; endpoint: $ENDPOINT ($URL); journal on $(df --output=source,fstype "$WORK" | tail -1)"
log "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
run 64 2 warm
for c in $CONNS_LIST; do run "$c" "$DURATION" "$c"; done
journal_bytes=$(stat -c %s "$WORK/revocations.journal")

python3 - "$RESULTS" "$ENDPOINT" "$DURATION" "$TARGET_RATE" "$journal_bytes" \
    "$WORK/revocations.journal" "$PROBES" <<'EOF'
import os, struct, sys
path, endpoint, dur, target, jbytes, journal, probes = sys.argv[1:8]
rows = [l.split("\t") for l in open(path) if l.strip()]
# Every acknowledged revocation must be in the journal: count its records
# (an 8-byte "RVGJ" + version header since issue 10, then framing: u32
# length, u32 crc32, payload).
records = 0
with open(journal, "rb") as f:
    data = f.read()
at = 8 if data[:4] == b"RVGJ" else 0
while at + 8 <= len(data):
    (n,) = struct.unpack_from("<I", data, at)
    if at + 8 + n > len(data):
        break
    at += 8 + n
    records += 1
acked_all = sum(int(r[1]) for r in rows) + int(probes)
warm = [r for r in rows if r[0] == "warm-up"]
rows = [r for r in rows if r[0] != "warm-up"]
print()
print(f"rate limits {os.environ.get('RATE_LIMIT', 'on')}, endpoint {endpoint}, wrk -t1 -d{dur}s per level, unique token per request, journal {int(jbytes) / 2**20:.1f} MiB at the end")
print()
print("| connections | acknowledged (200) | other | revocations/s | p50 ms | p99 ms |")
print("|---:|---:|---:|---:|---:|---:|")
best = 0
for conns, acked, other, secs, rate, p50, p99 in rows:
    best = max(best, int(rate))
    print(f"| {conns} | {acked} | {other} | {rate} | {p50} | {p99.strip()} |")
print()
print(f"journal: {records} records; acknowledged in this run (levels, warm-up, probes): {acked_all}: "
      f"{'every acknowledged revocation is in the journal' if records >= acked_all else 'MISSING RECORDS'}")
print(f"RESULT revocations_per_second: {best} (best level), target >= {target}: {'MET' if best >= int(target) else 'MISSED'}")
EOF
