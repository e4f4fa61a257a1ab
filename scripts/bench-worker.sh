#!/usr/bin/env bash
# Benchmarks llm-worker-rbee against llama.cpp (llama-cpp-python) on the test model:
# load time, prompt tokens/s and decode tokens/s, both on the same thread count.
#
#   scripts/bench-worker.sh            # 2 threads, release build
#   THREADS=4 PROFILE=dev scripts/bench-worker.sh
#   QUANT=Q8_0 scripts/bench-worker.sh # the test model requantized (also Q4_K_M, Q5_K_M, Q4_0, F16, BF16)
#   RBEE_WORKER_ENGINE=candle scripts/bench-worker.sh  # the worker on candle's kernels
#   ARCH=qwen2 scripts/bench-worker.sh  # a random-weight qwen2 (or qwen3, gemma2,
#                                       # gemma3) of a real model's shape, Q8_0
#                                       # (bench/make_random_model.py)
#   ARCH=qwen3 QUANT=Q4_K_M scripts/bench-worker.sh  # that file requantized
#   scripts/bench-worker.sh --model FILE.gguf        # any GGUF file
#
# llama-cpp-python is built from source once (about 15 minutes on 2 cores) into
# .rbee-cache/llama-venv and reused afterwards.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
threads="${THREADS:-2}"
profile="${PROFILE:-release}"
venv="$repo/.rbee-cache/llama-venv"

model=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --model) model="${2:?--model needs a file}"; shift 2 ;;
        *) echo "bench-worker.sh: unknown argument '$1' (hint: --model FILE.gguf)" >&2; exit 2 ;;
    esac
done
if [[ -n "$model" && ! -f "$model" ]]; then
    echo "bench-worker.sh: no such model file '$model'" >&2
    exit 2
fi
if [[ -z "$model" ]]; then
    model="$("$repo/scripts/fetch-test-model.sh")"
fi

if ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    echo "building llama-cpp-python from source into $venv (once; ~15 min on 2 cores)" >&2
    python3 -m venv "$venv"
    CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$threads" \
        "$venv/bin/pip" install --quiet --no-binary llama-cpp-python llama-cpp-python
fi

if [[ -n "${ARCH:-}" ]]; then
    model="$("$repo/scripts/fetch-test-model.sh")"
    # Written once, with the test model's tokenizer.
    random_model="$repo/.rbee-cache/models/rbee-bench-$ARCH.Q8_0.gguf"
    if [[ ! -f "$random_model" ]]; then
        "$venv/bin/python" -I -c 'import gguf, numpy' 2>/dev/null ||
            "$venv/bin/pip" install --quiet gguf numpy >&2
        "$venv/bin/python" "$repo/bench/make_random_model.py" "$ARCH" "$model" \
            "$random_model.partial"
        mv "$random_model.partial" "$random_model"
    fi
    model="$random_model"
fi
if [[ -n "${QUANT:-}" ]]; then
    # llama.cpp's quantizer writes the same weights in another format, once.
    requantized="${model%.*.gguf}.$QUANT.gguf"
    if [[ ! -f "$requantized" ]]; then
        "$venv/bin/python" "$repo/bench/requantize.py" "$model" "$requantized.partial" "$QUANT" \
            2>/dev/null
        mv "$requantized.partial" "$requantized"
    fi
    model="$requantized"
fi

if [[ "$profile" == "release" ]]; then
    cargo build --release -p llm-worker-rbee --manifest-path "$repo/Cargo.toml" >&2
    worker="$repo/target/release/llm-worker-rbee"
else
    cargo build -p llm-worker-rbee --manifest-path "$repo/Cargo.toml" >&2
    worker="$repo/target/debug/llm-worker-rbee"
fi

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads: $threads; worker build: $profile" >&2
exec "$venv/bin/python" "$repo/bench/worker_bench.py" \
    --worker "$worker" --model "$model" --threads "$threads"
