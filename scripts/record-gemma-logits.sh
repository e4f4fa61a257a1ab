#!/usr/bin/env bash
# Records llama.cpp's logits for the worker's Gemma tests (worker/tests/data/gemma/):
# the test writes its files of random weights, llama-cpp-python evaluates each.
#
#   scripts/record-gemma-logits.sh [PYTHON]
#
# PYTHON has llama-cpp-python and numpy (default: .rbee-cache/llama-venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.rbee-cache/llama-venv/bin/python}
files=$(mktemp -d)
trap 'rm -rf "$files"' EXIT
RBEE_GEMMA_FILES="$files" cargo test -p llm-worker-rbee --test integration \
    gemma::write_files_for_llama_cpp -- --ignored --exact
mkdir -p worker/tests/data/gemma
for arch in gemma gemma2 gemma3; do
    "$python" bench/llama_cpp_logits.py "$files/$arch.gguf" "$files/prompt.txt" \
        "worker/tests/data/gemma/$arch.logits"
done
