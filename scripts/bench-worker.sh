#!/usr/bin/env bash
# Benchmarks llm-worker-rbee against llama.cpp (llama-cpp-python) on the test model:
# load time, prompt tokens/s and decode tokens/s, both on the same thread count.
#
#   scripts/bench-worker.sh            # 2 threads, release build
#   THREADS=4 PROFILE=dev scripts/bench-worker.sh
#   QUANT=Q8_0 scripts/bench-worker.sh # the test model requantized (also Q4_K_M, Q5_K_M, Q4_0, F16, BF16)
#   RBEE_WORKER_ENGINE=candle scripts/bench-worker.sh  # the worker on candle's kernels
#   ARCH=qwen2 scripts/bench-worker.sh  # a random-weight qwen2 (or llama, qwen3, phi3,
#                                       # gemma2, gemma3) of a real model's shape, Q8_0
#                                       # (bench/make_random_model.py)
#   ARCH=qwen3 QUANT=Q4_K_M scripts/bench-worker.sh  # that file requantized
#   scripts/bench-worker.sh --model FILE.gguf        # any GGUF file
#   LLAMA_CPU=avx2 RBEE_WORKER_ENGINE=avx2 scripts/bench-worker.sh
#                                # both engines limited to AVX2 (an AVX2 machine's
#                                # code, on whatever CPU runs it)
#   ROUNDS=9 scripts/bench-worker.sh  # rounds of one run of each engine, taking turns
#                                       # (3 unless given): more on a noisy machine
#   REPEAT=16 scripts/bench-worker.sh  # the prompt's paragraph 16 times (about 1,200
#                                       # tokens): prompts and decode over a long context
#   WORKER=/path/to/llm-worker-rbee scripts/bench-worker.sh
#                                # that worker binary, not built here (another
#                                # commit's, for a before/after in one session)
#
# llama-cpp-python is built from source once per LLAMA_CPU (about 15 minutes on 2
# cores) and reused afterwards: `native` (the default) into .rbee-cache/llama-venv-native,
# for this CPU's widest instructions (AVX-512 where it has them; AMX off, as a VM may
# list AMX and trap it), `avx2` into .rbee-cache/llama-venv (AVX2, FMA, F16C, no
# AVX-512: the build the conformance records come from).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
threads="${THREADS:-2}"
profile="${PROFILE:-release}"
# pip would reuse a wheel it built for another LLAMA_CPU: --no-cache-dir.
llama_cpu="${LLAMA_CPU:-native}"
case "$llama_cpu" in
    native)
        venv="$repo/.rbee-cache/llama-venv-native"
        # ggml's AMX switches apply only without GGML_NATIVE; -march=native still enables
        # AMX where the CPU lists it, so the compiler is told too.
        no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        cmake_args="-DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
        cmake_args+=" '-DCMAKE_C_FLAGS=$no_amx' '-DCMAKE_CXX_FLAGS=$no_amx'"
        ;;
    avx2)
        venv="$repo/.rbee-cache/llama-venv"
        cmake_args="-DGGML_NATIVE=OFF"
        ;;
    *) echo "bench-worker.sh: LLAMA_CPU is native or avx2, not '$llama_cpu'" >&2; exit 2 ;;
esac

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
    CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$threads" \
        "$venv/bin/pip" install --quiet --no-cache-dir --no-binary llama-cpp-python \
            llama-cpp-python
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

if [[ -n "${WORKER:-}" ]]; then
    worker="$WORKER"
    [[ -x "$worker" ]] || { echo "error: WORKER=$worker is not an executable; hint: build it with cargo build -p llm-worker-rbee" >&2; exit 1; }
elif [[ "$profile" == "release" ]]; then
    cargo build --release -p llm-worker-rbee --manifest-path "$repo/Cargo.toml" >&2
    worker="$repo/target/release/llm-worker-rbee"
else
    cargo build -p llm-worker-rbee --manifest-path "$repo/Cargo.toml" >&2
    worker="$repo/target/debug/llm-worker-rbee"
fi

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads: $threads; worker build: ${WORKER:-$profile}; llama.cpp: $("$venv/bin/python" -c 'import llama_cpp; print(llama_cpp.llama_print_system_info().decode().strip())')" >&2
# llama-server's readiness too, where bench/build-llama-server.sh built it for this CPU
# (the same build as LLAMA_CPU=native's).
server=()
if [[ "$llama_cpu" == native && -x "$repo/.rbee-cache/llama-server/llama-server" ]]; then
    server=(--llama-server "$repo/.rbee-cache/llama-server/llama-server")
fi
exec "$venv/bin/python" "$repo/bench/worker_bench.py" \
    --worker "$worker" --model "$model" --threads "$threads" --repeat "${REPEAT:-1}" --rounds "${ROUNDS:-3}" \
    "${server[@]}"
