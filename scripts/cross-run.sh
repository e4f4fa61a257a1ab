#!/usr/bin/env bash
# cross-run.sh: runs a command in the aarch64 cross toolchain's root
# (scripts/cross-toolchain.sh, made first when missing), in the repository:
#
#   scripts/cross-run.sh cargo zigbuild --target aarch64-unknown-linux-gnu.2.17 ...
#   scripts/cross-run.sh aarch64-linux-gnu-strip --strip-all -o OUT IN
#
# The repository is mounted at its own path inside, so paths are the same on both
# sides and what the command writes under it (target/cross, dist/) is here afterwards.
# The environment is clean (this machine's PATH, RUSTFLAGS and CARGO_* are for its own
# toolchain), with:
#   - CARGO_HOME .rbee-cache/cross/cargo-home, seeded once from this machine's
#     downloaded crates and index, so sid's cargo never rewrites the host cargo's
#     caches and crates are downloaded once;
#   - cargo-zigbuild, this machine's: the static binary scripts/release.sh installs in
#     .rbee-cache/zig-venv, else the one on the PATH (its glibc is older than sid's, so
#     it runs there), with zig from the same environment (a static binary) and zig's
#     cache in .rbee-cache/cross/zig-cache;
#   - no cross linker or C compiler of sid's: cargo-zigbuild would use them instead of
#     zig, and the binaries would need sid's glibc (2.43).
# The mounts live in a mount namespace of the command's own and vanish with it. Needs
# root.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
(($#)) || { echo "usage: scripts/cross-run.sh COMMAND [ARGUMENT...]" >&2; exit 2; }
[[ $EUID -eq 0 ]] || { echo "cross-run.sh: chroot and mounts need root" >&2; exit 1; }
root="$("$repo/scripts/cross-toolchain.sh")"
cache="$repo/.rbee-cache/cross"

if [[ -z "${RBEE_CROSS_NAMESPACE:-}" ]]; then
    RBEE_CROSS_NAMESPACE=1 exec unshare --mount --propagation private \
        bash "${BASH_SOURCE[0]}" "$@"
fi

mkdir -p "$cache"
exec 9>"$cache/.seed.lock"
flock 9
if [[ ! -d "$cache/cargo-home" ]]; then
    host_registry="${CARGO_HOME:-$HOME/.cargo}/registry"
    rm -rf "$cache/cargo-home.partial"
    mkdir -p "$cache/cargo-home.partial/registry"
    for part in cache index; do
        if [[ -d "$host_registry/$part" ]]; then
            cp -a "$host_registry/$part" "$cache/cargo-home.partial/registry/"
        fi
    done
    mv "$cache/cargo-home.partial" "$cache/cargo-home"
fi
exec 9>&-
mkdir -p "$cache/zig-cache"

cp -L /etc/resolv.conf "$root/etc/resolv.conf"
mkdir -p "$root$repo" "$root/opt/rbee-host-bin"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind "$repo" "$root$repo"
path=/usr/local/bin:/usr/bin:/bin
zigbuild="$repo/.rbee-cache/zig-venv/bin/cargo-zigbuild"
[[ -x "$zigbuild" ]] || zigbuild="$(command -v cargo-zigbuild || true)"
if [[ -n "$zigbuild" ]]; then
    mount --bind "$(dirname "$zigbuild")" "$root/opt/rbee-host-bin"
    path+=:/opt/rbee-host-bin
fi
env=(HOME=/root LANG=C.UTF-8 PATH="$path"
     CARGO_HOME="$cache/cargo-home" ZIG_GLOBAL_CACHE_DIR="$cache/zig-cache")
for zig in "$repo"/.rbee-cache/zig-venv/lib/python3*/site-packages/ziglang/zig; do
    if [[ -x "$zig" ]]; then env+=(CARGO_ZIGBUILD_ZIG_PATH="$zig"); fi
done
for name in http_proxy https_proxy no_proxy RUST_BACKTRACE RUST_LOG; do
    if [[ -n "${!name:-}" ]]; then env+=("$name=${!name}"); fi
done
# In the caller's directory when it is in the repository, else at the repository's top.
dir="$PWD"
[[ "$dir/" == "$repo/"* ]] || dir="$repo"
exec chroot "$root" /usr/bin/env -i -C "$dir" "${env[@]}" "$@"
