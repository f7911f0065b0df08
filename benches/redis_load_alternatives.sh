#!/usr/bin/env bash
# benches/redis_load_alternatives.sh — what a start-up load of N token rules
# costs inside Redis with the store's layout (one key per rule, SCAN) and with
# two layouts it could use instead, to size the fix for a slow cold start:
#   keys   : N keys `{revgate}:tok:<32 hex>` with EXPIREAT (the store's layout), SCAN COUNT 10000
#   set    : the N fingerprints (16 raw bytes) as members of one SET, SSCAN COUNT 10000
#   blob   : one STRING of N*10 bits (a 1%-fp bloom filter's size), GET
# Prints Redis's own time (INFO commandstats) and redis-cli's wall time.
# Usage: benches/redis_load_alternatives.sh [N=1000000]. Stops by itself; the
# redis-server it starts is killed on exit (trap).
set -euo pipefail
N=${1:-1000000}
WORK=$(mktemp -d /tmp/revgate-redis-alt.XXXXXX)
PID=""
cleanup() { if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; sleep 0.2; kill -9 "$PID" 2>/dev/null || true; fi; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" --logfile redis.log &
PID=$!
for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
cli() { timeout 300 redis-cli -p "$PORT" "$@"; }

python3 - "$N" "$WORK/load.resp" <<'PY'
import os, sys, time
n, path = int(sys.argv[1]), sys.argv[2]
exp = str(int(time.time()) + 6 * 3600).encode()
def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out
with open(path, "wb") as f:
    batch = []
    for i in range(n):
        fp = os.urandom(16)
        f.write(resp(b"SET", b"{revgate}:tok:" + fp.hex().encode(), exp, b"EXAT", exp))
        batch.append(fp)
        if len(batch) == 1000:
            f.write(resp(b"SADD", b"{revgate}:fps", *batch)); batch = []
    if batch:
        f.write(resp(b"SADD", b"{revgate}:fps", *batch))
    f.write(resp(b"SET", b"{revgate}:blob", os.urandom(n * 10 // 8)))
PY
cli --pipe <"$WORK/load.resp" >/dev/null
echo "N=$N; DBSIZE $(cli dbsize); SCARD $(cli scard '{revgate}:fps'); load $(cut -d' ' -f1-3 /proc/loadavg)"

usec() { cli info commandstats | tr -d '\r' | grep "^cmdstat_$1:" | sed 's/.*usec=\([0-9]*\).*/\1/'; }
scan_all() { # command key-or-empty
    local cursor=0 calls=0
    while :; do
        if [ "$1" = scan ]; then out=$(cli --no-raw scan "$cursor" match '{revgate}:tok:*' count 10000 | head -1)
        else out=$(cli --no-raw sscan '{revgate}:fps' "$cursor" count 10000 | head -1); fi
        cursor=$(echo "$out" | sed 's/^1) "\(.*\)"$/\1/')
        calls=$((calls + 1))
        [ "$cursor" = 0 ] || [ $calls -gt 100000 ] && break
    done
    echo $calls
}
for what in scan sscan; do
    cli config resetstat >/dev/null
    s=$(date +%s.%N); calls=$(scan_all $what); e=$(date +%s.%N)
    echo "$what: $calls calls, $(python3 -c "print(f'{$(usec $what)/1e6:.3f}')") s inside Redis, $(python3 -c "print(f'{$e-$s:.3f}')") s wall (redis-cli, incl. its printing)"
done
cli config resetstat >/dev/null
s=$(date +%s.%N); cli --raw get '{revgate}:blob' >/dev/null; e=$(date +%s.%N)
echo "get blob ($((N * 10 / 8)) bytes): $(python3 -c "print(f'{$(usec get)/1e6:.3f}')") s inside Redis, $(python3 -c "print(f'{$e-$s:.3f}')") s wall"
echo "memory: $(cli info memory | tr -d '\r' | grep '^used_memory_human')"
