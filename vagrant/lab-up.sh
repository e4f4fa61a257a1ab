#!/usr/bin/env bash
# Brings the Vagrant lab up under libvirt/KVM on this machine, with no Vagrant Cloud:
# installs the Debian packages it needs, starts libvirtd when it does not run, builds
# the box from debootstrap (vagrant/build-box.sh) and adds it as rbee/debian12, then
# `vagrant up --provider=libvirt`. As root, on Debian 12. The machines run under KVM
# where /dev/kvm is Intel's or AMD's hardware virtualization; elsewhere (no /dev/kvm, or
# a software /dev/kvm such as kvm_pvm, which boots only kernels built for it) QEMU
# emulates their CPU: slower, the same lab. RBEE_VAGRANT_LIBVIRT_DRIVER=kvm|qemu picks.
#
#   vagrant/lab-up.sh [MACHINE...]      # default: queen, hive-1 and hive-2
#   vagrant/lab-up.sh --down            # destroys the machines (the box stays)
#
# Afterwards vagrant/.rbee/ holds config.toml, inventory.toml, known_hosts and the
# operator's key (see the Vagrantfile's header). RBEE_VAGRANT_MEMORY (MiB per
# machine) and the Vagrantfile's other settings pass through.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BOX_NAME=rbee/debian12

if [[ $(id -u) -ne 0 ]]; then
    echo "error: the libvirt lab needs root (packages, libvirtd, qemu:///system)" >&2
    echo "hint: sudo $0 $*" >&2
    exit 1
fi

install_packages() {
    local need=()
    command -v vagrant >/dev/null || need+=(vagrant)
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v sfdisk >/dev/null || need+=(fdisk)
    command -v mke2fs >/dev/null || need+=(e2fsprogs)
    command -v ssh-keygen >/dev/null || need+=(openssh-client)
    command -v virsh >/dev/null || need+=(libvirt-clients)
    command -v libvirtd >/dev/null || need+=(libvirt-daemon-system)
    command -v dnsmasq >/dev/null || [[ -x /usr/sbin/dnsmasq ]] || need+=(dnsmasq-base)
    vagrant plugin list 2>/dev/null | grep -q '^vagrant-libvirt ' || need+=(vagrant-libvirt)
    if ! command -v qemu-system-x86_64 >/dev/null; then
        # qemu-utils from backports breaks bookworm's qemu-system: take both from the
        # release qemu-system-x86 comes from.
        local version
        version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')
        need+=(qemu-system-x86 "qemu-utils=$version")
    fi
    command -v qemu-img >/dev/null || need+=(qemu-utils)
    if ((${#need[@]} == 0)); then
        return
    fi
    echo "lab: installing ${need[*]} ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends --allow-downgrades "${need[@]}" >&2
}

libvirt_answers() { virsh -c qemu:///system version >/dev/null 2>&1; }

start_libvirtd() {
    if libvirt_answers; then
        return
    fi
    if [[ -d /run/systemd/system ]]; then
        systemctl start libvirtd.service virtlogd.service
    else
        # No systemd (a container): the daemons run detached on their own.
        pgrep -x virtlogd >/dev/null || virtlogd -d
        pgrep -x libvirtd >/dev/null || libvirtd -d
    fi
    for _ in $(seq 50); do
        libvirt_answers && return
        sleep 0.2
    done
    virsh -c qemu:///system version >&2 || true
    echo "error: libvirtd does not answer on qemu:///system" >&2
    echo "hint: run 'libvirtd' in a terminal to see why it stops" >&2
    exit 1
}

# vagrant-libvirt puts box images and machine disks in the pool named "default".
ensure_pool() {
    if virsh -c qemu:///system pool-info default >/dev/null 2>&1; then
        virsh -c qemu:///system pool-start default >/dev/null 2>&1 || true
        return
    fi
    virsh -c qemu:///system pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
    virsh -c qemu:///system pool-build default >/dev/null
    virsh -c qemu:///system pool-start default >/dev/null
    virsh -c qemu:///system pool-autostart default >/dev/null
}

# Adds the box when it is missing or was rebuilt since it was added. vagrant-libvirt
# copies a box into the pool under a name with the time it was added, so a rebuilt box
# is never confused with the copy of the old one.
add_box() {
    local box=$1 stamp="$ROOT/.rbee-cache/vagrant/box-added"
    if vagrant box list 2>/dev/null | grep -q "^$BOX_NAME " && [[ -f $stamp && ! $box -nt $stamp ]]; then
        return
    fi
    vagrant box add --force --name "$BOX_NAME" "$box" >&2
    touch "$stamp"
}

if [[ ${1:-} == --down ]]; then
    cd "$ROOT/vagrant"
    if libvirt_answers; then
        RBEE_VAGRANT_BOX=$BOX_NAME vagrant destroy -f
    fi
    exit 0
fi
# kvm when /dev/kvm is hardware virtualization, which boots the box's stock kernel.
libvirt_driver() {
    if [[ -n ${RBEE_VAGRANT_LIBVIRT_DRIVER:-} ]]; then
        echo "$RBEE_VAGRANT_LIBVIRT_DRIVER"
    elif [[ -w /dev/kvm && (-d /sys/module/kvm_intel || -d /sys/module/kvm_amd) ]]; then
        echo kvm
    else
        local modules=(/sys/module/kvm*)
        echo "lab: /dev/kvm is missing or not Intel's or AMD's virtualization (modules: ${modules[*]##*/}); QEMU emulates the machines' CPU" >&2
        echo qemu
    fi
}

# libvirt checks /dev/kvm as the user QEMU runs as (libvirt-qemu, in group kvm). Where no
# udev gave the node its usual root:kvm 0660 (a container), that check fails while
# libvirt's own probe, as root, found KVM: it then throws its QEMU capabilities away
# and probes again on every call, about 12 seconds each.
kvm_node_for_libvirt() {
    if [[ -c /dev/kvm ]] && getent group kvm >/dev/null && [[ $(stat -c %G /dev/kvm) != kvm ]]; then
        chgrp kvm /dev/kvm
        chmod 0660 /dev/kvm
    fi
}

started=$SECONDS
install_packages
kvm_node_for_libvirt
start_libvirtd
ensure_pool
box=$("$ROOT/vagrant/build-box.sh")
add_box "$box"
echo "lab: box ready after $((SECONDS - started))s; vagrant up ..." >&2
export RBEE_VAGRANT_LIBVIRT_DRIVER
RBEE_VAGRANT_LIBVIRT_DRIVER=$(libvirt_driver)
cd "$ROOT/vagrant"
RBEE_VAGRANT_BOX=$BOX_NAME vagrant up --provider=libvirt "$@"
echo "lab: up after $((SECONDS - started))s; config: $ROOT/vagrant/.rbee/config.toml" >&2
