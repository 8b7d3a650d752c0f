"""The service's TOML configuration, validated at start against the stages' own Options dataclasses.

Each section of the file is one frozen Options dataclass (`SECTIONS`); its field names are the keys, its
type hints the accepted types (int, float, bool, str, tuple[...], X | None, Literal[...]) and its defaults
the values of keys left out. Unknown sections and keys are refused; every error names the file, the
section and key, what was found and what was expected. After the types, each section's own `validate()`
(when it has one) checks ranges.

    config = load_config("/etc/facelock/config.toml")
    config.mqtt.host, config.decide.threshold, config.is_set("decide", "threshold")

`render_example()` writes the documented example (edge/config.example.toml, kept equal by a test) from the
same dataclasses: each key with its default and the field's docstring (or trailing comment) above it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge.errors import ConfigError

# section -> "module:Class". Imported lazily so that reading this table costs nothing.
SECTIONS: dict[str, str] = {
    "service": "edge.service:ServiceOptions",
    "model": "edge.service:ModelOptions",
    "source": "edge.sources:SourceOptions",
    "detector": "edge.detect:DetectorOptions",
    "quality": "edge.quality:QualityOptions",
    "gallery": "edge.service:GalleryOptions",
    "match": "edge.match:MatchOptions",
    "decide": "edge.decide:DecideOptions",
    "relay": "edge.actuator:RelayOptions",
    "mqtt": "edge.mqtt:MqttOptions",
    "outbox": "edge.outbox:OutboxOptions",
    "homeassistant": "edge.discovery:DiscoveryOptions",
}

SECTION_TITLES = {
    "service": "The service loop, watchdog and shutdown.",
    "model": "The model bundle (or .tflite embedder) and interpreter threads.",
    "source": "Where frames come from.",
    "detector": "Face detector (BlazeFace).",
    "quality": "Subject selection and quality gates.",
    "gallery": "The enrolment database.",
    "match": "Matching a face against the gallery.",
    "decide": "Accept / reject / lockout decisions.",
    "relay": "The door relay (gpiozero).",
    "mqtt": "MQTT broker, topics, commands.",
    "outbox": "Durable event outbox (SQLite).",
    "homeassistant": "Home Assistant MQTT discovery.",
}

EXAMPLE_PATH = Path(__file__).with_name("config.example.toml")


def options_class(section: str) -> type:
    module, _, name = SECTIONS[section].partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Config:
    """The whole configuration: one Options instance per section, plus which keys the file set."""

    sections: dict[str, Any]
    path: Path | None = None
    explicit: frozenset[str] = field(default_factory=frozenset)  # "section.key" set in the file

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(name)

    def is_set(self, section: str, key: str) -> bool:
        """True when the file gave `section.key` (rather than the default)."""
        return f"{section}.{key}" in self.explicit

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with fields of one section changed (tests, command-line overrides)."""
        sections = dict(self.sections)
        sections[section] = dataclasses.replace(sections[section], **changes)
        return Config(sections, self.path, self.explicit | {f"{section}.{k}" for k in changes})


def default_config() -> Config:
    return Config({name: options_class(name)() for name in SECTIONS})


# -- type checking ----------------------------------------------------------------------------------------

def _describe(tp: Any) -> str:
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
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} items ({', '.join(_describe(a) for a in args)})"
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
            raise ConfigError(f"{source}: {section}.{key} = {value!r}: expected {_describe(tp)}") from None
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


def parse_config(data: dict[str, Any], path: Path | None = None) -> Config:
    name = str(path) if path is not None else "<config>"
    sections: dict[str, Any] = {}
    explicit: set[str] = set()
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{name}: unknown section [{section}]; expected one of "
                              f"{', '.join('[' + s + ']' for s in SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: {section} = {table!r}: expected a table [{section}]")
    for section in SECTIONS:
        table = data.get(section, {})
        sections[section] = build_options(options_class(section), table, section, name)
        explicit.update(f"{section}.{key}" for key in table)
    return Config(sections, path, frozenset(explicit))


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file. ConfigError names the file (and section/key) at fault."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (see edge/config.example.toml)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    return parse_config(data, path)


# -- the documented example ---------------------------------------------------------------------------------

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


def _toml_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) or '""' for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _wrap(text: str, width: int = 108) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width - 2) or [""]


def render_example() -> str:
    """The example config: every section and key, defaults as values, docs as comments."""
    out = [
        "# facelock configuration (TOML). `facelock run --config PATH` reads it and refuses unknown keys.",
        "# Every key is shown with its default; delete the ones you do not change. Generated from the",
        "# stages' Options dataclasses by edge.config.render_example() (a test keeps this file equal).",
    ]
    for section in SECTIONS:
        cls = options_class(section)
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        out += ["", f"# {SECTION_TITLES.get(section, section)}", f"[{section}]"]
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore
            doc = docs.get(f.name, "")
            text = f"{doc} ({_describe(hints[f.name])})" if doc else f"({_describe(hints[f.name])})"
            out += ["# " + line for line in _wrap(text)]
            value = _toml_value(default)
            out.append(f"{f.name} = {value}" if value is not None else f"# {f.name} = (unset)")
    return "\n".join(out) + "\n"


def write_example(path: str | Path = EXAMPLE_PATH) -> Path:
    path = Path(path)
    path.write_text(render_example(), encoding="utf-8")
    return path
