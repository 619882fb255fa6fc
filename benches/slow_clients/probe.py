#!/usr/bin/env python3
"""Slow-client probes against Gatehouse and Nginx, same backend, same probes.

A backend that answers one request at a time (HTTP/1.0, close after each, like
a Gunicorn sync worker) sits behind both proxies. For each probe a slow client
starts, then another client's GET is timed:

  slow-upload   POST with Content-Length: 100, 48 bytes sent over ~1 s, then silence
  slow-reader   GET of a 20 MB answer with a 4 KiB receive buffer, reading nothing

Usage: benches/slow_clients/probe.py GATEHOUSE_BINARY
(nginx must be installed: `bash .ci/deps.sh`). Loopback only, bounded.
"""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIG = 20 * 1000 * 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend(port, stop):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    srv.settimeout(0.2)
    big = bytes(i % 251 for i in range(251)) * (BIG // 251 + 1)
    big = big[:BIG]
    while not stop.is_set():
        try:
            c, _ = srv.accept()
        except socket.timeout:
            continue
        c.settimeout(30)
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v.strip())
            while len(body) < length:
                chunk = c.recv(65536)
                if not chunk:
                    break
                body += chunk
            path = head.split(b" ")[1] if b" " in head else b"/"
            if path.endswith(b"/big"):
                c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG + big)
            else:
                c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass
        finally:
            c.close()
    srv.close()


def timed_get(port, path="/api/quick", limit=20.0):
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=limit) as s:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % path.encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        ok = data.startswith(b"HTTP/1.1 200")
        if not ok:
            print("answer:", data[:200], file=sys.stderr)
    except OSError:
        ok = False
    return time.monotonic() - start, ok


def slow_upload(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /api/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
    for _ in range(6):
        s.sendall(b"x" * 8)
        time.sleep(0.15)
    return s


def slow_reader(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /api/big HTTP/1.1\r\nHost: a\r\n\r\n")
    time.sleep(0.5)
    return s


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    gatehouse = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="gatehouse-probe-")
    bport, gport, nport = free_port(), free_port(), free_port()
    stop = threading.Event()
    threading.Thread(target=backend, args=(bport, stop), daemon=True).start()
    gconf = os.path.join(work, "gatehouse.toml")
    with open(gconf, "w") as f:
        f.write(f"""
[server]
threads = 1
access_log = "off"
pid_file = "{work}/g.pid"
upgrade_sock = "{work}/g.sock"
client_body_timeout = "20s"
[http]
listen = ["127.0.0.1:{gport}"]
redirect_to_https = false
[[route]]
prefix = "/api/"
upstream = "api"
[upstream.api]
servers = ["127.0.0.1:{bport}"]
read_timeout = "60s"
""")
    nconf = os.path.join(work, "nginx.conf")
    with open(nconf, "w") as f:
        f.write(f"""
worker_processes 1; daemon off; pid {work}/n.pid; error_log {work}/n.err;
events {{}}
http {{ access_log off; client_body_temp_path {work}/nb; proxy_temp_path {work}/np;
  upstream api {{ server 127.0.0.1:{bport}; }}
  server {{ listen 127.0.0.1:{nport}; location /api/ {{ proxy_pass http://api; }} }} }}
""")
    procs = [
        subprocess.Popen([gatehouse, "run", "-c", gconf], cwd=work,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(["nginx", "-c", nconf, "-p", work],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        for port in (gport, nport):
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
        print("| probe | Gatehouse: other GET | Nginx: other GET |")
        print("|---|---|---|")
        for name, probe in (("slow-upload", slow_upload), ("slow-reader", slow_reader)):
            row = []
            for port in (gport, nport):
                held = probe(port)
                took, ok = timed_get(port)
                row.append(f"{took:.2f} s" + ("" if ok else " (failed)"))
                held.close()
                time.sleep(0.5)
            print(f"| {name} | {row[0]} | {row[1]} |")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        stop.set()


if __name__ == "__main__":
    main()
