#!/usr/bin/env python3
"""Compression against Nginx `gzip on`: bytes on the wire and server CPU per request.

Run through benches/compression/run.sh (it builds the release binary first).

Files (the same for every server):
  - /assets/bundle.js: ~150 KiB of real minified JavaScript (the rustdoc
    bundles of the installed Rust toolchain: highlight.js, main, search, ...;
    generated JS-like text when the docs are not installed), a static file;
  - /api/users.json: a ~20 KiB JSON answer from a backend (an Nginx serving
    the file, without compression), proxied;
  - /api/bundle.js: the same bundle proxied (a dev server, or an app that
    serves its own assets): compressed per request by every server.

Servers, each with one worker on plain HTTP/1.1 keep-alive:
  - gatehouse: `[compression]` defaults; the static file from its cache
    (variants made once at the best levels), the JSON compressed on the fly;
  - nginx-gzip1 / nginx-gzip6: `gzip on; gzip_comp_level 1|6;`
    (gzip_types application/javascript application/json, gzip_proxied any,
    gzip_min_length 1024, gzip_vary on), the same backend with keep-alive.

For each server, file and Accept-Encoding: WARMUP requests, then REQUESTS
requests one after another on one connection. Reported: body bytes and header
bytes per answer, and CPU per request of the server (all its threads, from
/proc/PID/task/*/schedstat: nanoseconds on CPU, not wall time; the client and
the backend are not counted), the median of ROUNDS interleaved rounds.
"""

import argparse
import glob
import gzip
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, within=20.0):
    deadline = time.time() + within
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited early ({proc.args})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def bundle_js(size):
    """Real minified JavaScript of at least `size` bytes, or generated text."""
    out = b""
    try:
        sysroot = subprocess.check_output(["rustc", "--print", "sysroot"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        sysroot = ""
    static = os.path.join(sysroot, "share/doc/rust/html/static.files")
    highlight = glob.glob(os.path.join(sysroot, "share/doc/rust/html/book/highlight-*.js"))
    files = highlight[:1] + sorted(glob.glob(os.path.join(static, "*.js")))
    for f in files:
        if len(out) >= size:
            break
        with open(f, "rb") as fh:
            out += fh.read() + b"\n"
    source = "rustdoc's minified JavaScript (" + ", ".join(os.path.basename(f) for f in files) + ")"
    if len(out) < size:
        rng = random.Random(7)
        words = ["function", "return", "const", "let", "this", "null", "new", "if", "else",
                 "for", "length", "push", "map", "filter", "value", "event", "target"]
        parts = [out.decode("utf-8", "replace")]
        i = 0
        while sum(len(p) for p in parts) < size:
            a, b = rng.choice(words), rng.choice(words)
            parts.append(f"function e{i}(t,n){{{a}(t&&n.{b})?n[{i % 97}]:t.{a}({i},'{b}');}}")
            i += 1
        out = "".join(parts).encode()
        source = "generated JS-like text"
    return out, source


def users_json():
    rng = random.Random(11)
    first = ["Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Radia", "Edsger"]
    last = ["Lovelace", "Hopper", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie"]
    users = []
    for i in range(95):
        f, l = rng.choice(first), rng.choice(last)
        users.append({
            "id": 1000 + i,
            "name": f"{f} {l}",
            "email": f"{f.lower()}.{l.lower()}{rng.randint(1, 999)}@example.com",
            "active": rng.random() < 0.8,
            "roles": rng.sample(["admin", "editor", "viewer", "billing", "support"], 2),
            "created_at": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
                          f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
            "score": round(rng.random() * 100, 2),
        })
    return json.dumps({"users": users, "page": 1, "per_page": 95, "total": 4312}).encode()


def nginx_conf(out, name, port, body, extra="", workers=1):
    tmp = os.path.join(out, "tmp", name)
    os.makedirs(tmp, exist_ok=True)
    return f"""daemon off;
master_process on;
worker_processes {workers};
pid {out}/{name}.pid;
error_log {out}/{name}-error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
{extra}
    server {{
        listen 127.0.0.1:{port};
{body}
    }}
}}
"""


def start_nginx(out, name, port, body, extra=""):
    path = os.path.join(out, name + ".conf")
    with open(path, "w") as f:
        f.write(nginx_conf(out, name, port, body, extra))
    proc = subprocess.Popen(["nginx", "-c", path, "-p", out], stderr=open(os.path.join(out, name + ".err"), "w"))
    wait_port(port, proc)
    return proc


def children(pid):
    kids = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                kids.append(int(stat.split("/")[2]))
        except (OSError, ValueError, IndexError):
            pass
    return kids


def cpu_ns(pids):
    total = 0
    for pid in pids:
        for task in glob.glob(f"/proc/{pid}/task/*/schedstat"):
            try:
                with open(task) as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError):
                pass
    return total


def fetch(conn, path, accept):
    headers = {"Host": "bench.local"}
    if accept:
        headers["Accept-Encoding"] = accept
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    head = len(f"HTTP/1.1 {r.status} {r.reason}\r\n") + 2
    head += sum(len(k) + len(v) + 4 for k, v in r.getheaders())
    if r.status != 200:
        sys.exit(f"{path} {accept}: status {r.status}")
    return r, body, head


def measure(port, pids, path, accept, requests, warmup, original, ready=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    deadline = time.time() + 30
    for i in range(warmup):
        r, body, _ = fetch(conn, path, accept)
    while ready is not None and not ready(r):
        if time.time() > deadline:
            sys.exit(f"{path} {accept}: never ready ({r.getheaders()})")
        time.sleep(0.05)
        r, body, _ = fetch(conn, path, accept)
    encoding = r.getheader("Content-Encoding") or "identity"
    if encoding == "gzip" and gzip.decompress(body) != original:
        sys.exit(f"{path}: gzip body does not decode to the original")
    if encoding == "identity" and body != original:
        sys.exit(f"{path}: body differs from the original")
    before = cpu_ns(pids)
    sizes, heads = 0, 0
    for _ in range(requests):
        _, body, head = fetch(conn, path, accept)
        sizes += len(body)
        heads += head
    after = cpu_ns(pids)
    conn.close()
    return {
        "encoding": encoding,
        "body_bytes": sizes // requests,
        "header_bytes": heads // requests,
        "cpu_us": (after - before) / requests / 1000.0,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gatehouse", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--requests", type=int, default=int(os.environ.get("REQUESTS", 1000)))
    p.add_argument("--warmup", type=int, default=int(os.environ.get("WARMUP", 50)))
    p.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 3)))
    a = p.parse_args()
    out = os.path.abspath(a.out)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "site/assets"))
    os.makedirs(os.path.join(out, "backend/api"))
    js, js_source = bundle_js(150 * 1024)
    api = users_json()
    with open(os.path.join(out, "site/assets/bundle.js"), "wb") as f:
        f.write(js)
    with open(os.path.join(out, "backend/api/users.json"), "wb") as f:
        f.write(api)
    with open(os.path.join(out, "backend/api/bundle.js"), "wb") as f:
        f.write(js)
    files = {"/assets/bundle.js": js, "/api/users.json": api, "/api/bundle.js": js}

    procs = []

    def stop_all(*_):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGQUIT if "nginx" in proc.args[0] else signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    try:
        backend_port = free_port()
        procs.append(start_nginx(out, "backend", backend_port, f"""
        root {out}/backend;
        location /api/ {{ default_type application/json; }}
"""))
        servers = {}
        for level in (1, 6):
            port = free_port()
            proc = start_nginx(out, f"nginx-gzip{level}", port, f"""
        root {out}/site;
        gzip on;
        gzip_comp_level {level};
        gzip_types application/javascript application/json;
        gzip_min_length 1024;
        gzip_proxied any;
        gzip_vary on;
        location /api/ {{
            proxy_pass http://backend_pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
""", f"""
    upstream backend_pool {{
        server 127.0.0.1:{backend_port};
        keepalive 16;
    }}
""")
            procs.append(proc)
            servers[f"nginx-gzip{level}"] = (port, proc, lambda pid=proc.pid: children(pid))
        port = free_port()
        conf = os.path.join(out, "gatehouse.toml")
        with open(conf, "w") as f:
            f.write(f"""[server]
threads = 1
grace_period = "1s"
access_log = "off"
pid_file = "{out}/gatehouse.pid"
upgrade_sock = "{out}/gatehouse.sock"

[http]
listen = ["127.0.0.1:{port}"]
redirect_to_https = false

[compression]
enabled = true
algorithms = ["zstd", "br", "gzip"]
min_size = "1KiB"
types = ["text/*", "application/json", "application/javascript", "image/svg+xml"]

[[route]]
prefix = "/api/"
upstream = "backend"

[upstream.backend]
servers = ["127.0.0.1:{backend_port}"]

[[route]]
prefix = "/"
static = "site"

[static.site]
root = "{out}/site"
""")
        proc = subprocess.Popen([a.gatehouse, "run", "-c", conf], cwd=out,
                                stdout=open(os.path.join(out, "gatehouse.out"), "w"),
                                stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="warn"))
        procs.append(proc)
        wait_port(port, proc)
        servers["gatehouse"] = (port, proc, lambda pid=proc.pid: [pid])

        cases = []
        only = [x for x in os.environ.get("SERVERS", "").split(",") if x]
        for server in only or ("gatehouse", "nginx-gzip1", "nginx-gzip6"):
            accepts = ["", "gzip"] if server != "gatehouse" else ["", "gzip", "br", "zstd"]
            for path in files:
                if os.environ.get("PATHS") and path not in os.environ["PATHS"].split(","):
                    continue
                for accept in accepts:
                    cases.append((server, path, accept))
        results = {c: [] for c in cases}
        for rnd in range(a.rounds):
            for case in cases:
                server, path, accept = case
                port, _, pids = servers[server]
                # Gatehouse's cached variants are made in the background after the
                # first request: measure them once made (a strong ETag).
                ready = None
                if server == "gatehouse" and path.startswith("/assets/") and accept:
                    ready = lambda r: not (r.getheader("ETag") or "W/").startswith("W/")
                res = measure(port, pids(), path, accept, a.requests, a.warmup, files[path], ready)
                results[case].append(res)
                print(f"round {rnd + 1}: {server:12} {path:18} {accept or '-':5} "
                      f"{res['encoding']:8} {res['body_bytes']:7} B  {res['cpu_us']:7.1f} us/req",
                      file=sys.stderr)
    finally:
        stop_all()

    rows = []
    for (server, path, accept), runs in results.items():
        rows.append({
            "server": server, "path": path, "accept": accept or "(none)",
            "encoding": runs[0]["encoding"],
            "body_bytes": runs[0]["body_bytes"],
            "header_bytes": runs[0]["header_bytes"],
            "cpu_us": statistics.median(r["cpu_us"] for r in runs),
            "cpu_us_runs": [round(r["cpu_us"], 1) for r in runs],
        })
    meta = {
        "js_source": js_source, "js_bytes": len(js), "json_bytes": len(api),
        "requests": a.requests, "rounds": a.rounds, "warmup": a.warmup,
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "cpus": os.cpu_count(),
    }
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    lines = [
        "# Compression: Gatehouse against Nginx `gzip on`",
        "",
        f"- static file: `/assets/bundle.js`, {len(js)} bytes, {js_source}",
        f"- proxied answers: `/api/users.json`, {len(api)} bytes of JSON from a backend, "
        f"and `/api/bundle.js`, the same bundle from the backend",
        f"- {a.requests} requests per case on one keep-alive HTTP/1.1 connection after "
        f"{a.warmup} warm-up requests; CPU per request of the server process (all threads, "
        f"schedstat), median of {a.rounds} interleaved rounds; {meta['nginx']}, 1 worker each",
        "",
        "| server | path | Accept-Encoding | sent as | body bytes | header bytes | CPU µs/request | rounds |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['server']} | `{r['path']}` | {r['accept']} | {r['encoding']} | "
                     f"{r['body_bytes']} | {r['header_bytes']} | {r['cpu_us']:.1f} | "
                     f"{', '.join(str(x) for x in r['cpu_us_runs'])} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "result.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
