"""Deterministic JSON values for chappe's signing tests: generated edge-case values (deep
nesting, control characters, astral and combining characters, integers at the canonical
limits, keys whose UTF-16 and code-point orders differ, large objects) and a randomized
encoder that writes each value in a valid but non-canonical form (whitespace, escapes,
key order)."""
# SPDX-License-Identifier: ISC

import json
import random

INT_MAX = 2 ** 53 - 1  # Matrix appendices, "Canonical JSON": [-(2**53)+1, (2**53)-1]

CONTROLS = [chr(c) for c in range(0x20)]
SPECIALS = [
    '"', "\\", "/", "\x7f", "\u0080", "\u00e9", "\u00ff", "\u0100", "\u07ff", "\u0800",
    "\u2028", "\u2029", "\ufeff", "\ufffd", "\ufffe", "\uffff", "\ufb01", "\ue000",
    "\U00010000", "\U0001f600", "\U0001d11e", "\U0010ffff", "\U0002a6d6",
    "e\u0301", "\u0301", "\u0308\u0323", "A\u030a", "\u00c5", "\u1100\u1161\u11a8",
    "\u65e5\u672c\u8a9e", "\u0915\u094d\u0937", "\U0001f469\u200d\U0001f4bb", "\u200b",
]
# Pairs ordered one way by code point and the other by UTF-16 code unit: every BMP
# character at or above U+E000 sorts after any astral one in UTF-16 (D800-DBFF).
ORDER_KEYS = [
    "\ufb01", "\U0001f600", "\uff61", "\U00010000", "\ue000", "\U00010348", "\uffff",
    "\U0010ffff", "\ufffd", "\U0001d11e", "a", "ab", "a\x00", "", "\x00", "\x1f", "A",
    "\u00e9", "e\u0301", "\U0001f600a", "\ufb01\U0001f600", "\U0001f600\ufb01",
]
INTS = [0, 1, -1, INT_MAX, -INT_MAX, INT_MAX - 1, -INT_MAX + 1, 2 ** 31, -2 ** 31,
        2 ** 32, 2 ** 31 - 1, 10, 100, -10, 2 ** 52, -2 ** 52]


def rand_char(rng):
    r = rng.random()
    if r < 0.55:
        return chr(rng.randint(0x20, 0x7e))
    if r < 0.65:
        return rng.choice(CONTROLS)
    if r < 0.80:
        return rng.choice(SPECIALS)
    if r < 0.92:
        c = rng.randint(0x80, 0xfffd)
        while 0xd800 <= c <= 0xdfff:
            c = rng.randint(0x80, 0xfffd)
        return chr(c)
    return chr(rng.randint(0x10000, 0x10ffff))


def rand_str(rng, maxlen=16):
    return "".join(rand_char(rng) for _ in range(rng.randint(0, maxlen)))


def rand_int(rng):
    r = rng.random()
    if r < 0.4:
        return rng.choice(INTS)
    if r < 0.7:
        return rng.randint(-1000, 1000)
    return rng.randint(-INT_MAX, INT_MAX)


def rand_scalar(rng):
    r = rng.random()
    if r < 0.45:
        return rand_str(rng)
    if r < 0.8:
        return rand_int(rng)
    return rng.choice([True, False, None])


def no_nul(key):
    """chappe refuses U+0000 in object keys (its JSON parser, Jansson, cannot hold one; see
    test_canonical_nul_in_keys_refused), so generated keys replace it; strings keep it."""
    return key.replace("\x00", "\x01")


def rand_key(rng):
    r = rng.random()
    if r < 0.2:
        return no_nul(rng.choice(ORDER_KEYS))
    if r < 0.3:
        return no_nul(rng.choice(CONTROLS) + rand_str(rng, 3))
    return no_nul(rand_str(rng, 8))


def rand_tree(rng, depth, width=5):
    """A random value at most depth levels of containers deep."""
    if depth <= 0 or rng.random() < 0.3:
        return rand_scalar(rng)
    if rng.random() < 0.5:
        return [rand_tree(rng, depth - 1, width) for _ in range(rng.randint(0, width))]
    obj = {}
    for _ in range(rng.randint(0, width)):
        obj[rand_key(rng)] = rand_tree(rng, depth - 1, width)
    return obj


def deep(rng, levels):
    """levels nested containers (arrays and objects, mixed) around a small value."""
    v = rand_scalar(rng) if rng.random() < 0.7 else rng.choice([{}, []])
    for i in range(levels):
        if rng.random() < 0.5:
            v = [v] if rng.random() < 0.5 else [rand_scalar(rng), v, rand_scalar(rng)]
        else:
            v = {rand_key(rng): v} if rng.random() < 0.5 else {
                rand_key(rng): v, rand_key(rng) + "\x01" + str(i): rand_scalar(rng)}
    return v


def controls_value(rng):
    """Every control character U+0000..U+001F in keys and in string values."""
    obj = {}
    for c in CONTROLS:
        obj[no_nul(c)] = c
        obj[no_nul("k" + c + "k")] = c * rng.randint(1, 3) + rand_str(rng, 4)
    obj["all"] = "".join(CONTROLS)
    obj[no_nul("".join(CONTROLS))] = ["".join(CONTROLS[::-1]), "\\\"/\x7f"]
    return obj


def order_value(rng):
    keys = sorted(set(no_nul(k) for k in ORDER_KEYS))
    rng.shuffle(keys)
    obj = {k: rand_scalar(rng) for k in keys[:rng.randint(2, len(keys))]}
    if rng.random() < 0.5:
        obj["nested"] = {k: i for i, k in enumerate(keys)}
    return obj


def large_object(rng):
    n = rng.randint(200, 2000)
    obj = {}
    for i in range(n):
        k = no_nul(rand_str(rng, 10)) if rng.random() < 0.7 else "key%05d" % rng.randint(0, 99999)
        obj[k] = rand_tree(rng, 2, 3) if rng.random() < 0.2 else rand_scalar(rng)
    return obj


FIXED = [
    {}, [], "", 0, True, False, None, INT_MAX, -INT_MAX, "".join(CONTROLS),
    {"one": 1, "two": "Two"}, {"b": "2", "a": "1"},
    {"auth": {"success": True, "mxid": "@john.doe:example.com", "profile": {
        "display_name": "John Doe", "three_pids": [
            {"medium": "email", "address": "john.doe@example.org"},
            {"medium": "msisdn", "address": "123456789"}]}}},
    {"a": "\u65e5\u672c\u8a9e"}, {"\u672c": 2, "\u65e5": 1}, {"a": "\u65e5"}, {"a": None},
    {"\ufb01": 1, "\U0001f600": 2}, {"\U0001f600": 1, "\ufb01": 2},
    {"": {"": {"": []}}}, [[[[[]]]]], [{}, [], {}, []], {"a": {}, "b": []},
    "\U0010ffff\U00010000\uffff\ue000", "e\u0301\u0301\u0301",
]


def values(n, seed=20240611):
    """n deterministic values, every category represented."""
    rng = random.Random(seed)
    out = list(FIXED[:n])
    kinds = [lambda: deep(rng, rng.randint(50, 99)), lambda: large_object(rng),
             lambda: controls_value(rng), lambda: order_value(rng),
             lambda: deep(rng, rng.randint(5, 30))]
    i = 0
    while len(out) < n:
        k = i % 10
        out.append(kinds[k]() if k < len(kinds) else rand_tree(rng, rng.randint(1, 8)))
        i += 1
    return out


def objects(n, seed=7):
    """n deterministic JSON objects (for signing)."""
    rng = random.Random(seed)
    out = [{}, {"one": 1, "two": "Two"}]
    while len(out) < n:
        v = rand_tree(rng, rng.randint(1, 6))
        if not isinstance(v, dict):
            v = {"v": v}
        r = rng.random()
        if r < 0.2:
            v["unsigned"] = {"age_ts": rng.randint(0, INT_MAX), "x": rand_str(rng)}
        elif r < 0.35:
            v["signatures"] = {"other.example": {"ed25519:zz": "c2lnbmF0dXJl"}}
        elif r < 0.45:
            v["signatures"] = {}
            v["unsigned"] = {}
        if rng.random() < 0.1:
            v.update(controls_value(rng))
        if rng.random() < 0.1:
            v.update(order_value(rng))
        out.append(v)
    return out


# --- a randomized, valid, non-canonical encoder ---------------------------------------------
_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
          "\t": "\\t"}
_WS = ["", "", "", "", " ", "\n", "\t", "\r\n  ", "  "]


def _u(rng, cp):
    s = "\\u%04x" % cp
    return s.upper().replace("\\U", "\\u") if rng.random() < 0.5 else s


def _enc_str(s, rng, p_escape):
    out = ['"']
    for ch in s:
        cp = ord(ch)
        if ch in _SHORT and (ch in '"\\' or rng.random() < 0.5 or p_escape == 0):
            out.append(_SHORT[ch])
        elif cp < 0x20 or ch in _SHORT:
            out.append(_u(rng, cp))
        elif ch == "/" and rng.random() < p_escape:
            out.append("\\/")
        elif rng.random() < p_escape:
            if cp >= 0x10000:
                v = cp - 0x10000
                out.append(_u(rng, 0xd800 + (v >> 10)) + _u(rng, 0xdc00 + (v & 0x3ff)))
            else:
                out.append(_u(rng, cp))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _enc(v, rng, p_escape, ws, out):
    if isinstance(v, dict):
        items = list(v.items())
        rng.shuffle(items)
        out.append("{")
        for i, (k, x) in enumerate(items):
            if i:
                out.append(",")
            out.append(ws())
            out.append(_enc_str(k, rng, p_escape))
            out.append(ws() + ":" + ws())
            _enc(x, rng, p_escape, ws, out)
            out.append(ws())
        out.append(ws() if not items else "")
        out.append("}")
    elif isinstance(v, list):
        out.append("[")
        for i, x in enumerate(v):
            if i:
                out.append(",")
            out.append(ws())
            _enc(x, rng, p_escape, ws, out)
            out.append(ws())
        out.append("]")
    elif isinstance(v, str):
        out.append(_enc_str(v, rng, p_escape))
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif v is None:
        out.append("null")
    elif isinstance(v, int):
        out.append(str(v))
    else:
        raise TypeError(type(v))


def encode_noncanonical(v, rng):
    """v as valid JSON (UTF-8 bytes) in a randomly chosen non-canonical style."""
    style = rng.randint(0, 3)
    p_escape = [0.0, 0.1, 0.5, 1.0][style]
    if rng.random() < 0.3:
        def ws():
            return ""
    else:
        def ws():
            return rng.choice(_WS)
    out = [ws()]
    _enc(v, rng, p_escape, ws, out)
    out.append(rng.choice(["", "\n", " \n", "\r\n", "\t"]))
    text = "".join(out)
    return text.encode("utf-8")


def check_roundtrip(v, data):
    """The encoder's own check: data decodes back to exactly v."""
    got = json.loads(data.decode("utf-8"))
    if got != v or type(got) is not type(v):
        raise AssertionError("jsongen encoder bug: %r does not decode to the value" % data[:200])
