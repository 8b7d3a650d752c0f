"""`facelock deploy sdcard IMAGE`: first-boot configuration written into a Raspberry Pi OS image file.

No root, no loop mounts: deploy.disk_image reads the MBR partition table and writes the FAT boot partition
with mtools at its byte offset. Two first-boot formats:

* cloud-init (Raspberry Pi OS based on Trixie): `user-data`, `network-config` (netplan v2), `meta-data`
  on the boot partition; user-data's runcmd stages the facelock payload.
* firstrun (Raspberry Pi OS based on Bookworm): `firstrun.sh` run once through `systemd.run=` on
  `cmdline.txt`, `userconf.txt` for the user, an empty `ssh` file to enable sshd.

Both put `facelock/` on the boot partition: the deploy artifact (optional), the rendered config.toml (MQTT
settings), and firstboot.sh + facelock-firstboot.service, which install facelock once the network is up.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.disk_image import SECTOR, FatImage, boot_partition
from deploy.errors import DeployError
from deploy.paths import FIRSTBOOT_DIR

CLOUD_INIT_FILES = {"user-data", "network-config", "meta-data"}
FIRSTRUN_CMDLINE = "systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"
HOSTNAME_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def detect_format(fat: FatImage) -> str:
    names = {n.lower() for n in fat.names()}
    if names & CLOUD_INIT_FILES:
        return "cloud-init"
    if "issue.txt" in names and b"trixie" in fat.read("issue.txt").lower():
        return "cloud-init"
    if "cmdline.txt" in names:
        return "firstrun"
    raise DeployError(
        f"{fat.image}: cannot tell the first-boot format (no user-data/network-config/meta-data and no "
        "cmdline.txt on the boot partition); pass --format cloud-init or --format firstrun"
    )


# ---- settings ------------------------------------------------------------------------------------------


@dataclass
class Provision:
    hostname: str
    ssh_key: str  # the public key line
    user: str = "admin"
    password_hash: str = "!"  # locked unless --password
    wifi_ssid: str | None = None
    wifi_password: str | None = None
    wifi_country: str | None = None
    config_toml: str = ""
    timezone: str | None = None

    def check(self) -> None:
        if not HOSTNAME_RE.match(self.hostname):
            raise DeployError(f"--hostname {self.hostname!r}: letters, digits and '-' only, 1-63 characters")
        if not USER_RE.match(self.user) or self.user in {"root", "facelock"}:
            raise DeployError(f"--user {self.user!r}: a lower-case login name other than root and facelock")
        if not re.match(r"^(ssh-|ecdsa-|sk-)\S+ \S+", self.ssh_key):
            raise DeployError("--ssh-key: expected an OpenSSH public key (ssh-ed25519 AAAA... comment)")
        if self.wifi_ssid is not None:
            if not 1 <= len(self.wifi_ssid.encode()) <= 32:
                raise DeployError(f"--wifi-ssid {self.wifi_ssid!r}: 1 to 32 bytes")
            if self.wifi_password is None or not 8 <= len(self.wifi_password) <= 63:
                raise DeployError("--wifi-password: WPA needs 8 to 63 characters")
            if not self.wifi_country or not re.match(r"^[A-Z]{2}$", self.wifi_country):
                raise DeployError(
                    "--wifi-country: a two-letter country code (e.g. GB, US, DE) is needed; Raspberry Pi OS "
                    "keeps Wi-Fi blocked until the regulatory country is set"
                )


def hash_password(password: str) -> str:
    """SHA-512 crypt, as /etc/shadow wants it (openssl passwd -6)."""
    if shutil.which("openssl"):
        proc = subprocess.run(
            ["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True, check=False
        )
        if proc.returncode == 0 and proc.stdout.startswith("$6$"):
            return proc.stdout.strip()
    raise DeployError("openssl not found: needed to hash --password (apt-get install openssl)")


def _q(value: str) -> str:
    return json.dumps(value)  # JSON strings are valid YAML double-quoted scalars


STAGE_CMD = (
    "for d in /boot/firmware /boot; do if [ -f $d/facelock/firstboot.sh ]; then "
    "bash $d/facelock/firstboot.sh stage{start}; break; fi; done"
)


def render_user_data(p: Provision) -> str:
    lines = [
        "#cloud-config",
        "# Written by `facelock deploy sdcard`. cloud-init runs it once per meta-data instance-id.",
        f"hostname: {_q(p.hostname)}",
        "manage_etc_hosts: true",
    ]
    if p.timezone:
        lines.append(f"timezone: {_q(p.timezone)}")
    lines += [
        "users:",
        f"  - name: {_q(p.user)}",
        "    groups: [users, adm, sudo, video, gpio, plugdev, netdev, input]",
        "    shell: /bin/bash",
        f"    lock_passwd: {'true' if p.password_hash == '!' else 'false'}",
    ]
    if p.password_hash != "!":
        lines.append(f"    passwd: {_q(p.password_hash)}")
    lines += [
        '    sudo: "ALL=(ALL) NOPASSWD:ALL"',
        "    ssh_authorized_keys:",
        f"      - {_q(p.ssh_key)}",
        "ssh_pwauth: false",
        "runcmd:",
        "  - [systemctl, enable, --now, ssh]",
    ]
    if p.wifi_country:
        lines.append(
            f"  - [sh, -c, {_q(f'command -v raspi-config >/dev/null && raspi-config nonint do_wifi_country {p.wifi_country} || true')}]"
        )
    lines.append(f"  - [sh, -c, {_q(STAGE_CMD.format(start=' --start'))}]")
    return "\n".join(lines) + "\n"


def render_network_config(p: Provision) -> str:
    lines = [
        "# Written by `facelock deploy sdcard` (netplan v2, rendered by NetworkManager).",
        "network:",
        "  version: 2",
        "  renderer: NetworkManager",
        "  ethernets:",
        "    eth0:",
        "      dhcp4: true",
        "      optional: true",
    ]
    if p.wifi_ssid is not None:
        lines += [
            "  wifis:",
            "    wlan0:",
            "      dhcp4: true",
            "      optional: true",
            f"      regulatory-domain: {_q(p.wifi_country or '')}",
            "      access-points:",
            f"        {_q(p.wifi_ssid)}:",
            f"          password: {_q(p.wifi_password or '')}",
        ]
    return "\n".join(lines) + "\n"


def render_meta_data(p: Provision, instance: str) -> str:
    return f"instance-id: {_q('facelock-' + p.hostname + '-' + instance)}\nlocal-hostname: {_q(p.hostname)}\n"


def _nm_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(";", "\\;").replace("\n", "\\n")


def render_nmconnection(p: Provision) -> str:
    return (
        "[connection]\nid=facelock-wifi\ntype=wifi\nautoconnect=true\ninterface-name=wlan0\n\n"
        f"[wifi]\nmode=infrastructure\nssid={_nm_escape(p.wifi_ssid or '')}\n\n"
        f"[wifi-security]\nkey-mgmt=wpa-psk\npsk={_nm_escape(p.wifi_password or '')}\n\n"
        "[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\n"
    )


def render_firstrun(p: Provision) -> str:
    def q(value: str) -> str:  # always single-quoted, so no value is ever read as a command
        return "'" + value.replace("'", "'\\''") + "'"

    script = f"""#!/bin/bash
# Written by `facelock deploy sdcard`: run once by systemd.run= (cmdline.txt), then removes itself.
set +e
BOOT=/boot/firmware
[ -d "$BOOT/facelock" ] || BOOT=/boot
NEW_HOSTNAME={q(p.hostname)}
NEW_USER={q(p.user)}
PW_HASH={q(p.password_hash)}
SSH_KEY={q(p.ssh_key)}

CURRENT_HOSTNAME=$(tr -d ' \\t\\n\\r' </etc/hostname)
echo "$NEW_HOSTNAME" >/etc/hostname
sed -i "s/127.0.1.1.*$CURRENT_HOSTNAME/127.0.1.1\\t$NEW_HOSTNAME/g" /etc/hosts
hostname "$NEW_HOSTNAME" 2>/dev/null

if ! id "$NEW_USER" >/dev/null 2>&1; then
    if [ -x /usr/lib/userconf-pi/userconf ]; then
        /usr/lib/userconf-pi/userconf "$NEW_USER" "$PW_HASH"
    else
        useradd -m -s /bin/bash -G sudo,video,gpio,adm,plugdev,netdev "$NEW_USER"
        echo "$NEW_USER:$PW_HASH" | chpasswd -e
        echo "$NEW_USER ALL=(ALL) NOPASSWD:ALL" >/etc/sudoers.d/010_facelock-admin
        chmod 0440 /etc/sudoers.d/010_facelock-admin
    fi
fi
HOME_DIR=$(getent passwd "$NEW_USER" | cut -d: -f6)
install -d -m 0700 -o "$NEW_USER" -g "$NEW_USER" "$HOME_DIR/.ssh"
echo "$SSH_KEY" >"$HOME_DIR/.ssh/authorized_keys"
chown "$NEW_USER:$NEW_USER" "$HOME_DIR/.ssh/authorized_keys"
chmod 0600 "$HOME_DIR/.ssh/authorized_keys"
install -d /etc/ssh/sshd_config.d
printf 'PasswordAuthentication no\\n' >/etc/ssh/sshd_config.d/50-facelock.conf
systemctl enable ssh
"""
    if p.wifi_ssid is not None:
        script += f"""
if [ -f "$BOOT/facelock/wifi.nmconnection" ]; then
    install -m 0600 "$BOOT/facelock/wifi.nmconnection" /etc/NetworkManager/system-connections/facelock-wifi.nmconnection
    rm -f "$BOOT/facelock/wifi.nmconnection"
fi
if command -v raspi-config >/dev/null; then
    raspi-config nonint do_wifi_country {q(p.wifi_country or "")}
else
    iw reg set {q(p.wifi_country or "")} 2>/dev/null
fi
rfkill unblock wifi 2>/dev/null
for f in /var/lib/systemd/rfkill/*:wlan; do [ -e "$f" ] && echo 0 >"$f"; done
"""
    if p.timezone:
        script += f"\ntimedatectl set-timezone {q(p.timezone)} 2>/dev/null || ln -sf /usr/share/zoneinfo/{q(p.timezone)} /etc/localtime\n"
    script += f"""
{STAGE_CMD.format(start="")}

rm -f "$BOOT/firstrun.sh"
sed -i 's| systemd.run.*||g' "$BOOT/cmdline.txt"
exit 0
"""
    return script


# ---- the command ---------------------------------------------------------------------------------------


def provision_image(
    image: str | os.PathLike,
    p: Provision,
    fmt: str = "auto",
    artifact: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    image = Path(image)
    if image.suffix in {".xz", ".gz", ".zip", ".7z"}:
        raise DeployError(f"{image}: compressed; decompress it first (e.g. xz -dk {image.name})")
    if not image.is_file():
        raise DeployError(f"{image}: no such image file")
    p.check()
    part = boot_partition(image)
    fat = FatImage(image, part.offset)
    if fmt == "auto":
        fmt = detect_format(fat)
    if fmt not in {"cloud-init", "firstrun"}:
        raise DeployError(f"--format {fmt!r}: expected auto, cloud-init or firstrun")
    log(
        f"{image}: boot partition {part.index} at byte {part.offset} ({part.sectors * SECTOR // 2**20} MiB), {fmt}"
    )

    written = []
    fat.mkdir("facelock")
    if artifact:
        artifact = Path(artifact)
        from deploy.artifact import read_artifact

        read_artifact(artifact)  # refuse anything that is not a deploy artifact
        fat.put_file(artifact, f"facelock/{artifact.name}")
        written.append(f"facelock/{artifact.name}")
    for name in ("firstboot.sh", "facelock-firstboot.service"):
        fat.put_file(FIRSTBOOT_DIR / name, f"facelock/{name}")
        written.append(f"facelock/{name}")
    fat.write("facelock/config.toml", p.config_toml)
    written.append("facelock/config.toml")

    instance = hashlib.sha256(f"{time.time()}{secrets.token_hex(8)}".encode()).hexdigest()[:10]
    if fmt == "cloud-init":
        fat.write("user-data", render_user_data(p))
        fat.write("network-config", render_network_config(p))
        fat.write("meta-data", render_meta_data(p, instance))
        written += ["user-data", "network-config", "meta-data"]
    else:
        if "cmdline.txt" not in fat.names():
            raise DeployError(f"{image}: no cmdline.txt on the boot partition; not a Raspberry Pi OS image?")
        cmdline = fat.read("cmdline.txt").decode("utf-8", errors="replace").strip()
        tokens = [t for t in cmdline.split() if not t.startswith(("systemd.run", "systemd.unit="))]
        fat.write("cmdline.txt", " ".join([*tokens, FIRSTRUN_CMDLINE]) + "\n")
        fat.write("firstrun.sh", render_firstrun(p))
        fat.write("userconf.txt", f"{p.user}:{p.password_hash}\n")
        fat.write("ssh", b"")
        written += ["cmdline.txt", "firstrun.sh", "userconf.txt", "ssh"]
        if p.wifi_ssid is not None:
            fat.write("facelock/wifi.nmconnection", render_nmconnection(p))
            written.append("facelock/wifi.nmconnection")
    for name in written:
        log(f"  wrote /{name}")
    return {
        "image": str(image),
        "format": fmt,
        "partition": part.index,
        "offset": part.offset,
        "files": written,
    }


def render_config(template_text: str | None, device_id: str, mqtt: dict[str, Any]) -> str:
    """The board's config.toml for this card: the artifact's (or the user's) config, with the device id and
    the broker settings given on the command line; generated and checked with the runtime's own loader."""
    from deploy.board_config import board_config

    return board_config({"mqtt": {"device_id": device_id, **mqtt}}, base=template_text)
