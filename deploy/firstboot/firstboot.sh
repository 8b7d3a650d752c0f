#!/bin/bash
# facelock first boot, written onto the SD card's FAT boot partition by `facelock deploy sdcard`.
#
#   firstboot.sh stage [--start]   copy the payload (artifact, config) off the boot partition into
#                                  /var/lib/facelock-firstboot, enable facelock-firstboot.service, and
#                                  delete the payload from the boot partition (it holds secrets)
#   firstboot.sh run               (the unit, once the network is up) install the artifact with
#                                  install.sh, then disable itself; retried every minute for an hour,
#                                  not at all when a retry cannot help (exit 4)
#
# The config is written root:root 0640 here, before install.sh has created the facelock group; install.sh
# then makes it root:facelock 0640 (content untouched) before it starts the service, so the service can
# read it on its first start. $FACELOCK_INSTALL_ROOT (tests, image building) prefixes every path, and
# $FACELOCK_INSTALL_ARGS is passed on to install.sh (e.g. "--coral-usb yes").
set -eu
R=${FACELOCK_INSTALL_ROOT:-}
R=${R%/}
STAGE=$R/var/lib/facelock-firstboot
UNIT=facelock-firstboot.service
log() { printf 'facelock-firstboot: %s\n' "$*"; }
# install.sh failures that a retry cannot mend: the release (config, model) fails its health check, the
# artifact is corrupt, or its wheelhouse is for another Python or machine. Anything else is retried.
PERMANENT='failed its health check|SHA256SUMS: files do not match|wheelhouse/?: built for|needs Python >= '

case ${1:-} in
stage)
    src=$(cd "$(dirname "$0")" && pwd)
    install -d -m 0700 "$STAGE"
    cp -f "$src"/* "$STAGE"/
    install -m 0644 "$STAGE/$UNIT" "$R/etc/systemd/system/$UNIT"
    mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
    ln -sf "/etc/systemd/system/$UNIT" "$R/etc/systemd/system/multi-user.target.wants/$UNIT"
    rm -rf "$src"
    log "staged into $STAGE, $UNIT enabled"
    if [ "${2:-}" = --start ]; then
        systemctl daemon-reload
        systemctl start --no-block "$UNIT"
    fi
    ;;
run)
    if [ -f "$STAGE/config.toml" ] && [ ! -e "$R/etc/facelock/config.toml" ]; then
        install -d -m 0750 "$R/etc/facelock"
        install -m 0640 "$STAGE/config.toml" "$R/etc/facelock/config.toml"
        log "wrote /etc/facelock/config.toml"
    fi
    # pip talks HTTPS (an artifact without a wheelhouse): wait a while for the clock, a Pi has no RTC.
    if [ -z "$R" ]; then
        for _ in $(seq 60); do
            [ "$(timedatectl show -p NTPSynchronized --value 2>/dev/null || echo yes)" = yes ] && break
            sleep 2
        done
    fi
    set -- "$STAGE"/facelock-deploy-*.tar.gz
    if [ -f "$1" ]; then
        work=$(mktemp -d /var/tmp/facelock-firstboot.XXXXXX)
        tar -xzf "$1" -C "$work"
        set +e
        # shellcheck disable=SC2086 # FACELOCK_INSTALL_ARGS is a list of words on purpose
        bash "$work"/facelock-deploy-*/install.sh ${FACELOCK_INSTALL_ARGS:-} 2>&1 | tee "$work/install.log"
        rc=${PIPESTATUS[0]}
        set -e
        permanent=$(grep -E "$PERMANENT" "$work/install.log" | head -n 1 || true)
        rm -rf "$work"
        if [ "$rc" != 0 ] && [ -n "$permanent" ]; then
            log "install.sh failed with status $rc, and retrying cannot help: $permanent"
            log "fix it (e.g. edit /etc/facelock/config.toml), then: systemctl start $UNIT"
            exit 4  # RestartPreventExitStatus: the unit stays failed, the stage is kept
        fi
        # anything else (no network for pip or apt, a full disk): the unit retries every minute, for an hour
        [ "$rc" = 0 ] || { log "install.sh failed with status $rc; retrying later"; exit 1; }
    else
        log "no facelock-deploy-*.tar.gz staged: configuration only"
    fi
    # Configuration only (no artifact) on a board where facelock is installed: the same ownership.
    if [ -z "$R" ] && getent group facelock >/dev/null && [ -f /etc/facelock/config.toml ]; then
        chown root:facelock /etc/facelock /etc/facelock/config.toml
    fi
    rm -f "$R/etc/systemd/system/multi-user.target.wants/$UNIT"
    rm -rf "$STAGE"
    log "done"
    ;;
*)
    echo "usage: $0 stage [--start] | run" >&2
    exit 2
    ;;
esac
