"""Options: the typed, frozen dataclasses that are both a stage's parameters and a config section.

One implementation of what every section needs: coercing TOML values to the field types (`build_options`),
range checks with errors that name `section.key` (`check`), and the field documentation that the
generated example config is written from (`field_docs`, `toml_value`, `describe`). Secrets (any field
whose name contains "password" or "key") never appear in an error message.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from edge.errors import ConfigError

SECRET_MARKERS = ("password", "secret", "key_b64")

# Upper bounds for the sections' validate(): no setting needs more, and a huge value (decide.n = 10**20,
# a sleep of 1e300 s) would otherwise pass `--check` and crash the service when it starts.
MAX_STRING = 4096  # characters in any string value (PATH_MAX; longer is no path, host or topic)
MINUTE_S, HOUR_S, DAY_S = 60.0, 3600.0, 86400.0
WEEK_S = 7 * DAY_S
MAX_COUNT = 1000  # votes, frames, attempts: counts of things a person does at the door
MAX_PX = 10000  # lengths in pixels (frame sizes, faces, borders): no camera frame is larger


def shown(key: str, value: Any) -> str:
    """`value` as an error message may show it: secrets are replaced by a placeholder, and a long value
    (a 4,000-digit integer, a nested list) is cut short."""
    if any(m in key for m in SECRET_MARKERS) and value:
        return "<hidden>"
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nesting too deep; an int past Python's 4,300-digit limit
        return f"<{type(value).__name__}>"
    return text if len(text) <= 60 else f"{text[:50]}... ({len(text)} characters)"


def check(section: str, options: Any, checks: Iterable[tuple[str, bool, str]]) -> Any:
    """Raise ConfigError for the first `(key, ok, expected)` whose `ok` is false, naming `section.key`,
    the value found (unless secret) and what was expected; else return `options` (validate() ends here)."""
    for key, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{section}.{key} = {shown(key, getattr(options, key))}: expected {expected}")
    return options


def describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe(args[0])}"
        return f"a list of {len(args)} items ({', '.join(describe(a) for a in args)})"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """`value` (from TOML) as type `tp`, or _Mismatch."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer past 1.8e308
                raise _Mismatch from None
            if math.isfinite(number):
                return number
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp is Path:
        if isinstance(value, str):
            return Path(value)
        raise _Mismatch
    if origin is Literal:
        for allowed in typing.get_args(tp):
            if type(allowed) is type(value) and allowed == value:
                return value
        raise _Mismatch
    if origin in (types.UnionType, typing.Union):
        for arm in typing.get_args(tp):
            if arm is type(None):
                continue  # TOML has no null: leave the key out for None
            try:
                return _coerce(value, arm)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, list):
            raise _Mismatch
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    raise _Mismatch


def build_options(cls: type, values: dict[str, Any], section: str, source: str = "<config>") -> Any:
    """An instance of dataclass `cls` from the TOML table `[section]` of `source` (a file name); every
    ConfigError names the file and `section.key`, the way a user writes it."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{source}: [{section}]: unknown key {key!r}; expected one of {', '.join(sorted(fields))}")
        tp = hints[key]
        try:
            kwargs[key] = _coerce(value, tp)
        except (_Mismatch, RecursionError):
            raise ConfigError(f"{source}: {section}.{key} = {shown(key, value)}: expected {describe(tp)}") from None
        bad = _bad_string(kwargs[key])
        if bad:
            raise ConfigError(f"{source}: {section}.{key} = {shown(key, value)}: expected {bad}")
    try:
        options = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: [{section}]: {exc}") from exc
    validate = getattr(options, "validate", None)
    if callable(validate):
        try:
            result = validate()
        except ConfigError as exc:  # the section's own checks already name `section.key`
            raise ConfigError(f"{source}: {exc}") from exc
        except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:  # a check that could not run
            raise ConfigError(f"{source}: [{section}]: values out of range ({type(exc).__name__}: {exc})") \
                from exc
        if result is not None:
            options = result
    return options


def _bad_string(value: Any) -> str:
    """What a string (or a string in a list) breaks, as the `expected` of an error; "" when it is fine. The
    generic rule for every string, since most are paths, hosts or topics: no NUL character (the OS, SQLite
    and MQTT end a string there, Python refuses it in a path) and at most MAX_STRING characters."""
    for item in value if isinstance(value, tuple) else (value,):
        if isinstance(item, (str, Path)):
            text = str(item)
            if "\x00" in text:
                return "a string without NUL characters"
            if len(text) > MAX_STRING:
                return f"a string of at most {MAX_STRING} characters"
    return ""



def field_docs(cls: type) -> dict[str, str]:
    """Per field: the docstring that follows it in the class body, else its trailing `# comment`."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    indent = len(lines[0]) - len(lines[0].lstrip())
    tree = ast.parse("\n".join(line[indent:] for line in lines))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for i, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        name = node.target.id
        nxt = body[i + 1] if i + 1 < len(body) else None
        if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            docs[name] = " ".join(nxt.value.value.split())
            continue
        line = lines[node.lineno - 1]
        if "#" in line:
            docs[name] = line.split("#", 1)[1].strip()
    return docs


def toml_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):  # a tuple field, or a list as read back from TOML
        return "[" + ", ".join(toml_value(v) or '""' for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def wrap(text: str, width: int = 108) -> list[str]:
    return textwrap.wrap(text, width=width - 2) or [""]
