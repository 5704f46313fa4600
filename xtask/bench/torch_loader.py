"""The torchvision side of `cargo xtask bench loader`: one pass over an ImageFolder of 16-bit PNGs,
decoded with Pillow, resized to SIZE×SIZE (bilinear, antialiased, as torchvision does for PIL images),
scaled to [0, 1] floats and batched by a DataLoader with WORKERS worker processes.

usage: torch_loader.py ROOT SIZE BATCH WORKERS
prints: torchvision loader: N images in T s => R img/s
"""
import sys
import time

import numpy as np
import torch
from PIL import Image
from torchvision import datasets, transforms


def load_16bit(path):
    # Pillow opens 16-bit grey PNG as mode "I;16"; resampling filters need "I" or "F".
    with Image.open(path) as img:
        return img.convert("I").convert("F")


def to_unit_tensor(img):
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 65535.0).unsqueeze(0)


def main():
    root, size, batch, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    transform = transforms.Compose([transforms.Resize((size, size)), transforms.Lambda(to_unit_tensor)])
    ds = datasets.ImageFolder(root, loader=load_16bit, transform=transform)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=False)
    n, checksum = 0, 0.0
    for x, _ in loader:
        n += x.shape[0]
        checksum += float(x[0, 0, 0, 0])
    dt = time.perf_counter() - t0
    print(f"torchvision loader workers={workers}: {n} images in {dt:.3f}s => {n / dt:.0f} img/s")


if __name__ == "__main__":
    main()
