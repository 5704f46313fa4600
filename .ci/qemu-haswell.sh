#!/usr/bin/env bash
# The default build (AVX-512 kernels compiled in) on an emulated CPU without AVX-512, QEMU's Haswell model:
# gemm must pick its AVX2 kernels at run time there, and the trained traces must hold their snapshots.
# Emulation is ~150 times slower, so this runs the tolerance tests and one 20-step trace (about an hour on
# 2 cores); CI runs the AVX2 kernels natively instead (`--no-default-features`, .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-x86_64 >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user
fi
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="qemu-x86_64 -cpu Haswell" VAELAB_EXPECT_GEMM_KERNELS=avx2 \
    cargo test -p vaelab-tests --test all -- tolerance:: training::twenty_step_trace_is_deterministic
