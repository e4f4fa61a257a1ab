#!/usr/bin/env bash
# aarch64-check.sh: the worker's tests built for aarch64 and run under QEMU on an x86-64
# machine, so the CPU engine's NEON kernels are tested without an ARM machine:
#
#   scripts/aarch64-check.sh                  # the kernels' and the engine's tests
#   scripts/aarch64-check.sh cpu::tests::batched --nocapture
#   scripts/aarch64-check.sh --lib cpu::     # the kernels' tests alone (the test command)
#
# Arguments go to the test binaries (a filter, libtest flags); the default, `cpu`, picks
# the kernel tests (`cpu::`) and the engine-on-the-model tests (`cpu_engine::`: NEON
# against the portable kernels and against candle's logits; the test model must have
# been fetched, scripts/fetch-test-model.sh). `--lib` builds and runs the library's
# tests alone.
#
# Built as the aarch64 set the lab's hosts run is (scripts/release.sh): Debian sid's
# rustc with its arm64 standard library in the cross toolchain's root
# (scripts/cross-run.sh), cargo-zigbuild against glibc 2.17, the lab profile, in
# target/cross. Run by this machine's QEMU (registered by lab/binfmt.sh) with the lab's
# Debian 11 arm64 root (lab/debian-root.sh) as the library root. QEMU_CPU names QEMU's
# CPU model (default `max`: NEON, dotprod, i8mm); cortex-a72 is a core without dotprod.
# Needs root (chroot, binfmt_misc); the first run makes both roots (a few minutes).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
[[ $EUID -eq 0 ]] || { echo "aarch64-check.sh: the cross toolchain's chroot needs root" >&2; exit 1; }

targets=(--lib --test integration)
if [[ "${1:-}" == --lib ]]; then
    targets=(--lib)
    shift
fi
filter=("$@")
# No filter among the arguments (only flags such as --nocapture): the default one.
has_filter=0
for arg in "${filter[@]}"; do [[ "$arg" == -* ]] || has_filter=1; done
((has_filter)) || filter=(cpu "${filter[@]}")

root="$("$repo/lab/debian-root.sh" --arch arm64 bullseye)"
# The library's tests and the integration tests (only `cpu_engine::` and `families::`
# among those run in process; the rest start worker binaries). cargo's JSON names each
# test executable.
binaries="$("$repo/scripts/cross-run.sh" cargo-zigbuild test --locked --no-run --profile lab \
    --target aarch64-unknown-linux-gnu.2.17 --target-dir "$repo/target/cross" \
    -p llm-worker-rbee "${targets[@]}" --message-format=json-render-diagnostics |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])
')"
[[ -n "$binaries" ]] || { echo "aarch64-check.sh: cargo named no test binary" >&2; exit 1; }
while read -r binary; do
    "$repo/lab/binfmt.sh" "$binary"
    echo "== $binary under QEMU (${QEMU_CPU:-max} CPU)" >&2
    QEMU_LD_PREFIX="$root" QEMU_CPU="${QEMU_CPU:-max}" RBEE_EXPECT_KERNELS=neon \
        "$binary" "${filter[@]}"
done <<<"$binaries"
