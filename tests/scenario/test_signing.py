"""Scenario: Matrix JSON signing, cross-checked against Synapse's own libraries
(canonicaljson, signedjson, nacl): `chappe json canonical|sign|verify`, `chappe key public`,
`chappe keygen`, the spec's cryptographic test vectors, and the key server
(GET /_matrix/key/v2/server) of the running relay."""
# SPDX-License-Identifier: ISC

import copy
import difflib
import json
import os
import random
import re
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import canonicaljson
import nacl.signing
import pytest
import signedjson.key
import signedjson.sign
from unpaddedbase64 import decode_base64, encode_base64

import harness
import jsongen
from harness import SANITIZER_MARKERS, chappe_env

N_CANONICAL = 2000  # values through the optimized binary
N_CANONICAL_ASAN = 100  # of those, through the ASan binary
N_SIGN = 200  # objects signed/verified both ways (optimized binary)
N_SIGN_ASAN = 20
N_TAMPER = 12  # objects whose signatures and values are tampered with
THREADS = 8
SERVER = "relay.localhost"

# Matrix spec, appendices, "Cryptographic Test Vectors".
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SPEC_SIG_EMPTY = ("K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ah"
                  "LwYGYZzuHGZKM5ZAQ")
SPEC_SIG_ONE_TWO = ("KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD"
                    "13EIMJpvhJI+6Bw")


# --- running the CLI -------------------------------------------------------------------------
def run(binary, args, data=b"", timeout=30.0):
    """chappe <args> with data on stdin; CompletedProcess with bytes stdout, str stderr.
    A sanitizer report on stderr fails the test."""
    r = subprocess.run([str(binary)] + list(args), input=data, capture_output=True,
                       timeout=timeout, env=chappe_env())
    r.stderr = r.stderr.decode("utf-8", "replace")
    for m in SANITIZER_MARKERS:
        assert m not in r.stderr, "chappe %s: sanitizer report:\n%s" % (
            " ".join(map(str, args)), r.stderr[-4000:])
    return r


def run_many(binary, jobs):
    """jobs: [(args, stdin bytes)] -> [CompletedProcess], THREADS at a time."""
    with ThreadPoolExecutor(THREADS) as ex:
        return list(ex.map(lambda j: run(binary, j[0], j[1]), jobs))


def canonical(v):
    return canonicaljson.encode_canonical_json(v)


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def show_mismatch(idx, data, want, got):
    i = first_diff(want, got)
    lo = max(0, i - 60)
    lines = ["value #%d: first difference at byte %d (expected %d bytes, got %d)" % (
        idx, i, len(want), len(got)),
        "  input    %r" % data[:300],
        "  expected ...%r" % want[lo:i + 60],
        "  got      ...%r" % got[lo:i + 60]]
    if len(want) < 2000 and len(got) < 2000:
        d = difflib.unified_diff(want.decode("utf-8", "replace").split(","),
                                 got.decode("utf-8", "replace").split(","), "canonicaljson",
                                 "chappe", lineterm="", n=1)
        lines += ["  " + ln for ln in list(d)[:30]]
    return "\n".join(lines)


def kind_of(r):
    """A failure's kind: exit status and stderr without positions and quoted input."""
    msg = re.sub(r"line \d+, column \d+|near .*|\$[^\s:]*", "", r.stderr).strip()
    return "exit %d: %s" % (r.returncode, msg[-200:])


def grouped(failures, total, what):
    """failures: [(kind, text)] -> a report: each kind with its count and first example."""
    kinds = {}
    for k, text in failures:
        kinds.setdefault(k, []).append(text)
    out = ["%d of %d %s, %d kind(s) of failure:" % (len(failures), total, what, len(kinds))]
    for k, texts in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
        out.append("--- %d x %s; first:\n%s" % (len(texts), k, "\n".join(texts[:2])))
    return "\n".join(out)


def write_key_file(path, keys, mode=0o600):
    """keys written by signedjson.key.write_signing_keys to a file created with mode."""
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        signedjson.key.write_signing_keys(f, keys)
    os.chmod(str(path), mode)
    return path


def key_id(key):
    return "%s:%s" % (key.alg, key.version)


def pub_b64(key):
    return signedjson.key.encode_verify_key_base64(signedjson.key.get_verify_key(key))


@pytest.fixture(scope="module")
def sj_key():
    return signedjson.key.generate_signing_key("a_Tst1")


@pytest.fixture
def sj_key_file(tmp_path, sj_key):
    return write_key_file(tmp_path / "signing.key", [sj_key])


def bins():
    for b in (harness.release_bin(), harness.debug_bin()):
        if not b.exists():
            pytest.fail("chappe binary %s does not exist" % b, pytrace=False)
    return harness.release_bin(), harness.debug_bin()


# --- 1. canonical JSON ------------------------------------------------------------------------
def test_canonical_matches_canonicaljson():
    rel, dbg = bins()
    vals = jsongen.values(N_CANONICAL)
    rng = random.Random(99)
    inputs = []
    for v in vals:
        data = jsongen.encode_noncanonical(v, rng)
        jsongen.check_roundtrip(v, data)
        inputs.append(data)
    asan_idx = list(range(0, N_CANONICAL, N_CANONICAL // N_CANONICAL_ASAN))[:N_CANONICAL_ASAN]
    failures = []
    for binary, idxs in ((rel, range(N_CANONICAL)), (dbg, asan_idx)):
        idxs = list(idxs)
        res = run_many(binary, [(["json", "canonical"], inputs[i]) for i in idxs])
        for i, r in zip(idxs, res):
            want = canonical(vals[i])
            if r.returncode != 0:
                failures.append((kind_of(r), "%s: value #%d: exit %d, stderr %r; input %r" % (
                    binary, i, r.returncode, r.stderr[-500:], inputs[i][:300])))
            elif r.stdout != want:
                failures.append(("wrong output", ("%s: " % binary)
                                 + show_mismatch(i, inputs[i], want, r.stdout)))
    assert not failures, grouped(failures, N_CANONICAL + len(asan_idx),
                                 "canonical encodings differ from canonicaljson")


def test_canonical_nul_in_keys_refused():
    """U+0000 in an object key (canonicaljson accepts it) is refused with a clear error: Jansson,
    chappe's JSON parser, cannot hold it. Refusing is the fail-closed answer; U+0000 in string
    values is kept (test_canonical_matches_canonicaljson)."""
    _, dbg = bins()
    cases = [{"\x00": 1}, {"a\x00b": "\x00"}, {"ab": 4, "a\x00b": 3, "a\x00": 2, "a": 1},
             {"x": {"\x00\x00": [{"\x00": None}]}}]
    for v in cases:
        r = run(dbg, ["json", "canonical"], json.dumps(v).encode())
        assert r.returncode == 1 and r.stdout == b"", "%r was accepted: %r" % (v, r.stdout)
        assert "NUL byte in object key" in r.stderr, r.stderr
    r = run(dbg, ["json", "canonical"], b'{"a":"\\u0000"}')
    assert r.returncode == 0 and r.stdout == b'{"a":"\\u0000"}', r


def test_canonical_already_canonical_is_identity():
    """Feeding canonicaljson's own bytes back gives the same bytes."""
    rel, _ = bins()
    vals = jsongen.values(300, seed=5)
    res = run_many(rel, [(["json", "canonical"], canonical(v)) for v in vals])
    bad = []
    for i, r in enumerate(res):
        want = canonical(vals[i])
        if r.returncode != 0:
            bad.append((kind_of(r), "value #%d: exit %d: %s" % (i, r.returncode, r.stderr)))
        elif r.stdout != want:
            bad.append(("wrong output", show_mismatch(i, want, want, r.stdout)))
    assert not bad, grouped(bad, len(vals), "canonical inputs not reproduced")


def test_canonical_spec_examples():
    """The examples of the spec's "Canonical JSON" section that are valid input here."""
    _, dbg = bins()
    cases = [
        (b"{}", b"{}"),
        (b'{\n    "one": 1,\n    "two": "Two"\n}', b'{"one":1,"two":"Two"}'),
        (b'{\n    "b": "2",\n    "a": "1"\n}', b'{"a":"1","b":"2"}'),
        (b'{"b":"2","a":"1"}', b'{"a":"1","b":"2"}'),
        ('{"a": "日本語"}'.encode(), '{"a":"日本語"}'.encode()),
        ('{"本": 2, "日": 1}'.encode(), '{"日":1,"本":2}'.encode()),
        (b'{"a": "\\u65E5"}', '{"a":"日"}'.encode()),
        (b'{"a": null}', b'{"a":null}'),
        (b'{"a":"\\ud83d\\ude00","\\uFB01":1,"\\uD83D\\uDE00":2}',
         '{"a":"\U0001f600","\ufb01":1,"\U0001f600":2}'.encode()),
        (b'"\\u0000\\u001F\\u007f\\/"', b'"\\u0000\\u001f\x7f/"'),
        (b'"\\b\\f\\n\\r\\t\\u0008\\u000C\\u000a"', b'"\\b\\f\\n\\r\\t\\b\\f\\n"'),
        (b'[9007199254740991,-9007199254740991,0]', b'[9007199254740991,-9007199254740991,0]'),
    ]
    bad = []
    for data, want in cases:
        r = run(dbg, ["json", "canonical"], data)
        if r.returncode != 0 or r.stdout != want:
            bad.append("%r -> exit %d %r (want %r) %s" % (data, r.returncode, r.stdout, want,
                                                          r.stderr.strip()))
    assert not bad, "\n".join(bad)


# (input, JSON path the error must name, or None when only rejection is required)
REJECT = {
    "float": (b'{"a":[0,1,{"b":1.5}]}', "$.a[2].b"),
    "float_integral": (b'{"a":[0,1,{"b":1.0}]}', "$.a[2].b"),
    "float_exp": (b'{"x":{"y":1e10}}', "$.x.y"),
    "float_exp_upper": (b'[1E2]', "$[0]"),
    "float_neg_zero": (b'{"z":-0.0}', "$.z"),
    "float_top": (b"0.5", "$"),
    "int_2p53": (b'[1,2,9007199254740992]', "$[2]"),
    "int_minus_2p53": (b'{"x":{"y":-9007199254740992}}', "$.x.y"),
    "int_huge": (b'{"n":123456789012345678901234567890}', "$.n"),
    "int_2p63": (b'{"n":[9223372036854775808]}', "$.n[0]"),
    "dup_key": (b'{"a":1,"a":2}', None),
    "dup_key_nested": (b'{"x":[{"k":1,"j":0,"k":1}]}', None),
    "dup_key_escaped": (b'{"a":1,"\\u0061":2}', None),
    "bad_utf8_ff": (b'{"a":"\xff"}', None),
    "bad_utf8_overlong": (b'{"a":"\xc0\xaf"}', None),
    "bad_utf8_surrogate": (b'{"a":"\xed\xa0\x80"}', None),
    "bad_utf8_truncated": (b'{"a":"\xe6\x97"}', None),
    "bad_utf8_key": (b'{"\xfe":1}', None),
    "bad_utf8_above_10ffff": (b'"\xf4\x90\x80\x80"', None),
    "lone_high_surrogate": (b'{"a":"\\ud800"}', None),
    "lone_low_surrogate": (b'{"a":"x\\udc00y"}', None),
    "high_then_letter": (b'["\\ud83dA"]', None),
    "reversed_pair": (b'"\\ude00\\ud83d"', None),
    "lone_surrogate_key": (b'{"\\udfff":1}', None),
    "nan": (b'[NaN]', None),
    "infinity": (b'{"a":Infinity}', None),
    "trailing_garbage": (b'{} {}', None),
    "trailing_comma": (b'[1,2,]', None),
    "empty": (b'', None),
    "single_quotes": (b"{'a':1}", None),
    "leading_zero": (b'[01]', None),
    "raw_control_char": (b'"a\x01b"', None),
}


@pytest.mark.parametrize("case", sorted(REJECT))
def test_canonical_rejects(case):
    _, dbg = bins()
    data, path = REJECT[case]
    r = run(dbg, ["json", "canonical"], data)
    assert r.returncode == 1, "%s: %r -> exit %d (want 1), stdout %r" % (
        case, data, r.returncode, r.stdout[:200])
    assert r.stdout == b"", "%s: output on stdout despite the error: %r" % (case, r.stdout[:200])
    assert r.stderr.strip(), "%s: no message on stderr" % case
    if path is not None:
        assert re.search(r"(^|[^\w$.\[\]])%s($|[^\w.\[])" % re.escape(path), r.stderr), \
            "%s: the message does not name the JSON path %s:\n%s" % (case, path, r.stderr)


# --- 2. signatures both ways -----------------------------------------------------------------
def sign_args(key_file, server=SERVER):
    return ["json", "sign", "--key", str(key_file), "--server-name", server]


def verify_args(key, server=SERVER, kid=None):
    return ["json", "verify", "--server-name", server, "--key-id", kid or key_id(key),
            "--public-key", pub_b64(key)]


def sj_verifies(obj, key, server=SERVER):
    try:
        signedjson.sign.verify_signed_json(obj, server, signedjson.key.get_verify_key(key))
        return True
    except signedjson.sign.SignatureVerifyException:
        return False


def _check_sign_both_ways(binary, objs, key, key_file, enc_seed):
    rng = random.Random(enc_seed)
    enc = [jsongen.encode_noncanonical(o, rng) for o in objs]
    sj_signed = [signedjson.sign.sign_json(copy.deepcopy(o), SERVER, key) for o in objs]
    jobs = [(sign_args(key_file), d) for d in enc]
    jobs += [(verify_args(key), jsongen.encode_noncanonical(s, rng)) for s in sj_signed]
    res = run_many(binary, jobs)
    signed_res, verify_res = res[:len(objs)], res[len(objs):]
    fails = []
    for i, (o, r, s) in enumerate(zip(objs, signed_res, sj_signed)):
        want = canonical(s)  # ed25519 is deterministic: byte-identical to signedjson's
        if r.returncode != 0:
            fails.append(("sign: " + kind_of(r), "%s: sign #%d: exit %d: %s; input %r" % (
                binary, i, r.returncode, r.stderr[-300:], enc[i][:200])))
            continue
        if r.stdout != want:
            fails.append(("sign: output differs from signedjson.sign_json + canonicaljson",
                          "%s: %s" % (binary, show_mismatch(i, enc[i], want, r.stdout))))
        try:
            got = json.loads(r.stdout)
        except ValueError:
            fails.append(("sign: output not JSON", "sign #%d: %r" % (i, r.stdout[:200])))
            continue
        if not sj_verifies(got, key):
            fails.append(("sign: signedjson.verify_signed_json rejects chappe's signature",
                          "%s: sign #%d" % (binary, i)))
    for i, r in enumerate(verify_res):
        if r.returncode != 0:
            fails.append(("verify of signedjson's signature: " + kind_of(r),
                          "%s: verify #%d: exit %d: %s" % (binary, i, r.returncode,
                                                          r.stderr.strip()[-300:])))
    return fails


def test_sign_verify_both_ways(sj_key, sj_key_file):
    rel, dbg = bins()
    objs = jsongen.objects(N_SIGN)
    fails = _check_sign_both_ways(rel, objs, sj_key, sj_key_file, 11)
    fails += _check_sign_both_ways(dbg, objs[::N_SIGN // N_SIGN_ASAN][:N_SIGN_ASAN], sj_key,
                                   sj_key_file, 12)
    assert not fails, grouped(fails, 2 * (N_SIGN + N_SIGN_ASAN), "sign/verify runs")


def flip_sig(sig_b64, pos, mask):
    raw = bytearray(decode_base64(sig_b64))
    raw[pos] ^= mask
    return encode_base64(bytes(raw))


def leaf_paths(v, path=()):
    if isinstance(v, dict):
        for k, x in v.items():
            if path == () and k in ("signatures", "unsigned"):
                continue
            yield from leaf_paths(x, path + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from leaf_paths(x, path + (i,))
    else:
        yield path


def mutate(obj, rng):
    """A copy of signed obj with one signed value changed (a character, a digit, a bool)."""
    obj = copy.deepcopy(obj)
    paths = [p for p in leaf_paths(obj) if p]
    if not paths:
        obj["added"] = 1
        return obj, "added key"
    p = rng.choice(paths)
    parent = obj
    for k in p[:-1]:
        parent = parent[k]
    v = parent[p[-1]]
    if isinstance(v, bool):
        nv = not v
    elif isinstance(v, int):
        nv = v + 1 if v < jsongen.INT_MAX else v - 1
    elif isinstance(v, str):
        if v:
            i = rng.randrange(len(v))
            c = ord(v[i])
            nc = c ^ 1
            if 0xd800 <= nc <= 0xdfff:
                nc = 0x41
            nv = v[:i] + chr(nc) + v[i + 1:]
        else:
            nv = "x"
    else:  # None
        nv = 0
    parent[p[-1]] = nv
    return obj, "changed %r: %r -> %r" % (list(p), v, nv)


def test_tampering_rejected_by_both(sj_key, sj_key_file):
    rel, dbg = bins()
    objs = [o for o in jsongen.objects(N_SIGN) if list(leaf_paths(o))][:N_TAMPER]
    rng = random.Random(3)
    cases = []  # (description, object)
    controls = []  # the untampered signed objects: these must verify
    for n, o in enumerate(objs):
        s = signedjson.sign.sign_json(copy.deepcopy(o), SERVER, sj_key)
        controls.append(s)
        sig = s["signatures"][SERVER][key_id(sj_key)]
        positions = sorted({0, 1, 31, 32, 63, rng.randrange(64), rng.randrange(64)})
        for pos in positions:
            t = copy.deepcopy(s)
            t["signatures"][SERVER][key_id(sj_key)] = flip_sig(sig, pos, 1 << rng.randrange(8))
            cases.append(("object %d, signature byte %d flipped" % (n, pos), t))
        for _ in range(2):
            t, what = mutate(s, rng)
            cases.append(("object %d, %s" % (n, what), t))
    # sanity: our tampering is what signedjson rejects
    for what, t in cases:
        assert not sj_verifies(t, sj_key), "test bug: signedjson accepts %s" % what
    enc_rng = random.Random(4)
    jobs = [(verify_args(sj_key), jsongen.encode_noncanonical(t, enc_rng)) for _, t in cases]
    bad = []
    # positive control: a rejection below only means something if the original verifies
    for n, r in enumerate(run_many(rel, [(verify_args(sj_key), jsongen.encode_noncanonical(
            s, enc_rng)) for s in controls])):
        if r.returncode != 0:
            bad.append("%s: object %d untampered: chappe json verify exit %d (want 0): %s" % (
                rel, n, r.returncode, r.stderr.strip()[-300:]))
    for binary, idxs in ((rel, range(len(cases))), (dbg, range(0, len(cases), 7))):
        idxs = list(idxs)
        for i, r in zip(idxs, run_many(binary, [jobs[i] for i in idxs])):
            if r.returncode != 1:
                bad.append("%s: %s: chappe json verify exit %d (want 1)" % (
                    binary, cases[i][0], r.returncode))
            elif not r.stderr.strip():
                bad.append("%s: %s: rejected without a message on stderr" % (binary,
                                                                             cases[i][0]))
    assert not bad, "%d problems (%d untampered controls, %d tampered objects):\n%s" % (
        len(bad), len(controls), len(cases), "\n".join(bad[:10]))


def test_sign_then_tamper_chappe_signature(sj_key, sj_key_file):
    """chappe's own signature, tampered, is rejected by both; untouched, accepted by both;
    changing only `unsigned` or another server's signature keeps it valid."""
    _, dbg = bins()
    obj = {"a": [1, 2, {"b": "c\u00e9\U0001f600"}], "unsigned": {"age": 1}, "n": jsongen.INT_MAX}
    r = run(dbg, sign_args(sj_key_file), json.dumps(obj).encode())
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["unsigned"] == {"age": 1}, "unsigned not kept: %r" % r.stdout
    assert sj_verifies(s, sj_key)
    kid = key_id(sj_key)
    sig = s["signatures"][SERVER][kid]
    variants = []
    for pos in (0, 10, 40, 63):
        t = copy.deepcopy(s)
        t["signatures"][SERVER][kid] = flip_sig(sig, pos, 0x80)
        variants.append(("sig byte %d" % pos, t, False))
    t = copy.deepcopy(s)
    t["n"] -= 1
    variants.append(("value n", t, False))
    t = copy.deepcopy(s)
    t["unsigned"]["age"] = 2
    t["signatures"]["other.example"] = {"ed25519:x": "AAAA"}
    variants.append(("unsigned and other server changed", t, True))
    variants.append(("untouched", s, True))
    for what, t, ok in variants:
        assert sj_verifies(t, sj_key) == ok, "test bug: %s" % what
        rr = run(dbg, verify_args(sj_key), canonical(t))
        assert rr.returncode == (0 if ok else 1), "%s: chappe json verify exit %d (want %d): %s" % (
            what, rr.returncode, 0 if ok else 1, rr.stderr)


def test_verify_wrong_name_key_or_missing(sj_key):
    _, dbg = bins()
    s = canonical(signedjson.sign.sign_json({"x": 1}, SERVER, sj_key))
    other = signedjson.key.generate_signing_key("a_Oth1")
    cases = [
        ("wrong server name", verify_args(sj_key, server="other.localhost"), s),
        ("wrong key id", verify_args(sj_key, kid="ed25519:nope"), s),
        ("wrong public key", ["json", "verify", "--server-name", SERVER, "--key-id",
                              key_id(sj_key), "--public-key", pub_b64(other)], s),
        ("no signatures", verify_args(sj_key), b'{"x":1}'),
        ("not an object", verify_args(sj_key), b"[1]"),
        ("signature not base64", verify_args(sj_key),
         canonical({"x": 1, "signatures": {SERVER: {key_id(sj_key): "!!!"}}})),
        ("signature too short", verify_args(sj_key),
         canonical({"x": 1, "signatures": {SERVER: {key_id(sj_key): "AAAA"}}})),
    ]
    bad = []
    for what, args, data in cases:
        r = run(dbg, args, data)
        if r.returncode != 1 or not r.stderr.strip():
            bad.append("%s: exit %d (want 1 and a message), stderr %r" % (what, r.returncode,
                                                                         r.stderr))
    assert not bad, "\n".join(bad)


def test_sign_rejects_non_canonical_and_non_objects(sj_key_file):
    _, dbg = bins()
    for data in (b"[1]", b'"s"', b'{"a":1.5}', b'{"a":1,"a":1}', b'{"a":"\\ud800"}'):
        r = run(dbg, sign_args(sj_key_file), data)
        assert r.returncode == 1 and r.stdout == b"" and r.stderr.strip(), \
            "json sign %r: exit %d stdout %r stderr %r" % (data, r.returncode, r.stdout,
                                                            r.stderr)


# --- 3. key files ------------------------------------------------------------------------------
def parse_public(stdout):
    out = []
    for ln in stdout.decode().splitlines():
        parts = ln.split()
        assert len(parts) == 2, "key public line %r is not '<key id> <base64>'" % ln
        out.append(tuple(parts))
    return out


def test_keygen_loads_with_signedjson(tmp_path):
    _, dbg = bins()
    p = tmp_path / "new.key"
    r = run(dbg, ["keygen", "-o", str(p)])
    assert r.returncode == 0, "keygen exit %d: %s" % (r.returncode, r.stderr)
    mode = stat.S_IMODE(os.stat(p).st_mode)
    assert mode == 0o600, "keygen wrote mode %o, want 600" % mode
    with open(p) as f:
        keys = signedjson.key.read_signing_keys(f)
    assert len(keys) == 1, "keygen wrote %d keys" % len(keys)
    k = keys[0]
    assert k.alg == "ed25519" and re.fullmatch(r"[A-Za-z0-9_]+", k.version), key_id(k)
    r = run(dbg, ["key", "public", "--key", str(p)])
    assert r.returncode == 0, "key public exit %d: %s" % (r.returncode, r.stderr)
    assert parse_public(r.stdout) == [(key_id(k), pub_b64(k))], \
        "key public printed %r; signedjson reads %s %s" % (r.stdout, key_id(k), pub_b64(k))
    assert "=" not in r.stdout.decode(), "public key is padded: %r" % r.stdout
    # sign with it, verify with signedjson
    r = run(dbg, sign_args(p, "gen.localhost"), b'{"hello":"world"}')
    assert r.returncode == 0, r.stderr
    signedjson.sign.verify_signed_json(json.loads(r.stdout), "gen.localhost",
                                       signedjson.key.get_verify_key(k))
    # two keygens make two different keys
    p2 = tmp_path / "new2.key"
    assert run(dbg, ["keygen", "-o", str(p2)]).returncode == 0
    with open(p2) as f:
        k2 = signedjson.key.read_signing_keys(f)[0]
    assert k2.encode() != k.encode(), "keygen made the same key twice"


def test_keygen_refuses_overwrite(tmp_path):
    _, dbg = bins()
    p = tmp_path / "existing.key"
    assert run(dbg, ["keygen", "-o", str(p)]).returncode == 0
    before = p.read_bytes()
    r = run(dbg, ["keygen", "-o", str(p)])
    assert r.returncode != 0, "keygen overwrote an existing key file (exit 0)"
    assert p.read_bytes() == before, "keygen changed the existing key file"
    assert r.stderr.strip(), "keygen refused without saying why"
    q = tmp_path / "other.txt"
    q.write_text("not a key\n")
    r = run(dbg, ["keygen", "-o", str(q)])
    assert r.returncode != 0 and q.read_text() == "not a key\n", "keygen overwrote a file"
    r = run(dbg, ["keygen", "-o", str(tmp_path / "no-such-dir" / "k.key")])
    assert r.returncode != 0, "keygen into a missing directory exited 0"


def test_signedjson_key_file_works(tmp_path):
    _, dbg = bins()
    k1 = signedjson.key.generate_signing_key("first")
    k2 = signedjson.key.generate_signing_key("second")
    p = write_key_file(tmp_path / "two.key", [k1, k2])
    r = run(dbg, ["key", "public", "--key", str(p)])
    assert r.returncode == 0, r.stderr
    assert parse_public(r.stdout) == [(key_id(k1), pub_b64(k1)), (key_id(k2), pub_b64(k2))], \
        r.stdout
    r = run(dbg, sign_args(p), b'{"a":1}')
    assert r.returncode == 0, r.stderr
    want = canonical(signedjson.sign.sign_json({"a": 1}, SERVER, k1))
    assert r.stdout == want, "json sign with the first of two keys: %r, want %r" % (r.stdout,
                                                                                   want)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606],
                         ids=lambda m: "%o" % m)
def test_key_file_permissions_refused(tmp_path, sj_key, mode):
    _, dbg = bins()
    p = write_key_file(tmp_path / "open.key", [sj_key], mode=mode)
    for args, data in ((["key", "public", "--key", str(p)], b""),
                       (sign_args(p), b'{"a":1}')):
        r = run(dbg, args, data)
        assert r.returncode != 0, "%s on a %o key file exited 0" % (" ".join(args[:2]), mode)
        assert r.stdout == b"", "%s printed %r from a %o key file" % (args[:2], r.stdout, mode)
        assert re.search(r"chmod|mode|permission", r.stderr, re.I), \
            "%s on a %o key file: the message does not mention the mode/chmod:\n%s" % (
                " ".join(args[:2]), mode, r.stderr)


def test_run_refuses_open_key_file(certs, tmp_path, sj_key):
    _, dbg = bins()
    p = write_key_file(tmp_path / "open.key", [sj_key], mode=0o644)
    cfg = harness.make_config(certs, harness.free_port(), harness.free_port(),
                              [("hs.localhost", "http://127.0.0.1:9")],
                              extra={"signing_key_path": str(p)})
    c = tmp_path / "c.yaml"
    c.write_text(harness.to_yaml(cfg))
    r = harness.run_cli(dbg, ["run", "-c", str(c)], timeout=20)
    assert r.returncode != 0, "chappe run with a 0644 signing key exited 0"
    assert not re.search(r"\bready\b", r.stderr), "chappe said ready with a 0644 signing key"
    assert re.search(r"chmod|mode|permission", r.stderr, re.I), \
        "no message about the key file's mode:\n%s" % r.stderr


# --- 4. the spec's test vectors ----------------------------------------------------------------
def test_spec_vectors(tmp_path):
    rel, dbg = bins()
    p = tmp_path / "spec.key"
    fd = os.open(str(p), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, ("ed25519 1 %s\n" % SPEC_SEED).encode())
    os.close(fd)
    sk = nacl.signing.SigningKey(decode_base64(SPEC_SEED))
    pub = encode_base64(sk.verify_key.encode())
    want = [
        (b"{}", b'{"signatures":{"domain":{"ed25519:1":"%s"}}}' % SPEC_SIG_EMPTY.encode()),
        (b'{\n    "one": 1,\n    "two": "Two"\n}',
         b'{"one":1,"signatures":{"domain":{"ed25519:1":"%s"}},"two":"Two"}'
         % SPEC_SIG_ONE_TWO.encode()),
    ]
    for binary in (dbg, rel):
        r = run(binary, ["key", "public", "--key", str(p)])
        assert r.returncode == 0, r.stderr
        assert parse_public(r.stdout) == [("ed25519:1", pub)], r.stdout
        for data, out in want:
            r = run(binary, ["json", "sign", "--key", str(p), "--server-name", "domain"], data)
            assert r.returncode == 0, "%s: sign %r: exit %d %s" % (binary, data, r.returncode,
                                                                   r.stderr)
            assert r.stdout == out, "%s: sign %r:\n got  %r\n want %r" % (binary, data,
                                                                          r.stdout, out)
            r = run(binary, ["json", "verify", "--server-name", "domain", "--key-id",
                             "ed25519:1", "--public-key", pub], out)
            assert r.returncode == 0, "%s: verify of the spec's vector: exit %d %s" % (
                binary, r.returncode, r.stderr)


# --- 5. the key server -------------------------------------------------------------------------
KEY_PATH = "/_matrix/key/v2/server"
OLD_PUB = encode_base64(nacl.signing.SigningKey(b"\x01" * 32).verify_key.encode())
OLD_KEYS = {"ed25519:old1": {"key": OLD_PUB, "expired_ts": 1600000000000},
            "ed25519:old2": {"key": encode_base64(
                nacl.signing.SigningKey(b"\x02" * 32).verify_key.encode()),
                "expired_ts": 1500000000123}}


def fetch_keys(px, host=SERVER):
    with px.tls() as c:
        return c.request("GET", KEY_PATH, host=host)


def check_key_response(resp, key, interval_ms, t0_ms, t1_ms, old):
    assert resp.status == 200, "key server answered %r" % resp
    ctype = resp.header("Content-Type") or ""
    assert ctype.split(";")[0].strip().lower() == "application/json", \
        "Content-Type %r" % ctype
    body = resp.json()
    assert body.get("server_name") == SERVER, body
    kid = key_id(key)
    assert body.get("verify_keys") == {kid: {"key": pub_b64(key)}}, \
        "verify_keys %r, want {%r: {key: %r}}" % (body.get("verify_keys"), kid, pub_b64(key))
    assert body.get("old_verify_keys") == old, "old_verify_keys %r, want %r" % (
        body.get("old_verify_keys"), old)
    vu = body.get("valid_until_ts")
    assert isinstance(vu, int) and not isinstance(vu, bool), "valid_until_ts %r" % vu
    lo, hi = t0_ms + interval_ms - 2000, t1_ms + interval_ms + 2000
    assert lo <= vu <= hi, "valid_until_ts %d not within now + %d ms (%d..%d)" % (
        vu, interval_ms, lo, hi)
    sigs = body.get("signatures", {})
    assert set(sigs) == {SERVER} and set(sigs[SERVER]) == {kid}, "signatures %r" % sigs
    # verify as a remote homeserver would: with the key the response publishes
    published = signedjson.key.decode_verify_key_bytes(
        kid, decode_base64(body["verify_keys"][kid]["key"]))
    signedjson.sign.verify_signed_json(body, SERVER, published)
    return body


@pytest.mark.parametrize("interval,interval_ms", [(None, 86400000), ("1d", 86400000),
                                                  ("2h", 7200000)])
def test_key_server(start_proxy, tmp_path, sj_key, interval, interval_ms):
    p = write_key_file(tmp_path / "server.key", [sj_key])
    extra = {"signing_key_path": str(p), "old_signing_keys": OLD_KEYS}
    if interval is not None:
        extra["key_refresh_interval"] = interval
    t0 = int(time.time() * 1000)
    px = start_proxy(extra=extra)
    for _ in range(2):
        resp = fetch_keys(px)
        t1 = int(time.time() * 1000)
        check_key_response(resp, sj_key, interval_ms, t0, t1, OLD_KEYS)
    assert not px.up.heads, "the key request reached the upstream: %r" % px.up.heads


def test_key_server_no_old_keys(start_proxy, tmp_path, sj_key):
    p = write_key_file(tmp_path / "server.key", [sj_key])
    t0 = int(time.time() * 1000)
    px = start_proxy(extra={"signing_key_path": str(p)})
    resp = fetch_keys(px)
    check_key_response(resp, sj_key, 86400000, t0, int(time.time() * 1000), {})
    assert not px.up.heads, "the key request reached the upstream: %r" % px.up.heads


def test_key_server_query_string(start_proxy, tmp_path, sj_key):
    """A query string does not change the path: still the relay's own answer."""
    p = write_key_file(tmp_path / "server.key", [sj_key])
    t0 = int(time.time() * 1000)
    px = start_proxy(extra={"signing_key_path": str(p)})
    with px.tls() as c:
        resp = c.request("GET", KEY_PATH + "?minimum_valid_until_ts=1", host=SERVER)
    check_key_response(resp, sj_key, 86400000, t0, int(time.time() * 1000), {})
    assert not px.up.heads, "the key request reached the upstream: %r" % px.up.heads


def test_key_server_keygen_key(start_proxy, tmp_path):
    """A key made by `chappe keygen`, published and verified by signedjson."""
    _, dbg = bins()
    p = tmp_path / "gen.key"
    assert run(dbg, ["keygen", "-o", str(p)]).returncode == 0
    with open(p) as f:
        k = signedjson.key.read_signing_keys(f)[0]
    t0 = int(time.time() * 1000)
    px = start_proxy(extra={"signing_key_path": str(p)})
    check_key_response(fetch_keys(px), k, 86400000, t0, int(time.time() * 1000), {})


def test_key_path_other_host_proxied_one_homeserver(start_proxy, tmp_path, sj_key):
    p = write_key_file(tmp_path / "server.key", [sj_key])
    px = start_proxy(extra={"signing_key_path": str(p)})
    for host in ("hs.localhost", "other.localhost"):
        resp = fetch_keys(px, host=host)
        assert resp.status == 200, "Host %s: %r" % (host, resp)
        body = resp.json()
        assert body.get("path") == KEY_PATH and "verify_keys" not in body, \
            "Host %s: not the upstream's answer: %r" % (host, body)
    paths = [(r.header("Host"), r.path) for r in px.up.heads]
    assert paths == [("hs.localhost", KEY_PATH), ("other.localhost", KEY_PATH)], \
        "the upstream saw %r" % paths
    # and the relay's own name still gets the relay's keys
    assert "verify_keys" in fetch_keys(px).json()
    assert len(px.up.heads) == 2


def test_key_path_other_host_proxied_two_homeservers(start_proxy, tmp_path, sj_key):
    p = write_key_file(tmp_path / "server.key", [sj_key])
    px = start_proxy(homeservers=["hs.localhost", "hs2.localhost"],
                     extra={"signing_key_path": str(p)})
    for i, host in enumerate(("hs.localhost", "hs2.localhost")):
        resp = fetch_keys(px, host=host)
        assert resp.status == 200, "Host %s: %r" % (host, resp)
        assert resp.json().get("path") == KEY_PATH, "Host %s: %r" % (host, resp.json())
        seen = [(r.header("Host"), r.path) for r in px.ups[i].heads]
        assert seen == [(host, KEY_PATH)], "upstream %d saw %r" % (i, seen)
    resp = fetch_keys(px)
    assert resp.status == 200 and "verify_keys" in resp.json(), resp
    assert sum(len(u.heads) for u in px.ups) == 2, "the relay's key request was proxied"
