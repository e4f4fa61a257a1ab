#!/usr/bin/env bash
# release.sh: the binaries `hive install` pushes (rbee-hive and llm-worker-rbee),
# built portable with cargo-zigbuild against an old glibc (2.17 by default,
# RBEE_GLIBC=2.N for another), stripped, with SHA256SUMS, in
# dist/<target>/ (or DIR/<target>/ given `release.sh DIR`). They run on any Linux of
# their architecture with that glibc or newer; set bin_dir under [queen] in config.toml
# to the directory and `hive install` pushes each hive the set it can run.
#
#   scripts/release.sh [--targets ARCH,...] [DIR]
#
# RBEE_PROFILE=dev builds them in the test profile instead (dependencies optimised as
# in release, the agent not); RBEE_PROFILE=lab in the profile the test command builds
# the sets it pushes to lab hosts in (the worker's own code optimised, its dependencies
# not: a third of the build's time; Cargo.toml says why that is enough there).
#
# --targets (or RBEE_TARGETS) names the architectures, this machine's by default:
# x86_64 and aarch64 on an x86-64 machine. rustup here cannot download another target's
# standard library, so aarch64 is built by Debian sid's rustc with its arm64 standard
# library, chrooted in the root scripts/cross-toolchain.sh makes (scripts/cross-run.sh;
# needs root), with the same cargo-zigbuild and zig against the same glibc, in
# target/cross, and stripped by aarch64-linux-gnu-strip. Each set's directory is
# printed, one a line.
#
# Tools, installed when missing: zig from the `ziglang` package on PyPI, in
# .rbee-cache/zig-venv (cargo-zigbuild runs it as `python -m ziglang`); cargo-zigbuild
# from its PyPI package too, a static binary in the same environment (compiling it from
# crates.io took minutes of every clean run); strip and objdump (binutils).
#
# Several runs at once (parallel tests) are safe: cargo takes its lock, each run strips
# into files of its own and renames them into place, and a binary already stripped from
# the current build is left as it is.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
glibc="${RBEE_GLIBC:-2.17}"
profile="${RBEE_PROFILE:-release}"
case "$profile" in
    release) profile_dir=release ;;
    dev) profile_dir=debug ;;
    lab) profile_dir=lab ;;
    *) echo "release.sh: RBEE_PROFILE is release, dev or lab, not '$profile'" >&2; exit 2 ;;
esac
targets="${RBEE_TARGETS:-$(uname -m)}"
if [[ "${1:-}" == --targets ]]; then
    targets="${2:?release.sh: --targets needs a list, such as x86_64,aarch64}"
    shift 2
fi
dist="$(realpath -m -- "${1:-$repo/dist}")"
binaries=(rbee-hive llm-worker-rbee)

# zig in a virtual environment of its own (a system Python may refuse pip installs).
zig_venv="$repo/.rbee-cache/zig-venv"
if ! "$zig_venv/bin/python" -c 'import ziglang' 2>/dev/null; then
    python3 -m venv "$zig_venv"
    "$zig_venv/bin/pip" install --quiet --disable-pip-version-check ziglang >&2
fi
export CARGO_ZIGBUILD_PYTHON_PATH="$zig_venv/bin/python"
if ! "$zig_venv/bin/cargo-zigbuild" --version >/dev/null 2>&1; then
    "$zig_venv/bin/pip" install --quiet --disable-pip-version-check cargo-zigbuild >&2
fi
# `cargo zigbuild` finds it on the PATH (scripts/cross-run.sh takes it from the same place).
export PATH="$zig_venv/bin:$PATH"
command -v strip >/dev/null && command -v objdump >/dev/null || {
    echo "release.sh: strip and objdump are missing (apt-get install binutils)" >&2
    exit 1
}

cd "$repo"
for arch in ${targets//,/ }; do
    target="$arch-unknown-linux-gnu"
    out="$dist/$target"
    # The binaries are named as their packages are. A target directory of its own: the
    # portable build shares no artifact with the usual one, and holds no lock the usual
    # builds wait on.
    build=(cargo zigbuild --locked --profile "$profile" --target "$target.$glibc"
           "${binaries[@]/#/--package=}" --bins)
    if [[ "$arch" == "$(uname -m)" ]]; then
        "${build[@]}" --target-dir "$repo/target/portable" >&2
        built="$repo/target/portable/$target/$profile_dir"
        strip=(strip)
    elif [[ "$arch" == aarch64 && "$(uname -m)" == x86_64 ]]; then
        "$repo/scripts/cross-run.sh" "${build[@]}" --target-dir "$repo/target/cross" >&2
        built="$repo/target/cross/$target/$profile_dir"
        strip=("$repo/scripts/cross-run.sh" aarch64-linux-gnu-strip)
    else
        echo "release.sh: cannot build for $arch on $(uname -m) (targets: $(uname -m)," \
            "and aarch64 on x86_64)" >&2
        exit 2
    fi

    mkdir -p "$out"
    for binary in "${binaries[@]}"; do
        if [[ "$out/$binary" -nt "$built/$binary" ]]; then
            continue
        fi
        partial="$out/.$binary.$$.partial"
        "${strip[@]}" --strip-all -o "$partial" "$built/$binary"
        # The promise of the build, checked: no symbol version newer than the baseline.
        newest="$(objdump -T "$partial" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)"
        if [[ -n "$newest" && "$(printf '%s\n%s\n' "$newest" "$glibc" | sort -V | tail -n 1)" != "$glibc" ]]; then
            rm -f "$partial"
            echo "release.sh: $target's $binary needs glibc $newest, newer than $glibc" >&2
            exit 1
        fi
        mv -f "$partial" "$out/$binary"
        echo "$target's $binary: needs glibc ${newest:-none} or newer" >&2
    done
    (cd "$out" && sha256sum "${binaries[@]}" >".SHA256SUMS.$$.partial" && mv -f ".SHA256SUMS.$$.partial" SHA256SUMS)
    echo "$out"
done
