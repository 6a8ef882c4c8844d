"""Scenario: bodies stream through chappe (optimized build) in bounded memory: a 1 GiB
response and a 64 MiB request body over TLS, with VmRSS sampled every 50 ms."""
# SPDX-License-Identifier: ISC

import struct
import time
import zlib

import harness
from harness import RSSSampler
from httpc import XMATRIX, build_request
from upstream import Response

MiB = 1 << 20
GiB = 1 << 30
RSS_LIMIT_KIB = 64 * 1024
BLOCK = 64 * 1024


def numbered_blocks(total, pause_at=None, pause=0.0):
    """total bytes in 64 KiB blocks, each starting with its index (catches reordering/loss)."""
    base = bytes(range(256)) * (BLOCK // 256)
    for i in range(total // BLOCK):
        if pause_at is not None and i * BLOCK == pause_at:
            time.sleep(pause)
        yield struct.pack(">Q", i) + base[8:]


def test_1gib_response_bounded_memory(start_proxy):
    p = start_proxy(binary=harness.release_bin(), workers=2)
    resp = Response(200, chunks=numbered_blocks(GiB), content_length=GiB,
                    headers=[("Content-Type", "application/octet-stream")])
    p.up.handler = lambda req: resp
    state = {"n": 0, "crc": 0, "paused": False}

    def sink(mv):
        state["crc"] = zlib.crc32(mv, state["crc"])
        state["n"] += len(mv)
        if not state["paused"] and state["n"] >= GiB // 4:
            state["paused"] = True
            time.sleep(1.0)  # a slow reader: chappe must apply backpressure, not buffer

    with RSSSampler(p.chappe) as rss:
        with p.tls() as c:
            t0 = time.monotonic()
            c.send(build_request("GET", "/_matrix/media/v3/download/big"))
            r = c.read_response(timeout=120, sink=sink)
            elapsed = time.monotonic() - t0
    assert r.status == 200, r
    resp.done.wait(5)
    assert state["n"] == GiB, "received %d bytes of %d" % (state["n"], GiB)
    assert resp.sent == GiB
    assert state["crc"] == resp.sent_crc, "1 GiB body corrupted in transit (crc mismatch)"
    assert rss.samples > 10, "RSS sampled only %d times" % rss.samples
    assert rss.max_kib < RSS_LIMIT_KIB, "chappe max VmRSS %.1f MiB during a 1 GiB response " \
        "(limit 64 MiB)" % (rss.max_kib / 1024)
    print("1 GiB in %.1fs, max RSS %.1f MiB" % (elapsed, rss.max_kib / 1024))


def test_64mib_request_body_bounded_memory(start_proxy):
    total = 64 * MiB
    p = start_proxy(binary=harness.release_bin(), workers=2,
                    limits={"max_body_bytes": "128MiB", "body_timeout": "30s",
                            "upstream_timeout": "30s"})
    p.up.store_limit = 0  # count and checksum only
    p.up.body_read_pause = (16 * MiB, 1.0)  # a slow upstream: chappe must stop reading
    crc = 0
    with RSSSampler(p.chappe) as rss:
        with p.tls() as c:
            t0 = time.monotonic()
            c.send(build_request("PUT", "/_matrix/federation/v1/send/bulk",
                                 headers=[("Content-Length", str(total)), XMATRIX]))
            for block in numbered_blocks(total):
                crc = zlib.crc32(block, crc)
                c.sock.settimeout(60)
                c.sock.sendall(block)
            r = c.read_response(timeout=60)
            elapsed = time.monotonic() - t0
    assert r.status == 200, r
    (req,) = p.up.requests
    assert req.body_len == total, "upstream got %d bytes of %d" % (req.body_len, total)
    assert req.body_crc == crc, "64 MiB request body corrupted in transit (crc mismatch)"
    assert rss.max_kib < RSS_LIMIT_KIB, "chappe max VmRSS %.1f MiB during a 64 MiB upload " \
        "(limit 64 MiB)" % (rss.max_kib / 1024)
    print("64 MiB up in %.1fs, max RSS %.1f MiB" % (elapsed, rss.max_kib / 1024))


def test_chunked_upload_streams(start_proxy):
    """A 16 MiB chunked upload reaches the upstream intact (release build, RSS bounded)."""
    total = 16 * MiB
    p = start_proxy(binary=harness.release_bin(), workers=1,
                    limits={"max_body_bytes": "32MiB", "body_timeout": "30s",
                            "upstream_timeout": "30s"})
    p.up.store_limit = 0
    crc = 0
    with RSSSampler(p.chappe) as rss:
        with p.plain() as c:
            c.send(build_request("POST", "/up", headers=[("Transfer-Encoding", "chunked")]))
            for block in numbered_blocks(total):
                crc = zlib.crc32(block, crc)
                c.sock.settimeout(60)
                c.sock.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
            c.sock.sendall(b"0\r\n\r\n")
            r = c.read_response(timeout=60)
    assert r.status == 200, r
    (req,) = p.up.requests
    assert req.body_len == total and req.body_crc == crc
    assert rss.max_kib < RSS_LIMIT_KIB, "max VmRSS %.1f MiB" % (rss.max_kib / 1024)
