"""The pytorch-msssim side of `cargo xtask bench msssim`: MS-SSIM of PAIRS grey SIZE×SIZE image pairs
(a closed-form pattern that vaelab's benchmark computes too), data range 1, 5 scales, on CPU.

usage: torch_msssim.py PAIRS SIZE THREADS
prints: pytorch-msssim: N pairs in T s => R pairs/s (mean V)
"""
import math
import sys
import time

import torch
from pytorch_msssim import ms_ssim


def pair_images(pairs, size):
    i = torch.arange(pairs, dtype=torch.float64)[:, None, None]
    y = torch.arange(size, dtype=torch.float64)[None, :, None]
    x = torch.arange(size, dtype=torch.float64)[None, None, :]
    a = 0.5 + 0.35 * torch.sin(0.05 * (i + 1) * x + 0.07 * y) * torch.cos(0.03 * y + 0.1 * i)
    b = (a + 0.08 * torch.sin(0.9 * x * y + i)).clamp(0, 1)
    return a.float().unsqueeze(1), b.float().unsqueeze(1)


def main():
    pairs, size, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    a, b = pair_images(pairs, size)
    ms_ssim(a[:2], b[:2], data_range=1.0, size_average=False)  # warm-up
    t0 = time.perf_counter()
    with torch.no_grad():
        values = torch.cat([ms_ssim(a[k:k + 16], b[k:k + 16], data_range=1.0, size_average=False) for k in range(0, pairs, 16)])
    dt = time.perf_counter() - t0
    print(f"pytorch-msssim: {pairs} pairs in {dt:.3f}s => {pairs / dt:.1f} pairs/s (mean {values.double().mean().item():.9f})")


if __name__ == "__main__":
    main()
