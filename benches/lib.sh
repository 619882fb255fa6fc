# Sourced by the benchmark scripts: one work dir under /tmp and the
# processes started for the run, all stopped and removed on exit (also on
# failure and on Ctrl-C).
#
#   bench_work_dir NAME   sets WORK (/tmp/gatehouse-NAME.XXXXXX) and PIDS, installs the traps
#   PIDS+=("$pid")        for every process the script starts
#   KEEP_WORK=1           keeps the work dir and prints its path

bench_work_dir() {
  WORK="$(mktemp -d "/tmp/gatehouse-$1.XXXXXX")"
  PIDS=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

# TERM to every process, KILL to those still there after 5 s, then the work dir.
bench_cleanup() {
  local rc=$?
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "${KEEP_WORK:-0}" = 1 ]; then
    printf '>> work dir kept: %s\n' "$WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
