#!/usr/bin/env bash
# A CUDA toolkit for building the worker's `cuda` feature on a machine without a GPU,
# from PyPI wheels only, into .rbee-cache/cuda (nothing system-wide).
#
#   scripts/setup-cuda.sh                  install if needed, then print `export` lines:
#                                          eval "$(scripts/setup-cuda.sh)"
#   scripts/setup-cuda.sh --run CMD ARGS…  install if needed, then run CMD with them set
#
# CUDA 13.0: the cu12 nvcc wheels (nvidia-cuda-nvcc-cu12, every 12.x) hold only ptxas and
# libnvvm, not the nvcc driver, cudafe++ or cicc; the CUDA 13 wheels hold the whole
# compiler. 13.0 rather than the newest 13.x because the kernels are shipped as PTX that
# the driver compiles at load time, and a driver only reads PTX of its own CUDA version
# or older: 13.0 is what driver 580 speaks (the lent H100/H200 machines run 580). The
# worker then needs libcudart.so.13, libcublas(Lt).so.13, libcurand.so.10 and
# libnvrtc.so.13 at run time, besides the driver's libcuda.so.1.
#
# CUDA_COMPUTE_CAP (candle-kernels asks nvidia-smi without it, which fails here) defaults
# to 90, the H100/H200: kernels are built for sm_90 with its PTX embedded, so they run on
# compute capability 9.0 and newer (by the driver's JIT). For an Ampere or Ada hive set
# CUDA_COMPUTE_CAP=80 (or 86, 89) before calling this script; 80 also runs on newer GPUs,
# without the Hopper-specific code paths.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$repo/.rbee-cache/cuda"
venv="$cache/venv"
toolkit="$cache/toolkit-13.0"
compute_cap="${CUDA_COMPUTE_CAP:-90}"

# Pinned together: one CUDA release (13.0 update 2), so headers, compiler and libraries
# agree. curand keeps its own numbering (10.4.0 is the one of CUDA 13.0).
packages=(
    "nvidia-cuda-nvcc==13.0.88"
    "nvidia-cuda-crt==13.0.88"
    "nvidia-nvvm==13.0.88"
    "nvidia-cuda-nvrtc==13.0.88"
    "nvidia-cuda-runtime==13.0.96"
    "nvidia-cuda-cccl==13.0.85"
    "nvidia-cublas==13.0.2.14"
    "nvidia-curand==10.4.0.35"
)

install_wheels() {
    echo "installing CUDA 13.0 wheels into $venv (about 1.2 GiB)" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
}

# The wheels put a toolkit under site-packages/nvidia/cu13 ({bin,include,lib,nvvm}),
# with nvcc.profile finding its pieces relative to bin/. What the Rust build scripts
# need besides: `lib64/` with the unversioned names the linker looks for (libcublas.so),
# and `lib64/stubs/libcuda.so`. cudarc links libcuda (candle turns on its
# `dynamic-linking`), which only the NVIDIA driver installs; the stub carries the
# driver API's symbols under the soname libcuda.so.1, so the binary links here and
# binds to the real driver library on the GPU machine.
assemble_toolkit() {
    local wheels
    wheels="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
    if [[ ! -x "$wheels/bin/nvcc" ]]; then
        echo "error: $wheels/bin/nvcc is missing after installing ${packages[*]}" >&2
        echo "hint: remove $cache and run this script again" >&2
        exit 1
    fi
    local staging="$toolkit.partial"
    rm -rf "$staging"
    mkdir -p "$staging/lib64/stubs"
    ln -s "$wheels/bin" "$staging/bin"
    ln -s "$wheels/include" "$staging/include"
    ln -s "$wheels/nvvm" "$staging/nvvm"
    local library name
    for library in "$wheels"/lib/*; do
        name="$(basename "$library")"
        ln -s "$library" "$staging/lib64/$name"
        # libcublas.so.13 -> libcublas.so, as `-lcublas` asks for.
        if [[ "$name" =~ ^(lib[A-Za-z]+)\.so\.[0-9]+$ ]]; then
            ln -sf "$library" "$staging/lib64/${BASH_REMATCH[1]}.so"
        fi
    done
    {
        echo '/* The CUDA driver API as empty functions: a link-time stand-in for libcuda.so.1. */'
        gcc -E -P -I"$wheels/include" "$wheels/include/cuda.h" |
            grep -oE '\bCUresult +cu[A-Za-z0-9_]+ *\(' |
            sed -E 's/^CUresult +(cu[A-Za-z0-9_]+) *\($/\1/' |
            sort -u |
            sed -E 's/.*/int &(void) { return 999; }/'
    } >"$staging/lib64/stubs/libcuda-stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 \
        -o "$staging/lib64/stubs/libcuda.so" "$staging/lib64/stubs/libcuda-stub.c"
    rm -rf "$toolkit"
    mv "$staging" "$toolkit"
}

# The stamp names the pinned set that was installed: a changed pin reinstalls.
stamp="$cache/installed"
if [[ "$(cat "$stamp" 2>/dev/null)" != "${packages[*]}" ]]; then
    rm -rf "$venv" "$toolkit" "$stamp"
    install_wheels
    echo "${packages[*]}" >"$stamp"
fi
# The toolkit's links are absolute: a moved checkout assembles it again.
if [[ ! -f "$toolkit/lib64/stubs/libcuda.so" || ! -x "$toolkit/bin/nvcc" ]]; then
    assemble_toolkit
fi

# cudarc reads CUDA_HOME/CUDA_PATH/CUDA_ROOT for its link search, bindgen_cuda reads
# CUDA_PATH/CUDA_ROOT for include/cuda.h, and both run `nvcc` from PATH. The stubs
# directory is on the link path only, never on LD_LIBRARY_PATH: a program run with these
# variables must find the real driver library.
export CUDA_HOME="$toolkit"
export CUDA_PATH="$toolkit"
export CUDA_ROOT="$toolkit"
export CUDA_COMPUTE_CAP="$compute_cap"
export PATH="$toolkit/bin:$PATH"
export LD_LIBRARY_PATH="$toolkit/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if [[ "${1:-}" == "--run" ]]; then
    shift
    if [[ $# -eq 0 ]]; then
        echo "usage: scripts/setup-cuda.sh --run COMMAND [ARGS...]" >&2
        exit 2
    fi
    exec "$@"
elif [[ $# -gt 0 ]]; then
    echo "usage: scripts/setup-cuda.sh [--run COMMAND [ARGS...]]" >&2
    exit 2
fi

for variable in CUDA_HOME CUDA_PATH CUDA_ROOT CUDA_COMPUTE_CAP PATH LD_LIBRARY_PATH; do
    printf 'export %s=%q\n' "$variable" "${!variable}"
done
