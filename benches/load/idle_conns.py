#!/usr/bin/env python3
"""Open N keep-alive connections to HOST:PORT, send one GET on each and read
the whole response (so every connection is an idle keep-alive connection in
the proxy, past its request), then print `READY <open> <failed>` and hold
them until stdin closes (or --hold seconds pass). Connections are closed with
SO_LINGER 0 (RST) so no TIME_WAIT is left behind on the client ports.

Usage: idle_conns.py HOST PORT PATH N [--parallel 256] [--hold SECONDS]
Raise `ulimit -n` above N first.
"""

import argparse
import asyncio
import socket
import struct
import sys


async def open_one(host, port, path, sem, timeout):
    async with sem:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), timeout)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        if length:
            await asyncio.wait_for(reader.readexactly(length), timeout)
        if not 200 <= status < 300:
            raise RuntimeError(f"status {status}")
        return reader, writer


async def main(a):
    sem = asyncio.Semaphore(a.parallel)
    tasks = [asyncio.create_task(open_one(a.host, a.port, a.path, sem, a.timeout))
             for _ in range(a.n)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    conns = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        kinds = {}
        for e in errors:
            kinds[repr(e)[:80]] = kinds.get(repr(e)[:80], 0) + 1
        print(f"errors: {kinds}", file=sys.stderr)
    print(f"READY {len(conns)} {len(errors)}", flush=True)
    loop = asyncio.get_running_loop()
    if a.hold is not None:
        await asyncio.sleep(a.hold)
    else:
        await loop.run_in_executor(None, sys.stdin.read)
    # Count how many the server closed while we held them.
    closed = 0
    for r, w in conns:
        if r.at_eof() or r.exception() is not None:
            closed += 1
        w.transport.abort()
    print(f"DONE closed_by_peer={closed}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("path")
    p.add_argument("n", type=int)
    p.add_argument("--parallel", type=int, default=256)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--hold", type=float)
    asyncio.run(main(p.parse_args()))
