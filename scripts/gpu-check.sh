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
#   3. prompt and decode tokens/s on cuda:0;
#   4. Hugging Face transformers on the same GGUF and device, for comparison
#      (scripts/gpu-transformers.py; needs the `gguf` package beside transformers);
#   5. the worker's figures on the CPU.
#
#   scripts/gpu-check.sh --preflight DIR/piece-1
#
# checks what it can from the first piece alone (the binaries' libraries, NVML
# detection, the Python side), while the model's last piece is still to come.
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

# The worker links libcudart/libcublas/libcurand/libnvrtc of CUDA 13 and the driver's
# libcuda.so.1: add whatever directories hold them, then let the loader say what is
# still missing.
find_libraries() {
    local worker="$1" library_dirs=() candidate wheels missing
    for candidate in /usr/local/nvidia/lib64 /usr/local/cuda/lib64; do
        [[ -d "$candidate" ]] && library_dirs+=("$candidate")
    done
    # PyTorch's CUDA wheels: nvidia/cu13/lib, or one lib folder per library.
    while IFS= read -r wheels; do
        library_dirs+=("$wheels")
    done < <(python3 -c '
import glob, os, nvidia
for root in nvidia.__path__:
    for lib in sorted(glob.glob(os.path.join(root, "*", "lib")) + glob.glob(os.path.join(root, "*", "*", "lib"))):
        print(lib)' 2>/dev/null || true)
    LD_LIBRARY_PATH="$(IFS=:; echo "${library_dirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
    missing="$(ldd "$worker" | grep 'not found' || true)"
    if [[ -n "$missing" ]]; then
        # Anywhere else on the machine (another Python, a toolkit under /opt)?
        local name found
        for name in $(awk '{print $1}' <<<"$missing"); do
            found="$(find /usr /opt /root -name "$name" -print -quit 2>/dev/null || true)"
            [[ -n "$found" ]] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$found")"
        done
        missing="$(ldd "$worker" | grep 'not found' || true)"
    fi
    if [[ -n "$missing" ]]; then
        echo "error: the worker's libraries are not all found (LD_LIBRARY_PATH=$LD_LIBRARY_PATH):" >&2
        echo "$missing" >&2
        echo "hint: install CUDA 13's cuBLAS, cuRAND, NVRTC and runtime (pip: nvidia-cublas, nvidia-curand, nvidia-cuda-nvrtc, nvidia-cuda-runtime)" >&2
        return 1
    fi
}

# The GPUs and their memory as the agent's NVML detection reports them.
detect() {
    echo "== nvidia-smi"
    nvidia-smi --query-gpu=index,name,memory.total,memory.free,driver_version,compute_cap --format=csv || true
    echo "== rbee-hive detect (NVML)"
    "$@" detect </dev/null | python3 -c '
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
}

# `--preflight PIECE`: the binaries come first in the bundle, so the first piece alone
# holds them; unpack them beside it and check libraries, detection and the Python side
# while the later pieces are still on their way.
if [[ "${1:-}" == "--preflight" ]]; then
    piece="${2:?usage: scripts/gpu-check.sh --preflight PIECE-1}"
    early="$(dirname "$piece")/early"
    mkdir -p "$early"
    (xz -dc "$piece" 2>/dev/null || true) | (tar -x -C "$early" bin 2>/dev/null || true)
    chmod +x "$early/bin/rbee-hive" "$early/bin/llm-worker-rbee"
    # Each step runs even when one before it failed, so one call tells all.
    failed=0
    if find_libraries "$early/bin/llm-worker-rbee"; then
        echo "== the worker's libraries are all found"
    else
        failed=1
    fi
    detect "$early/bin/rbee-hive" --install-dir "$(mktemp -d /tmp/rbee-gpu-detect.XXXXXX)" --hive-id gpu-check || failed=1
    echo "== python"
    # From /: the repository's own gguf/ folder would pass for the Python package.
    (cd / && python3 -c 'import torch, transformers, gguf; print("  torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__)') || failed=1
    if ((failed)); then
        echo "== preflight FAILED"
        exit 1
    fi
    echo "== preflight passed"
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
if [[ "$device" != cpu ]]; then
    find_libraries "$worker" || exit 1
fi

install_dir="$(mktemp -d /tmp/rbee-gpu-check.XXXXXX)"
mkdir -p "$install_dir/models/local"
ln -s "$model" "$install_dir/models/local/test-model.gguf"
hive=(--install-dir "$install_dir" --hive-id gpu-check)

echo "== sizes"
ls -lL "$agent" "$worker" "$model" | awk '{printf "%6.1f MiB  %s\n", $5 / 1048576, $9}'
detect "$agent" "${hive[@]}"

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
trap 'for id in gpu-check-cpu gpu-check-dmmv gpu-check-q8 gpu-check-f16 gpu-check-f32; do stop "$id"; done' EXIT

ask() {
    python3 - "$1" "$2" <<'EOF'
import json, re, statistics, sys, time, urllib.request

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
# What the model says greedily on the CPU; an answer that merely mentions Paris (one
# broken kernel path said "Le Grand Paris, le Grand-Bien-Armes, …") does not pass.
if not re.search(r"capital of france is paris|^paris\b", answer.strip(), re.IGNORECASE):
    sys.exit(f"{device}: the answer does not say that Paris is the capital")
EOF
}

# Every way the worker can multiply by quantized weights on a GPU (--gpu-matmul), the
# worker's default first: that one must answer right; the others are measured and
# reported, wrong answers included.
failed=0
modes=(cpu)
[[ "$device" != cpu ]] && read -r -a modes <<<"${GPU_MATMUL_MODES:-dmmv q8 f16 f32}"
for mode in "${modes[@]}"; do
    label="$device"
    [[ "$device" != cpu ]] && label="$device --gpu-matmul $mode"
    echo "== worker on $label"
    if device_url="$(RBEE_GPU_MATMUL="$mode" spawn "gpu-check-$mode" "$device")" &&
        ask "$device_url" "$label"; then
        :
    elif [[ "$mode" == "${modes[0]}" ]]; then
        failed=1
        echo "  FAILED: the worker's default"
    else
        echo "  (wrong or failed: reported, not the default)"
    fi
    stop "gpu-check-$mode"
done
echo "  worker logs: $install_dir/logs/"

echo "== Hugging Face transformers on the same GGUF, on $device"
if (cd / && python3 -c 'import torch, transformers, gguf.constants') 2>/dev/null; then
    python3 "$(dirname "${BASH_SOURCE[0]}")/gpu-transformers.py" "$model" "$device"
else
    echo "  skipped: this python3 lacks torch, transformers or gguf (DEVELOPERS.md: carry the gguf wheel)"
fi

if [[ "$device" != cpu ]]; then
    echo "== the same worker binary on the CPU, for comparison"
    cpu_url="$(spawn gpu-check-cpu cpu)"
    ask "$cpu_url" cpu || failed=1
fi
if ((failed)); then
    echo "== gpu check FAILED"
    exit 1
fi
echo "== gpu check passed"
