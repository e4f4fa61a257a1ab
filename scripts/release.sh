#!/usr/bin/env bash
# release.sh: the binaries `hive install` pushes (rbee-hive and llm-worker-rbee),
# built portable with cargo-zigbuild against an old glibc (2.17 by default,
# RBEE_GLIBC=2.N for another), stripped, with SHA256SUMS, in
# dist/<target>/ (or DIR/<target>/ given `release.sh DIR`). They run on any Linux of
# this machine's architecture with that glibc or newer; set bin_dir under [queen] in
# config.toml to the directory and `hive install` pushes them.
#
# Only this machine's architecture: rustup here cannot download another target's
# standard library, so an aarch64 build is not made.
#
# Tools, installed when missing: zig from the `ziglang` package on PyPI (cargo-zigbuild
# runs it as `python3 -m ziglang`), cargo-zigbuild from crates.io; strip and objdump
# (binutils).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
glibc="${RBEE_GLIBC:-2.17}"
target="$(uname -m)-unknown-linux-gnu"
out="$(realpath -m -- "${1:-$repo/dist}")/$target"
binaries=(rbee-hive llm-worker-rbee)

if ! python3 -c 'import ziglang' 2>/dev/null; then
    python3 -m pip install --quiet ziglang >&2
fi
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
cargo zigbuild --release --target "$target.$glibc" --target-dir "$repo/target/portable" \
    "${binaries[@]/#/--package=}" --bins >&2

built="$repo/target/portable/$target/release"
mkdir -p "$out"
for binary in "${binaries[@]}"; do
    strip --strip-all -o "$out/.$binary.partial" "$built/$binary"
    # The promise of the build, checked: no symbol version newer than the baseline.
    newest="$(objdump -T "$out/.$binary.partial" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)"
    if [[ -n "$newest" && "$(printf '%s\n%s\n' "$newest" "$glibc" | sort -V | tail -n 1)" != "$glibc" ]]; then
        echo "release.sh: $binary needs glibc $newest, newer than $glibc" >&2
        exit 1
    fi
    mv -f "$out/.$binary.partial" "$out/$binary"
    echo "$binary: needs glibc ${newest:-none} or newer" >&2
done
(cd "$out" && sha256sum "${binaries[@]}" >SHA256SUMS.partial && mv -f SHA256SUMS.partial SHA256SUMS)
echo "$out"
