#!/usr/bin/env bash
# Builds the Vagrant box the lab boots under libvirt, from debootstrap, with no Vagrant
# Cloud and no loop devices: Debian 12 with systemd-networkd (DHCP on eth0), sshd, sudo,
# and a `vagrant` user that logs in with Vagrant's well-known insecure key (replaced by
# `vagrant up`) and has passwordless sudo.
#
#   vagrant/build-box.sh            # prints the box file's path; does nothing when it is built
#   vagrant/build-box.sh --force    # builds it again
#
# The root file system is made from a directory (`mke2fs -d`) inside a partitioned
# image; GRUB is installed by booting that image once under QEMU (emulated, so no KVM
# is needed) with a small init that runs grub-install and powers off. About 7 minutes.
# Output and work files: .rbee-cache/vagrant/ (or RBEE_BOX_CACHE). Needs root
# (debootstrap), debootstrap, qemu-system-x86, qemu-utils, fdisk and e2fsprogs;
# vagrant/lab-up.sh installs them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${RBEE_BOX_CACHE:-$ROOT/.rbee-cache/vagrant}
BOX="$CACHE/rbee-debian12.box"
MIRROR=${RBEE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DISK_SIZE_MB=${RBEE_BOX_DISK_MB:-8192}
# The first partition starts at 1 MiB, leaving room for GRUB's core image.
PART_START_SECTORS=2048

# Vagrant's well-known insecure public key (vagrant's keys/vagrant.pub); Vagrant swaps
# it for a key of its own on the first `vagrant up`.
INSECURE_KEY='ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHzD8+v1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSIFo9D8HfdOV0IAdx4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmCP3NOTd0jMZEnDkbUvxhMmBYSdETk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRdK8jlqm8tehUc9c9WhQ== vagrant insecure public key'

usage() {
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

force=0
case "${1:-}" in
    "") ;;
    --force) force=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
esac

if [[ -f $BOX && $force -eq 0 ]]; then
    echo "$BOX"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "error: building the box needs root (debootstrap chroots into the new system)" >&2
    echo "hint: sudo $0" >&2
    exit 1
fi
for tool in debootstrap qemu-system-x86_64 qemu-img mke2fs sfdisk; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: $tool is missing" >&2
        echo "hint: apt-get install debootstrap qemu-system-x86 qemu-utils e2fsprogs fdisk (vagrant/lab-up.sh does)" >&2
        exit 1
    fi
done

mkdir -p "$CACHE"
WORK="$CACHE/work"
rm -rf "$WORK"
mkdir -p "$WORK"
rootfs="$WORK/rootfs"
started=$SECONDS

echo "box: debootstrap bookworm into $rootfs ..." >&2
debootstrap --variant=minbase \
    --include=systemd-sysv,udev,dbus,kmod,iproute2,netbase,procps,openssh-server,sudo,linux-image-amd64,initramfs-tools,grub-pc-bin,grub2-common,less,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -20 "$WORK/debootstrap.log" >&2
    echo "error: debootstrap failed; its log: $WORK/debootstrap.log" >&2
    exit 1
}

echo "box: configuring the guest ..." >&2
in_root() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

echo rbee-box >"$rootfs/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\trbee-box\n' >"$rootfs/etc/hosts"
printf 'LABEL=rbee-root\t/\text4\terrors=remount-ro\t0\t1\n' >"$rootfs/etc/fstab"
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF

# The management interface (eth0) asks libvirt's DHCP for an address; Vagrant writes the
# private network's own .network file. The client id is the MAC: every machine from
# this box would otherwise send the same one and could be given the same address.
mkdir -p "$rootfs/etc/systemd/network"
cat >"$rootfs/etc/systemd/network/10-eth0.network" <<'EOF'
[Match]
Name=eth0

[Network]
DHCP=ipv4

[DHCPv4]
ClientIdentifier=mac
EOF
in_root systemctl enable systemd-networkd.service >/dev/null 2>&1
# No resolver service in this box, so nothing writes resolv.conf from DHCP: name
# vagrant-libvirt's management network's dnsmasq (its default 192.168.121.0/24).
echo 'nameserver 192.168.121.1' >"$rootfs/etc/resolv.conf"

# Each machine gets its own machine id (DHCP, journald) and its own SSH host keys.
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id" "$rootfs"/etc/ssh/ssh_host_*
cat >"$rootfs/etc/systemd/system/ssh-host-keys.service" <<'EOF'
[Unit]
Description=Generate SSH host keys on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
EOF
in_root systemctl enable ssh-host-keys.service ssh.service >/dev/null 2>&1
# Vagrant connects by address; a reverse lookup would only slow every login.
echo 'UseDNS no' >"$rootfs/etc/ssh/sshd_config.d/rbee-box.conf"

# The `vagrant` user: password "vagrant" (the convention of public boxes, for the serial
# console), the insecure key, and sudo without a password.
in_root useradd --create-home --shell /bin/bash vagrant
echo 'vagrant:vagrant' | in_root chpasswd
install -d -m 700 "$rootfs/home/vagrant/.ssh"
echo "$INSECURE_KEY" >"$rootfs/home/vagrant/.ssh/authorized_keys"
chmod 600 "$rootfs/home/vagrant/.ssh/authorized_keys"
in_root chown -R vagrant:vagrant /home/vagrant/.ssh
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$rootfs/etc/sudoers.d/vagrant"
chmod 440 "$rootfs/etc/sudoers.d/vagrant"

# Classic interface names (eth0, eth1) and the serial console, for GRUB to write into
# its config.
cat >"$rootfs/etc/default/grub" <<'EOF'
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="net.ifnames=0 biosdevname=0 console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200"
EOF

# The init of the one boot that installs GRUB: it runs as PID 1 with the root file
# system read-write, removes itself, and powers the machine off.
cat >"$rootfs/sbin/rbee-install-grub" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
if grub-install --target=i386-pc /dev/vda && update-grub; then
    echo RBEE_GRUB_INSTALLED
fi
rm -f /sbin/rbee-install-grub
sync
mount -o remount,ro / 2>/dev/null
echo o >/proc/sysrq-trigger
sleep 10
EOF
chmod 755 "$rootfs/sbin/rbee-install-grub"
in_root apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*

kernel=$(find "$rootfs/boot" -name 'vmlinuz-*' | sort -V | tail -1)
initrd=$(find "$rootfs/boot" -name 'initrd.img-*' | sort -V | tail -1)
cp "$kernel" "$WORK/vmlinuz"
cp "$initrd" "$WORK/initrd.img"

echo "box: making the disk image ($DISK_SIZE_MB MiB, sparse) ..." >&2
disk="$WORK/disk.raw"
truncate -s "${DISK_SIZE_MB}M" "$disk"
echo "start=$PART_START_SECTORS, type=83, bootable" | sfdisk --quiet "$disk"
part_kb=$(((DISK_SIZE_MB * 1024) - (PART_START_SECTORS / 2)))
mke2fs -q -t ext4 -L rbee-root -d "$rootfs" \
    -E offset=$((PART_START_SECTORS * 512)) "$disk" "${part_kb}k"

echo "box: booting it once to install GRUB (emulated, about a minute) ..." >&2
timeout 600 qemu-system-x86_64 -machine accel=tcg -m 1024 -nographic -no-reboot \
    -drive "file=$disk,format=raw,if=virtio" -net none \
    -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" \
    -append "root=/dev/vda1 rw console=ttyS0 init=/sbin/rbee-install-grub" \
    </dev/null >"$WORK/grub-boot.log" 2>&1 || true
if ! grep -q RBEE_GRUB_INSTALLED "$WORK/grub-boot.log"; then
    tail -30 "$WORK/grub-boot.log" >&2
    echo "error: installing GRUB in the image failed; the console log: $WORK/grub-boot.log" >&2
    exit 1
fi

echo "box: packing $BOX ..." >&2
boxdir="$WORK/box"
mkdir -p "$boxdir"
qemu-img convert -c -O qcow2 "$disk" "$boxdir/box.img"
cat >"$boxdir/metadata.json" <<EOF
{"provider": "libvirt", "format": "qcow2", "virtual_size": $(((DISK_SIZE_MB + 1023) / 1024))}
EOF
cat >"$boxdir/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
    libvirt.nic_model_type = "virtio"
  end
end
EOF
tar -C "$boxdir" -cf "$BOX.partial" metadata.json Vagrantfile box.img
mv "$BOX.partial" "$BOX"
rm -rf "$WORK"
echo "box: built in $((SECONDS - started))s" >&2
echo "$BOX"
