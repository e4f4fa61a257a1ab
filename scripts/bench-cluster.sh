#!/usr/bin/env bash
# Benchmarks the cluster side against its peers in one run on this machine: fan-out
# of a trivial operation on N lab hosts (default 16) against `ansible all -m ping` and
# `-m command -a true` (ansible-core from PyPI, pipelining on, forks = N, no fact
# gathering), one operation over SSH against local-hive in-process, the agent push
# (cold and unchanged), and the queen's overhead on inference (TTFT and per-token
# latency, through the queen against directly at the worker, interleaved).
#
#   scripts/bench-cluster.sh [--hosts N] [--runs R] [--release]
#
# Prints a markdown table for BENCHMARKS.md; raw figures go to
# .rbee-cache/bench/cluster.json. Without --release the queen is the test build
# (dependencies optimised, rbee's own crates not), which only makes rbee slower.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
hosts=16
runs=5
profile=debug
build=(cargo build --workspace --all-targets --locked --features queen-rbee/local-hive)
while (($#)); do
    case "$1" in
        --hosts) hosts="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --release) profile=release; build=(cargo build --release --workspace --bins --locked --features queen-rbee/local-hive); shift ;;
        *) echo "usage: $0 [--hosts N] [--runs R] [--release]" >&2; exit 2 ;;
    esac
done

scripts/install-deps.sh
"${build[@]}"
model="$(scripts/fetch-test-model.sh)"
bin="$repo/target/$profile"
keeper="$bin/rbee-keeper"

venv="$repo/.rbee-cache/ansible-venv"
if ! "$venv/bin/ansible" --version >/dev/null 2>&1; then
    echo "installing ansible-core into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check ansible-core >&2
fi

work="$repo/.rbee-cache/bench"
lab="$work/lab"
mkdir -p "$work/config" "$work/state" "$work/ansible" "$work/local"
export RBEE_CONFIG_DIR="$work/config" RBEE_STATE_DIR="$work/state"
export RBEE_QUEEN_PORT="${RBEE_QUEEN_PORT:-8510}"
queen_url="http://127.0.0.1:$RBEE_QUEEN_PORT"
worker_pid=""
cleanup() {
    [[ -n "$worker_pid" ]] && kill "$worker_pid" 2>/dev/null
    "$keeper" queen stop >/dev/null 2>&1 || true
    lab/lab.sh down --dir "$lab" >/dev/null 2>&1 || true
}
trap cleanup EXIT

lab/lab.sh up "$hosts" --dir "$lab" >&2
# The lab's hosts, plus localhost run in-process by the local-hive build.
{
    cat "$lab/inventory.toml"
    printf '\n[hives.localhost]\nhost = "127.0.0.1"\ninstall_dir = "%s"\n' "$work/local"
} >"$work/config/inventory.toml"
cat >"$work/config/config.toml" <<TOML
[queen]
port = $RBEE_QUEEN_PORT
bin_dir = "$bin"
forks = $hosts
state_dir = "$work/state"
TOML

# The same hosts for Ansible, with the same key and known_hosts.
python3 - "$lab/inventory.toml" "$work/ansible" "$hosts" <<'PY'
import sys, tomllib
inventory, out, forks = sys.argv[1], sys.argv[2], sys.argv[3]
with open(inventory, "rb") as f:
    lab = tomllib.load(f)
d = lab["defaults"]
with open(f"{out}/hosts.ini", "w") as f:
    f.write("[lab]\n")
    for alias, hive in lab["hives"].items():
        f.write(f"{alias} ansible_host={hive['host']} ansible_port={d['ssh_port']} ansible_user={d['ssh_user']}"
                f" ansible_ssh_private_key_file={d['identity_file']}\n")
with open(f"{out}/ansible.cfg", "w") as f:
    f.write(f"""[defaults]
forks = {forks}
gathering = explicit
host_key_checking = True
interpreter_python = /usr/bin/python3
[ssh_connection]
pipelining = True
ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={d['known_hosts']}
""")
PY

# A worker on this machine for the overhead figures, without a token (the queen here
# listens on loopback only, so it needs none).
"$keeper" queen start >&2
"$bin/llm-worker-rbee" --worker-id bench-worker --hive-id localhost --model "$model" \
    --port 0 --queen-url "$queen_url" --heartbeat-interval 1 >"$work/worker.out" 2>"$work/worker.log" &
worker_pid=$!
for _ in $(seq 100); do
    grep -q '"event":"ready"' "$work/worker.out" 2>/dev/null && break
    sleep 0.2
done
worker_url="$(python3 -c 'import json,sys; print(next(json.loads(l)["url"] for l in open(sys.argv[1]) if "listening" in l))' "$work/worker.out")"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); rbee $profile build" >&2
python3 bench/cluster_bench.py --queen-url "$queen_url" --keeper "$keeper" \
    --ansible-dir "$work/ansible" --ansible-bin "$venv/bin/ansible" --hosts "$hosts" --runs "$runs" \
    --worker-url "$worker_url" --model "$(basename "$model" .gguf)" --out "$work/cluster.json"
