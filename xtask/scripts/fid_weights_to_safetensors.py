"""Converts pytorch-fid's FID Inception weights (pt_inception-2015-12-05-6726825d.pth, a PyTorch
state dict) to the safetensors file vaelab's FID reads. Names are kept as they are
(`Mixed_5b.branch1x1.conv.weight`, `....bn.running_var`); values become contiguous float32;
`num_batches_tracked` counters are dropped (inference uses running statistics only).

usage: python fid_weights_to_safetensors.py pt_inception-2015-12-05-6726825d.pth inception-fid.safetensors
needs: pip install torch safetensors
"""
import sys

import torch
from safetensors.torch import save_file


def convert(src, dst):
    state = torch.load(src, map_location="cpu", weights_only=True)
    if "state_dict" in state:  # some re-saved copies wrap the weights
        state = state["state_dict"]
    tensors = {
        name: t.detach().to(torch.float32).contiguous()
        for name, t in state.items()
        if not name.endswith("num_batches_tracked")
    }
    missing = [n for n in ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.bn.running_var") if n not in tensors]
    if missing:
        sys.exit(f"{src}: not pytorch-fid's Inception state dict (missing {', '.join(missing)})")
    save_file(tensors, dst, metadata={"source": src.rsplit("/", 1)[-1], "format": "pytorch-fid inception v3"})
    print(f"wrote {dst}: {len(tensors)} tensors")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    convert(sys.argv[1], sys.argv[2])
