#!/usr/bin/env bash
# Assembles a CUDA "toolkit" for building vaelab with `--features cuda` on a machine with no GPU and no
# CUDA toolkit: NVIDIA's own PyPI wheels (NVRTC, runtime headers, cuBLAS, cuRAND) plus three things of
# vaelab's: an nvcc front end on NVRTC, an nvidia-smi stand-in, and a stub libcuda.so.1 to link against.
#
#   xtask/cuda/toolkit.sh DIR
#
# DIR/include, DIR/lib and DIR/bin then form a CUDA_ROOT that dfdx's and cudarc's build scripts accept.
# The wheels are CUDA 13.0, the version of the driver and of PyTorch's libraries on the device machine
# (driver 580, torch cu130): PTX from a newer NVRTC would name a PTX ISA that driver cannot load, and
# the binary links the sonames those libraries carry (libcublas.so.13, libcurand.so.10, libnvrtc.so.13).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="${1:?usage: toolkit.sh DIR}"
mkdir -p "$root"/{wheels,bin,lib}
root="$(cd "$root" && pwd)"

wheels=("nvidia-cuda-nvrtc==13.0.88" "nvidia-cuda-runtime==13.0.96" "nvidia-curand==10.4.0.35")
# cuBLAS (420 MB) is only needed to link a binary; `toolkit.sh DIR --kernels-only` skips it.
[[ "${2:-}" == "--kernels-only" ]] || wheels+=("nvidia-cublas==13.0.2.14")
if ! ls "$root"/wheels/*.whl >/dev/null 2>&1 || [ "$(ls "$root"/wheels/*.whl | wc -l)" -lt "${#wheels[@]}" ]; then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 --platform manylinux_2_5_x86_64 \
        -d "$root/wheels" "${wheels[@]}"
fi
for w in "$root"/wheels/*.whl; do
    stamp="$root/wheels/.$(basename "$w").unpacked"
    [ -e "$stamp" ] || { python3 -m zipfile -e "$w" "$root/unpacked" && touch "$stamp"; }
done
cuda="$root/unpacked/nvidia/cu13"
ln -sfn "$cuda/include" "$root/include"

# The linker looks for libX.so; the binary records the soname each file carries.
for f in "$cuda"/lib/*.so.*; do ln -sf "$f" "$root/lib/$(basename "$f")"; done
for name in nvrtc cublas cublasLt curand; do
    real=$(ls "$root"/lib/lib$name.so.[0-9]* 2>/dev/null | head -1 || true)
    [ -n "$real" ] && ln -sf "$(basename "$real")" "$root/lib/lib$name.so"
done

install -m 755 "$here/nvcc" "$here/nvidia-smi" "$root/bin/"
rm -rf "$root/bin/include" && cp -r "$here/include" "$root/bin/include"

# The stub driver: every cu* function that cudarc declares, each returning CUDA_ERROR_STUB_LIBRARY (34),
# under the soname of the real driver, so the binary asks for libcuda.so.1 wherever it runs.
sys_rs=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.9.15/src/driver/sys.rs | head -1)
python3 "$here/stub_libcuda.py" "$sys_rs" > "$root/lib/stub_libcuda.c"
mkdir -p "$root/lib/stub"
gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$root/lib/stub/libcuda.so.1" "$root/lib/stub_libcuda.c"
ln -sf stub/libcuda.so.1 "$root/lib/libcuda.so"
echo "CUDA toolkit for vaelab in $root ($(ls "$root"/lib | wc -l) library entries)"
