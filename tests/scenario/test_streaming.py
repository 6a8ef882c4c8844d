"""Scenario: bodies go through chappe (optimized build) in bounded memory, with VmRSS sampled
every 50 ms: a 1 GiB response streams over TLS; a signed request body, which chappe keeps
until its signature is checked, is held once (8 MiB, sent with Content-Length or chunked)."""
# SPDX-License-Identifier: ISC

import struct
import time
import zlib

import harness
from harness import RSSSampler
from httpc import build_request, txn_body, xmatrix
from upstream import Response

MiB = 1 << 20
GiB = 1 << 30
RSS_LIMIT_KIB = 64 * 1024
BLOCK = 64 * 1024
SEND = "/_matrix/federation/v1/send/"


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
            target = "/_matrix/federation/v1/media/download/big"
            c.send(build_request("GET", target, headers=[xmatrix("GET", target)]))
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


def send_blocks(conn, data, chunked=False):
    """Write data in 64 KiB writes (each a chunk when chunked, then the last chunk)."""
    conn.sock.settimeout(60)
    for i in range(0, len(data), BLOCK):
        block = data[i:i + BLOCK]
        conn.sock.sendall(b"%x\r\n" % len(block) + block + b"\r\n" if chunked else block)
    if chunked:
        conn.sock.sendall(b"0\r\n\r\n")


def test_8mib_signed_request_body_bounded_memory(start_proxy):
    """An 8 MiB transaction (canonical JSON, signed) reaches a slow upstream byte-identical."""
    body = txn_body(8 * MiB, seed=8)
    target = SEND + "bulk"
    p = start_proxy(binary=harness.release_bin(), workers=2,
                    limits={"max_body_bytes": "16MiB", "body_timeout": "30s",
                            "upstream_timeout": "30s"})
    p.up.store_limit = 0  # count and checksum only
    p.up.body_read_pause = (4 * MiB, 1.0)  # a slow upstream: chappe must stop writing
    with RSSSampler(p.chappe) as rss:
        with p.tls() as c:
            t0 = time.monotonic()
            c.send(build_request("PUT", target, headers=[
                ("Content-Length", str(len(body))), xmatrix("PUT", target, body)]))
            send_blocks(c, body)
            r = c.read_response(timeout=60)
            elapsed = time.monotonic() - t0
    assert r.status == 200, r
    (req,) = p.up.requests
    assert req.body_len == len(body), "upstream got %d bytes of %d" % (req.body_len, len(body))
    assert req.body_crc == zlib.crc32(body), "8 MiB request body changed in transit (crc)"
    assert rss.max_kib < RSS_LIMIT_KIB, "chappe max VmRSS %.1f MiB during an 8 MiB upload " \
        "(limit 64 MiB)" % (rss.max_kib / 1024)
    print("8 MiB up in %.1fs, max RSS %.1f MiB" % (elapsed, rss.max_kib / 1024))


def test_chunked_upload_streams(start_proxy):
    """An 8 MiB signed transaction sent chunked reaches the upstream intact (release build, RSS
    bounded). chappe may frame it differently upstream: only the bytes are compared."""
    body = txn_body(8 * MiB, seed=9)
    target = SEND + "chunked"
    p = start_proxy(binary=harness.release_bin(), workers=1,
                    limits={"max_body_bytes": "16MiB", "body_timeout": "30s",
                            "upstream_timeout": "30s"})
    p.up.store_limit = 0
    with RSSSampler(p.chappe) as rss:
        with p.plain() as c:
            c.send(build_request("PUT", target, headers=[
                ("Transfer-Encoding", "chunked"), xmatrix("PUT", target, body)]))
            send_blocks(c, body, chunked=True)
            r = c.read_response(timeout=60)
    assert r.status == 200, r
    (req,) = p.up.requests
    assert req.body_len == len(body) and req.body_crc == zlib.crc32(body), \
        "upstream got %d bytes of %d (or other bytes)" % (req.body_len, len(body))
    assert rss.max_kib < RSS_LIMIT_KIB, "max VmRSS %.1f MiB" % (rss.max_kib / 1024)
