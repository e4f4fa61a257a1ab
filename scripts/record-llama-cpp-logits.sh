#!/usr/bin/env bash
# Records llama.cpp's logits for the worker's conformance tests
# (worker/tests/data/llama-cpp/): the tests write their files of random weights (every
# family the CPU engine runs, in several weight types), llama-cpp-python evaluates each
# on its prompt, and tokenizes hard strings under each byte-level pre-tokenizer.
#
#   scripts/record-llama-cpp-logits.sh [PYTHON]
#
# PYTHON has llama-cpp-python and numpy (default: .rbee-cache/llama-venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.rbee-cache/llama-venv/bin/python}
files=$(mktemp -d)
trap 'rm -rf "$files"' EXIT
RBEE_LLAMA_CPP_FILES="$files" cargo test -p llm-worker-rbee --test integration \
    llama_cpp::write_files_for_llama_cpp -- --ignored --exact
out=worker/tests/data/llama-cpp
# Only what this script makes: the greedy-text records beside them come from
# bench/llama_cpp_greedy.py.
mkdir -p "$out"
rm -f "$out"/*.logits "$out/pre-tokenizers.json"
pre_files=()
for gguf in "$files"/*.gguf; do
    name=$(basename "$gguf" .gguf)
    if [[ "$name" == pre-* ]]; then
        pre_files+=("${name#pre-}=$gguf")
        continue
    fi
    "$python" bench/llama_cpp_logits.py "$gguf" "$files/$name.txt" "$out/$name.logits"
done
# The pre-tokenizers' files: llama.cpp's ids of each hard string under each.
"$python" bench/llama_cpp_token_ids.py "$files/pre-tokenizer-strings.json" \
    "$out/pre-tokenizers.json" "${pre_files[@]}"
