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
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "$@"
else
    cargo test --workspace --locked --no-fail-fast "$@"
fi
