#!/usr/bin/env bash
# The GPU check, run ON a machine with an NVIDIA GPU (no Rust, no network needed):
#
#   scripts/gpu-check.sh DIR
#   DEVICE=cuda:1 scripts/gpu-check.sh DIR      # another GPU (DEVICE=cpu: no GPU at all)
#
# DIR holds bin/rbee-hive, bin/llm-worker-rbee (built with `--features cuda`, see
# DEVELOPERS.md) and model.gguf (the test model). The check prints
#   1. the GPUs the agent's detection finds through NVML, with their VRAM;
#   2. a worker spawned by the agent on cuda:0 (the agent's memory check included),
#      its answer to "What is the capital of France?";
#   3. prompt and decode tokens/s on cuda:0, and on the CPU for comparison.
#
#   scripts/gpu-check.sh --unpack DIR SHA256_FILE
#
# joins the pieces DIR/piece-1, piece-2, … that scripts/gpu-pack.sh cut, checks their
# sha256 and unpacks them into DIR.
# It needs the CUDA 13 libraries the worker links (cuBLAS, cuRAND, NVRTC, the runtime):
# from the system's linker path, /usr/local/cuda, or the nvidia/cu13 wheels of the
# machine's python3 (PyTorch's, on the lent H100/H200 machines).
set -euo pipefail

if [[ "${1:-}" == "--unpack" ]]; then
    dir="${2:?usage: scripts/gpu-check.sh --unpack DIR SHA256_FILE}"
    expected="$(cat "${3:?usage: scripts/gpu-check.sh --unpack DIR SHA256_FILE}")"
    mapfile -t pieces < <(ls "$dir"/piece-* | sort -V)
    actual="$(cat "${pieces[@]}" | sha256sum | cut -d' ' -f1)"
    if [[ "$actual" != "$expected" ]]; then
        echo "error: the ${#pieces[@]} piece(s) in $dir do not add up to the packed bundle (sha256 $actual, expected $expected)" >&2
        echo "hint: carry every piece that scripts/gpu-pack.sh printed, in one warm session of the machine" >&2
        exit 1
    fi
    cat "${pieces[@]}" | xz -d | tar -x -C "$dir"
    rm -f "${pieces[@]}"
    echo "unpacked ${#pieces[@]} piece(s) into $dir"
    exit 0
fi

dir="${1:?usage: scripts/gpu-check.sh DIR (with bin/rbee-hive, bin/llm-worker-rbee, model.gguf)}"
dir="$(cd "$dir" && pwd)"
device="${DEVICE:-cuda:0}"
agent="$dir/bin/rbee-hive"
worker="$dir/bin/llm-worker-rbee"
model="$dir/model.gguf"
for file in "$agent" "$worker" "$model"; do
    if [[ ! -f "$file" ]]; then
        echo "error: $file is missing" >&2
        echo "hint: DEVELOPERS.md says how to pack and carry the binaries and the model" >&2
        exit 1
    fi
done
chmod +x "$agent" "$worker"

# The worker links libcudart/libcublas/libcurand/libnvrtc of CUDA 13 and the driver's
# libcuda.so.1: add whatever directories hold them, then let the loader say what is
# still missing.
library_dirs=()
for candidate in /usr/local/nvidia/lib64 /usr/local/cuda/lib64; do
    [[ -d "$candidate" ]] && library_dirs+=("$candidate")
done
if wheels="$(python3 -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13", "lib"))' 2>/dev/null)" &&
    [[ -d "$wheels" ]]; then
    library_dirs+=("$wheels")
fi
LD_LIBRARY_PATH="$(IFS=:; echo "${library_dirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
missing="$(ldd "$worker" | grep 'not found' || true)"
if [[ -n "$missing" ]]; then
    echo "error: the worker's libraries are not all found (LD_LIBRARY_PATH=$LD_LIBRARY_PATH):" >&2
    echo "$missing" >&2
    echo "hint: install CUDA 13's cuBLAS, cuRAND, NVRTC and runtime (pip: nvidia-cublas, nvidia-curand, nvidia-cuda-nvrtc, nvidia-cuda-runtime)" >&2
    exit 1
fi

install_dir="$(mktemp -d /tmp/rbee-gpu-check.XXXXXX)"
mkdir -p "$install_dir/models/local"
ln -s "$model" "$install_dir/models/local/test-model.gguf"
hive=(--install-dir "$install_dir" --hive-id gpu-check)

echo "== sizes"
ls -lL "$agent" "$worker" "$model" | awk '{printf "%6.1f MiB  %s\n", $5 / 1048576, $9}'
echo "== nvidia-smi"
nvidia-smi --query-gpu=index,name,memory.total,memory.free,driver_version,compute_cap --format=csv || true

echo "== rbee-hive detect (NVML)"
"$agent" "${hive[@]}" detect </dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    event = json.loads(line)
    if event["type"] == "narration":
        print("  narration:", event["human"])
    elif event["type"] == "result":
        for d in event["value"]["devices"]:
            line = "  {}: {} {}, {:.1f} of {:.1f} GiB free".format(
                d["id"], d["kind"], d["name"], d["memory_free"] / 2**30, d["memory_total"] / 2**30)
            if d.get("compute_capability"):
                line += ", compute " + d["compute_capability"]
            if d.get("driver"):
                line += ", driver " + d["driver"]
            print(line)
    elif event["type"] == "error":
        sys.exit(f"detect failed: {event}")
'

# Spawned by the agent as the queen would: device check, memory fit, start, `ready`.
# Stdin is /dev/null, so the agent reads no worker token and the worker takes
# requests without one.
spawn() {
    local id="$1" device="$2"
    "$agent" "${hive[@]}" worker-spawn --worker-id "$id" --model test-model.gguf \
        --device "$device" --queen-url http://127.0.0.1:9 --bind 127.0.0.1 \
        --advertise-host 127.0.0.1 --heartbeat-interval-ms 60000 </dev/null |
        python3 -c '
import json, sys
url = None
for line in sys.stdin:
    event = json.loads(line)
    if event["type"] == "narration":
        print("  " + event["human"], file=sys.stderr)
    elif event["type"] == "result":
        url = event["value"]["url"]
    elif event["type"] == "error":
        sys.exit(f"spawn failed: {event}")
print(url)
'
}
stop() {
    "$agent" "${hive[@]}" worker-stop --worker-id "$1" --timeout 10 </dev/null >/dev/null 2>&1 || true
}
trap 'stop gpu-check-device; stop gpu-check-cpu' EXIT

ask() {
    python3 - "$1" "$2" <<'EOF'
import json, statistics, sys, time, urllib.request

url, device = sys.argv[1], sys.argv[2]
LONG = ("The history of the printing press begins in the fifteenth century, when Johannes "
        "Gutenberg combined movable metal type, oil-based inks and a wooden press. Explain, "
        "step by step, how this invention changed science, religion and politics")

def infer(body):
    request = urllib.request.Request(url + "/v1/inference", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    text, event = [], None
    with urllib.request.urlopen(request, timeout=300) as response:
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
                if event == "token":
                    text.append(data["t"])
                elif event == "end":
                    return "".join(text), data
                elif event == "error":
                    sys.exit(f"{device}: worker error {data}")
    sys.exit(f"{device}: the stream ended without an end event")

# The test model answers this reliably only with a system message.
answer, end = infer({"messages": [{"role": "system", "content": "You are a helpful assistant."},
                                  {"role": "user", "content": "What is the capital of France?"}],
                     "max_tokens": 48, "temperature": 0})
print(f"  {device} answers: {answer.strip()!r}")
print(f"  ({end['tokens']} tokens, {end['tokens_per_s']:.1f} tokens/s)")
runs = [infer({"prompt": LONG, "max_tokens": 128, "temperature": 0})[1] for _ in range(4)][1:]
prompt_tps = statistics.median(r["prompt_tokens"] / (r["ttft_ms"] / 1000) for r in runs)
decode_tps = statistics.median(r["tokens_per_s"] for r in runs)
print(f"  {device}: prompt {prompt_tps:.0f} tokens/s, decode {decode_tps:.1f} tokens/s "
      f"(median of 3 runs of 128 tokens after a warm-up)")
if "paris" not in answer.lower():
    sys.exit(f"{device}: the answer does not name Paris")
EOF
}

echo "== worker on $device"
device_url="$(spawn gpu-check-device "$device")"
ask "$device_url" "$device"
stop gpu-check-device
echo "  worker log: $install_dir/logs/gpu-check-device.log"

if [[ "$device" != cpu ]]; then
    echo "== the same worker binary on the CPU, for comparison"
    cpu_url="$(spawn gpu-check-cpu cpu)"
    ask "$cpu_url" cpu
fi
echo "== gpu check passed"
