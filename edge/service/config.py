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

import dataclasses
import importlib
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import ConfigError
from edge.options import build_options, describe, field_docs, shown, toml_value, wrap

# section -> "module:Class". Imported lazily so that reading this table costs nothing.
SECTIONS: dict[str, str] = {
    "service": "edge.service.options:ServiceOptions",
    "model": "edge.service.options:ModelOptions",
    "source": "edge.device.sources:SourceOptions",
    "detector": "edge.vision.detect:DetectorOptions",
    "landmarks": "edge.vision.landmarks:LandmarkOptions",
    "quality": "edge.vision.quality:QualityOptions",
    "liveness": "edge.vision.liveness:LivenessOptions",
    "challenge": "edge.vision.challenge:ChallengeOptions",
    "antispoof": "edge.vision.antispoof:AntiSpoofOptions",
    "ir": "edge.device.ir:IrOptions",
    "gallery": "edge.service.options:GalleryOptions",
    "match": "edge.identity.match:MatchOptions",
    "decide": "edge.identity.decide:DecideOptions",
    "relay": "edge.device.relay:RelayOptions",
    "mqtt": "edge.mqtt.link:MqttOptions",
    "outbox": "edge.mqtt.outbox:OutboxOptions",
    "homeassistant": "edge.mqtt.discovery:DiscoveryOptions",
}

SECTION_TITLES = {
    "service": "The service loop, watchdog and shutdown.",
    "model": "The model bundle (or .tflite embedder) and interpreter threads.",
    "source": "Where frames come from.",
    "detector": "Face detector (BlazeFace).",
    "landmarks": "Face-landmark model: confirms detections are faces and gives the points the chip is cut from.",
    "quality": "Subject selection and quality gates.",
    "liveness": "Passive liveness: a print or a photo on a screen does not open the door.",
    "challenge": "Active liveness: a random move asked before opening, so a replayed video does not open it.",
    "antispoof": "The bundle's anti-spoofing CNN (yours, via facelock convert --antispoof), when it has one.",
    "ir": "Near-infrared view (NoIR camera, 850 nm illuminator): a face on a screen is not in it.",
    "gallery": "The enrolment database.",
    "match": "Matching a face against the gallery.",
    "decide": "Accept / reject / lockout decisions.",
    "relay": "The door relay (gpiozero).",
    "mqtt": "MQTT broker, topics, commands.",
    "outbox": "Durable event outbox (SQLite).",
    "homeassistant": "Home Assistant MQTT discovery.",
}

EXAMPLE_PATH = Path(__file__).resolve().parents[1] / "config.example.toml"


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


def parse_config(data: dict[str, Any], path: Path | None = None) -> Config:
    name = str(path) if path is not None else "<config>"
    sections: dict[str, Any] = {}
    explicit: set[str] = set()
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{name}: unknown section [{section}]; expected one of "
                              f"{', '.join('[' + s + ']' for s in SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: {section} = {shown(section, table)}: expected a table [{section}]")
    for section in SECTIONS:
        table = data.get(section, {})
        sections[section] = build_options(options_class(section), table, section, name)
        explicit.update(f"{section}.{key}" for key in table)
    _check_across_sections(sections, name)
    return Config(sections, path, frozenset(explicit))


def _check_across_sections(sections: dict[str, Any], name: str) -> None:
    """The rules that tie sections together (each section checks its own keys)."""
    challenge, decide = sections["challenge"], sections["decide"]
    if challenge.enabled and challenge.deadline_s >= decide.attempt_max_s:
        raise ConfigError(f"{name}: challenge.deadline_s = {challenge.deadline_s:g} must be under "
                          f"decide.attempt_max_s = {decide.attempt_max_s:g}: the attempt would end before the "
                          "answer is due")
    # One GPIO pin drives one thing: on the relay's pin an indicator's pulses would open the door.
    relay, ir = sections["relay"], sections["ir"]
    pins = [("relay.pin", relay.pin) if relay.enabled else None,
            ("challenge.indicator_pin", challenge.indicator_pin) if challenge.enabled else None,
            ("ir.illuminator_pin", ir.illuminator_pin) if ir.enabled and ir.mode == "alternate" else None]
    used: dict[int, str] = {}
    for key, pin in filter(None, pins):
        if pin >= 0 and pin in used:
            raise ConfigError(f"{name}: {key} = {pin} is also {used[pin]}: each needs a GPIO pin of its own")
        used[pin] = key


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
    except RecursionError:  # tomllib recurses once per level of nested arrays or inline tables
        raise ConfigError(f"{path}: not valid TOML (arrays or tables nested too deeply)") from None
    except (ValueError, OverflowError) as exc:  # an integer past Python's 4,300-digit limit, ...
        raise ConfigError(f"{path}: not valid TOML ({type(exc).__name__}: {str(exc)[:100]})") from None
    try:
        return parse_config(data, path)
    except (RecursionError, ArithmeticError, ValueError, TypeError) as exc:  # ConfigError is none of these
        raise ConfigError(f"{path}: values out of range ({type(exc).__name__}: {str(exc)[:100]})") from None


EXAMPLE_HEADER = (
    "# facelock configuration (TOML). `facelock run --config PATH` reads it and refuses unknown keys.",
    "# Every key is shown with its default; delete the ones you do not change. Generated from the",
    "# stages' Options dataclasses by edge.service.config.render_example() (a test keeps this file equal).",
)


def render_config(values: dict[str, dict[str, Any]] | None = None, header: tuple[str, ...] = EXAMPLE_HEADER) -> str:
    """A complete, documented config: every section and key, `values[section][key]` where given and the
    default elsewhere, docs as comments. The one writer of config files (the example, the board's config
    that `facelock deploy` packs and renders); the result is parsed back with the runtime's own loader, so
    what it writes always passes `facelock run --check` (ConfigError names the value at fault otherwise)."""
    values = values or {}
    for section, table in values.items():  # refuse what would be silently left out
        fields = {f.name for f in dataclasses.fields(options_class(section))} if section in SECTIONS else None
        if fields is None:
            raise ConfigError(f"<rendered config>: unknown section [{section}]")
        unknown = sorted(set(table) - fields)
        if unknown:
            raise ConfigError(f"<rendered config>: [{section}]: unknown key {unknown[0]!r}; expected one of "
                              f"{', '.join(sorted(fields))}")
    out = list(header)
    for section in SECTIONS:
        cls = options_class(section)
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        given = values.get(section, {})
        out += ["", f"# {SECTION_TITLES.get(section, section)}", f"[{section}]"]
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore
            doc = docs.get(f.name, "")
            text = f"{doc} ({describe(hints[f.name])})" if doc else f"({describe(hints[f.name])})"
            out += ["# " + line for line in wrap(text)]
            value = toml_value(given.get(f.name, default))
            out.append(f"{f.name} = {value}" if value is not None else f"# {f.name} = (unset)")
    text = "\n".join(out) + "\n"
    parse_config(tomllib.loads(text))
    return text


def render_example() -> str:
    """The example config: every section and key, defaults as values, docs as comments."""
    return render_config()


def write_example(path: str | Path = EXAMPLE_PATH) -> Path:
    path = Path(path)
    path.write_text(render_example(), encoding="utf-8")
    return path
