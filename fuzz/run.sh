#!/usr/bin/env bash
# Runs fuzz targets two at a time, niced (the machine is shared), each for
# SECONDS seconds, with the limits of issue 10: rss 2 GiB, 10 s per input.
# Usage: fuzz/run.sh SECONDS [TARGET...]   (default: every target)
# Logs: fuzz/logs/<target>.log (not committed); the summary line of each run
# (executions, coverage, corpus) is printed at the end.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:?seconds}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(ls fuzz_targets | sed 's/\.rs$//')
fi
mkdir -p logs
printf '%s\n' "${targets[@]}" | xargs -P 2 -I{} sh -c \
  "nice -n 10 cargo +nightly fuzz run {} -- -max_total_time=$secs -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 > logs/{}.log 2>&1; echo \"{} exit \$?\""
for t in "${targets[@]}"; do
  echo "== $t: $(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' logs/$t.log | tail -1)"
  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' logs/$t.log || true
  grep -E 'ERROR|panicked|deadly signal|Test unit written' logs/$t.log || true
  echo "   corpus files: $(ls corpus/$t | wc -l), $(du -sk corpus/$t | cut -f1) KiB"
done
