#!/bin/busybox sh
# /init of the emulated board's initramfs (busybox-static:arm64 + the virtio/ext4 modules listed in
# /modules.order, in dependency order). Debian's arm64 kernel has virtio_blk, virtio_pci and ext4 as
# modules, so something has to load them before the root disk can be mounted; that is all this does:
#
#   normal boot:            load modules, mount /dev/vda on /newroot, switch_root to /sbin/init (systemd)
#   facelock.build=1:       the image build's only boot: run debootstrap's second stage and guest_setup.sh
#                           in a chroot of /dev/vda, print FACELOCK-BUILD-OK (or -FAILED), power off
# shellcheck shell=sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "facelock-initramfs: $*" >/dev/console; }

while read -r ko; do
    insmod "/modules/$ko" 2>/dev/null || say "insmod $ko failed"
done </modules.order

root=/dev/vda
for tok in $(cat /proc/cmdline); do
    case $tok in root=/dev/*) root=${tok#root=} ;; esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -b "$root" ] || { say "no root disk $root"; sleep 2; poweroff -f; }
mount -t ext4 -o rw "$root" /newroot || { say "cannot mount $root"; sleep 2; poweroff -f; }

if grep -q 'facelock.build=1' /proc/cmdline; then
    for d in proc sys dev; do mount --bind "/$d" "/newroot/$d"; done
    mkdir -p /newroot/dev/pts && mount -t devpts devpts /newroot/dev/pts
    status=FAILED
    # The second stage removes /debootstrap when it succeeds, so a repeated build boot skips it.
    if [ -x /newroot/debootstrap/debootstrap ]; then
        say "debootstrap --second-stage"
        chroot /newroot /debootstrap/debootstrap --second-stage ||
            tail -n 40 /newroot/debootstrap/debootstrap.log 2>/dev/null >/dev/console
    fi
    if [ ! -e /newroot/debootstrap ]; then
        say "guest_setup.sh"
        chroot /newroot /bin/bash /root/board/guest_setup.sh && status=OK
    fi
    sync
    for d in dev/pts dev sys proc; do umount "/newroot/$d" 2>/dev/null; done
    mount -o remount,ro /newroot
    umount /newroot
    sync
    echo "FACELOCK-BUILD-$status" >/dev/console
    poweroff -f
fi

umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /sbin/init
