#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine that has no Rust and no
# network: the stripped agent, the CUDA worker and the test model, xz-compressed and
# cut into pieces of at most PIECE_MIB (default 56) under .gpu/1, .gpu/2, … (ignored by
# git), so each piece fits a transfer limited to 64 MiB with the working tree beside
# it. Prints the commands that carry and unpack them there (DEVELOPERS.md).
#
#   scripts/gpu-pack.sh     # binaries from $CUDA_TARGET_DIR/release (default target/cuda)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CUDA_TARGET_DIR:-$repo/target/cuda}"
piece_mib="${PIECE_MIB:-56}"
out="$repo/.gpu"

for binary in rbee-hive llm-worker-rbee; do
    if [[ ! -x "$target/release/$binary" ]]; then
        echo "error: $target/release/$binary is missing" >&2
        echo "hint: build it first (DEVELOPERS.md): CARGO_TARGET_DIR=$target scripts/setup-cuda.sh --run cargo build --release -p rbee-hive -p llm-worker-rbee --features llm-worker-rbee/cuda" >&2
        exit 1
    fi
done
model="$("$repo/scripts/fetch-test-model.sh")"

staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/bin"
for binary in rbee-hive llm-worker-rbee; do
    strip -o "$staging/bin/$binary" "$target/release/$binary"
done
ln -s "$model" "$staging/model.gguf"
ls -lL "$staging/bin/"* "$staging/model.gguf" |
    awk '{printf "%6.1f MiB  %s\n", $5 / 1048576, $9}' | sed "s|$staging/||" >&2

rm -rf "$out"
mkdir -p "$out"
tar -C "$staging" -chf - bin model.gguf | xz -T0 -1 >"$staging/bundle.tar.xz"
sha256sum "$staging/bundle.tar.xz" | cut -d' ' -f1 >"$out/bundle.sha256"
split -b "${piece_mib}M" -d -a 1 "$staging/bundle.tar.xz" "$staging/piece-"
count=0
for piece in "$staging"/piece-*; do
    count=$((count + 1))
    mkdir -p "$out/$count"
    mv "$piece" "$out/$count/piece"
done
echo "bundle: $(du -m "$staging/bundle.tar.xz" | cut -f1) MiB in $count piece(s) under $out" >&2

echo "On the GPU machine, one call per piece, back to back (the machine keeps /tmp while warm):"
for n in $(seq 1 $((count - 1))); do
    echo "  carry [\".gpu/$n\"]: mkdir -p /tmp/rbee-gpu && cp .gpu/$n/piece /tmp/rbee-gpu/piece-$n"
done
echo "  carry [\".gpu/$count\", \".gpu/bundle.sha256\"]: mkdir -p /tmp/rbee-gpu && cp .gpu/$count/piece /tmp/rbee-gpu/piece-$count && scripts/gpu-check.sh --unpack /tmp/rbee-gpu .gpu/bundle.sha256 && scripts/gpu-check.sh /tmp/rbee-gpu"
