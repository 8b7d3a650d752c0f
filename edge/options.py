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


def shown(key: str, value: Any) -> str:
    """`value` as an error message may show it: secrets are replaced by a placeholder."""
    if any(m in key for m in SECRET_MARKERS) and value:
        return "<hidden>"
    return repr(value)


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
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
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
        except _Mismatch:
            raise ConfigError(f"{source}: {section}.{key} = {shown(key, value)}: expected {describe(tp)}") from None
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
        if result is not None:
            options = result
    return options



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
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(v) or '""' for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def wrap(text: str, width: int = 108) -> list[str]:
    return textwrap.wrap(text, width=width - 2) or [""]
