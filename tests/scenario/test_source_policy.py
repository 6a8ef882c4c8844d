"""Scenario: inbound_source_policy -- sovereign_ranges and the blacklist applied to the TCP peer
of inbound connections: enforce closes, log (the default) serves and says so, off is silent."""
# SPDX-License-Identifier: ISC

import socket

import pytest

import harness
from harness import free_port, make_config


def start(certs, tmp_path, mode):
    port = free_port()
    extra = {"sovereign_ranges": ["127.0.0.2/32", "::1/128"]}  # 127.0.0.1 is outside
    if mode is not None:
        extra["inbound_source_policy"] = mode
    cfg = make_config(certs, None, port, [("hs.localhost", "http://127.0.0.1:%d" % free_port())],
                      extra=extra)
    ch = harness.Chappe(harness.debug_bin(), tmp_path, cfg)
    ch.start()
    return ch, port


def exchange(port):
    """One request from 127.0.0.1; the bytes that came back before the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(b"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: hs.localhost\r\n"
                      b"Connection: close\r\n\r\n")
        except OSError:
            return b""
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


@pytest.mark.parametrize("mode", ["enforce", "log", None, "off"])
def test_source_policy(certs, tmp_path, mode):
    ch, port = start(certs, tmp_path, mode)
    try:
        got = exchange(port)
    finally:
        ch.stop()
    err = ch.stderr()
    if mode == "enforce":
        assert got == b"", got
        assert "refused by inbound_source_policy: address_not_sovereign" in err, err
    else:
        # served (the upstream is down: 502 from chappe itself)
        assert got.startswith(b"HTTP/1.1 502"), got
        logged = "inbound_source_policy would refuse it: address_not_sovereign" in err
        assert logged == (mode != "off"), err
