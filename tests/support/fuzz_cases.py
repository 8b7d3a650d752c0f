"""The fuzz harness's cases (tests/test_fuzz.py), generated from a seeded random.Random so every run tries
the same ones: mutated configs (from edge/config.example.toml) and MQTT command messages."""

from __future__ import annotations

import copy
import json
import random
import tomllib

from edge.mqtt.commands import COMMANDS
from edge.service.config import EXAMPLE_PATH

# -- configs -------------------------------------------------------------------------------------------------


class Raw(str):
    """TOML text written as it is (inf, a 5,000-digit number, a date)."""


HUGE_INTS = [10**20, 2**63, -(2**63) - 1, 10**300, Raw(str(10**4000)), Raw("1" * 4500), 2**31, 1001, 10**6]
FLOATS = [1e308, -1e308, 5e-324, 1e-300, -0.0, Raw("inf"), Raw("-inf"), Raw("nan"), Raw("1e999")]
STRINGS = ["", " ", "inf", "nan", "a\x00b", "\x00", "x" * 5000, "ü日本語", "../../../etc/passwd", "facelock/#",
           "+", "picamera2", "/dev/zero", "0", "-1", "\u2028", "a" * 300]
OTHERS = [True, False, [], [1, 2], ["a", None], [[[]]], {}, {"a": 1}, Raw("1979-05-27T07:32:00Z"), Raw("07:32:00"),
          0, -1, 1, 0.5, 3, 1000]


def _toml(value) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        out = []
        for c in value:
            out.append("\\\\" if c == "\\" else '\\"' if c == '"' else
                       f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
        return '"' + "".join(out) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def _render(data: dict) -> str:
    """TOML text for `data`: keys that are not tables first (after a [header] they would belong to it)."""
    lines = [f"{json.dumps(k)} = {_toml(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if not isinstance(table, dict):
            continue
        lines.append(f"[{json.dumps(section)}]")
        lines += [f"{json.dumps(k)} = {_toml(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _nested(rng: random.Random) -> Raw:
    depth = rng.choice([3, 50, 400, 900, 3000])
    if rng.random() < 0.5:
        return Raw("[" * depth + "1" + "]" * depth)
    return Raw("{a = " * depth + "1" + "}" * depth)


def _hostile_value(rng: random.Random):
    pool = rng.choice([HUGE_INTS, FLOATS, STRINGS, OTHERS])
    return _nested(rng) if rng.random() < 0.08 else rng.choice(pool)


def _in_range_value(rng: random.Random, default):
    """A plausible edit: a number near the default (sometimes zero or negative), a flag flipped."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return rng.choice([0, 1, 2, default, default * 2, default + 1, -1, rng.randint(0, 2000)])
    if isinstance(default, float):
        return rng.choice([0.0, default, default * 2, default / 2, 1.0, -1.0, rng.uniform(0, 100)])
    return default


def _mutate_data(rng: random.Random, data: dict) -> None:
    section = rng.choice(sorted(data))
    table = data[section]
    if not isinstance(table, dict):  # made a non-table by an earlier mutation
        table = data[section] = {}
    key = rng.choice(sorted(table)) if table else None
    op = rng.choice(["delete", "delete", "hostile", "hostile", "hostile", "in_range", "in_range", "in_range",
                     "unknown_key", "unknown_section", "not_a_table", "drop_section"])
    if op == "delete" and key:
        del table[key]
    elif op == "hostile" and key:
        table[key] = _hostile_value(rng)
    elif op == "in_range" and key:
        table[key] = _in_range_value(rng, table[key])
    elif op == "unknown_key":
        table[rng.choice(["hots", "n2", "", "x" * 200, "ключ"])] = 1
    elif op == "unknown_section":
        data[rng.choice(["mqqt", "decide.extra", "x"])] = {"a": 1}
    elif op == "not_a_table":
        data[section] = _hostile_value(rng)
    elif op == "drop_section":
        del data[section]


def _mutate_text(rng: random.Random, text: str) -> bytes:
    lines = text.splitlines()
    op = rng.choice(["delete_line", "duplicate_line", "random_bytes", "truncate", "deep_header", "junk_line",
                     "bad_utf8"])
    i = rng.randrange(len(lines))
    if op == "delete_line":
        del lines[i]
    elif op == "duplicate_line":  # a duplicate key, or a section header twice
        lines.insert(i, lines[i])
    elif op == "deep_header":
        lines.append("[service" + ".x" * rng.choice([5, 500, 5000]) + "]")
    elif op == "junk_line":
        lines.insert(i, rng.choice(["= 1", "[[decide]]", "[decide", "k = ", "k = '''", "n = 1_000_000_000_000",
                                    "a.b.c = 1", "threshold = 0x7fffffffffffffff"]))
    raw = ("\n".join(lines) + "\n").encode()
    if op == "random_bytes":
        pos = rng.randrange(len(raw))
        raw = raw[:pos] + rng.randbytes(rng.randint(1, 40)) + raw[pos:]
    elif op == "truncate":
        raw = raw[:rng.randrange(len(raw))]
    elif op == "bad_utf8":
        raw = raw.replace(b"INFO", b"\xff\xfe\xed", 1) + "\ud800".encode("utf-8", "surrogatepass")
    return raw


def config_cases(rng: random.Random, n: int) -> list[bytes]:
    example = EXAMPLE_PATH.read_text()
    base = tomllib.loads(example)
    cases = []
    for i in range(n):
        if i % 4 == 3:
            cases.append(_mutate_text(rng, example))
            continue
        data = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            if data:
                _mutate_data(rng, data)
        cases.append(_render(data).encode())
    return cases


# -- commands ------------------------------------------------------------------------------------------------


def _random_json(rng: random.Random, depth: int = 0):
    """A JSON value whose keys and leaves are the ones commands use, with wrong types and bad names."""
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([0, 1, -1, 50, 51, 10**30, 2**63, True, False, None])
    if kind == 1:
        return rng.choice([0.5, 1e308, -0.0, 3.0])
    if kind == 2:
        return rng.choice(["", "alice", "Alice", "unknown", "x" * 70, "a\u0000b", "bob  smith", " bob", "日本",
                           "\ud800", "LOCK", "unlock", "open", "\u202e", "../etc"])
    if kind in (3, 4):
        return rng.choice(["bob", "carol", "Robert O'Neil"])
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["name", "frames", "id", "add", "to", "action", "cmd", "ts", "nonce", "sig", "extra"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def command_cases(rng: random.Random, n: int) -> list[tuple[str, bytes, int, bool]]:
    """(command name, payload, max_bytes, retained) for `n` messages."""
    names = [*COMMANDS, "", "unknown", "enroll/x", "ÿ" * 40, "reload\x00", "lock "]
    cases = []
    for i in range(n):
        name = rng.choice(names) if rng.random() < 0.3 else rng.choice(list(COMMANDS))
        max_bytes = rng.choice([64, 4096, 4096, 1 << 20])
        kind = i % 10
        if kind == 0:  # nesting deeper than Python's recursion limit, under the size cap
            depth = rng.choice([900, 1100, 2000, 4000])
            opener, closer = rng.choice([("[", "]"), ('{"a":', "}"), ('{"name":', "}")])
            payload = (opener * depth + "1" + closer * depth).encode()
            max_bytes = max(max_bytes, len(payload))
        elif kind == 1:  # numbers past every limit
            digits = rng.choice([30, 400, 4301, 6000])
            payload = (rng.choice(['{"name": "bob", "frames": ', '{"ts": ', "[", '{"id": '])
                       + "9" * digits + rng.choice(["}", "]", ""])).encode()
            max_bytes = 1 << 20
        elif kind == 2:  # not UTF-8
            payload = rng.choice([b"\xff\xfe", b'{"name": "\xc0\xaf"}', b"\xed\xa0\x80", rng.randbytes(20)])
        elif kind == 3:  # NaN, Infinity, duplicates, trailing junk
            payload = rng.choice([b'{"frames": NaN}', b'{"frames": Infinity, "name": "bob"}',
                                  b'{"name": "a", "name": "b"}', b'{"name": "bob"} junk', b"", b"   ", b"null",
                                  b'"just a string"', b"[]", b"{}", b'{"frames": 1e400, "name": "bob"}'])
        elif kind == 4:  # lock's plain text
            name = "lock"
            payload = rng.choice([b"LOCK", b"unlock", b" open ", b"{", b'{"action": ["LOCK"]}',
                                  b'{"action": "LOCK"}', b"{" + b"[" * 3000, b"LOCKED", rng.randbytes(10)])
        elif kind == 5:  # envelope-shaped, with wrong types
            payload = json.dumps({"cmd": _random_json(rng), "ts": _random_json(rng), "nonce": _random_json(rng),
                                  "sig": rng.choice(["0" * 64, _random_json(rng)])}).encode()
        elif kind == 6:  # over the size cap
            payload = b'{"name": "' + b"a" * (max_bytes + 1) + b'"}'
        else:  # random JSON trees
            payload = json.dumps(_random_json(rng)).encode()
        cases.append((name, payload, max_bytes, rng.random() < 0.05))
    return cases
