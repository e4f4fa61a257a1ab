#!/usr/bin/env bash
# The test command (README, CI): installs what the tests need, fetches the test model,
# builds every binary once in the test profile, and runs the whole suite with nextest.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

"$repo/scripts/install-deps.sh"
"$repo/scripts/fetch-test-model.sh" >/dev/null
"$repo/scripts/setup-test-tools.sh"

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
