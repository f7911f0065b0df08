#!/usr/bin/env bash
# benches/chaos_soak.sh — the chaos test of tests/chaos.rs (issue 10, item 6),
# longer: three revgate instances on one redis-server (AOF, appendfsync
# always) under load, revoking throughout, with kill -9 of instances and of
# redis-server at random points. It runs the #[ignore]d `chaos_soak` test,
# which prints the counts (acknowledged, lost, forwarded after apply, kills
# of each kind) and fails on any loss or forwarded revoked request.
#
# Usage: benches/chaos_soak.sh   (env: CHAOS_ROUNDS=200 CHAOS_SECONDS=300
#                                 CHAOS_SEED=<a printed seed> to replay)
# Everything on loopback, on ports the OS picks; every process the test
# starts is killed when it ends. Needs redis-server.

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CHAOS_ROUNDS=${CHAOS_ROUNDS:-200}
export CHAOS_SECONDS=${CHAOS_SECONDS:-300}
# The test's own cap bounds the chaos phase; this bounds the whole run
# (build excluded) should anything hang.
LIMIT=$((CHAOS_SECONDS + 300))

cargo test --test chaos --no-run
echo "chaos soak: CHAOS_ROUNDS=$CHAOS_ROUNDS CHAOS_SECONDS=$CHAOS_SECONDS ${CHAOS_SEED:+CHAOS_SEED=$CHAOS_SEED} ($(date -u +%F))"
LOG=target/chaos_soak.log
status=0
timeout "$LIMIT" cargo test --test chaos -- --ignored chaos_soak --nocapture >"$LOG" 2>&1 || status=$?
grep -E '^chaos:|test result' "$LOG" || true
if [ "$status" -ne 0 ]; then
  echo "chaos soak FAILED (exit $status); the end of $LOG:"
  tail -n 40 "$LOG"
fi
exit "$status"
