#!/usr/bin/env bash
# The test command (README, CI): installs what the tests need, fetches the test model,
# builds every binary once in the test profile, and runs the whole suite with nextest.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# A run from a clean clone writes about 8 GiB (target/, .rbee-cache/): say up front when
# the disk has less to spare, rather than failing half an hour in. Incremental
# compilation is off unless asked for: a clean build has nothing to reuse, and its data
# would add gigabytes to target/.
free_gib=$(($(df -Pk "$repo" | awk 'NR == 2 { print $4 }') / 1048576))
echo "test.sh: $free_gib GiB free on the disk of $repo" >&2
if ((free_gib < 12)); then
    echo "test.sh: warning: a run from a clean clone writes about 8 GiB; hint: remove an old target/ or free some space" >&2
fi
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Each step before the suite prints its time, so CI's log shows where the time goes.
timed() { # WHAT COMMAND...
    local what="$1" start=$SECONDS
    shift
    "$@" >/dev/null
    echo "test.sh: $what: $((SECONDS - start)) s" >&2
}

timed "what the tests need" "$repo/scripts/install-deps.sh" tests
timed "the test model" "$repo/scripts/fetch-test-model.sh"
timed "the real models" "$repo/scripts/fetch-real-models.sh"
timed "the test tools" "$repo/scripts/setup-test-tools.sh"

# The lab's hosts of other systems, made once into .rbee-cache/roots (debootstrap roots
# of Debian 11, glibc 2.31, older than the 2.34 this machine's own builds need), and the
# portable sets they run (cargo-zigbuild against glibc 2.17, in the lab profile, into
# target/portable-bin): made here so their time shows apart from the tests', which find
# them ready. On x86-64 also an arm64 root, run under QEMU, and the aarch64 set, built
# by the cross toolchain (scripts/cross-toolchain.sh: Debian sid's rustc with its arm64
# standard library).
timed "the Debian 11 root" "$repo/lab/debian-root.sh" bullseye
targets="$(uname -m)"
if [[ "$targets" == x86_64 ]]; then
    targets=x86_64,aarch64
    timed "the Debian 11 arm64 root" "$repo/lab/debian-root.sh" --arch arm64 bullseye
    timed "the aarch64 cross toolchain" "$repo/scripts/cross-toolchain.sh"
fi
timed "the portable sets ($targets)" env RBEE_PROFILE=lab \
    "$repo/scripts/release.sh" --targets "$targets" "$repo/target/portable-bin"

# nextest builds every package's binaries along with the tests (the process tests run
# them from target/debug), all with one feature resolution, so nothing is compiled
# twice; a separate `cargo build --bins` would resolve features without the
# dev-dependencies and rebuild much of the tree. The queen's local-hive feature is on
# so its in-process path is tested too; lab hives are not named localhost, so
# everything else still goes over SSH.
features=(--features queen-rbee/local-hive)
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "${features[@]}" "$@"
else
    cargo test --workspace --locked --no-fail-fast "${features[@]}" "$@"
fi

# Every fuzz target briefly (10 s each, after a build of about a minute): inputs from
# outside (operations, job streams, agent lines, inventories, playbooks, Ansible
# imports, GGUF headers) keep meeting random bytes on every run, starting from the
# seeds in fuzz/seeds/, where each input that once crashed a reader is kept. Without the
# sanitizer: the targets are safe Rust, so a panic is what there is to find. Only for
# the whole suite, not for a filtered run.
if (($# == 0)); then
    FUZZ_SANITIZER=none "$repo/scripts/fuzz.sh" "${RBEE_FUZZ_SECONDS:-10}"
fi

# The worker's AVX-512 kernels, which this machine's CPU may lack: its kernel tests again
# on an emulated CPU that has AVX-512 and VNNI (Bochs, scripts/avx512-run.sh: about a
# minute, most of it booting). Only for the whole suite, not for a filtered run. The test
# binary is the one just built: `cargo test --no-run` resolves features as nextest did.
if (($# == 0)); then
    worker_tests="$(cargo test --workspace --locked "${features[@]}" --no-run \
        --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if (m.get("reason") == "compiler-artifact" and m.get("executable")
            and m["target"]["name"] == "llm_worker_rbee" and m["profile"]["test"]):
        print(m["executable"])
')"
    [[ -n "$worker_tests" ]] || { echo "error: no llm-worker-rbee test binary to run under AVX-512" >&2; exit 1; }
    "$repo/scripts/avx512-run.sh" --env RBEE_EXPECT_KERNELS=avx512,avx2 "$worker_tests" \
        cpu:: --nocapture
fi

# The worker's NEON kernels, on an emulated aarch64 CPU: their tests built for aarch64
# beside the aarch64 set above and run under QEMU (scripts/aarch64-check.sh, about two
# minutes). On x86-64, only for the whole suite.
if (($# == 0)) && [[ "$(uname -m)" == x86_64 ]]; then
    "$repo/scripts/aarch64-check.sh" --lib cpu::
fi
