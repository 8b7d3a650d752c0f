"""The board's config.toml, generated from the runtime's own Options (never written by hand).

`install.sh` installs it as /etc/facelock/config.toml where none exists, `deploy bundle` packs it as
config.toml.example, and `deploy sdcard` renders it with the device id and broker settings. Each is made by
`edge.service.config.render_config`, which parses what it wrote with the runtime's loader, so a board never
gets a config that `facelock run --check` refuses (the old hand-written template drifted and did).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from deploy.errors import DeployError
from edge.errors import ConfigError
from edge.service.config import load_config, render_config

# Where an installed board keeps things: every file the service writes lies in its StateDirectory
# (systemd/facelock.service: StateDirectory=facelock, the one writable place under ProtectSystem=strict),
# named here rather than left to $XDG_* defaults under the service user's home; docs/operations.md gives
# the same paths. The bundle ships inside each release, so a rollback rolls the model back too.
BOARD_VALUES: dict[str, dict[str, Any]] = {
    "model": {"path": "/opt/facelock/current/bundle"},
    "gallery": {"path": "/var/lib/facelock/gallery.db"},
    "decide": {"state_path": "/var/lib/facelock/lockout.json"},
    "outbox": {"path": "/var/lib/facelock/outbox.db"},
}

HEADER = (
    "# facelock configuration for a board, read by `facelock run --config /etc/facelock/config.toml`.",
    "# Generated from the runtime's Options by `facelock deploy` (every key, with its meaning); install.sh",
    "# writes it only where no config exists, upgrades keep yours and put the newest beside it as",
    "# config.toml.example. Change what you need (mqtt.host, mqtt.device_id); `facelock run --check` validates.",
)


def _merge(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, table in layer.items():
            out.setdefault(section, {}).update({k: v for k, v in table.items() if v is not None})
    return out


def board_config(values: dict[str, dict[str, Any]] | None = None, base: str | None = None) -> str:
    """The board's config text: BOARD_VALUES, then the TOML text `base` (a user's config, or the one an
    artifact carries), then `values` on top. DeployError names the key at fault."""
    base_values: dict[str, dict[str, Any]] = {}
    if base is not None:
        try:
            base_values = tomllib.loads(base)
        except tomllib.TOMLDecodeError as exc:
            raise DeployError(f"config: not valid TOML ({exc})") from exc
    try:
        return render_config(_merge(BOARD_VALUES, base_values, values or {}), header=HEADER)
    except ConfigError as exc:
        raise DeployError(f"board config: {exc}") from exc


def check_config_file(path: str | Path) -> str:
    """Read a user's config file and validate it with the runtime's loader; its text, or DeployError."""
    try:
        load_config(path)
    except ConfigError as exc:
        raise DeployError(str(exc)) from exc
    return Path(path).read_text(encoding="utf-8")
