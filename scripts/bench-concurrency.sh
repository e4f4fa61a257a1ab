#!/usr/bin/env bash
# Many users at once: llm-worker-rbee (`--parallel N` slots, continuous batching)
# against llama.cpp's `llama-server -np N` on the same GGUF, same thread count, same
# run. For N concurrent greedy streams with different prompts, 64 tokens each:
# aggregate tokens/s and time to first token; a new request's time to first token
# while N-1 others generate; prompt-prefix reuse on a ~1,000-token chat.
#
#   scripts/bench-concurrency.sh [--models test,1b] [--streams 1,4,8,16]
#   THREADS=4 scripts/bench-concurrency.sh
#   PROFILE=release scripts/bench-concurrency.sh  # a release worker (compiles the tree again)
#   BUILD=0 scripts/bench-concurrency.sh          # the worker binary as it is, no cargo
#   BUILD=0 WORKER=path/to/llm-worker-rbee scripts/bench-concurrency.sh
#   ATTEMPTS=1 scripts/bench-concurrency.sh      # no repeats on a busy machine (default 3)
#
# Models: `test` is the test model (SmolLM2-135M Q4_1); `1b` a ~1B-parameter llama
# with random Q8_0 weights (1.1 GB, written once by bench/make_llama_1b.py), whose
# decode is bound by memory bandwidth as with real models. llama-server is built once
# (about 15 minutes on 2 cores) by bench/build-llama-server.sh. Prints a markdown
# table for BENCHMARKS.md; raw figures and server logs go to .rbee-cache/bench/.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
models=test,1b
streams=1,4,8,16
threads="${THREADS:-2}"
profile="${PROFILE:-dev}"
limit_s="${BENCH_TIMEOUT:-5400}"
while (($#)); do
    case "$1" in
        --models) models="$2"; shift 2 ;;
        --streams) streams="$2"; shift 2 ;;
        *) echo "usage: $0 [--models test,1b] [--streams 1,4,8,16]" >&2; exit 2 ;;
    esac
done

llama_dir="$(bench/build-llama-server.sh)"
venv="$repo/.rbee-cache/bench-venv"
if ! "$venv/bin/python" -I -c 'import gguf, numpy' 2>/dev/null; then
    "$venv/bin/pip" install --quiet gguf numpy >&2
fi

model_args=()
IFS=, read -r -a model_names <<<"$models"
for name in "${model_names[@]}"; do
    case "$name" in
        test) path="$(scripts/fetch-test-model.sh)" ;;
        1b)
            path="$repo/.rbee-cache/models/rbee-bench-llama-1b.Q8_0.gguf"
            if [[ ! -s "$path" ]]; then
                echo "writing the ~1B random-weight llama to $path (once; about a minute)" >&2
                "$venv/bin/python" bench/make_llama_1b.py "$(scripts/fetch-test-model.sh)" \
                    "$path.partial"
                mv "$path.partial" "$path"
            fi
            ;;
        *) echo "error: unknown model '$name' (test, 1b)" >&2; exit 2 ;;
    esac
    model_args+=(--model "$name=$path")
done

# The dev profile builds dependencies and the worker at opt-level 3, with the same
# feature resolution as scripts/test.sh, so nothing is compiled twice.
if [[ "$profile" == "release" ]]; then
    [[ "${BUILD:-1}" == 0 ]] || cargo build --release --locked -p llm-worker-rbee >&2
    worker="$repo/target/release/llm-worker-rbee"
else
    [[ "${BUILD:-1}" == 0 ]] ||
        cargo build --workspace --all-targets --locked --features queen-rbee/local-hive >&2
    worker="$repo/target/debug/llm-worker-rbee"
fi
worker="${WORKER:-$worker}"
if ! "$worker" --help | grep -q -- --parallel; then
    echo "error: $worker has no --parallel (slots and continuous batching are not in)" >&2
    exit 1
fi

out="$repo/.rbee-cache/bench"
mkdir -p "$out"
bench_pid=""
# On any exit the benchmark (and through it every server it started) is stopped.
trap 'if [[ -n "$bench_pid" ]]; then kill "$bench_pid" 2>/dev/null || true; wait "$bench_pid" 2>/dev/null || true; fi' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads: $threads; worker build: $profile" >&2
# The Python side stops its servers on SIGTERM; timeout bounds the whole run.
timeout --kill-after=60 "$limit_s" "$venv/bin/python" bench/concurrency_bench.py \
    --worker "$worker" --llama-server "$llama_dir/llama-server" \
    --batched-bench "$llama_dir/llama-batched-bench" \
    --llama-version "$(cat "$llama_dir/version" 2>/dev/null || echo unknown)" \
    "${model_args[@]}" --streams "$streams" --threads "$threads" --profile "$profile" \
    --attempts "${ATTEMPTS:-3}" \
    --log-dir "$out/concurrency-logs" --json "$out/concurrency.json" &
bench_pid=$!
status=0
wait "$bench_pid" || status=$?
bench_pid=""
exit "$status"
