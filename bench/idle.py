#!/usr/bin/python3
"""idle.py -- open N TLS connections to a proxy, complete each handshake, then hold them idle.

SPDX-License-Identifier: ISC

Used by bench/proxy.sh to measure a proxy's memory per idle TLS connection. Every connection
does a full handshake (no session resumption: a fresh session each time, like a new peer).
Handshakes run --parallel at a time so that a slow server still gets all N up quickly (a proxy
may close a connection that has sent no request after its header timeout, 10 s for chappe).
With --request PATH each connection first sends one keep-alive GET and reads the answer, so
it idles between requests (the state of a federation connection between transactions).

Protocol on stdout:
  "ready OPENED FAILED SECONDS"  once all connections have been attempted;
  "alive N"                      after each SIGUSR1: how many are still open (the server has
                                 closed neither the TLS session nor the TCP connection).
Exits when --hold seconds have passed or on SIGTERM/SIGINT.
"""

import argparse
import asyncio
import signal
import ssl
import sys
import time


async def open_one(args, ctx, sem, request):
    """Connect, handshake, optionally do one request; return (reader, writer)."""
    async with sem:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(args.host, args.port, ssl=ctx, server_hostname=args.sni),
            timeout=10)
        if request:
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            status = head.split(b" ", 2)[1]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await asyncio.wait_for(reader.readexactly(length), timeout=10)
            if not status.startswith(b"2"):
                raise RuntimeError("status " + status.decode())
        return reader, writer


def alive(conns):
    return sum(1 for r, w in conns if not r.at_eof() and not w.is_closing())


async def run(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_TICKET
    request = b""
    if args.request:
        request = ("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (args.request, args.sni)).encode()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    conns = []
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: print("alive %d" % alive(conns), flush=True))

    sem = asyncio.Semaphore(args.parallel)
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(open_one(args, ctx, sem, request)) for _ in range(args.count)]
    done, pending = await asyncio.wait(tasks, timeout=args.connect_budget)
    for t in pending:
        t.cancel()
    failed = len(pending)
    first_error = "timeout: connect budget exhausted" if pending else ""
    for t in done:
        if t.exception() is not None:
            failed += 1
            first_error = first_error or repr(t.exception())
        else:
            conns.append(t.result())
    elapsed = time.monotonic() - t0
    if first_error:
        print("error " + first_error, file=sys.stderr, flush=True)
    print("ready %d %d %.2f" % (len(conns), failed, elapsed), flush=True)

    try:
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, args.hold - elapsed))
    except asyncio.TimeoutError:
        pass
    for _, w in conns:
        w.transport.abort()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--sni", default="localhost")
    ap.add_argument("--parallel", type=int, default=32, help="handshakes in flight (default 32)")
    ap.add_argument("--request", metavar="PATH", help="send one GET PATH on each, then idle")
    ap.add_argument("--hold", type=float, default=30.0, help="max seconds to hold (default 30)")
    ap.add_argument("--connect-budget", type=float, default=20.0,
                    help="max seconds spent opening connections (default 20)")
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
