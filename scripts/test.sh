#!/usr/bin/env bash
# The test command (README, CI): installs what the tests need, fetches the test model,
# builds every binary once in the test profile, and runs the whole suite with nextest.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

"$repo/scripts/install-deps.sh"
"$repo/scripts/fetch-test-model.sh" >/dev/null

# The process tests run the workspace's binaries; build them all in the same profile
# the tests use, so nothing is compiled twice.
cargo build --workspace --bins --locked
# The queen's local-hive feature runs localhost operations in-process; its test needs
# the feature on, which only recompiles the queen itself.
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p queen-rbee --features local-hive --locked -E 'test(local_hive)'
    cargo nextest run --workspace --locked --no-fail-fast "$@"
else
    cargo test -p queen-rbee --features local-hive --locked --test it local_hive
    cargo test --workspace --locked --no-fail-fast "$@"
fi
