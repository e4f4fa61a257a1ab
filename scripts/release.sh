#!/usr/bin/env bash
# release.sh: the binaries `hive install` pushes (rbee-hive and llm-worker-rbee),
# built portable with cargo-zigbuild against an old glibc (2.17 by default,
# RBEE_GLIBC=2.N for another), stripped, with SHA256SUMS, in
# dist/<target>/ (or DIR/<target>/ given `release.sh DIR`). They run on any Linux of
# this machine's architecture with that glibc or newer; set bin_dir under [queen] in
# config.toml to the directory and `hive install` pushes them.
#
# RBEE_PROFILE=dev builds them in the test profile instead (dependencies optimised as
# in release, the agent not): what the test command does for the lab's Debian 11 host.
#
# Only this machine's architecture: rustup here cannot download another target's
# standard library, so an aarch64 build is not made.
#
# Tools, installed when missing: zig from the `ziglang` package on PyPI, in
# .rbee-cache/zig-venv (cargo-zigbuild runs it as `python -m ziglang`); cargo-zigbuild
# from crates.io; strip and objdump (binutils).
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
    *) echo "release.sh: RBEE_PROFILE is release or dev, not '$profile'" >&2; exit 2 ;;
esac
target="$(uname -m)-unknown-linux-gnu"
out="$(realpath -m -- "${1:-$repo/dist}")/$target"
binaries=(rbee-hive llm-worker-rbee)

# zig in a virtual environment of its own (a system Python may refuse pip installs).
zig_venv="$repo/.rbee-cache/zig-venv"
if ! "$zig_venv/bin/python" -c 'import ziglang' 2>/dev/null; then
    python3 -m venv "$zig_venv"
    "$zig_venv/bin/pip" install --quiet --disable-pip-version-check ziglang >&2
fi
export CARGO_ZIGBUILD_PYTHON_PATH="$zig_venv/bin/python"
if ! command -v cargo-zigbuild >/dev/null; then
    cargo install --locked cargo-zigbuild >&2
fi
command -v strip >/dev/null && command -v objdump >/dev/null || {
    echo "release.sh: strip and objdump are missing (apt-get install binutils)" >&2
    exit 1
}

cd "$repo"
# The binaries are named as their packages are. A target directory of its own: the
# portable build shares no artifact with the usual one, and holds no lock the usual
# builds wait on.
cargo zigbuild --locked --profile "$profile" --target "$target.$glibc" \
    --target-dir "$repo/target/portable" "${binaries[@]/#/--package=}" --bins >&2

built="$repo/target/portable/$target/$profile_dir"
mkdir -p "$out"
for binary in "${binaries[@]}"; do
    if [[ "$out/$binary" -nt "$built/$binary" ]]; then
        continue
    fi
    partial="$out/.$binary.$$.partial"
    strip --strip-all -o "$partial" "$built/$binary"
    # The promise of the build, checked: no symbol version newer than the baseline.
    newest="$(objdump -T "$partial" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)"
    if [[ -n "$newest" && "$(printf '%s\n%s\n' "$newest" "$glibc" | sort -V | tail -n 1)" != "$glibc" ]]; then
        rm -f "$partial"
        echo "release.sh: $binary needs glibc $newest, newer than $glibc" >&2
        exit 1
    fi
    mv -f "$partial" "$out/$binary"
    echo "$binary: needs glibc ${newest:-none} or newer" >&2
done
(cd "$out" && sha256sum "${binaries[@]}" >".SHA256SUMS.$$.partial" && mv -f ".SHA256SUMS.$$.partial" SHA256SUMS)
echo "$out"
