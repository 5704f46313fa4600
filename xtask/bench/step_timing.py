"""Timing shared by the PyTorch step scripts: run `step(x)` STEPS times, skip two warm-up steps,
and print the median step and images per second in the line `cargo xtask bench` reads."""
import time
import torch


def report(step, x, steps, threads, size):
    ts = []
    for i in range(steps):
        t0 = time.perf_counter(); step(x); dt = time.perf_counter() - t0
        if i >= 2: ts.append(dt)
    ts.sort(); med = ts[len(ts) // 2]
    batch = x.shape[0]
    print(f"torch {torch.__version__} cpu threads={threads} size={size}: median step {med:.4f}s => {batch/med:.0f} img/s")
