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

# The Python side of the check needs the `gguf` package beside transformers; the GPU
# machine cannot fetch it, so it travels as a wheel in .whl (ignored by git).
rm -rf "$repo/.whl"
python3 -m pip download -q --no-deps --only-binary=:all: --platform any -d "$repo/.whl" gguf
pip_gguf='python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site'

echo "On the GPU machine, one call per piece, back to back (the machine keeps /tmp while warm):"
echo "  carry [\".gpu/1\", \".whl\"]: $pip_gguf && mkdir -p /tmp/rbee-gpu && cp .gpu/1/piece /tmp/rbee-gpu/piece-1 && scripts/gpu-check.sh --preflight /tmp/rbee-gpu/piece-1"
for n in $(seq 2 $((count - 1))); do
    echo "  carry [\".gpu/$n\"]: cp .gpu/$n/piece /tmp/rbee-gpu/piece-$n"
done
echo "  carry [\".gpu/$count\", \".gpu/bundle.sha256\", \".whl\"]: export PYTHONPATH=/tmp/site && cp .gpu/$count/piece /tmp/rbee-gpu/piece-$count && scripts/gpu-check.sh --unpack /tmp/rbee-gpu .gpu/bundle.sha256 && scripts/gpu-check.sh /tmp/rbee-gpu"
