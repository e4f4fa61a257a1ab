#!/usr/bin/env bash
# Builds llama.cpp's llama-server and llama-batched-bench from the llama.cpp source
# that llama-cpp-python's sdist vendors, once, into .rbee-cache/llama-server/ and
# prints that directory. About 15 minutes on 2 cores; later runs reuse the binaries.
#
# Native CPU flags (AVX2/AVX-512 where the machine has them), but AMX off: a VM may
# list AMX in /proc/cpuinfo and still trap its instructions (ggml's AMX switches apply
# only without GGML_NATIVE, so the compiler is told too). Static, no curl.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$repo/.rbee-cache"
out="$cache/llama-server"
jobs="${JOBS:-2}"

if [[ -x "$out/llama-server" && -x "$out/llama-batched-bench" ]]; then
    echo "$out"
    exit 0
fi

venv="$cache/bench-venv"
if ! "$venv/bin/cmake" --version >/dev/null 2>&1; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet cmake >&2
fi

src="$cache/llama-cpp-python-src"
if [[ ! -f "$src/vendor/llama.cpp/CMakeLists.txt" ]]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    # The sdist, not a wheel; its build tools (scikit-build-core) may come as wheels,
    # or pip would compile cmake itself from source to read the package's metadata.
    "$venv/bin/pip" download --quiet --no-deps --no-binary llama-cpp-python \
        --dest "$work" llama-cpp-python >&2
    sdist="$(find "$work" -name 'llama_cpp_python-*.tar.gz' | head -n 1)"
    if [[ -z "$sdist" ]]; then
        echo "error: pip downloaded no llama-cpp-python sdist" >&2
        exit 1
    fi
    rm -rf "$src"
    mkdir -p "$src"
    tar -xzf "$sdist" -C "$src" --strip-components=1
fi

build="$cache/llama-server-build"
"$venv/bin/cmake" -S "$src/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
    "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" \
    "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" \
    -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF >&2
"$venv/bin/cmake" --build "$build" --target llama-server llama-batched-bench -j"$jobs" >&2

mkdir -p "$out"
for binary in llama-server llama-batched-bench; do
    cp "$build/bin/$binary" "$out/$binary.partial"
    mv "$out/$binary.partial" "$out/$binary"
done
# The version built, for the benchmark's report.
sed -n 's/^__version__ = "\(.*\)"/\1/p' "$src/llama_cpp/__init__.py" >"$out/version"
echo "$out"
