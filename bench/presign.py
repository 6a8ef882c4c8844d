#!/usr/bin/python3
# presign.py -- pre-sign N federation requests (X-Matrix) for the wrk script bench/verify.lua.
# SPDX-License-Identifier: ISC
#
# Usage: /usr/bin/python3 bench/presign.py --key FILE --out DIR [--count N] [--tag TAG]
#            [--generate] [--origin NAME] [--destination NAME] [--send-lua FILE]
#
# Signs the way Synapse does (synapse/http/matrixfederationclient.py, build_auth_headers):
# signedjson.sign.sign_json over {method, uri, origin, destination, content}, with the body
# sent as canonical JSON (encode_canonical_json), header
#   X-Matrix origin="...",key="ed25519:ID",sig="...",destination="..."
# Independent of chappe's code: python3-signedjson and python3-canonicaljson (PyNaCl).
#
# The body is the ~1 KiB transaction of bench/send.lua (read from its `local body` string
# pieces, so the two never drift apart), re-encoded as canonical JSON. Writes:
#   DIR/body.json      the canonical body, no newline (every request carries these bytes)
#   DIR/requests.tsv   N lines "PATH<TAB>AUTHORIZATION", PATH /_matrix/federation/v1/send/TXN,
#                      TXN = TAG-<n>: every request has its own txnId, hence its own signature
#   DIR/public.txt     "ed25519:ID PUB" (as `chappe key public` prints it)
#   DIR/raw.msg, raw.sig, raw.pk  the first request's signed bytes, signature and public key
#                      (for the raw libsodium loop of bench/verify.sh)
# --generate writes a new key to --key (Synapse format, mode 0600) when the file is missing.
# Before returning, the first request's signature is checked with signedjson's verifier.
import argparse
import os
import re
import secrets
import string
import sys
import time

import canonicaljson
import signedjson.key
import signedjson.sign
from unpaddedbase64 import decode_base64, encode_base64

SEND_PATH = "/_matrix/federation/v1/send/"


def body_from_send_lua(path):
    """The `local body = '...' .. '...'` string of send.lua, parsed as JSON."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^local body = (.*?)^\s*$", text, re.S | re.M)
    if m is None:
        sys.exit(f"presign: no `local body = ...` block in {path}")
    pieces = re.findall(r"'([^']*)'", m.group(1))
    try:
        body = canonicaljson.json.loads("".join(pieces))
    except ValueError as e:
        sys.exit(f"presign: the body of {path} is not JSON: {e}")
    if not isinstance(body, dict):
        sys.exit(f"presign: the body of {path} is not a JSON object")
    return body


def load_key(path, generate):
    if generate and not os.path.exists(path):
        # version "a_" and four random alphanumerics, as Synapse and `chappe keygen` make it
        alnum = string.ascii_letters + string.digits
        key = signedjson.key.generate_signing_key(
            "a_" + "".join(secrets.choice(alnum) for _ in range(4)))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            signedjson.key.write_signing_keys(f, [key])
    with open(path, encoding="ascii") as f:
        keys = signedjson.key.read_signing_keys(f)
    if not keys:
        sys.exit(f"presign: no key in {path}")
    return keys[0]


def main():
    ap = argparse.ArgumentParser(description="pre-sign X-Matrix requests for bench/verify.lua")
    ap.add_argument("--key", required=True, help="signing key file (Synapse format)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--count", type=int, default=50000)
    ap.add_argument("--tag", default=str(int(time.time())), help="txnId prefix")
    ap.add_argument("--origin", default="a.example.org")
    ap.add_argument("--destination", default="localhost")
    ap.add_argument("--generate", action="store_true", help="create --key when missing")
    ap.add_argument("--send-lua", default=os.path.join(os.path.dirname(__file__), "send.lua"))
    a = ap.parse_args()
    if not 1 <= a.count <= 10_000_000:
        sys.exit("presign: --count must be 1-10000000")

    key = load_key(a.key, a.generate)
    key_id = f"{key.alg}:{key.version}"
    vk = signedjson.key.get_verify_key(key)
    body = body_from_send_lua(a.send_lua)
    body_bytes = canonicaljson.encode_canonical_json(body)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "body.json"), "wb") as f:
        f.write(body_bytes)
    with open(os.path.join(a.out, "public.txt"), "w", encoding="ascii") as f:
        f.write(f"{key_id} {encode_base64(vk.encode())}\n")

    started = time.monotonic()
    first = None
    with open(os.path.join(a.out, "requests.tsv"), "w", encoding="ascii") as f:
        for n in range(1, a.count + 1):
            uri = f"{SEND_PATH}{a.tag}-{n}"
            req = {"method": "PUT", "uri": uri, "origin": a.origin,
                   "destination": a.destination, "content": body}
            signedjson.sign.sign_json(req, a.origin, key)
            sig = req["signatures"][a.origin][key_id]
            f.write(f'{uri}\tX-Matrix origin="{a.origin}",key="{key_id}",sig="{sig}",'
                    f'destination="{a.destination}"\n')
            if first is None:
                first = req

    # the first request, checked independently, and its raw bytes for the libsodium loop
    signedjson.sign.verify_signed_json(first, a.origin, vk)
    sig = decode_base64(first.pop("signatures")[a.origin][key_id])
    for name, data in (("raw.msg", canonicaljson.encode_canonical_json(first)),
                       ("raw.sig", sig), ("raw.pk", vk.encode())):
        with open(os.path.join(a.out, name), "wb") as f:
            f.write(data)
    print(f"presign: {a.count} requests signed by {a.origin} {key_id} in "
          f"{time.monotonic() - started:.1f} s; body {len(body_bytes)} bytes (canonical)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
