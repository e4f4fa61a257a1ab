#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time: scripts/fuzz.sh [SECONDS]
# (default 60 per target). Exits non-zero on the first crash, leaving the input that
# caused it in fuzz/artifacts/<target>/ (`cargo fuzz run <target> <file>` replays it).
#
# cargo-fuzz wants a nightly compiler for its sanitizer flags. Without one, the stable
# compiler is let through with RUSTC_BOOTSTRAP=1, which unlocks the -Z flags that
# AddressSanitizer needs; the fuzz crate is built on its own (its own workspace and
# target directory), so nothing else is compiled that way. FUZZ_SANITIZER=none skips
# the sanitizer (faster; the targets are safe Rust, so it finds the same panics).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

cd "$repo/fuzz"
targets="$(cargo fuzz list)"
# The model's first bytes (its header, cut short) join the GGUF seeds when it is here.
model="$repo/.rbee-cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ -f "$model" ]]; then
    mkdir -p corpus/gguf_header
    head -c 65536 "$model" >corpus/gguf_header/smollm2-head.gguf
fi
for target in $targets; do
    mkdir -p "corpus/$target"
    echo "fuzz: $target for ${seconds}s"
    log="corpus/$target.log"
    status=0
    cargo fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
    if ((status != 0)); then
        tail -n 40 "$log" >&2
        echo "fuzz: $target crashed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
echo "fuzz: every target ran ${seconds}s without a crash"
