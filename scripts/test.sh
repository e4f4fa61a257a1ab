#!/usr/bin/env bash
# The test command (README, CI): installs what the tests need, fetches the test model,
# builds every binary once in the test profile, and runs the whole suite with nextest.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

"$repo/scripts/install-deps.sh" tests
"$repo/scripts/fetch-test-model.sh" >/dev/null
"$repo/scripts/setup-test-tools.sh"

# The lab's Debian 11 host (a debootstrap root, made once into .rbee-cache/roots) and
# the portable agent and worker it runs (cargo-zigbuild against glibc 2.17, in the test
# profile, into target/portable-bin): made here so their time shows apart from the
# tests', which find them ready.
"$repo/lab/debian-root.sh" bullseye >/dev/null
RBEE_PROFILE=dev "$repo/scripts/release.sh" "$repo/target/portable-bin" >/dev/null

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
