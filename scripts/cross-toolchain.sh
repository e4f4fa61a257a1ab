#!/usr/bin/env bash
# cross-toolchain.sh: the toolchain that builds rbee for aarch64 on an x86-64 machine,
# a Debian sid root file system made once into .rbee-cache/roots/sid-cross-amd64 (or
# DIR) and kept:
#
#   scripts/cross-toolchain.sh [DIR]    prints the root's path
#
# Our rustup toolchain has only the x86-64 standard library and rustup's servers are
# out of reach, so the cross toolchain is Debian's: sid's rustc and cargo with the arm64
# standard library (libstd-rust-dev:arm64, multiarch, the same version as rustc),
# gcc-aarch64-linux-gnu (the C in dependencies, and the linker), the arm64 C library
# (libc6-dev-arm64-cross) and binutils-aarch64-linux-gnu (strip, objdump). Sid's rustc
# needs a newer glibc than this machine's, so it runs chrooted in that root
# (scripts/release.sh does so for `--targets aarch64`).
#
# The root is made in DIR.partial and renamed when complete, so an interrupted run
# leaves nothing that looks finished; when DIR exists this prints it at once (several
# runs at once are safe: one makes it, the others wait). Needs root
# and debootstrap (installed here when missing) and deb.debian.org, a few minutes and
# some 400 MB of downloads the first time. RBEE_DEBIAN_MIRROR names another mirror.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$(realpath -m -- "${1:-$repo/.rbee-cache/roots/sid-cross-$(dpkg --print-architecture)}")"
mirror="${RBEE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages=(rustc cargo libstd-rust-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
          binutils-aarch64-linux-gnu ca-certificates)

if [[ -x "$dir/usr/bin/rustc" && -d "$dir/usr/lib/rustlib/aarch64-unknown-linux-gnu" ]]; then
    echo "$dir"
    exit 0
fi
[[ $EUID -eq 0 ]] || { echo "cross-toolchain.sh: debootstrap and chroot need root" >&2; exit 1; }
if ! command -v debootstrap >/dev/null; then
    "$repo/scripts/install-packages.sh" debootstrap >&2
fi

# The mounts apt needs in the root (/proc, /dev) are made in a mount namespace of the
# script's own, so they vanish with it however it ends.
if [[ -z "${RBEE_CROSS_NAMESPACE:-}" ]]; then
    RBEE_CROSS_NAMESPACE=1 exec unshare --mount --propagation private \
        bash "${BASH_SOURCE[0]}" "$@"
fi

# One maker at a time: a second run waits for the first and finds the root made.
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [[ -d "$dir" ]]; then
    echo "$dir"
    exit 0
fi
partial="$dir.partial"
log="$dir.log"
rm -rf "$partial"
echo "cross-toolchain.sh: debootstrap sid into $partial (log: $log)" >&2
if ! debootstrap --variant=minbase sid "$partial" "$mirror" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "cross-toolchain.sh: debootstrap sid failed (log: $log)" >&2
    exit 1
fi

cp -L /etc/resolv.conf "$partial/etc/resolv.conf"
mount -t proc proc "$partial/proc"
mount --bind /dev "$partial/dev"
in_root=(chroot "$partial" /usr/bin/env -i HOME=/root LANG=C.UTF-8
         PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
         DEBIAN_FRONTEND=noninteractive)
for name in http_proxy https_proxy no_proxy; do
    if [[ -n "${!name:-}" ]]; then in_root+=("$name=${!name}"); fi
done
# The archive reachable here can be a frozen snapshot whose Release is past its
# Valid-Until date: accept it, as the machine's own apt configuration does.
apt_options=(-o Acquire::Retries=3 -o Acquire::http::Timeout=60 -o Dpkg::Use-Pty=0
             -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false)
echo "cross-toolchain.sh: installing ${packages[*]}" >&2
if ! { "${in_root[@]}" dpkg --add-architecture arm64 &&
       "${in_root[@]}" apt-get "${apt_options[@]}" update -qq &&
       "${in_root[@]}" apt-get "${apt_options[@]}" install -y -qq --no-install-recommends \
           "${packages[@]}"; } >>"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "cross-toolchain.sh: installing the toolchain failed (log: $log); if rustc and" \
        "libstd-rust-dev:arm64 differ in version, sid's arm64 build is behind: retry later" >&2
    exit 1
fi
"${in_root[@]}" apt-get clean
umount "$partial/dev" "$partial/proc"
mv "$partial" "$dir"
echo "$dir"
