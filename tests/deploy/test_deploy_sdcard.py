"""`facelock deploy sdcard` on disk images made here: an MBR table, a FAT boot partition at 1 MiB (mkfs.vfat
--offset), a stand-in Linux partition; written and read back with mtools, never mounted."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from deploy.errors import DeployError

MKFS = shutil.which("mkfs.vfat", path="/usr/sbin:/sbin:/usr/bin") or ""
pytestmark = pytest.mark.skipif(
    not MKFS or shutil.which("mcopy") is None,
    reason="needs dosfstools (mkfs.vfat) and mtools (Debian packages)",
)
BOOT_START, BOOT_SECTORS, ROOT_SECTORS = 2048, 65536, 8192  # 32 MiB FAT at 1 MiB, 4 MiB "ext4"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZhY2Vsb2NrdGVzdGtleWZhY2Vsb2NrdGVzdGtleQ admin@workstation"


def make_image(path: Path, files: dict[str, str]) -> Path:
    total = BOOT_START + BOOT_SECTORS + ROOT_SECTORS
    with open(path, "wb") as fh:
        fh.truncate(total * 512)
    subprocess.run(
        [MKFS, "-n", "BOOTFS", "--offset", str(BOOT_START), str(path), str(BOOT_SECTORS // 2)],
        check=True,
        capture_output=True,
    )
    mbr = bytearray(512)
    mbr[440:444] = b"\x12\x34\x56\x78"
    mbr[446:462] = bytes([0, 0, 0, 0, 0x0C, 0, 0, 0]) + struct.pack("<II", BOOT_START, BOOT_SECTORS)
    mbr[462:478] = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + struct.pack(
        "<II", BOOT_START + BOOT_SECTORS, ROOT_SECTORS
    )
    mbr[510:512] = b"\x55\xaa"
    with open(path, "r+b") as fh:
        fh.write(mbr)
    for name, text in files.items():
        src = path.parent / "src.tmp"
        src.write_text(text)
        subprocess.run(
            ["mcopy", "-i", f"{path}@@{BOOT_START * 512}", str(src), f"::/{name}"],
            check=True,
            env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
        )
    return path


def read_back(image: Path, name: str) -> bytes:
    dst = image.parent / ("read-" + name.replace("/", "_"))
    subprocess.run(
        ["mcopy", "-n", "-i", f"{image}@@{BOOT_START * 512}", f"::/{name}", str(dst)],
        check=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )
    return dst.read_bytes()


def parse_yaml(text: str):
    """PyYAML when this Python has it, else the system python3's (Debian python3-yaml), else a strict
    check of the subset our renderer writes (indentation, `key: value`, list items, JSON-quoted strings)."""
    try:
        import yaml

        return yaml.safe_load(text)
    except ImportError:
        pass
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system and system != sys.executable:
        code = "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))"
        proc = subprocess.run([system, "-c", code], input=text, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return json.loads(proc.stdout)
        assert "No module named 'yaml'" in proc.stderr, proc.stderr
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0 and "\t" not in line, line
        body = line.strip().removeprefix("- ")
        m = re.match(r'^("(?:[^"\\]|\\.)*"|[A-Za-z0-9_-]+):(?: (.*))?$', body)
        value = m.group(2) if m else body
        assert m or line.strip().startswith("- "), line
        if value and value.startswith('"'):
            json.loads(value)
    return None


@pytest.fixture
def ssh_key(tmp_path) -> Path:
    f = tmp_path / "id_ed25519.pub"
    f.write_text(KEY + "\n")
    return f


def run_cli(*argv: str) -> int:
    from facelock.cli import main

    return main(["deploy", "sdcard", *argv])


def test_cloud_init_image(tmp_path, ssh_key, artifact, capsys):
    image = make_image(
        tmp_path / "trixie.img",
        {"cmdline.txt": "console=tty1 root=PARTUUID=12345678-02 rootwait\n", "user-data": "#cloud-config\n"},
    )
    rc = run_cli(
        str(image), "--hostname", "frontdoor", "--ssh-key", str(ssh_key),
        "--wifi-ssid", 'My "Home" Wi-Fi', "--wifi-password", "correct horse battery", "--wifi-country", "gb",
        "--mqtt-host", "broker.lan", "--mqtt-port", "8883", "--mqtt-user", "lock", "--mqtt-password", "s3cret",
        "--bundle", str(artifact.path), "--json",
    )  # fmt: skip
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "cloud-init" and report["offset"] == BOOT_START * 512

    user_data = read_back(image, "user-data").decode()
    assert user_data.startswith("#cloud-config\n")
    ud = parse_yaml(user_data)
    if ud is not None:
        assert ud["hostname"] == "frontdoor"
        assert ud["users"][0]["ssh_authorized_keys"] == [KEY]
        assert ud["ssh_pwauth"] is False
        assert any("firstboot.sh stage --start" in " ".join(map(str, c)) for c in ud["runcmd"])
    net = parse_yaml(read_back(image, "network-config").decode())
    if net is not None:
        wifi = net["network"]["wifis"]["wlan0"]
        assert wifi["access-points"]['My "Home" Wi-Fi']["password"] == "correct horse battery"
        assert wifi["regulatory-domain"] == "GB"
    meta = parse_yaml(read_back(image, "meta-data").decode())
    if meta is not None:
        assert meta["instance-id"].startswith("facelock-frontdoor-") and meta["local-hostname"] == "frontdoor"

    config = tomllib.loads(read_back(image, "facelock/config.toml").decode())
    assert config["mqtt"]["host"] == "broker.lan" and config["mqtt"]["port"] == 8883
    assert config["mqtt"]["username"] == "lock" and config["mqtt"]["password"] == "s3cret"
    assert config["mqtt"]["device_id"] == "frontdoor"
    assert read_back(image, f"facelock/{artifact.path.name}") == artifact.path.read_bytes()
    firstboot = read_back(image, "facelock/firstboot.sh")
    subprocess.run(["bash", "-n"], input=firstboot, check=True)
    assert b"ExecStart=/bin/bash /var/lib/facelock-firstboot/firstboot.sh run" in read_back(
        image, "facelock/facelock-firstboot.service"
    )
    assert (
        read_back(image, "cmdline.txt") == b"console=tty1 root=PARTUUID=12345678-02 rootwait\n"
    )  # untouched


def test_firstrun_image(tmp_path, ssh_key):
    image = make_image(
        tmp_path / "bookworm.img", {"cmdline.txt": "console=tty1 root=PARTUUID=12345678-02 rootwait\n"}
    )
    args = [str(image), "--hostname", "backdoor", "--ssh-key", str(ssh_key), "--user", "lockadmin"]
    args += [
        "--password",
        "hunter22",
        "--wifi-ssid",
        "Shed;AP",
        "--wifi-password",
        "abcdefgh",
        "--wifi-country",
        "DE",
    ]
    assert run_cli(*args, "--mqtt-host", "10.0.0.5") == 0
    assert run_cli(*args, "--mqtt-host", "10.0.0.6") == 0  # again: replaces, never duplicates

    cmdline = read_back(image, "cmdline.txt").decode()
    assert cmdline.count("\n") == 1 and cmdline.endswith("\n")
    assert cmdline.startswith(
        "console=tty1 root=PARTUUID=12345678-02 rootwait systemd.run=/boot/firmware/firstrun.sh"
    )
    assert cmdline.count("systemd.run=") == 1 and "systemd.unit=kernel-command-line.target" in cmdline
    firstrun = read_back(image, "firstrun.sh").decode()
    subprocess.run(["bash", "-n"], input=firstrun.encode(), check=True)
    assert "NEW_HOSTNAME='backdoor'" in firstrun and "NEW_USER='lockadmin'" in firstrun
    if shutil.which("shellcheck"):
        subprocess.run(
            ["shellcheck", "-S", "warning", "-s", "bash", "-"], input=firstrun.encode(), check=True
        )
    assert KEY in firstrun and "do_wifi_country 'DE'" in firstrun and "firstboot.sh stage" in firstrun
    user, pw_hash = read_back(image, "userconf.txt").decode().strip().split(":", 1)
    assert user == "lockadmin" and pw_hash.startswith("$6$") and "hunter22" not in firstrun
    assert read_back(image, "ssh") == b""
    nm = read_back(image, "facelock/wifi.nmconnection").decode()
    assert "ssid=Shed\\;AP" in nm and "psk=abcdefgh" in nm
    assert tomllib.loads(read_back(image, "facelock/config.toml").decode())["mqtt"]["host"] == "10.0.0.6"


def test_refusals(tmp_path, ssh_key):
    from deploy.sdcard import Provision, provision_image

    good = Provision(hostname="lock", ssh_key=KEY)
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\0" * 4096)
    with pytest.raises(DeployError, match=r"blank\.img: no MBR"):
        provision_image(blank, good)
    with pytest.raises(DeployError, match="decompress"):
        provision_image(tmp_path / "raspios.img.xz", good)
    image = make_image(tmp_path / "plain.img", {})
    with pytest.raises(DeployError, match="--format"):
        provision_image(image, good)  # neither cloud-init files nor cmdline.txt
    with pytest.raises(DeployError, match="wifi-country"):
        provision_image(
            image, Provision(hostname="lock", ssh_key=KEY, wifi_ssid="x", wifi_password="12345678")
        )
    with pytest.raises(DeployError, match="hostname"):
        provision_image(image, Provision(hostname="bad_name!", ssh_key=KEY))


def test_mbr_reader(tmp_path):
    from deploy.disk_image import boot_partition, read_mbr

    image = make_image(tmp_path / "x.img", {})
    parts = read_mbr(image)
    assert [(p.index, p.type, p.start) for p in parts] == [(1, 0x0C, 2048), (2, 0x83, 2048 + 65536)]
    assert boot_partition(image).offset == 1 << 20
    with open(image, "r+b") as fh:
        fh.truncate(2048 * 512 + 1000)
    with pytest.raises(DeployError, match="past the end"):
        read_mbr(image)


def test_sdcard_config_is_the_runtime_schema_with_the_card_settings(tmp_path):
    from deploy.sdcard import render_config
    from edge.service.config import load_config

    users = '[mqtt]\nhost = "old.lan"\nkeepalive_s = 30\n\n[decide]\nk = 2\n'
    text = render_config(users, "porch", {"host": 'we"ird', "tls": True, "port": None})
    (tmp_path / "config.toml").write_text(text)
    config = load_config(tmp_path / "config.toml")  # what `facelock run --check` does on the board
    assert config.mqtt.host == 'we"ird' and config.mqtt.tls is True and config.mqtt.device_id == "porch"
    assert config.mqtt.keepalive_s == 30 and config.decide.k == 2  # the user's own values survive
    assert config.mqtt.port == 1883 and config.gallery.path == "/var/lib/facelock/gallery.db"
    with pytest.raises(DeployError, match="unknown section"):
        render_config("[device]\nid = \"x\"\n", "porch", {})


CLOUD_INIT = shutil.which("cloud-init")
NETPLAN = shutil.which("netplan", path="/usr/sbin:/usr/bin:/sbin")


@pytest.mark.skipif(
    CLOUD_INIT is None and NETPLAN is None,
    reason="neither cloud-init nor netplan installed (Debian packages)",
)
def test_cloud_init_files_pass_the_real_validators(tmp_path, ssh_key):
    """cloud-init's own schema check on user-data; netplan's generator on network-config (as NetworkManager
    connections, which is what Raspberry Pi OS renders them into)."""
    image = make_image(tmp_path / "trixie.img", {"meta-data": "instance-id: x\n"})
    args = [str(image), "--hostname", "lock-1", "--ssh-key", str(ssh_key), "--password", "pw12345678"]
    args += ["--wifi-ssid", "Home Net", "--wifi-password", "p4ssw0rd!", "--wifi-country", "NL"]
    assert run_cli(*args, "--timezone", "Europe/Amsterdam", "--mqtt-host", "broker") == 0
    user_data = tmp_path / "user-data"
    user_data.write_bytes(read_back(image, "user-data"))
    if CLOUD_INIT:
        proc = subprocess.run(
            [CLOUD_INIT, "schema", "--config-file", str(user_data)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0 and "Valid cloud-config" in proc.stdout, proc.stdout + proc.stderr
    if NETPLAN:
        etc = tmp_path / "nproot" / "etc" / "netplan"
        etc.mkdir(parents=True)
        (etc / "50-cloud-init.yaml").write_bytes(read_back(image, "network-config"))
        os.chmod(etc / "50-cloud-init.yaml", 0o600)
        proc = subprocess.run(
            [NETPLAN, "generate", "--root-dir", str(tmp_path / "nproot")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        conns = list((tmp_path / "nproot" / "run" / "NetworkManager" / "system-connections").glob("*wlan0*"))
        assert len(conns) == 1
        text = conns[0].read_text()
        assert "ssid=Home Net" in text and "psk=p4ssw0rd!" in text


def test_a_card_config_the_release_would_refuse_is_refused_before_writing(tmp_path, ssh_key, wheel, model_bundle,
                                                                          capsys):
    """A card rendered by a newer checkout than the artifact on it: the config has a section the release
    does not know, the board's first boot would fail. `deploy sdcard` loads the config with the release's own
    code and refuses, naming the section; the same config with a release that knows it is written."""
    import zipfile

    from deploy.artifact import build_artifact, check_config_with_release
    from deploy.sdcard import render_config

    older = tmp_path / "old" / wheel.name  # this checkout's wheel, without the [challenge] section
    older.parent.mkdir()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(older, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "edge/service/config.py":
                data = data.replace(b'    "challenge": "edge.vision.challenge:ChallengeOptions",\n', b"")
            dst.writestr(item, data)
    old_artifact = build_artifact(model_bundle, tmp_path / "art-old", wheel=older, log=lambda _m: None)
    new_artifact = build_artifact(model_bundle, tmp_path / "art-new", wheel=wheel, log=lambda _m: None)
    config = render_config("[challenge]\nenabled = true\n", "frontdoor", {"host": "broker.lan"})
    check_config_with_release(new_artifact.path, config)  # the same code: fine
    with pytest.raises(DeployError, match=r"release .* refuses it.*challenge"):
        check_config_with_release(old_artifact.path, config)
    (tmp_path / "card.toml").write_text("[challenge]\nenabled = true\n")
    image = make_image(tmp_path / "pi.img", {"cmdline.txt": "console=tty1\n", "user-data": "#cloud-config\n"})
    rc = run_cli(str(image), "--hostname", "frontdoor", "--ssh-key", str(ssh_key), "--config",
                 str(tmp_path / "card.toml"), "--bundle", str(old_artifact.path))
    assert rc != 0 and "unknown section [challenge]" in capsys.readouterr().err
    with pytest.raises(subprocess.CalledProcessError):  # nothing was written to the card
        read_back(image, "facelock/config.toml")
