#!/usr/bin/env bash
# Memory per idle keep-alive connection of Gatehouse, HTTP/1.1 and HTTP/2.
#
#   benches/instructions/idle.sh            # N=10000 connections of each kind
#   N=2000 NO_BUILD=1 benches/instructions/idle.sh
#
# Gatehouse (release, not under valgrind; 1 thread, access log off, /api/ to one
# keep-alive Nginx backend) serves a plain listener and a TLS listener with h2.
# For each protocol, in a fresh Gatehouse: RSS after 200 warm-up requests, then N connections each
# with one GET /api/hello answered in full (idle_client.py), RSS 1 s later;
# per connection = (RSS_N - RSS_0) / N. Writes OUT/idle.json and idle.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
BIN="$TARGET_DIR/release/gatehouse"
OUT="${OUT:-$REPO/target/bench-instructions}"
N="${N:-10000}"
NO_BUILD="${NO_BUILD:-0}"

log() { printf '>> %s\n' "$*" >&2; }

command -v nginx >/dev/null 2>&1 || {
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null
}
if [ "$NO_BUILD" != 1 ]; then
  (cd "$REPO" && cargo build --release --locked --bin gatehouse)
fi
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }

HARD="$(ulimit -Hn)"; [ "$HARD" = unlimited ] && HARD=1048576
ulimit -n "$HARD"
if [ "$HARD" -lt $((N + 500)) ]; then N=$((HARD - 500)); log "ulimit -Hn $HARD: N lowered to $N"; fi

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"  # absolute: the proxies run in $WORK
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
bench_work_dir idle

read -r HTTP_PORT HTTPS_PORT BACKEND_PORT < <(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')

mkdir -p "$WORK/tmp"
cat >"$WORK/backend.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 4096;
pid $WORK/backend.pid;
error_log $WORK/backend-error.log warn;
events { worker_connections 2048; }
http {
    client_body_temp_path $WORK/tmp; proxy_temp_path $WORK/tmp; fastcgi_temp_path $WORK/tmp;
    uwsgi_temp_path $WORK/tmp; scgi_temp_path $WORK/tmp;
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000000;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        location / { default_type text/plain; return 200 "hello from the backend\\n"; }
    }
}
EOF
"$BIN" cert --host localhost --out "$WORK/certs" >/dev/null
cat >"$WORK/gatehouse.toml" <<EOF
[server]
threads = 1
grace_period = "1s"
pid_file = "$WORK/gatehouse.pid"
upgrade_sock = "$WORK/gatehouse_upgrade.sock"
access_log = "off"
keepalive_timeout = "75s"

[http]
listen = ["127.0.0.1:$HTTP_PORT"]
redirect_to_https = false

[https]
listen = ["127.0.0.1:$HTTPS_PORT"]
cert = "$WORK/certs/server.crt"
key = "$WORK/certs/server.key"
self_signed = false
http2 = true

[headers]

[[route]]
prefix = "/api/"
upstream = "backend"
strip_prefix = true

[upstream.backend]
servers = ["127.0.0.1:$BACKEND_PORT"]
balance = "round_robin"
connect_timeout = "2s"
read_timeout = "30s"
idle_timeout = "60s"
retries = 2
EOF
"$BIN" check -c "$WORK/gatehouse.toml" >/dev/null

nginx -c "$WORK/backend.conf" -p "$WORK" -e "$WORK/backend-error.log" &
PIDS+=($!)
start_gatehouse() {  # a fresh process per protocol: memory freed by the other is not reused
  (cd "$WORK" && RUST_LOG="${RUST_LOG:-error}" exec "$BIN" run -c "$WORK/gatehouse.toml") >>"$WORK/gatehouse.out" 2>&1 &
  GH_PID=$!
  PIDS+=("$GH_PID")
  for _ in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $HTTPS_PORT), 0.2)" 2>/dev/null && break
    sleep 0.1
  done
}

stop_gatehouse() {
  kill -INT "$GH_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$GH_PID" 2>/dev/null || break; sleep 0.1; done
  wait "$GH_PID" 2>/dev/null || true
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$GH_PID/status"; }

declare -A PER
for proto in h1 h2; do
  start_gatehouse
  python3 "$HERE/client.py" 127.0.0.1 "$HTTP_PORT" /api/hello 200 >/dev/null
  sleep 1
  base="$(rss_kib)"
  port="$HTTP_PORT"; [ "$proto" = h2 ] && port="$HTTPS_PORT"
  fifo="$WORK/hold-$proto"
  mkfifo "$fifo"
  python3 "$HERE/idle_client.py" "$proto" 127.0.0.1 "$port" /api/hello "$N" <"$fifo" >"$WORK/$proto.out" &
  client_pid=$!
  exec 9>"$fifo"
  for _ in $(seq 1200); do grep -q READY "$WORK/$proto.out" 2>/dev/null && break; sleep 0.1; done
  read -r _ open failed <"$WORK/$proto.out"
  sleep 1
  held="$(rss_kib)"
  exec 9>&-
  wait "$client_pid" || true
  PER[$proto]="$(python3 -c "print(round(($held - $base) / max($open, 1), 2))")"
  log "$proto: $open idle connections ($failed failed): RSS $base -> $held KiB, ${PER[$proto]} KiB per connection"
  stop_gatehouse
done

python3 - "$OUT" "$N" "${PER[h1]}" "${PER[h2]}" "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'EOF'
import json, os, sys
out, n, h1, h2, commit = sys.argv[1:6]
res = {"commit": commit, "connections": int(n), "h1_kib_per_connection": float(h1),
       "h2_kib_per_connection": float(h2)}
json.dump(res, open(os.path.join(out, "idle.json"), "w"), indent=2)
md = f"""# Gatehouse RSS per idle keep-alive connection

commit {commit}, {n} connections each, one GET /api/hello answered on each

| protocol | KiB per connection |
|---|---:|
| HTTP/1.1 | {h1} |
| HTTP/2 (TLS) | {h2} |
"""
open(os.path.join(out, "idle.md"), "w").write(md)
print(md)
EOF
