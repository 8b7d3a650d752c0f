"""The TOML config: generic validation against the Options dataclasses, and the example kept in sync."""

from __future__ import annotations

from typing import Literal

import pytest

from edge.errors import ConfigError
from edge.service.config import EXAMPLE_PATH, build_options, load_config, parse_config, render_example


def _write(tmp_path, text: str):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_example_matches_dataclasses():
    assert EXAMPLE_PATH.read_text() == render_example(), \
        "edge/config.example.toml is stale: run python -c 'from edge.service.config import write_example; write_example()'"


def test_example_loads_with_defaults():
    config = load_config(EXAMPLE_PATH)
    assert config.mqtt.device_id == "door" and config.decide.k == 3 and not config.mqtt.commands
    assert not config.is_set("decide", "threshold") or config.decide.threshold == 0.82


def test_values_and_explicit(tmp_path):
    c = load_config(_write(tmp_path, '[mqtt]\nhost = "broker"\nport = 8883\n[decide]\nthreshold = 1\n'))
    assert c.mqtt.host == "broker" and c.mqtt.port == 8883
    assert c.decide.threshold == 1.0 and isinstance(c.decide.threshold, float)
    assert c.is_set("decide", "threshold") and not c.is_set("decide", "margin")


def test_unknown_key_named(tmp_path):
    p = _write(tmp_path, "[mqtt]\nhots = 'x'\n")
    with pytest.raises(ConfigError, match=r"c\.toml: \[mqtt\]: unknown key 'hots'.*host"):
        load_config(p)


def test_unknown_section_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section \[mqqt\]"):
        load_config(_write(tmp_path, "[mqqt]\nhost = 'x'\n"))


@pytest.mark.parametrize("text, key, expected", [
    ("[mqtt]\nport = '1883'", "port", "an integer"),
    ("[mqtt]\nport = true", "port", "an integer"),
    ("[mqtt]\ncommands = 1", "commands", "true or false"),
    ("[decide]\nthreshold = 'high'", "threshold", "a number"),
    ("[outbox]\nwhen_full = 'drop_all'", "when_full", "one of 'drop_oldest', 'drop_newest'"),
])
def test_wrong_type_named(tmp_path, text, key, expected):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text + "\n"))
    assert f".{key} = " in str(err.value) and expected in str(err.value) and "c.toml" in str(err.value)


def test_range_checked_by_section_validate(tmp_path):
    with pytest.raises(ConfigError, match=r"decide\.threshold = 2\.0: expected"):
        load_config(_write(tmp_path, "[decide]\nthreshold = 2.0\n"))
    with pytest.raises(ConfigError, match="mqtt.device_id"):
        load_config(_write(tmp_path, "[mqtt]\ndevice_id = 'front door'\n"))


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: no such config file"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[mqtt\n"))


def test_generic_types_tuple_optional_literal():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Opts:
        size: tuple[int, int] = (1, 2)
        names: tuple[str, ...] = ()
        limit: float | None = None
        mode: Literal["a", "b"] = "a"

    o = build_options(Opts, {"size": [3, 4], "names": ["x"], "limit": 2, "mode": "b"}, "s", "f")
    assert o == Opts((3, 4), ("x",), 2.0, "b")
    with pytest.raises(ConfigError, match=r"^f: s\.size = \[1\]: expected a list of 2 items"):
        build_options(Opts, {"size": [1]}, "s", "f")
    with pytest.raises(ConfigError, match="names"):
        build_options(Opts, {"names": [1]}, "s", "f")


def test_two_devices_on_one_gpio_pin_are_refused_naming_both_keys():
    # The challenge indicator on the relay's pin: its pulses would open the door.
    with pytest.raises(ConfigError, match=r"challenge\.indicator_pin = 17 is also relay\.pin: each needs a GPIO"):
        parse_config({"relay": {"enabled": True, "pin": 17},
                      "challenge": {"enabled": True, "indicator_pin": 17}})
    with pytest.raises(ConfigError, match=r"ir\.illuminator_pin = 22 is also challenge\.indicator_pin"):
        parse_config({"challenge": {"enabled": True, "indicator_pin": 22},
                      "ir": {"enabled": True, "mode": "alternate", "illuminator_pin": 22}})
    # A pin counts only for a device that is on: the relay off, or the IR camera mode (no illuminator pin).
    parse_config({"relay": {"enabled": False, "pin": 17}, "challenge": {"enabled": True, "indicator_pin": 17}})
    parse_config({"relay": {"enabled": True, "pin": 17},
                  "ir": {"enabled": True, "mode": "camera", "illuminator_pin": 17}})
    config = parse_config({"relay": {"enabled": True, "pin": 17}, "challenge": {"enabled": True, "indicator_pin": 27},
                           "ir": {"enabled": True, "mode": "alternate", "illuminator_pin": 22}})
    assert (config.relay.pin, config.challenge.indicator_pin, config.ir.illuminator_pin) == (17, 27, 22)
