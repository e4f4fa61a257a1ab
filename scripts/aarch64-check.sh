#!/usr/bin/env bash
# Builds the worker's tests for aarch64 and runs them under QEMU, on an x86-64 Debian
# host, to test the CPU engine's NEON kernels without an ARM machine:
#
#   scripts/aarch64-check.sh                  # the kernels' and the engine's tests
#   scripts/aarch64-check.sh cpu::tests::batched --nocapture
#
# Arguments go to the test binaries (a filter, libtest flags); the default, `cpu`, picks
# the kernel tests (`cpu::`) and the engine-on-the-model tests (`cpu_engine::`: the test
# model must have been fetched, scripts/fetch-test-model.sh).
# Needs root (debootstrap, chroot, mounts) and Debian's archive and crates.io.
#
# Our rustup toolchain has only the x86-64 std and rustup's servers are out of reach,
# so the cross toolchain comes from Debian sid instead: rustc/cargo, the arm64 std
# (libstd-rust-dev:arm64, multiarch), gcc-aarch64-linux-gnu to link and to compile the
# C in ring, and qemu-user to run the test binary. Sid's rustc needs a newer glibc than
# the host's, so all of it lives in a sid chroot, made once and kept in the cache:
#
#   AARCH64_CHROOT      the cache (default /var/cache/rbee-aarch64): root/ the chroot,
#                       cargo-home/ its CARGO_HOME, target/ the build
#   AARCH64_TARGET_DIR  the cargo target dir instead (never the repo's target/, so the
#                       x86 build is untouched). Keep one per cache: a target dir built
#                       from another cache's cargo-home is rebuilt from scratch
#   AARCH64_JOBS        cargo -j (default 2: the machine has 2 cores, shared)
#   QEMU_CPU            QEMU's CPU model (default `max`: NEON, dotprod, i8mm, SVE...);
#                       e.g. cortex-a72 for a core without dotprod
#   CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS  passed on (e.g. -C target-feature)
#
# Delete the cache to start over; `rm -rf "$AARCH64_CHROOT/target"` for a clean build.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
self="$repo/scripts/aarch64-check.sh"
cache="${AARCH64_CHROOT:-/var/cache/rbee-aarch64}"
root="$cache/root"
target_dir="${AARCH64_TARGET_DIR:-$cache/target}"
cargo_home="$cache/cargo-home"
jobs="${AARCH64_JOBS:-2}"
mirror="${AARCH64_MIRROR:-http://deb.debian.org/debian}"
triple=aarch64-unknown-linux-gnu
# The cross gcc's sysroot (libc6-arm64-cross): ld-linux-aarch64.so.1, libc, libgcc_s.
sysroot=/usr/aarch64-linux-gnu
packages=(rustc cargo libstd-rust-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
          qemu-user file ca-certificates)

fail() { # MESSAGE HINT
    echo "error: $1" >&2
    echo "hint: $2" >&2
    exit 1
}

# Runs a command under a time limit with no standard input, so nothing waits forever on
# a prompt or a dead mirror. timeout puts the command in a process group of its own
# (where Ctrl-C does not reach), so the trap below stops that group with the script.
running=""
limited() { # SECONDS COMMAND...
    local seconds="$1" rc=0
    shift
    timeout --kill-after=30 "$seconds" "$@" </dev/null &
    running=$!
    wait "$running" || rc=$?
    running=""
    return "$rc"
}
trap 'if [[ -n "$running" ]]; then kill -TERM -- "-$running" "$running" 2>/dev/null || true; fi; exit 130' INT TERM HUP

# A step: says which one failed, and what to try.
step() { # NAME SECONDS HINT COMMAND...
    local name="$1" seconds="$2" hint="$3" rc=0
    shift 3
    echo "== $name" >&2
    limited "$seconds" "$@" || rc=$?
    if (( rc == 124 || rc == 137 )); then
        fail "$name timed out after ${seconds}s" "$hint"
    elif (( rc != 0 )); then
        fail "$name failed (exit $rc)" "$hint"
    fi
}

if [[ $(id -u) -ne 0 ]]; then
    fail "needs root (debootstrap, chroot and bind mounts)" "sudo $self $*"
fi

# Everything below runs in a private mount namespace: the chroot's /proc, /dev and
# bind mounts vanish with the script however it ends, and never show on the host.
if [[ -z "${RBEE_AARCH64_NAMESPACE:-}" ]]; then
    command -v unshare >/dev/null || fail "unshare is missing" "apt-get install util-linux"
    unshare --mount true 2>/dev/null || fail "cannot make a mount namespace" \
        "needs root with CAP_SYS_ADMIN (a container must be privileged)"
    RBEE_AARCH64_NAMESPACE=1 exec unshare --mount --propagation private bash "$self" "$@"
fi

mkdir -p "$cache"
# One setup at a time; a second run waits for the first (10 minutes at most).
exec 9>"$cache/.lock"
flock -w 600 9 || fail "another aarch64-check holds $cache/.lock" "wait for it, or stop it"

# Commands run in the chroot with a clean environment (the host's PATH, RUSTFLAGS or
# CARGO_* are for the x86 toolchain and must not leak in): "${in_root[@]}" COMMAND...
base_env=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
          LANG=C.UTF-8 TERM="${TERM:-dumb}" DEBIAN_FRONTEND=noninteractive)
for name in http_proxy https_proxy no_proxy QEMU_CPU RUST_BACKTRACE RUST_LOG \
            CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS; do
    if [[ -n "${!name:-}" ]]; then base_env+=("$name=${!name}"); fi
done
in_root=(chroot "$root" /usr/bin/env -i -C / "${base_env[@]}")

# 1. The sid chroot. debootstrap works in root.partial and renames it when done, so an
#    interrupted bootstrap is started over rather than half used.
if [[ ! -x "$root/usr/bin/apt-get" ]]; then
    if ! command -v debootstrap >/dev/null; then
        step "installing debootstrap on the host" 600 "apt-get update && apt-get install debootstrap" \
            "$repo/scripts/install-packages.sh" debootstrap
    fi
    rm -rf "$root.partial"
    step "debootstrap sid into $root (a few minutes, once)" 1800 \
        "check that $mirror is reachable (AARCH64_MIRROR=... for another); the log is $root.partial/debootstrap/debootstrap.log" \
        debootstrap --variant=minbase sid "$root.partial" "$mirror"
    mv "$root.partial" "$root"
fi

# 2. The cross toolchain. Marked done only once everything installed, so a failed or
#    interrupted install is retried on the next run.
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
if ! { mount -t proc proc "$root/proc" && mount --bind /dev "$root/dev"; }; then
    fail "cannot mount /proc and /dev in $root" "needs root with CAP_SYS_ADMIN"
fi
if [[ ! -f "$root/.rbee-toolchain-ready" ]]; then
    # The archive reachable here can be a frozen snapshot whose Release is past its
    # Valid-Until date: accept it, as the host's own apt configuration does.
    apt_options=(-o Acquire::Retries=3 -o Acquire::http::Timeout=60 -o Dpkg::Use-Pty=0
                 -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false)
    # qemu-user ships some 40 emulators (about 480 MB): keep only qemu-aarch64.
    mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
    printf '%s\n' 'path-exclude=/usr/bin/qemu-*' 'path-include=/usr/bin/qemu-aarch64' \
        >"$root/etc/dpkg/dpkg.cfg.d/rbee-qemu-aarch64-only"
    step "adding arm64 to the chroot's dpkg" 60 "the chroot may be broken: rm -rf $root" \
        "${in_root[@]}" dpkg --add-architecture arm64
    step "apt-get update in the chroot" 900 "check that $mirror is reachable" \
        "${in_root[@]}" apt-get "${apt_options[@]}" update -qq
    # libstd-rust-dev:arm64 must be the same version as rustc; sid's arm64 build can lag
    # the amd64 one for a day or two after an upload.
    step "installing ${packages[*]}" 1800 \
        "if rustc and libstd-rust-dev:arm64 differ in version, sid's arm64 build is behind: retry later (chroot $root apt-cache policy rustc libstd-rust-dev:arm64)" \
        "${in_root[@]}" apt-get "${apt_options[@]}" install -y -qq --no-install-recommends "${packages[@]}"
    "${in_root[@]}" apt-get clean
    touch "$root/.rbee-toolchain-ready"
fi
[[ -x "$root/usr/bin/qemu-aarch64" ]] || fail "qemu-aarch64 is not in the chroot" \
    "sid's qemu-user should ship it; rm $root/.rbee-toolchain-ready to reinstall"
[[ -e "$root$sysroot/lib/ld-linux-aarch64.so.1" ]] || fail "no aarch64 loader in $root$sysroot" \
    "libc6-arm64-cross should provide it; rm $root/.rbee-toolchain-ready to reinstall"

# 3. Cargo's home: its own, so sid's cargo never rewrites the host cargo's caches, seeded
#    once with the host's downloaded crates and index so little is downloaded again.
if [[ ! -d "$cargo_home" ]]; then
    host_registry="${CARGO_HOME:-$HOME/.cargo}/registry"
    mkdir -p "$cargo_home.partial/registry"
    for part in cache index; do
        if [[ -d "$host_registry/$part" ]]; then
            cp -a "$host_registry/$part" "$cargo_home.partial/registry/"
        fi
    done
    mv "$cargo_home.partial" "$cargo_home"
fi

# The repository, the target dir and cargo's home appear at the same paths inside, so
# paths in compiler messages are the host's.
mkdir -p "$target_dir"
for dir in "$repo" "$target_dir" "$cargo_home"; do
    mkdir -p "$root$dir"
    mount --bind "$dir" "$root$dir"
done
flock -u 9

filter=("$@")
# No filter among the arguments (only flags such as --nocapture): the default one.
has_filter=0
for arg in "${filter[@]}"; do [[ "$arg" == -* ]] || has_filter=1; done
(( has_filter )) || filter=(cpu "${filter[@]}")
# The cross linker and C compiler, QEMU as the runner with the cross sysroot as its
# library root; a separate target dir and cargo home.
in_repo=(chroot "$root" /usr/bin/env -i -C "$repo" "${base_env[@]}"
         CARGO_HOME="$cargo_home" CARGO_TARGET_DIR="$target_dir"
         RBEE_EXPECT_KERNELS=neon
         CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
         CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot"
         CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
         AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar)
# --locked: never touch the repository's Cargo.lock. --release: the workspace's release
# profile as it is (opt-level 3 throughout, line tables for backtraces).
# The library's tests and the integration tests (only `cpu_engine::` among those runs in
# process; the rest start worker binaries).
cargo_test=(cargo test --locked --release -j "$jobs" --target "$triple" -p llm-worker-rbee
            --lib --test integration)
"${in_repo[@]}" rustc --version >&2

# 4. Build, then show that the test binary is aarch64 and that it starts under QEMU.
step "building the worker's tests for $triple (-j $jobs; long the first time)" 7200 \
    "a dependency that compiles C may need more of the cross toolchain in the chroot" \
    "${in_repo[@]}" "${cargo_test[@]}" --no-run
# Built now, so this only names the binary.
log="$cache/no-run.log"
limited 300 "${in_repo[@]}" "${cargo_test[@]}" --no-run >"$log" 2>&1 \
    || fail "cargo test --no-run failed the second time" "see $log"
binary="$(sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))$/\1/p' "$log" | tail -n 1)"
[[ -n "$binary" ]] || fail "cargo named no unittests binary" "see $log"
[[ "$binary" == /* ]] || binary="$repo/$binary"
description="$("${in_root[@]}" file -L "$binary")"
echo "$description"
[[ "$description" == *"ARM aarch64"* ]] || fail "$binary is not an aarch64 binary" "see $log"
step "listing the tests under QEMU (${QEMU_CPU:-max} CPU)" 300 \
    "qemu-aarch64 could not start the test binary: check $root$sysroot" \
    "${in_root[@]}" qemu-aarch64 -L "$sysroot" "$binary" --list "${filter[@]}"

# 5. The tests, through cargo, which runs the binary with the QEMU runner.
step "running the tests under QEMU" 3600 "see the failures above; rerun one with --nocapture" \
    "${in_repo[@]}" "${cargo_test[@]}" -- "${filter[@]}"
