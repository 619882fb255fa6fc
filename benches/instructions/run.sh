#!/usr/bin/env bash
# Instructions per proxied request under callgrind: Gatehouse against Nginx.
#
#   benches/instructions/run.sh               # both proxies, prints the numbers and the ratio
#   benches/instructions/run.sh --annotate    # also the top inclusive functions of Gatehouse
#   ONLY=gatehouse benches/instructions/run.sh   # skip the Nginx side
#
# Method (deterministic to well under 1 % on a noisy machine): the proxy runs under
# `valgrind --tool=callgrind` with 1 worker thread, a plain HTTP/1.1 listener, access log
# off and one route /api/ to one keep-alive backend (an Nginx `return 200`, not under
# valgrind). A client sends BASE requests on one keep-alive connection, one at a time,
# then the proxy is stopped with SIGINT (Gatehouse exits through std::process::exit and
# callgrind still writes its totals at exit). A second run sends BASE + COUNT requests.
#   instructions per request = (total(BASE + COUNT) - total(BASE)) / COUNT
# Start-up, the first connections and shutdown cancel out.
#
# With --annotate, one more Gatehouse run is profiled only over the COUNT requests
# (callgrind_control --zero after BASE requests, --dump after BASE + COUNT) and
# `callgrind_annotate --inclusive=yes` of that dump is written and its top printed.
#
# Environment (defaults in brackets):
#   BASE [300]    requests of the short run (the first ones warm the pool and caches)
#   COUNT [2000]  extra requests of the long run
#   ONLY [both]   gatehouse | nginx | both
#   TOP [40]      lines of the annotation printed with --annotate
#   NO_BUILD [0]  1: use the existing release binary
#   REQ_PATH [/api/hello]  /static/1k.txt counts a static 1 KiB file instead (Gatehouse only)
#   REQ_FIELDS [plain]     plain: Host, User-Agent, Accept; browser: the 14 fields (552
#                          bytes, a cookie) of a browser's fetch() (client.py)
#   OUT [target/bench-instructions]   result directory (result.md, result.json, callgrind files)
#   CARGO_TARGET_DIR                   where the release binary is built (default target/)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
BIN="$TARGET_DIR/release/gatehouse"
OUT="${OUT:-$REPO/target/bench-instructions}"
BASE="${BASE:-300}"
COUNT="${COUNT:-2000}"
ONLY="${ONLY:-both}"
TOP="${TOP:-40}"
NO_BUILD="${NO_BUILD:-0}"
# What each request asks for: /api/hello (proxied) or /static/1k.txt (a 1 KiB
# static file, Gatehouse only: the Nginx side always proxies).
REQ_PATH="${REQ_PATH:-/api/hello}"
REQ_FIELDS="${REQ_FIELDS:-plain}"
ANNOTATE=0
for arg in "$@"; do
  case "$arg" in
    --annotate) ANNOTATE=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { printf '>> %s\n' "$*" >&2; }

# ---------------------------------------------------------------- tools
need_pkgs=()
command -v valgrind >/dev/null 2>&1 || need_pkgs+=(valgrind)
command -v nginx >/dev/null 2>&1 || need_pkgs+=(nginx)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
if [ "$NO_BUILD" != 1 ]; then command -v cmake >/dev/null 2>&1 || need_pkgs+=(cmake); fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  log "installing ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# ---------------------------------------------------------------- build
if [ "$NO_BUILD" != 1 ]; then
  log "cargo build --release --locked (target dir $TARGET_DIR)"
  (cd "$REPO" && cargo build --release --locked --bin gatehouse)
fi
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }

# ---------------------------------------------------------------- work dir, cleanup
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"  # absolute: the proxies run in $WORK
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
bench_work_dir instr
mkdir -p "$WORK/site" && head -c 1024 /dev/zero | tr "\\0" "a" > "$WORK/site/1k.txt"

read -r PROXY_PORT BACKEND_PORT < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*[s.getsockname()[1] for s in socks])
EOF
)

# ---------------------------------------------------------------- configs
mkdir -p "$WORK/tmp/client_body" "$WORK/tmp/proxy" "$WORK/tmp/fastcgi" "$WORK/tmp/uwsgi" "$WORK/tmp/scgi"
nginx_temps="
    client_body_temp_path $WORK/tmp/client_body;
    proxy_temp_path $WORK/tmp/proxy;
    fastcgi_temp_path $WORK/tmp/fastcgi;
    uwsgi_temp_path $WORK/tmp/uwsgi;
    scgi_temp_path $WORK/tmp/scgi;"

cat >"$WORK/backend.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/backend.pid;
error_log $WORK/backend-error.log warn;
events { worker_connections 1024; }
http {$nginx_temps
    access_log off;
    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 1000000000;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        location / {
            default_type text/plain;
            return 200 "hello from the backend\\n";
        }
    }
}
EOF

cat >"$WORK/gatehouse.toml" <<EOF
# benches/instructions: 1 thread, plain HTTP/1.1, access log off, /api/ to one backend.
[server]
threads = 1
grace_period = "1s"
pid_file = "$WORK/gatehouse.pid"
upgrade_sock = "$WORK/gatehouse_upgrade.sock"
access_log = "off"
keepalive_timeout = "75s"

[http]
listen = ["127.0.0.1:$PROXY_PORT"]
redirect_to_https = false

[headers]

[[route]]
prefix = "/api/"
upstream = "backend"
strip_prefix = true

[[route]]
prefix = "/static/"
static = "site"
strip_prefix = true

[static.site]
root = "$WORK/site"

[upstream.backend]
servers = ["127.0.0.1:$BACKEND_PORT"]
balance = "round_robin"
connect_timeout = "2s"
read_timeout = "30s"
idle_timeout = "60s"
retries = 2
# no health section: no active health checks
EOF

# The same job for Nginx: one worker, no master (so the worker is the process under
# callgrind), upstream keep-alive, the forwarding headers of benches/load.
cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {$nginx_temps
    access_log off;
    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 1000000000;
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
        keepalive_requests 1000000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        location /api/ {
            proxy_pass http://backend/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
        }
    }
}
EOF

"$BIN" check -c "$WORK/gatehouse.toml" >/dev/null
nginx -t -q -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log"
nginx -t -q -c "$WORK/backend.conf" -p "$WORK" -e "$WORK/backend-error.log"

# ---------------------------------------------------------------- helpers
listening() {  # port: true once something listens on 127.0.0.1:port (no connection made)
  python3 - "$1" <<'EOF'
import sys
port = int(sys.argv[1])
for path in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(path).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        f = line.split()
        if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
            sys.exit(0)
sys.exit(1)
EOF
}

wait_listening() {  # port pid
  for _ in $(seq 600); do
    listening "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "process $2 exited before listening" >&2; return 1; }
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

wait_exit() {  # pid
  for _ in $(seq 1200); do
    kill -0 "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  echo "process $1 did not exit" >&2
  return 1
}

total_of() {  # callgrind output file: the instruction total
  local t
  t="$(sed -n 's/^totals: *\([0-9]*\).*/\1/p; s/^summary: *\([0-9]*\).*/\1/p' "$1" | tail -1)"
  [ -n "$t" ] || { echo "no totals in $1" >&2; return 1; }
  echo "$t"
}

# start_proxy NAME OUTFILE [extra valgrind args]: sets PROXY_PID
start_proxy() {
  local name="$1" outfile="$2"; shift 2
  local cmd
  if [ "$name" = gatehouse ]; then
    cmd=("$BIN" run -c "$WORK/gatehouse.toml")
  else
    cmd=(nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log")
  fi
  (cd "$WORK" && RUST_LOG="${RUST_LOG:-warn}" exec valgrind --tool=callgrind \
      --callgrind-out-file="$outfile" "$@" "${cmd[@]}") >>"$WORK/$name.out" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_listening "$PROXY_PORT" "$PROXY_PID"
}

stop_proxy() {
  sleep 0.5
  kill -INT "$PROXY_PID"
  wait_exit "$PROXY_PID"
}

client() {  # n
  python3 "$HERE/client.py" 127.0.0.1 "$PROXY_PORT" "$REQ_PATH" "$1" "$REQ_FIELDS" >/dev/null
}

# measure NAME: sets PER_REQUEST (instructions per request); leaves the totals in $OUT
measure() {
  local name="$1" n t_short t_long
  for n in "$BASE" "$((BASE + COUNT))"; do
    log "$name under callgrind: $n requests"
    rm -f "$OUT/$name-$n.callgrind"
    start_proxy "$name" "$OUT/$name-$n.callgrind"
    client "$n"
    stop_proxy
  done
  t_short="$(total_of "$OUT/$name-$BASE.callgrind")"
  t_long="$(total_of "$OUT/$name-$((BASE + COUNT)).callgrind")"
  PER_REQUEST=$(( (t_long - t_short + COUNT / 2) / COUNT ))
}

# ---------------------------------------------------------------- backend
nginx -c "$WORK/backend.conf" -p "$WORK" -e "$WORK/backend-error.log" &
PIDS+=($!)
wait_listening "$BACKEND_PORT" "$!"

GH=""
NGX=""
if [ "$ONLY" != nginx ]; then measure gatehouse; GH="$PER_REQUEST"; log "gatehouse: $GH instructions/request"; fi
if [ "$ONLY" != gatehouse ]; then measure nginx; NGX="$PER_REQUEST"; log "nginx: $NGX instructions/request"; fi

if [ "$ANNOTATE" = 1 ] && [ "$ONLY" != nginx ]; then
  log "gatehouse profile over $COUNT requests (after $BASE)"
  prof="$OUT/gatehouse-profile.callgrind"
  rm -f "$prof" "$prof".*
  start_proxy gatehouse "$prof" --compress-strings=no --compress-pos=no
  client "$BASE"
  callgrind_control --zero "$PROXY_PID" >/dev/null
  client "$COUNT"
  callgrind_control --dump=measured "$PROXY_PID" >/dev/null
  stop_proxy
  dump="$(ls "$prof".* 2>/dev/null | head -1)"
  [ -n "$dump" ] || { echo "callgrind_control --dump wrote nothing" >&2; exit 1; }
  callgrind_annotate --inclusive=yes "$dump" >"$OUT/gatehouse-inclusive.txt"
  callgrind_annotate --inclusive=no "$dump" >"$OUT/gatehouse-self.txt"
  callgrind_annotate --inclusive=yes --tree=caller "$dump" >"$OUT/gatehouse-callers.txt"
  log "profile total over $COUNT requests: $(total_of "$dump") ($(($(total_of "$dump") / COUNT))/request)"
  log "top inclusive functions ($OUT/gatehouse-inclusive.txt; self: gatehouse-self.txt; callers: gatehouse-callers.txt):"
  grep -m "$TOP" -E '^ *[0-9,]+ \(' "$OUT/gatehouse-inclusive.txt" | cut -c1-220
fi

# ---------------------------------------------------------------- results
python3 - "$OUT" "$GH" "$NGX" "$BASE" "$COUNT" "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" "$REQ_PATH" "$REQ_FIELDS" <<'EOF'
import json, os, sys, time
out, gh, ngx, base, count, commit, req_path, req_fields = sys.argv[1:9]
gh = int(gh) if gh else None
ngx = int(ngx) if ngx else None
ratio = round(gh / ngx, 2) if gh and ngx else None
res = {
    "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    "commit": commit,
    "base_requests": int(base),
    "counted_requests": int(count),
    "request": {"path": req_path, "fields": req_fields},
    "gatehouse_instructions_per_request": gh,
    "nginx_instructions_per_request": ngx,
    "ratio": ratio,
}
with open(os.path.join(out, "result.json"), "w") as f:
    json.dump(res, f, indent=2)
    f.write("\n")
fmt = lambda v: f"{v:,}" if isinstance(v, int) else "-"
md = f"""# Instructions per proxied request (callgrind)

{res['date']}, commit {commit}; (total({int(base) + int(count)}) - total({base})) / {count},
1 thread, plain HTTP/1.1 keep-alive, access log off, one keep-alive backend;
GET {req_path} with the {req_fields} header fields (benches/instructions/client.py).

| proxy | instructions/request |
|---|---:|
| Gatehouse | {fmt(gh)} |
| Nginx | {fmt(ngx)} |
| ratio | {ratio if ratio is not None else '-'} |
"""
with open(os.path.join(out, "result.md"), "w") as f:
    f.write(md)
print(md)
EOF
