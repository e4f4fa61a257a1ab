#!/usr/bin/env bash
# test-aarch64.sh: the aarch64 hive test, on an x86-64 machine. A lab host whose root is
# Debian 11 for arm64, run under QEMU, gets the aarch64 binaries from a queen that also
# holds its own build and the portable x86-64 set, and runs the main path (install,
# start, status, model push, worker spawn on NEON kernels, inference through the queen):
# queen/tests/it/platforms.rs's an_aarch64_hive_runs_the_main_path_on_the_aarch64_binaries.
#
# It is not part of scripts/test.sh: its steps would take that command past its time on
# CI's 2-core machines. Measured the first time on a busy 2-core machine: the cross
# toolchain's root 2.5 min, the arm64 root 9 min, the aarch64 build 50 min (30 min of
# CPU), the test itself 1 min; later runs find the roots and the build ready. The test is ignored in the usual run, so it shows as skipped
# there, and runs here. Arguments go to the test runner. Needs root, deb.debian.org and
# crates.io (the first time).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# Each step prints its time, so the slow one shows.
timed() { # WHAT COMMAND...
    local what="$1" start=$SECONDS
    shift
    "$@" >/dev/null
    echo "test-aarch64.sh: $what: $((SECONDS - start)) s" >&2
}

"$repo/scripts/install-deps.sh" tests
timed "the test model" "$repo/scripts/fetch-test-model.sh"
timed "the cross toolchain's root" "$repo/scripts/cross-toolchain.sh"
timed "the lab's arm64 root" "$repo/lab/debian-root.sh" --arch arm64 bullseye
timed "the portable x86-64 and aarch64 sets" env RBEE_PROFILE=dev \
    "$repo/scripts/release.sh" --targets x86_64,aarch64 "$repo/target/portable-bin"

# As scripts/test.sh runs the suite (the same features, so nothing is built twice),
# only this test.
test=platforms::an_aarch64_hive_runs_the_main_path_on_the_aarch64_binaries
features=(--features queen-rbee/local-hive)
start=$SECONDS
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked "${features[@]}" --run-ignored only \
        -E "test(=$test)" "$@"
else
    cargo test --workspace --locked "${features[@]}" -- --ignored --exact "$test" "$@"
fi
echo "test-aarch64.sh: the build and the test: $((SECONDS - start)) s" >&2
