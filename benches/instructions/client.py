#!/usr/bin/env python3
"""Send exactly N GET requests on one keep-alive connection, one at a time
(each response is read in full before the next request is sent).

Usage: client.py HOST PORT PATH N [plain|browser]
`plain` (the default) sends Host, User-Agent and Accept; `browser` sends the
fourteen fields a desktop browser's fetch() of an API carries (552 bytes,
with a cookie), to see what each header field costs.
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


BROWSER_FIELDS = (
    "Host: localhost\r\n"
    "Connection: keep-alive\r\n"
    "sec-ch-ua-platform: \"Linux\"\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36\r\n"
    "sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\n"
    "sec-ch-ua-mobile: ?0\r\n"
    "Accept: application/json, text/plain, */*\r\n"
    "Sec-Fetch-Site: same-origin\r\n"
    "Sec-Fetch-Mode: cors\r\n"
    "Sec-Fetch-Dest: empty\r\n"
    "Referer: https://localhost/dashboard\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Accept-Language: en-US,en;q=0.9\r\n"
    "Cookie: session=3f9a1c2e7b5d4e8f9a0b1c2d3e4f5a6b; theme=dark\r\n"
)


def main(argv):
    if len(argv) not in (4, 5) or (len(argv) == 5 and argv[4] not in ("plain", "browser")):
        print(__doc__, file=sys.stderr)
        return 2
    host, port, path, n = argv[0], int(argv[1]), argv[2], int(argv[3])
    if len(argv) == 5 and argv[4] == "browser":
        fields = BROWSER_FIELDS
    else:
        fields = "Host: localhost\r\nUser-Agent: bench-instructions\r\nAccept: */*\r\n"
    request = f"GET {path} HTTP/1.1\r\n{fields}\r\n".encode()
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
