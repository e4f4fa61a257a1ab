#!/usr/bin/env bash
# binfmt.sh: lets this machine run a program built for another architecture, as the
# lab's hosts of another architecture need (an arm64 root's sshd, shell and rbee):
#
#   lab/binfmt.sh BINARY    registers QEMU for BINARY's architecture, unless it is
#                           this machine's own or QEMU is registered for it already
#
# The kernel's binfmt_misc hands such a program to qemu-aarch64-static (Debian's
# qemu-user-static, installed when missing). The registration has the F flag: the
# kernel opens the emulator when it is registered, so programs in a chroot run without a
# copy of it inside. It is the machine's (binfmt_misc is not namespaced here) and lasts
# until reboot; registering again is a no-op. Only aarch64 is known. Needs root.
set -euo pipefail

binary="$1"
misc=/proc/sys/fs/binfmt_misc
# The ELF header's e_machine (bytes 18-19, little-endian).
machine="$(od -An -tx1 -j18 -N2 -- "$binary" | tr -d ' \n')"
case "$machine" in
    3e00) arch=x86_64 ;;
    b700) arch=aarch64 ;;
    *) arch="e_machine $machine" ;;
esac
if [[ "$(uname -m)" == "$arch" ]]; then
    exit 0
fi
if [[ "$arch" != aarch64 ]]; then
    echo "binfmt.sh: $binary is for $arch; only aarch64 programs can be run here by QEMU" >&2
    exit 1
fi
[[ $EUID -eq 0 ]] || { echo "binfmt.sh: registering QEMU with binfmt_misc needs root" >&2; exit 1; }
if [[ ! -e "$misc/register" ]]; then
    mount -t binfmt_misc binfmt_misc "$misc" 2>/dev/null ||
        { echo "binfmt.sh: binfmt_misc is not mounted at $misc and cannot be" >&2; exit 1; }
fi
# Registered already (by this script or by the distribution's qemu-user-static): used
# as it is when it has the F flag, which chroots need.
if [[ -f "$misc/qemu-$arch" ]]; then
    if grep -q '^enabled' "$misc/qemu-$arch" && grep -q '^flags:.*F' "$misc/qemu-$arch"; then
        exit 0
    fi
    echo "binfmt.sh: $misc/qemu-$arch is registered without the F flag (chroots cannot use it);" \
        "remove it with: echo -1 > $misc/qemu-$arch" >&2
    exit 1
fi
if ! command -v qemu-aarch64-static >/dev/null; then
    "$(dirname "${BASH_SOURCE[0]}")/../scripts/install-packages.sh" qemu-user-static
fi
# Matched on the ELF identification and e_machine, as Debian's qemu-user-static does.
magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
# Two registrations at once: the loser finds the name taken, which is what it wanted.
echo ":qemu-$arch:M::$magic:$mask:$(command -v qemu-aarch64-static):F" >"$misc/register" ||
    [[ -f "$misc/qemu-$arch" ]]
