#!/usr/bin/env bash
# Compression against Nginx `gzip on` (levels 1 and 6): bytes on the wire and
# server CPU per request, on the same static JavaScript bundle and the same
# proxied JSON answer. See bench.py for the method.
#
#   benches/compression/run.sh            # builds the release binary, then measures
#   NO_BUILD=1 benches/compression/run.sh
#
# Environment: REQUESTS [1000] per case and round, ROUNDS [3], WARMUP [50],
# OUT [target/bench-compression] (result.md, result.json, configs, logs),
# SERVERS (e.g. "gatehouse"; default gatehouse,nginx-gzip1,nginx-gzip6),
# PATHS (e.g. "/api/users.json"; default both files),
# CARGO_TARGET_DIR (where the release binary is built; default target/).
# Needs nginx and python3 (`bash .ci/deps.sh --test` installs nginx).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
OUT="${OUT:-$REPO/target/bench-compression}"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || {
  echo "nginx is missing: bash .ci/deps.sh --test" >&2; exit 1; }
export PATH="$PATH:/usr/sbin"
if [ "${NO_BUILD:-0}" != 1 ]; then
  (cd "$REPO" && cargo build --release --offline)
fi
python3 "$HERE/bench.py" --gatehouse "$TARGET_DIR/release/gatehouse" --out "$OUT"
