#!/usr/bin/env bash
# facelock installer: run on the board, as root, from an unpacked `facelock deploy bundle` artifact.
#
#   sudo bash install.sh [--root DIR] [--no-systemd] [options]     (--help lists them)
#
# What it does, every step safe to repeat:
#   1. checks the artifact against SHA256SUMS
#   2. creates the system user `facelock` (groups video, gpio)
#   3. installs the release into /opt/facelock/releases/<release>/ (venv with --system-site-packages, so
#      apt's python3-picamera2 is visible; the model bundle beside it). With a wheelhouse/ in the artifact
#      (`facelock deploy bundle --board ...`) pip installs from it alone (--no-index): no network needed
#   4. writes /etc/facelock/config.toml from the template only when there is none (upgrades keep it), and
#      makes whichever config is there root:facelock 0640 (content untouched) so the service can read it;
#      never touches /var/lib/facelock (gallery, outbox, lockout state)
#   5. installs and enables facelock.service
#   6. points /opt/facelock/current at the new release, restarts, runs the health check, and when that
#      fails points `current` back at the previous release and restarts that one (exit status 3)
# The last line it prints is machine-readable:
#   facelock-install: RESULT status=ok|rolled-back|failed version=... release=... previous=... seconds=...
set -euo pipefail

PROG=facelock-install
SRC=$(cd "$(dirname "$0")" && pwd)
ROOT=${FACELOCK_INSTALL_ROOT:-/}
SYSTEMD=auto
PYTHON=python3
EXTRAS=edge
PIP_ARGS=${FACELOCK_PIP_ARGS:-}
HEALTHCHECK=${FACELOCK_HEALTHCHECK:-}
HEALTH_TIMEOUT=${FACELOCK_HEALTH_TIMEOUT:-120}
HEALTH_SETTLE=${FACELOCK_HEALTH_SETTLE:-10}
KEEP=${FACELOCK_KEEP_RELEASES:-3}
APT=auto
CORAL_USB=auto
ACTION=install
UNIT=facelock.service
START=$(date +%s)
VERSION=unknown
RELEASE=unknown
PREV_RELEASE=
FAILED=

usage() {
    cat <<'EOF'
usage: install.sh [options]
  --root DIR            install into DIR instead of / (tests, image building; $FACELOCK_INSTALL_ROOT)
                        implies no live systemd
  --no-systemd          do not talk to systemd (chroots, containers); the unit is still installed+enabled
  --python PY           interpreter for the venv (default python3; needs >= 3.11)
  --extras LIST         pip extras of facelock to install (default "edge"; "" for none)
  --pip-args "ARGS"     extra pip arguments, e.g. "--no-index --find-links /srv/wheels" ($FACELOCK_PIP_ARGS);
                        an artifact's wheelhouse/ adds --no-index --find-links wheelhouse by itself
  --healthcheck CMD     extra health check, run by sh after the built-in ones ($FACELOCK_HEALTHCHECK);
                        it sees FACELOCK_ROOT, FACELOCK_VERSION, FACELOCK_RELEASE, FACELOCK_RELEASE_DIR
  --health-timeout S    seconds for the service to become active / the check to pass (default 120)
  --keep N              releases to keep besides current and previous (default 3)
  --coral-usb yes|no|auto   install the USB Coral drop-in (auto: when one is plugged in)
  --no-apt              never apt-get install missing python3-venv / python3-picamera2
  --rollback            point `current` back at the previous release and restart (no install)
EOF
}

log() { printf '%s: %s\n' "$PROG" "$*"; }
result() {
    log "RESULT status=$1 version=$VERSION release=$RELEASE previous=${PREV_RELEASE:-none}" \
        "${FAILED:+failed=$FAILED }seconds=$(($(date +%s) - START))"
}
die() {
    log "error: $*"
    result failed
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
    --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
    --root=*) ROOT=${1#*=}; shift ;;
    --no-systemd) SYSTEMD=no; shift ;;
    --python) PYTHON=${2:?}; shift 2 ;;
    --python=*) PYTHON=${1#*=}; shift ;;
    --extras) EXTRAS=${2?}; shift 2 ;;
    --extras=*) EXTRAS=${1#*=}; shift ;;
    --pip-args) PIP_ARGS=${2?}; shift 2 ;;
    --healthcheck) HEALTHCHECK=${2?}; shift 2 ;;
    --health-timeout) HEALTH_TIMEOUT=${2:?}; shift 2 ;;
    --keep) KEEP=${2:?}; shift 2 ;;
    --coral-usb) CORAL_USB=${2:?}; shift 2 ;;
    --no-apt) APT=no; shift ;;
    --rollback) ACTION=rollback; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
    esac
done

ROOT=${ROOT%/}
R=${ROOT:-}          # prefix for every path below ("" for the real root)
OPT=$R/opt/facelock
ETC=$R/etc/facelock
STATE=$R/var/lib/facelock
UNITDIR=$R/etc/systemd/system

LIVE=no              # talk to a running systemd?
if [ "$SYSTEMD" != no ] && [ -z "$R" ] && [ -d /run/systemd/system ]; then LIVE=yes; fi
IS_ROOT=no
[ "$(id -u)" = 0 ] && IS_ROOT=yes
[ -n "$R" ] || [ "$IS_ROOT" = yes ] || die "run as root (sudo bash $0), or pass --root DIR"
if [ -n "$R" ]; then
    [ -d "$R" ] || die "--root $R: no such directory"
    [ -f "$R/etc/passwd" ] || die "--root $R: no etc/passwd there (not a root file system)"
fi

# ---- small helpers -----------------------------------------------------------------------------------
UPFX=()              # useradd/groupadd/usermod work on the target root's files, without chroot
[ -n "$R" ] && UPFX=(--prefix "$R")
has_group() { grep -q "^$1:" "$R/etc/group"; }
has_user() { grep -q "^$1:" "$R/etc/passwd"; }
owner() { # chown when we can (as root); tests that run unprivileged with --root skip it
    [ "$IS_ROOT" = yes ] || return 0
    if [ -n "$R" ]; then # names resolve against the host, so use the ids from the target's files
        local uid gid
        uid=$(awk -F: -v n="${1%%:*}" '$1 == n { print $3 }' "$R/etc/passwd")
        gid=$(awk -F: -v n="${1##*:}" '$1 == n { print $3 }' "$R/etc/group")
        chown "${uid:-0}:${gid:-0}" "${@:2}"
    else
        chown "$@"
    fi
}
symlink_swap() { # atomically point link $2 at $1
    ln -sfn "$1" "$2.tmp.$$"
    mv -Tf "$2.tmp.$$" "$2"
}
restore_unit() { # a rollback also brings back the unit file that release was installed with
    if [ -f "$1/facelock.service" ] && ! cmp -s "$1/facelock.service" "$UNITDIR/$UNIT"; then
        install -m 0644 "$1/facelock.service" "$UNITDIR/$UNIT"
        if [ "$LIVE" = yes ]; then systemctl daemon-reload; fi
        log "unit: restored the $UNIT of $(basename "$1")"
    fi
}
service_active() { [ "$(systemctl is-active "$UNIT" 2>/dev/null || true)" = active ]; }

restart_service() {
    if [ "$LIVE" = yes ]; then
        systemctl reset-failed "$UNIT" 2>/dev/null || true
        systemctl restart --no-block "$UNIT"
    fi
}

# The built-in checks, then the configurable one. Prints why on failure.
health_check() {
    local rel_dir=$1 version=$2 out deadline
    if ! out=$("$OPT/current/venv/bin/facelock" --version 2>&1); then
        log "health: '$OPT/current/venv/bin/facelock --version' failed: $(printf '%s' "$out" | tail -n 3)"
        return 1
    fi
    case $out in
    *"$version"*) log "health: $out" ;;
    *) log "health: expected facelock $version, '$OPT/current/venv/bin/facelock --version' says '$out'"; return 1 ;;
    esac
    if [ "$LIVE" = yes ]; then
        deadline=$(($(date +%s) + HEALTH_TIMEOUT))
        until service_active; do
            if [ "$(date +%s)" -ge "$deadline" ]; then
                log "health: $UNIT not active after ${HEALTH_TIMEOUT}s ($(systemctl is-active "$UNIT" 2>&1 || true))"
                journalctl -u "$UNIT" -n 15 --no-pager 2>/dev/null | sed "s/^/$PROG:   /" || true
                return 1
            fi
            sleep 1
        done
        sleep "$HEALTH_SETTLE"
        if ! service_active; then
            log "health: $UNIT became active but did not stay up for ${HEALTH_SETTLE}s"
            journalctl -u "$UNIT" -n 15 --no-pager 2>/dev/null | sed "s/^/$PROG:   /" || true
            return 1
        fi
        log "health: $UNIT is active"
    fi
    if [ -n "$HEALTHCHECK" ]; then
        if ! FACELOCK_ROOT=$ROOT FACELOCK_VERSION=$version FACELOCK_RELEASE_DIR=$rel_dir \
            FACELOCK_RELEASE=$(basename "$rel_dir") timeout "$HEALTH_TIMEOUT" sh -c "$HEALTHCHECK"; then
            log "health: check '$HEALTHCHECK' failed"
            return 1
        fi
        log "health: check '$HEALTHCHECK' passed"
    fi
    return 0
}

release_version() { sed -n 's/^version=//p' "$1/VERSION" 2>/dev/null || true; }

# ai_edge_litert is the interpreter; where it does not import on this board (a CPU or libc its build does
# not support), the wheelhouse's fallback (tflite-runtime 2.14 on Python 3.11) goes in. One must import.
imports() { timeout 120 "$1/venv/bin/python" -c "import $2" >/dev/null 2>&1; }
tflite_fallback() {
    local rel=$1 fallbacks
    imports "$rel" ai_edge_litert.interpreter && return 0
    fallbacks=$(sed -n 's/^fallbacks=//p' "$WHEELHOUSE/TARGET")
    if [ -n "$fallbacks" ]; then
        log "interpreter: ai_edge_litert does not import here; installing $fallbacks from the wheelhouse"
        # shellcheck disable=SC2086 # a list of requirements
        "$rel/venv/bin/python" -m pip install --disable-pip-version-check --no-input -q --no-index \
            --find-links "$WHEELHOUSE" -c "$WHEELHOUSE/constraints.txt" $fallbacks ||
            die "pip install $fallbacks into $rel/venv failed"
    fi
    imports "$rel" tflite_runtime.interpreter ||
        die "$rel/venv: neither ai_edge_litert nor tflite_runtime imports; facelock cannot run models"
    log "interpreter: tflite_runtime (fallback)"
}

# ---- rollback on request ------------------------------------------------------------------------------
if [ "$ACTION" = rollback ]; then
    cur=$(readlink "$OPT/current" 2>/dev/null || true)
    prev=$(readlink "$OPT/previous" 2>/dev/null || true)
    [ -n "$prev" ] && [ -d "$OPT/$prev" ] || die "$OPT/previous: no previous release to roll back to"
    RELEASE=$(basename "$prev")
    PREV_RELEASE=$(basename "$cur")
    VERSION=$(release_version "$OPT/$prev")
    symlink_swap "$prev" "$OPT/current"
    [ -n "$cur" ] && symlink_swap "$cur" "$OPT/previous"
    log "current -> $prev (was $cur)"
    restore_unit "$OPT/$prev"
    restart_service
    health_check "$OPT/$prev" "$VERSION" || { result failed; exit 1; }
    result ok
    exit 0
fi

# ---- 1. the artifact -----------------------------------------------------------------------------------
for f in VERSION SHA256SUMS facelock.service config.toml.example bundle/manifest.json; do
    [ -e "$SRC/$f" ] || die "$SRC/$f: missing; is $SRC an unpacked facelock-deploy artifact?"
done
if ! bad=$(cd "$SRC" && sha256sum --quiet --strict -c SHA256SUMS 2>&1); then
    die "$SRC/SHA256SUMS: files do not match (corrupt or modified artifact): $(printf '%s' "$bad" | tr '\n' ' ')"
fi
VERSION=$(sed -n 's/^version=//p' "$SRC/VERSION")
RELEASE=$(sed -n 's/^release=//p' "$SRC/VERSION")
WHEEL=$(sed -n 's/^wheel=//p' "$SRC/VERSION")
[ -n "$VERSION" ] && [ -n "$RELEASE" ] && [ -f "$SRC/$WHEEL" ] ||
    die "$SRC/VERSION: needs version=, release= and wheel= lines naming a file in the artifact"
case $RELEASE in */* | .* | "") die "$SRC/VERSION: bad release id '$RELEASE'" ;; esac
log "installing facelock $VERSION (release $RELEASE) into ${ROOT}"

mkdir -p "$OPT/releases"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$OPT/.install.lock"
    flock -w 600 9 || die "$OPT/.install.lock: another install is still running"
fi

# ---- 2. Debian packages the venv relies on (real root only) --------------------------------------------
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
    die "$PYTHON: facelock needs Python >= 3.11 (Raspberry Pi OS Bookworm or newer)"
WHEELHOUSE=
if [ -f "$SRC/wheelhouse/TARGET" ]; then
    WHEELHOUSE=$SRC/wheelhouse
    wh_python=$(sed -n 's/^python=//p' "$WHEELHOUSE/TARGET")
    wh_machine=$(sed -n 's/^machine=//p' "$WHEELHOUSE/TARGET")
    py_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [ "$py_version" = "$wh_python" ] ||
        die "$WHEELHOUSE: built for Python $wh_python, $PYTHON is $py_version; build the artifact with" \
            "\`facelock deploy bundle --board linux-$wh_machine --python $py_version\`"
    # The interpreter's machine, as pip sees it: a 32-bit userland on a 64-bit kernel is armv7l, not aarch64.
    py_machine=$("$PYTHON" -c 'import platform, struct
m = platform.machine()
print("armv7l" if m == "aarch64" and struct.calcsize("P") == 4 else m)')
    [ "$py_machine" = "$wh_machine" ] ||
        die "$WHEELHOUSE: built for $wh_machine, $PYTHON runs on $py_machine; build the artifact with" \
            "\`facelock deploy bundle --board linux-$py_machine --python $py_version\`"
    log "wheelhouse: installing offline from $WHEELHOUSE ($wh_machine, Python $wh_python)"
fi
if [ -z "$R" ] && [ "$APT" != no ] && command -v apt-get >/dev/null 2>&1; then
    want=""
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || want="$want python3-venv"
    if grep -qs "Raspberry Pi" /proc/device-tree/model && ! "$PYTHON" -c 'import picamera2' 2>/dev/null; then
        want="$want python3-picamera2"
    fi
    if grep -qs "Raspberry Pi" /proc/device-tree/model && ! "$PYTHON" -c 'import lgpio' 2>/dev/null; then
        want="$want python3-lgpio"  # gpiozero's pin driver for the relay (Pi 5 needs it)
    fi
    if [ -n "$want" ]; then
        log "apt-get install$want"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $want ||
            die "apt-get install$want failed (is the board online?)"
    fi
fi

# ---- 3. user and groups --------------------------------------------------------------------------------
for g in video gpio; do
    has_group "$g" || { groupadd ${UPFX[@]+"${UPFX[@]}"} --system "$g" && log "created group $g"; }
done
if ! has_user facelock; then
    useradd ${UPFX[@]+"${UPFX[@]}"} --system --user-group --home-dir /var/lib/facelock --no-create-home \
        --shell /usr/sbin/nologin --comment "facelock face unlock" facelock ||
        die "useradd facelock failed in ${ROOT}"
    log "created system user facelock"
fi
usermod ${UPFX[@]+"${UPFX[@]}"} -a -G video,gpio facelock || die "usermod -a -G video,gpio facelock failed in ${ROOT}"

# ---- 4. directories, config (kept), state (never touched) ---------------------------------------------
install -d -m 0755 "$OPT" "$OPT/releases"
install -d -m 0750 "$ETC" "$STATE"
owner root:facelock "$ETC"
owner facelock:facelock "$STATE"
install -m 0644 "$SRC/config.toml.example" "$ETC/config.toml.example"
if [ -e "$ETC/config.toml" ]; then
    log "config: keeping $ETC/config.toml"
else
    install -m 0640 "$SRC/config.toml.example" "$ETC/config.toml"
    log "config: wrote $ETC/config.toml from the template; edit it (MQTT host, device id)"
fi
# Whoever wrote the config (firstboot.sh, before the facelock group existed; an editor as root), the
# service reads it as the facelock group: root:facelock 0640, the content as it is (it may hold secrets).
owner root:facelock "$ETC/config.toml"
chmod 0640 "$ETC/config.toml"

# ---- 5. the release ------------------------------------------------------------------------------------
REL=$OPT/releases/$RELEASE
if [ -f "$REL/.complete" ] && cmp -s "$SRC/SHA256SUMS" "$REL/SHA256SUMS"; then
    log "release $RELEASE already installed in $REL"
else
    rm -rf "$REL"
    mkdir -p "$REL"
    cp -R "$SRC/bundle" "$REL/bundle"
    cp "$SRC/$WHEEL" "$SRC/VERSION" "$SRC/SHA256SUMS" "$SRC/facelock.service" "$REL/"
    t=$(date +%s)
    "$PYTHON" -m venv --system-site-packages "$REL/venv" ||
        die "$PYTHON -m venv failed for $REL/venv (install python3-venv)"
    spec="$REL/$WHEEL"
    [ -n "$EXTRAS" ] && spec="${spec}[${EXTRAS}]"
    WH_ARGS=()
    [ -n "$WHEELHOUSE" ] && WH_ARGS=(--no-index --find-links "$WHEELHOUSE" -c "$WHEELHOUSE/constraints.txt")
    # shellcheck disable=SC2086 # PIP_ARGS is a list of words on purpose
    "$REL/venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        ${WH_ARGS[@]+"${WH_ARGS[@]}"} $PIP_ARGS "$spec" ||
        die "pip install $spec into $REL/venv failed (see pip's message above)"
    if [ -n "$WHEELHOUSE" ]; then
        case ",$EXTRAS," in *,edge,*) tflite_fallback "$REL" ;; esac
    fi
    touch "$REL/.complete"
    log "installed $WHEEL into $REL/venv in $(($(date +%s) - t))s"
fi
rm -f "$REL/.failed"

# ---- 6. the unit ---------------------------------------------------------------------------------------
mkdir -p "$UNITDIR/multi-user.target.wants"
unit_changed=no
cmp -s "$SRC/facelock.service" "$UNITDIR/$UNIT" || unit_changed=yes
install -m 0644 "$SRC/facelock.service" "$UNITDIR/$UNIT"
coral=$CORAL_USB
if [ "$coral" = auto ]; then
    coral=no
    # Coral USB: 1a6e:089a before its firmware is loaded, 18d1:9302 after.
    if [ -z "$R" ] && grep -qsE '^(1a6e|18d1)$' /sys/bus/usb/devices/*/idVendor &&
        grep -qsE '^(089a|9302)$' /sys/bus/usb/devices/*/idProduct; then coral=yes; fi
fi
if [ "$coral" = yes ] && [ -f "$SRC/coral-usb.conf" ]; then
    install -d -m 0755 "$UNITDIR/$UNIT.d"
    cmp -s "$SRC/coral-usb.conf" "$UNITDIR/$UNIT.d/coral-usb.conf" || unit_changed=yes
    install -m 0644 "$SRC/coral-usb.conf" "$UNITDIR/$UNIT.d/coral-usb.conf"
    log "unit: USB Coral drop-in installed"
fi
if [ "$LIVE" = yes ]; then
    systemctl daemon-reload
    systemctl enable --quiet "$UNIT"
else
    ln -sfn "/etc/systemd/system/$UNIT" "$UNITDIR/multi-user.target.wants/$UNIT"
fi
log "unit: $UNITDIR/$UNIT installed and enabled (changed: $unit_changed)"

# ---- 7. switch, check, roll back -----------------------------------------------------------------------
cur=$(readlink "$OPT/current" 2>/dev/null || true)
new="releases/$RELEASE"
if [ "$cur" != "$new" ]; then
    [ -n "$cur" ] && [ -d "$OPT/$cur" ] && symlink_swap "$cur" "$OPT/previous"
    symlink_swap "$new" "$OPT/current"
    log "current -> $new (was ${cur:-nothing})"
fi
prev=$(readlink "$OPT/previous" 2>/dev/null || true)
[ "$prev" = "$new" ] && prev=
PREV_RELEASE=${prev:+$(basename "$prev")}
if [ "$cur" != "$new" ] || [ "$unit_changed" = yes ] || { [ "$LIVE" = yes ] && ! service_active; }; then
    restart_service
fi

if health_check "$REL" "$VERSION"; then
    # ---- 8. prune old releases (never current or previous) --------------------------------------------
    n=0
    while IFS= read -r d; do
        { [ "releases/$d" = "$new" ] || [ "releases/$d" = "$prev" ]; } && continue
        n=$((n + 1))
        if [ "$n" -gt "$KEEP" ]; then rm -rf "${OPT:?}/releases/$d" && log "pruned release $d"; fi
    done < <(cd "$OPT/releases" && ls -1t)
    result ok
    exit 0
fi

date -u +%Y-%m-%dT%H:%M:%SZ >"$REL/.failed"
if [ -z "$prev" ] || [ ! -d "$OPT/$prev" ]; then
    log "release $RELEASE failed its health check and there is no previous release to roll back to"
    result failed
    exit 1
fi
log "release $RELEASE failed its health check: rolling back to $(basename "$prev")"
symlink_swap "$prev" "$OPT/current"
rm -f "$OPT/previous"
log "current -> $prev"
restore_unit "$OPT/$prev"
restart_service
FAILED=$RELEASE
RELEASE=$(basename "$prev")
VERSION=$(release_version "$OPT/$prev")
PREV_RELEASE=
if health_check "$OPT/$prev" "$VERSION"; then
    log "rolled back to $RELEASE; $FAILED is kept in $OPT/releases for inspection"
else
    log "the previous release $RELEASE fails its health check too; manual attention needed"
fi
result rolled-back
exit 3
