#!/bin/bash
# Runs once inside the emulated board while its image is built (chroot of the new root, right after
# debootstrap's second stage; see initramfs_init.sh). Makes a plain Debian Bookworm arm64 system look, to
# facelock, like a fresh Raspberry Pi OS Lite: user `pi` with passwordless sudo and the build's SSH key,
# sshd, DHCP on eth0, cloud-init that acts only when a NoCloud card is attached, and nothing else running.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
B=/root/board
log() { echo "guest_setup: $*"; }

echo facelock-board >/etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tfacelock-board\n' >/etc/hosts
cat >/etc/fstab <<'EOF'
/dev/vda  /  ext4  defaults,noatime  0  0
# The SD card's FAT boot partition, where Raspberry Pi OS mounts it (attached only for the SD-card run).
# An automount: boots without a card never wait for it, and the first look at /boot/firmware (firstboot.sh
# stage, from cloud-init's runcmd) waits for the device however long udev takes to find it.
LABEL=CIDATA  /boot/firmware  vfat  noauto,nofail,x-systemd.automount,x-systemd.device-timeout=180s  0  0
EOF
mkdir -p /boot/firmware
echo 'LANG=C.UTF-8' >/etc/default/locale

# The kernel came from its .deb unpacked on the build host, so its module index is made here.
for k in /usr/lib/modules/*; do depmod -a "$(basename "$k")"; done

# Raspberry Pi OS's default user, passwordless sudo like its 010_pi-nopasswd.
id pi >/dev/null 2>&1 || useradd -m -s /bin/bash -G sudo,video,adm,plugdev pi
passwd -l pi >/dev/null
passwd -l root >/dev/null
echo 'pi ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/010_pi-nopasswd
chmod 0440 /etc/sudoers.d/010_pi-nopasswd
install -d -m 0700 -o pi -g pi /home/pi/.ssh
install -m 0600 -o pi -g pi "$B/authorized_keys" /home/pi/.ssh/authorized_keys
cat >/etc/ssh/sshd_config.d/50-board.conf <<'EOF'
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
EOF
# The gpio group of Raspberry Pi OS (facelock's unit asks for it).
getent group gpio >/dev/null || groupadd --system gpio

# Network: DHCP on the virtio NIC (eth0: the kernel runs with net.ifnames=0, as on a Pi).
cat >/etc/systemd/network/20-wired.network <<'EOF'
[Match]
Name=eth0

[Network]
DHCP=ipv4
EOF
systemctl enable systemd-networkd.service systemd-networkd-wait-online.service
mkdir -p /etc/systemd/system/systemd-networkd-wait-online.service.d
printf '[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60\n' \
    >/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf

# cloud-init: NoCloud (a card labelled CIDATA), rendered for networkd, and nothing at all on boots
# without a card: ds-identify searches only when the list has two real datasources (with one it always
# enables it), so ConfigDrive (label config-2, never present here) is the second, and its policy turns
# cloud-init off when neither is found (Debian's default policy enables it with DataSourceNone).
cat >/etc/cloud/cloud.cfg.d/90-facelock-board.cfg <<'EOF'
datasource_list: [NoCloud, ConfigDrive, None]
system_info:
  network:
    renderers: [networkd]
EOF
echo 'policy: search,found=all,maybe=none,notfound=disabled' >/etc/cloud/ds-identify.cfg

# Nothing periodic: the emulated board runs facelock and sshd only.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
    dpkg-db-backup.timer; do
    systemctl disable "$unit" 2>/dev/null || true
done
# The journal kept on disk, so a failed run can be read back from the overlay.
mkdir -p /var/log/journal

apt-get clean
rm -rf "$B" /var/lib/apt/lists/* /debootstrap
log "done"
