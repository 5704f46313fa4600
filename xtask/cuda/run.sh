#!/usr/bin/env bash
# vaelab's CUDA bundle, made by `cargo xtask cuda-build`: this script sets up the libraries on the
# machine it runs on, then runs vaelab.
#
#   run.sh check [--dry-run]   the device check (CPU/CUDA parity, a 200-step trace, throughput and peak
#                              GPU memory beside PyTorch); writes its report under $OUT (or ./device-check)
#   run.sh ARGS...             vaelab ARGS..., e.g. run.sh train specs/shapes/beta-vae.ron --device cuda
#
# Libraries: cuBLAS 13, cuRAND 10 and NVRTC 13 are taken from PyTorch's install (python3 is asked where
# its nvidia/*/lib folders are), or from $VAELAB_CUDA_LIBS. The driver's libcuda.so.1 is the system's;
# where there is none, the bundle's stub answers every call with CUDA_ERROR_STUB_LIBRARY and vaelab says
# that this machine cannot run --device cuda.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if [ -z "${VAELAB_CUDA_LIBS:-}" ]; then
    VAELAB_CUDA_LIBS="$(python3 -c '
import glob, os, torch
site = os.path.dirname(os.path.dirname(torch.__file__))
dirs = glob.glob(os.path.join(site, "nvidia", "*", "lib")) + glob.glob(os.path.join(site, "nvidia", "*", "*", "lib"))
print(":".join(sorted(d for d in dirs if os.path.isdir(d)) + [os.path.join(site, "torch", "lib")]))
' 2>/dev/null || true)"
fi
export LD_LIBRARY_PATH="${VAELAB_CUDA_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The driver: the loader's cache, the library path, or the folders drivers are mounted in.
driver_dir=""
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
    for d in ${LD_LIBRARY_PATH//:/ } /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/wsl/lib; do
        if [ -e "$d/libcuda.so.1" ]; then driver_dir="$d"; break; fi
    done
    if [ -n "$driver_dir" ]; then
        export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$driver_dir"
    else
        export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$here/stub"
    fi
fi

# dfdx compiles a few kernels at run time (NVRTC) with include folders whose paths were fixed when the
# binary was built; put the bundle's copies of those headers there.
# shellcheck source=/dev/null
. "$here/paths.env"
for pair in "$CUDA_INCLUDE_DIR:include/cuda" "$DFDX_OUT_DIR:include/dfdx"; do
    dst="${pair%%:*}" src="$here/${pair#*:}"
    if [ ! -e "$dst/$(ls "$src" | head -1)" ]; then
        mkdir -p "$dst" 2>/dev/null && cp -r "$src"/. "$dst"/ 2>/dev/null ||
            echo "run.sh: cannot write $dst; kernels compiled at run time may fail" >&2
    fi
done

vaelab="$here/vaelab"
if [ "${1:-}" != "check" ]; then
    exec "$vaelab" "$@"
fi
shift
dry=""
[ "${1:-}" = "--dry-run" ] && dry="--dry-run"
out="${OUT:-$PWD/device-check}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
report="$out/report.md"
cd "$here"
start=$(date +%s)

{
    echo "# vaelab device check"
    echo
    echo "- bundle: $(cat "$here/BUILD.txt" | tr '\n' ' ')"
    echo "- machine: $(nproc) CPU cores; $(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
    echo "- libraries: LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "- driver: $( (ldconfig -p 2>/dev/null | grep -m1 'libcuda\.so\.1 ') || echo "${driver_dir:-none, so the stub of the bundle}")"
    echo
    echo "## Parity: CPU vs CUDA"
    echo
} > "$report"

status=0
# A dry run shows the path works on the CPU, with short runs (20 trace steps instead of 200).
short=""
[ -n "$dry" ] && short="--trace-steps 20 --objective-steps 1"
# shellcheck disable=SC2086
"$vaelab" device-check --out "$work/check" --specs "$here/specs" $dry $short > "$out/check.log" 2>&1 || status=$?
cat "$work/check/device-check.md" >> "$report" 2>/dev/null || { echo "device-check failed (exit $status):"; tail -20 "$out/check.log"; } >> "$report"
cp "$work/check/device-check.json" "$out/" 2>/dev/null || true

# Throughput and peak GPU memory, vaelab and PyTorch side by side in this one call. Peak memory is read
# the same way for both: nvidia-smi's memory.used, sampled every 20 ms, above its value before the run
# (so it includes each process's CUDA context).
peak_of() {
    local log="$1"; shift
    local base
    base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1 || echo 0)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 20 > "$work/mem" 2>/dev/null &
    local sampler=$!
    "$@" >> "$log" 2>&1 || echo "FAILED: $*" >> "$log"
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    echo $(( $(sort -n "$work/mem" | tail -1 || echo 0) - base ))
}
rate() { grep -o '=> [0-9.]* img/s' "$1" | tail -1 | grep -o '[0-9.]*' | head -1; }
{
    echo
    echo "## Throughput: β-VAE training step, batch 64"
    echo
} >> "$report"
if [ -n "$dry" ]; then
    "$vaelab" bench specs/bench/betavae64.ron --device cpu --steps 3 > "$out/bench.log" 2>&1
    echo "Dry run: the CPU bench ran ($(rate "$out/bench.log") img/s on the CPU); nothing ran on CUDA." >> "$report"
else
    echo "| size | vaelab img/s | PyTorch img/s | ratio | vaelab peak GPU MiB | PyTorch peak GPU MiB |" >> "$report"
    echo "|---|---|---|---|---|---|" >> "$report"
    for size in 64 256; do
        : > "$work/v.log"; : > "$work/t.log"
        vmem=$(peak_of "$work/v.log" "$vaelab" bench "specs/bench/betavae$size.ron" --device cuda:0 --steps 40)
        tmem=$(peak_of "$work/t.log" python3 "$here/torch_betavae_step.py" "$(nproc)" 40 "$size" cuda)
        cat "$work/v.log" "$work/t.log" >> "$out/bench.log"
        v=$(rate "$work/v.log" || true) t=$(rate "$work/t.log" || true)
        ratio=$(python3 -c "print(f'{$v/$t:.2f}')" 2>/dev/null || echo "–")
        echo "| $size | ${v:-failed} | ${t:-failed} | $ratio | $vmem | $tmem |" >> "$report"
    done
fi
echo >> "$report"
echo "Wall time of the check: $(( $(date +%s) - start )) s." >> "$report"
rm -rf "$work"
cat "$report"
exit $status
