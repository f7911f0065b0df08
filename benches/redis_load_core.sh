#!/usr/bin/env bash
# benches/redis_load_core.sh — the core issue's load benchmark
# (benches/load.sh) run twice: once as it is (embedded store), once with
# the Redis store selected through the environment (REVGATE_STORE=redis://...,
# REVGATE_FINGERPRINT_KEY), which load.sh passes through to every revgate it
# starts. Prints both tables and the ratio of revgate's median req/s.
#
# Usage: benches/redis_load_core.sh   (env is passed to load.sh: ROUNDS,
#        DURATION, CONNS, TOKENS, TARGETS (default "nginx revgate"), SKIP_BUILD)
# Starts one redis-server on a free port; killed on exit (trap), as is
# everything load.sh starts (its own trap).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$ROOT/benches/load.sh" ] || { echo "benches/load.sh is missing (merge main)" >&2; exit 1; }
export TARGETS=${TARGETS:-"nginx revgate"}
WORK=$(mktemp -d /tmp/revgate-redis-core.XXXXXX)
RPID=""
cleanup() {
    [ -n "$RPID" ] && kill "$RPID" 2>/dev/null || true
    sleep 0.2
    [ -n "$RPID" ] && kill -9 "$RPID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --maxmemory-policy noeviction --dir "$WORK" --logfile redis.log &
RPID=$!
for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$PORT" ping >/dev/null

echo "== embedded store =="
env -u REVGATE_STORE "$ROOT/benches/load.sh" | tee "$WORK/embedded.txt"
echo "== Redis store (REVGATE_STORE=redis://127.0.0.1:$PORT/0) =="
REVGATE_STORE="redis://127.0.0.1:$PORT/0" \
REVGATE_FINGERPRINT_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))') \
    "$ROOT/benches/load.sh" | tee "$WORK/redis.txt"
echo "redis: $(redis-cli -p "$PORT" dbsize) keys"
python3 - "$WORK/embedded.txt" "$WORK/redis.txt" <<'PY'
import re, sys
def row(path, target):
    # | target | req/s | p50 | p99 | non-2xx | CPU us/req | ...
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == target:
            return float(cells[1]), float(cells[5])
    return None
e, r = row(sys.argv[1], "revgate"), row(sys.argv[2], "revgate")
if not e or not r:
    raise SystemExit("no revgate row")
print(f"RESULT revgate req/s: embedded {e[0]:.0f}, redis {r[0]:.0f}, ratio {r[0] / e[0]:.3f} "
      f"(target >= 0.95: {'MET' if r[0] / e[0] >= 0.95 else 'MISSED'})")
print(f"RESULT revgate CPU us/req: embedded {e[1]:.1f}, redis {r[1]:.1f}, ratio {r[1] / e[1]:.3f}")
en, rn = row(sys.argv[1], "nginx"), row(sys.argv[2], "nginx")
if en and rn:
    ratio = (r[0] / rn[0]) / (e[0] / en[0])
    print(f"RESULT normalised to nginx in the same run: redis (revgate/nginx {r[0] / rn[0]:.3f}) / "
          f"embedded (revgate/nginx {e[0] / en[0]:.3f}) = {ratio:.3f}")
PY
