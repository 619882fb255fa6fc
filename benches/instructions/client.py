#!/usr/bin/env python3
"""Send exactly N GET requests on one keep-alive connection, one at a time
(each response is read in full before the next request is sent).

Usage: client.py HOST PORT PATH N
Exits 1 if any response is not 200 or the connection breaks. Prints
`sent N ok N` on success.
"""

import socket
import sys


def read_response(sock, buf):
    """Reads one response (Content-Length framed); returns (status, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before a response head")
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding":
            raise ValueError("chunked responses are not expected here")
    if length is None:
        raise ValueError("response without Content-Length")
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside a response body")
        buf += chunk
    return status, buf[length:]


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, path, n = argv[0], int(argv[1]), argv[2], int(argv[3])
    request = (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\n"
        "User-Agent: bench-instructions\r\nAccept: */*\r\n\r\n"
    ).encode()
    sock = socket.create_connection((host, port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    ok = 0
    for i in range(n):
        sock.sendall(request)
        status, buf = read_response(sock, buf)
        if status != 200:
            print(f"request {i}: status {status}", file=sys.stderr)
            return 1
        ok += 1
    sock.close()
    print(f"sent {n} ok {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
