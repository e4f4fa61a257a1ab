#!/usr/bin/env bash
# debian-root.sh: a Debian root file system for lab hosts of another distribution
# (lab/lab.sh's `root` host file): debootstrap's minimal variant with openssh-server,
# made once and kept.
#
#   lab/debian-root.sh [--arch ARCH] [SUITE] [DIR]    prints the root's path
#
# SUITE defaults to bullseye (Debian 11: glibc 2.31, older than the 2.34 this
# machine's own builds need); ARCH, a Debian architecture, to this machine's (arm64 for
# an aarch64 host); DIR to .rbee-cache/roots/SUITE-ARCH in the repository.
# The root is made in DIR.partial and renamed when complete, so an interrupted run
# leaves nothing that looks finished. Needs root and debootstrap (installed here when
# missing) and deb.debian.org, about 30 s and 60 MB of downloads.
#
# A root of another architecture is bootstrapped in two stages: debootstrap --foreign
# unpacks the packages, then its second stage configures them inside the root, run by
# QEMU (lab/binfmt.sh registers it with binfmt_misc); a few minutes for arm64.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
arch="$(dpkg --print-architecture)"
if [[ "${1:-}" == --arch ]]; then
    arch="${2:?debian-root.sh: --arch needs a Debian architecture, such as arm64}"
    shift 2
fi
suite="${1:-bullseye}"
dir="$(realpath -m -- "${2:-$repo/.rbee-cache/roots/$suite-$arch}")"
mirror="${RBEE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [[ -x "$dir/usr/sbin/sshd" ]]; then
    echo "$dir"
    exit 0
fi
[[ $EUID -eq 0 ]] || { echo "debian-root.sh: debootstrap needs root" >&2; exit 1; }
if ! command -v debootstrap >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; } ||
        { echo "debian-root.sh: cannot install debootstrap with apt-get" >&2; exit 1; }
fi
rm -rf "$dir.partial"
mkdir -p "$(dirname "$dir")"
foreign=()
if [[ "$arch" != "$(dpkg --print-architecture)" ]]; then
    foreign=(--foreign)
fi
if ! debootstrap --arch="$arch" "${foreign[@]}" --variant=minbase --include=openssh-server \
    "$suite" "$dir.partial" "$mirror" >"$dir.log" 2>&1; then
    tail -n 20 "$dir.log" >&2
    echo "debian-root.sh: debootstrap $suite for $arch failed (log: $dir.log)" >&2
    exit 1
fi
if ((${#foreign[@]})); then
    # The second stage mounts /proc and /sys in the root: in a mount namespace of its
    # own, so nothing is left mounted however it ends.
    "$repo/lab/binfmt.sh" "$dir.partial/bin/bash"
    if ! unshare --mount --propagation private \
        chroot "$dir.partial" /debootstrap/debootstrap --second-stage >>"$dir.log" 2>&1; then
        tail -n 20 "$dir.log" >&2
        echo "debian-root.sh: debootstrap's second stage for $arch failed (log: $dir.log)" >&2
        exit 1
    fi
fi
# Host keys are the lab's; the ones the package made are not used.
rm -f "$dir.partial"/etc/ssh/ssh_host_*
mv "$dir.partial" "$dir"
echo "$dir"
