#!/usr/bin/env bash
# The Vagrant lab's end-to-end test, on real VMs: brings the lab up (vagrant/lab-up.sh),
# starts a queen on this machine for it, runs playbooks/site.toml twice (the first run
# converges both hives, the second changes nothing), has a worker on the VMs complete a
# prompt through the queen, and tears everything down. Minutes, not seconds, and it needs
# root and /dev/kvm: CI's suite (scripts/test.sh) does not run it.
#
#   RBEE_VAGRANT_TEST=1 vagrant/test-site.sh
#
# RBEE_BIN_DIR: where rbee-keeper, queen-rbee, rbee-hive and llm-worker-rbee are
# (default target/debug; `cargo build --workspace` makes them). RBEE_VAGRANT_KEEP=1
# leaves the machines and the queen running afterwards.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${RBEE_BIN_DIR:-$ROOT/target/debug}
STATE="$ROOT/vagrant/.rbee"
CONFIG="$STATE/config.toml"
MODEL=SmolLM2-135M-Instruct.Q4_1
LOGS="$STATE/test-site"

if [[ ${RBEE_VAGRANT_TEST:-} != 1 ]]; then
    echo "vagrant/test-site.sh: not run: it boots three VMs and takes minutes" >&2
    echo "hint: RBEE_VAGRANT_TEST=1 $0 (as root; 20 minutes where QEMU emulates the CPU)" >&2
    exit 0
fi
for bin in rbee-keeper queen-rbee rbee-hive llm-worker-rbee; do
    if [[ ! -x $BIN/$bin ]]; then
        echo "error: $BIN/$bin is missing" >&2
        echo "hint: cargo build --workspace (or point RBEE_BIN_DIR at the binaries)" >&2
        exit 1
    fi
done
"$ROOT/scripts/fetch-test-model.sh" >/dev/null

# The lab's queen keeps its pid file, log and worker-token key beside the lab's config,
# apart from any other queen of this user.
export RBEE_STATE_DIR="$STATE/queen"
unset RBEE_QUEEN_URL RBEE_API_TOKEN RBEE_CONFIG
keeper() { "$BIN/rbee-keeper" --config "$CONFIG" "$@"; }

teardown() {
    local status=$?
    if [[ ${RBEE_VAGRANT_KEEP:-} == 1 ]]; then
        echo "test-site: kept: the machines and the queen run (vagrant/lab-up.sh --down, rbee-keeper --config $CONFIG queen stop)" >&2
        exit "$status"
    fi
    if [[ -f $CONFIG ]]; then
        keeper queen stop >/dev/null 2>&1 || true
    fi
    "$ROOT/vagrant/lab-up.sh" --down >&2 || true
    exit "$status"
}
trap teardown EXIT

started=$SECONDS
step() { echo "[$((SECONDS - started))s] test-site: $*" >&2; }

step "bringing the lab up"
"$ROOT/vagrant/lab-up.sh"
mkdir -p "$LOGS"

step "starting the queen (0.0.0.0:8500, the hives' queen_url)"
keeper queen start --queen-bin "$BIN/queen-rbee"

# Runs site.toml; checks every hive converged and, with `unchanged`, that nothing
# changed. The recap lines read `hive : ok=N changed=N unreachable=N failed=N skipped=N`.
play_site() {
    local run=$1 expect=$2 log="$LOGS/site-$1.log"
    step "site.toml, run $run"
    if ! keeper play "$ROOT/playbooks/site.toml" 2>&1 | tee "$log"; then
        echo "error: site.toml run $run failed; its output: $log" >&2
        exit 1
    fi
    awk -v expect="$expect" -v file="$log" '
        /^hive-[0-9]+ *: ok=/ {
            hives++
            for (i = 1; i <= NF; i++) { split($i, kv, "="); n[kv[1]] = kv[2] }
            if (n["failed"] + n["unreachable"] > 0) { print "error: " $1 " failed: " $0 > "/dev/stderr"; bad = 1 }
            if (expect == "unchanged" && n["changed"] > 0) { print "error: " $1 " changed on the second run: " $0 > "/dev/stderr"; bad = 1 }
        }
        END {
            if (hives != 2) { print "error: the recap names " hives + 0 " hives, not 2 (" file ")" > "/dev/stderr"; bad = 1 }
            exit bad
        }' "$log"
}
play_site 1 converged
play_site 2 unchanged

step "a completion from a worker on the VMs, through the queen's OpenAI API"
keeper worker list | tee "$LOGS/workers.log"
# Three tokens: where QEMU emulates the CPU, a debug build of the worker takes a minute
# or two for them.
token=$(sed -n 's/^api_token = "\(.*\)"$/\1/p' "$CONFIG")
curl -sS --fail-with-body --max-time 900 -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' \
    -d "{\"model\": \"$MODEL\", \"prompt\": \"The capital of France is\", \"max_tokens\": 3}" \
    http://127.0.0.1:8500/v1/completions | tee "$LOGS/completion.json"
echo
if ! grep -q '"text"' "$LOGS/completion.json"; then
    echo "error: no completion from the workers; see $LOGS/completion.json" >&2
    exit 1
fi
step "passed"
