"""Scenario: `chappe keys fetch` and `chappe keys list` -- a remote server's signing keys fetched
through the outbound client (discovery, policy, verified TLS), validated and stored in LMDB.

The remote server is a second chappe: it serves its own /_matrix/key/v2/server for its
server_name, here "localhost:PORT", over TLS with the dev certificate."""
# SPDX-License-Identifier: ISC

import harness
from harness import SANITIZER_MARKERS, free_port, make_config, run_cli, to_yaml


def no_sanitizer(text):
    for m in SANITIZER_MARKERS:
        assert m not in text, "sanitizer report:\n%s" % text[-3000:]


def keygen(tmp_path, name):
    p = tmp_path / name
    r = run_cli(harness.debug_bin(), ["keygen", "-o", str(p)])
    assert r.returncode == 0, r.stderr
    r = run_cli(harness.debug_bin(), ["key", "public", "--key", str(p)])
    key_id, pub = r.stdout.split()
    return p, key_id, pub


def remote(certs, tmp_path):
    """A chappe publishing its key as localhost:PORT; returns (process, name, key id, key)."""
    port = free_port()
    key, key_id, pub = keygen(tmp_path, "remote.key")
    cfg = make_config(certs, port, None, [("hs.localhost", "http://127.0.0.1:%d" % free_port())],
                      extra={"server_name": "localhost:%d" % port, "signing_key_path": str(key)})
    (tmp_path / "remote").mkdir()
    ch = harness.Chappe(harness.debug_bin(), tmp_path / "remote", to_yaml(cfg), name="remote")
    ch.start()
    return ch, "localhost:%d" % port, key_id, pub


def cli_config(certs, tmp_path, whitelist=("localhost",)):
    cfg = make_config(certs, free_port(), None, [("hs.localhost", "http://127.0.0.1:9")],
                      extra={"federation_domain_whitelist": list(whitelist),
                             "federation_custom_ca_list": [str(certs.ca)],
                             "queue": {"path": str(tmp_path / "store")}})
    p = tmp_path / "cli.yaml"
    p.write_text(to_yaml(cfg))
    return p


def keys(cfg, *args):
    r = run_cli(harness.debug_bin(), ["keys"] + list(args) + ["-c", str(cfg)], timeout=30)
    no_sanitizer(r.stderr)
    return r


def test_fetch_then_list(certs, tmp_path):
    ch, name, key_id, pub = remote(certs, tmp_path)
    try:
        cfg = cli_config(certs, tmp_path)
        r = keys(cfg, "list")
        assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
        assert "no key stored" in r.stderr
        r = keys(cfg, "fetch", name)
        assert r.returncode == 0, r.stdout + r.stderr
        # the discovery steps went through the policy, then the key is printed as stored
        assert "name %s: allow" % name in r.stderr, r.stderr
        assert "address 127.0.0.1: allow" in r.stderr, r.stderr
        line = "%s %s %s valid_until=" % (name, key_id, pub)
        assert r.stdout.startswith(line) and "source=direct" in r.stdout, r.stdout
        # stored durably: a later process lists it, and only for that server
        r = keys(cfg, "list")
        assert r.returncode == 0 and r.stdout.startswith(line), r.stdout + r.stderr
        r = keys(cfg, "list", name)
        assert r.stdout.startswith(line), r.stdout
        r = keys(cfg, "list", "other.localhost")
        assert r.returncode == 0 and r.stdout == "", r.stdout
    finally:
        ch.stop()


def test_fetch_denied_name_touches_nothing(certs, tmp_path):
    ch, name, _, _ = remote(certs, tmp_path)
    try:
        cfg = cli_config(certs, tmp_path, whitelist=("*.localhost",))
        r = keys(cfg, "fetch", name)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "name_not_allowed" in r.stderr, r.stderr
        assert "connect" not in r.stderr, r.stderr
        assert keys(cfg, "list").stdout == ""
        # the remote never saw a request
        assert "/_matrix/key/v2/server" not in ch.stdout()
    finally:
        ch.stop()


def test_fetch_refuses_a_document_for_another_name(certs, tmp_path):
    """localhost:PORT answers, but asked as 127.0.0.1:PORT its Host routes the request to the
    (absent) homeserver: no key document, nothing stored."""
    ch, name, _, _ = remote(certs, tmp_path)
    try:
        cfg = cli_config(certs, tmp_path, whitelist=("localhost", "127.0.0.1"))
        ip_name = name.replace("localhost", "127.0.0.1")
        r = keys(cfg, "fetch", ip_name)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "answered HTTP 502" in r.stderr, r.stderr
        assert keys(cfg, "list").stdout == ""
    finally:
        ch.stop()


def test_usage(certs, tmp_path):
    cfg = cli_config(certs, tmp_path)
    assert keys(cfg, "fetch").returncode == 2
    assert run_cli(harness.debug_bin(), ["keys", "nope"]).returncode == 2
