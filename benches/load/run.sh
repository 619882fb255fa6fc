#!/usr/bin/env bash
# Side-by-side load benchmark: Gatehouse against Nginx, same job, same backend.
#
#   benches/load/run.sh                 # defaults: 8 rounds x 2 s per scenario, ~5-7 min
#   ROUNDS=12 DURATION=3 benches/load/run.sh
#   SCENARIOS=1,4 PROFILE=1 benches/load/run.sh   # + perf profile of Gatehouse for 1 and 4
#
# Environment (defaults in brackets):
#   ROUNDS [8]        rounds per scenario and proxy (alternating G, N, G, N, ...)
#   DURATION [2]      seconds per round (whole seconds)
#   WARMUP [1]        unrecorded seconds per proxy before each scenario
#   WORKERS [1]       Gatehouse server.threads = Nginx worker_processes
#   CONNS [32]        wrk connections;  WRK_THREADS [1] wrk threads
#   H2_CLIENTS [16]   h2load connections;  H2_STREAMS [32] streams per connection
#   IDLE_CONNS [10000] idle connections for scenarios 7 and 9;  IDLE_ROUNDS [2] (scenario 7)
#   IDLE_H2_ROUNDS [1] rounds of scenario 9 (10k TLS handshakes per round and proxy)
#   HS_CONNS [128]    scenario 6: connections (= requests) per h2load run
#   SCENARIOS [1,2,3,4,5,6,8,7,9]  1 api plain, 2 api TLS, 3 api h2, 4 static 1 KiB, 5 static 1 MiB,
#                     6 full TLS handshake per request, 8 resumed TLS handshake per request,
#                     7 idle connections (RSS), 9 idle HTTP/2 TLS connections (RSS)
#   PROFILE [0]       1: perf record (DWARF call graphs) of Gatehouse under scenarios 1 and 4,
#                     after their rounds, plus syscalls per request of both proxies
#   PROFILE_DURATION [4]
#   KEEP_WORK [0]     1: keep the temp dir (configs, logs) and print its path
#   NO_BUILD [0]      1: skip `cargo build --release` (use the existing binary)
#   RESULTS [target/bench-results]  where latest.{md,json,svg} go (copy them to benches/results/ to commit a result on purpose)
#
# Writes target/bench-results/latest.{md,json,svg} (and perf-*.txt with PROFILE=1).
# Everything listens on 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
RESULTS="${RESULTS:-$REPO/target/bench-results}"
BIN="$REPO/target/release/gatehouse"

ROUNDS="${ROUNDS:-8}"
DURATION="${DURATION:-2}"
WARMUP="${WARMUP:-1}"
WORKERS="${WORKERS:-1}"
CONNS="${CONNS:-32}"
WRK_THREADS="${WRK_THREADS:-1}"
H2_CLIENTS="${H2_CLIENTS:-16}"
H2_STREAMS="${H2_STREAMS:-32}"
IDLE_CONNS="${IDLE_CONNS:-10000}"
IDLE_ROUNDS="${IDLE_ROUNDS:-2}"
IDLE_H2_ROUNDS="${IDLE_H2_ROUNDS:-1}"
SCENARIOS="${SCENARIOS:-1,2,3,4,5,6,8,7,9}"
HS_CONNS="${HS_CONNS:-128}"
PROFILE="${PROFILE:-0}"
PROFILE_DURATION="${PROFILE_DURATION:-4}"
KEEP_WORK="${KEEP_WORK:-0}"
NO_BUILD="${NO_BUILD:-0}"

log() { printf '>> %s\n' "$*" >&2; }

# ---------------------------------------------------------------- tools
need_pkgs=()
command -v nginx >/dev/null 2>&1 || need_pkgs+=(nginx)
command -v wrk >/dev/null 2>&1 || need_pkgs+=(wrk)
command -v h2load >/dev/null 2>&1 || need_pkgs+=(nghttp2-client)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
command -v cmake >/dev/null 2>&1 || need_pkgs+=(cmake)
if [ "$PROFILE" = 1 ] && ! command -v perf >/dev/null 2>&1; then need_pkgs+=(linux-perf); fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  log "installing ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
# The Debian nginx package starts a system instance on port 80; it is not ours and is
# left alone (we only use our own configs and ports).

# ---------------------------------------------------------------- build
if [ "$NO_BUILD" != 1 ]; then
  log "cargo build --release"
  (cd "$REPO" && cargo build --release --bin gatehouse)
fi
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }

# ---------------------------------------------------------------- temp dir, cleanup
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
bench_work_dir bench
chmod 755 "$WORK"   # Nginx workers run as the default unprivileged user and read the site

# Idle-connection scenario needs many descriptors (hard limit may be capped in containers).
HARD_NOFILE="$(ulimit -Hn)"
[ "$HARD_NOFILE" = unlimited ] && HARD_NOFILE=1048576
ulimit -n "$HARD_NOFILE"
if [ "$HARD_NOFILE" -lt $((IDLE_CONNS + 200)) ]; then
  log "ulimit -Hn is $HARD_NOFILE: IDLE_CONNS lowered to $((HARD_NOFILE - 200))"
  IDLE_CONNS=$((HARD_NOFILE - 200))
fi
NOFILE=$HARD_NOFILE
[ "$NOFILE" -gt 65536 ] && NOFILE=65536

# ---------------------------------------------------------------- ports, certs, configs
read -r GH_HTTP GH_HTTPS NGX_HTTP NGX_HTTPS BACKEND < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(5):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*[s.getsockname()[1] for s in socks])
EOF
)
log "ports: gatehouse $GH_HTTP/$GH_HTTPS, nginx $NGX_HTTP/$NGX_HTTPS, backend $BACKEND; work dir $WORK"

"$BIN" cert --host localhost --host 127.0.0.1 --out "$WORK/certs" >/dev/null
python3 "$HERE/gen_configs.py" "$WORK" --workers "$WORKERS" --site "$WORK/site" \
  --backend-port "$BACKEND" --gh-http-port "$GH_HTTP" --gh-https-port "$GH_HTTPS" \
  --ngx-http-port "$NGX_HTTP" --ngx-https-port "$NGX_HTTPS" \
  --cert "$WORK/certs/server.crt" --key "$WORK/certs/server.key" --nofile "$NOFILE" >/dev/null
"$BIN" check -c "$WORK/gatehouse.toml" >/dev/null
nginx -t -q -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log"
nginx -t -q -c "$WORK/backend.conf" -p "$WORK" -e "$WORK/backend-error.log"

# ---------------------------------------------------------------- start
nginx -c "$WORK/backend.conf" -p "$WORK" -e "$WORK/backend-error.log" &
PIDS+=($!); BACKEND_PID=$!
nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log" &
PIDS+=($!); NGX_PID=$!
(cd "$WORK" && RUST_LOG="${RUST_LOG:-warn}" exec "$BIN" run -c "$WORK/gatehouse.toml") \
  >"$WORK/gatehouse.out" 2>&1 &
PIDS+=($!); GH_PID=$!

wait_http() {  # url
  for _ in $(seq 100); do
    if python3 - "$1" <<'EOF' 2>/dev/null; then return 0; fi
import ssl, sys, urllib.request
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
with urllib.request.urlopen(sys.argv[1], timeout=1, context=ctx) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
    sleep 0.1
  done
  echo "not answering: $1" >&2
  return 1
}
for url in "http://127.0.0.1:$BACKEND/" \
           "http://127.0.0.1:$GH_HTTP/api/hello" "https://127.0.0.1:$GH_HTTPS/small.txt" \
           "http://127.0.0.1:$NGX_HTTP/api/hello" "https://127.0.0.1:$NGX_HTTPS/small.txt"; do
  wait_http "$url" || { tail -n 20 "$WORK"/*.log "$WORK/gatehouse.out" >&2 || true; exit 1; }
done
log "all up (gatehouse pid $GH_PID, nginx master pid $NGX_PID, backend pid $BACKEND_PID)"

# ---------------------------------------------------------------- run
mkdir -p "$RESULTS"
profile_flag=()
[ "$PROFILE" = 1 ] && profile_flag=(--profile --profile-duration "$PROFILE_DURATION")
python3 "$HERE/bench.py" --work "$WORK" --results "$RESULTS" \
  --gh-pid "$GH_PID" --ngx-pid "$NGX_PID" --backend-pid "$BACKEND_PID" \
  --gh-http-port "$GH_HTTP" --gh-https-port "$GH_HTTPS" \
  --ngx-http-port "$NGX_HTTP" --ngx-https-port "$NGX_HTTPS" \
  --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" --workers "$WORKERS" \
  --conns "$CONNS" --wrk-threads "$WRK_THREADS" \
  --h2-clients "$H2_CLIENTS" --h2-streams "$H2_STREAMS" \
  --idle-conns "$IDLE_CONNS" --idle-rounds "$IDLE_ROUNDS" --idle-h2-rounds "$IDLE_H2_ROUNDS" --scenarios "$SCENARIOS" \
  --hs-conns "$HS_CONNS" \
  "${profile_flag[@]}"

log "wrote $RESULTS/latest.md, latest.json, latest.svg"
