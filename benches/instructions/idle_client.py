#!/usr/bin/env python3
"""Open N keep-alive connections, send one GET on each and read the whole
response, so each is an idle keep-alive connection in the proxy; print
`READY <open> <failed>`, then hold them until stdin closes and print
`DONE closed_by_peer=<n>`.

  idle_client.py h1 HOST PORT PATH N          plain HTTP/1.1
  idle_client.py h2 HOST PORT PATH N          HTTP/2 over TLS (ALPN h2, no verification)

The HTTP/2 side is a minimal client (static-table HPACK, one stream) so no
third-party package is needed. Connections are closed with RST at the end.
"""

import asyncio
import socket
import ssl
import struct
import sys

PARALLEL = 256
TIMEOUT = 20.0


def linger0(writer):
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def h1_one(host, port, path):
    reader, writer = await asyncio.open_connection(host, port)
    linger0(writer)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    if length:
        await reader.readexactly(length)
    if status != 200:
        raise RuntimeError(f"status {status}")
    return reader, writer


def hpack_literal(index, value):
    """Literal header field without indexing, indexed name, raw string (< 127 bytes)."""
    value = value.encode()
    return bytes([index, len(value)]) + value


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


async def h2_one(host, port, path, ctx):
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost")
    if writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
        raise RuntimeError("h2 not negotiated")
    linger0(writer)
    block = b"\x82\x87" + hpack_literal(4, path) + hpack_literal(1, "localhost")
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x5, 1, block))
    status_ok = False
    while True:
        hdr = await reader.readexactly(9)
        length = int.from_bytes(hdr[:3], "big")
        ftype, flags, stream = hdr[3], hdr[4], int.from_bytes(hdr[5:9], "big") & 0x7FFFFFFF
        payload = await reader.readexactly(length)
        if ftype == 4 and not flags & 1:
            writer.write(frame(4, 1, 0))  # SETTINGS ack
        elif ftype == 7:
            raise RuntimeError("GOAWAY")
        elif ftype == 3 and stream == 1:
            raise RuntimeError("RST_STREAM")
        elif ftype == 1 and stream == 1:
            # :status 200 is static-table entry 8 (0x88); anything else counts as a failure
            status_ok = status_ok or payload[:1] == b"\x88"
        if stream == 1 and ftype in (0, 1) and flags & 1:
            break
    if not status_ok:
        raise RuntimeError("status not 200")
    return reader, writer


async def main(mode, host, port, path, n):
    sem = asyncio.Semaphore(PARALLEL)
    ctx = None
    if mode == "h2":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])

    async def one():
        async with sem:
            coro = h1_one(host, port, path) if mode == "h1" else h2_one(host, port, path, ctx)
            return await asyncio.wait_for(coro, TIMEOUT)

    results = await asyncio.gather(*[one() for _ in range(n)], return_exceptions=True)
    conns = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        kinds = {}
        for e in errors:
            kinds[repr(e)[:80]] = kinds.get(repr(e)[:80], 0) + 1
        print(f"errors: {kinds}", file=sys.stderr)
    print(f"READY {len(conns)} {len(errors)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    closed = 0  # closed by the server while held (EOF or an error seen)
    for r, w in conns:
        if r.at_eof() or r.exception() is not None:
            closed += 1
        w.transport.abort()
    print(f"DONE closed_by_peer={closed}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] not in ("h1", "h2"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])))
