"""Scenario: the command line -- --version, check-config, and run with a bad config."""
# SPDX-License-Identifier: ISC

import re

import pytest

import harness
from harness import SANITIZER_MARKERS, free_port, make_config, run_cli, to_yaml


def good_config(certs):
    return to_yaml(make_config(certs, free_port(), free_port(),
                               [("hs.localhost", "http://127.0.0.1:%d" % free_port())]))


def no_sanitizer(text, what):
    for m in SANITIZER_MARKERS:
        assert m not in text, "%s: sanitizer report on stderr:\n%s" % (what, text[-3000:])


def test_version():
    r = run_cli(harness.debug_bin(), ["--version"])
    assert r.returncode == 0, "--version exited %d: %s" % (r.returncode, r.stderr)
    assert re.match(r"chappe \d+\.\d+\S*( |\n|$)", r.stdout), "--version printed %r" % r.stdout
    no_sanitizer(r.stderr, "--version")


def test_check_config_ok(certs, tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text(good_config(certs))
    r = run_cli(harness.debug_bin(), ["check-config", "-c", str(p)])
    assert r.returncode == 0, "check-config on a good file exited %d:\n%s" % (r.returncode,
                                                                            r.stderr)
    assert "relay.localhost" in r.stdout and "hs.localhost" in r.stdout, \
        "check-config did not print the effective config:\n%s" % r.stdout
    no_sanitizer(r.stderr, "check-config")


def _with_line(certs, line):
    """A good config with line appended; returns (text, 1-based line number of it)."""
    text = good_config(certs)
    n = text.count("\n") + 1
    return text + line + "\n", n


BAD = {
    "unknown_key": lambda certs: _with_line(certs, "bogus_key: 1"),
    "wrong_type": lambda certs: _with_line(certs, "workers: many"),
    "bad_duration": lambda certs: (good_config(certs).replace("header_timeout: 2s",
                                                              "header_timeout: 2 fortnights"),
                                   None),
    "yaml_syntax": lambda certs: _with_line(certs, "oops: [unclosed"),
    "missing_server_name": lambda certs: (good_config(certs).replace(
        "server_name: relay.localhost\n", ""), None),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_config_bad(certs, tmp_path, case):
    text, line = BAD[case](certs)
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    r = run_cli(harness.debug_bin(), ["check-config", "-c", str(p)])
    assert r.returncode == 1, "check-config on a bad file (%s) exited %d" % (case, r.returncode)
    m = re.search(r"^%s:(\d+):(\d+): \S" % re.escape(str(p)), r.stderr, re.M)
    assert m, "%s: no 'FILE:LINE:COL: message' line on stderr:\n%s" % (case, r.stderr)
    if line is not None and case != "yaml_syntax":
        assert int(m.group(1)) == line, "%s: error at line %s, the problem is on line %d:\n%s" % (
            case, m.group(1), line, r.stderr)
    no_sanitizer(r.stderr, "check-config " + case)


@pytest.mark.parametrize("case", ["unknown_key", "wrong_type", "yaml_syntax"])
def test_run_bad_config(certs, tmp_path, case):
    text, line = BAD[case](certs)
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    r = run_cli(harness.debug_bin(), ["run", "-c", str(p)], timeout=20)
    assert r.returncode != 0, "chappe run with a bad config (%s) exited 0" % case
    assert re.search(r"^(.*\s)?%s:\d+:\d+: \S" % re.escape(str(p)), r.stderr, re.M), \
        "%s: no 'file:line:col: message' on stderr:\n%s" % (case, r.stderr)
    assert not re.search(r"\bready\b", r.stderr), "chappe said ready with a bad config"
    no_sanitizer(r.stderr, "run " + case)


def test_run_missing_config_file(tmp_path):
    p = tmp_path / "does-not-exist.yaml"
    r = run_cli(harness.debug_bin(), ["run", "-c", str(p)], timeout=20)
    assert r.returncode != 0
    assert str(p) in r.stderr, "the error does not name the missing file:\n%s" % r.stderr
    no_sanitizer(r.stderr, "run missing file")


def test_run_missing_certificate(certs, tmp_path):
    cfg = make_config(certs, free_port(), free_port(), [("hs.localhost", "http://127.0.0.1:9")],
                      cert_pairs=[(tmp_path / "nope.crt", certs.server_key)])
    p = tmp_path / "c.yaml"
    p.write_text(to_yaml(cfg))
    r = run_cli(harness.debug_bin(), ["run", "-c", str(p)], timeout=20)
    assert r.returncode != 0, "chappe ran without its certificate file"
    assert "nope.crt" in r.stderr, "the error does not name the missing certificate:\n%s" % (
        r.stderr)
    no_sanitizer(r.stderr, "run missing certificate")


def _policy_config(certs, tmp_path, **keys):
    cfg = make_config(certs, free_port(), free_port(),
                      [("hs.localhost", "http://127.0.0.1:%d" % free_port())],
                      extra=keys)
    p = tmp_path / "policy.yaml"
    p.write_text(to_yaml(cfg))
    return p


def test_bad_sovereign_ranges_file_stops_check_config_and_run(certs, tmp_path):
    """A list file is part of the configuration: a bad line is FILE:LINE for check-config,
    and run refuses to start rather than run without its border."""
    ranges = tmp_path / "sovereign.txt"
    ranges.write_text("# ministries\n192.0.2.0/24\n10.1.0.0/8  # oops\n2001:db8::/32\n")
    p = _policy_config(certs, tmp_path, sovereign_ranges=str(ranges))
    for cmd in (["check-config", "-c", str(p)], ["run", "-c", str(p)]):
        r = run_cli(harness.debug_bin(), cmd, timeout=20)
        assert r.returncode == 1, "%s exited %d:\n%s" % (cmd[0], r.returncode, r.stderr)
        assert "%s:3: invalid prefix" % ranges in r.stderr, r.stderr
        assert "did you mean 10.0.0.0/8?" in r.stderr, r.stderr
        assert "ready" not in r.stderr
        no_sanitizer(r.stderr, cmd[0])
    ranges.write_text("# ministries\n192.0.2.0/24\n10.0.0.0/8\n")
    r = run_cli(harness.debug_bin(), ["check-config", "-c", str(p)])
    assert r.returncode == 0, r.stderr
    assert 'sovereign_ranges: "%s"' % ranges in r.stdout, r.stdout


def test_run_warns_when_a_check_is_disabled(certs, tmp_path):
    """sovereign_ranges: any and federation_verify_certificates: false start, loudly."""
    p = _policy_config(certs, tmp_path, sovereign_ranges="any",
                       federation_verify_certificates=False)
    ch = harness.Chappe(harness.debug_bin(), tmp_path, p.read_text())
    ch.start()
    try:
        err = ch.stderr()
        assert "sovereign_ranges is `any`" in err, err
        assert "remote certificates are NOT verified" in err, err
    finally:
        ch.stop()
