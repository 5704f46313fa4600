"""PyTorch reference: one training step of the standard beta-VAE conv architecture
(Higgins et al. / Locatello et al.: conv 32-32-64-64 k4 s2 p1, fc 256, z=10, mirrored decoder),
batch 64, SIZExSIZEx1, Adam. Prints median images/second over timed steps.

    python3 torch_betavae_step.py THREADS STEPS SIZE [cpu|cuda]

The CPU side is shared/bench/torch_betavae_step.py's protocol; on CUDA each step ends with
torch.cuda.synchronize() (as vaelab's bench does), and the peak memory PyTorch's allocator held is
printed too. vaelab's side: `vaelab bench specs/bench/betavae64.ron` (or betavae256.ron)."""
import sys, time, torch, torch.nn as nn, torch.nn.functional as F

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 12
size = int(sys.argv[3]) if len(sys.argv) > 3 else 64
device = sys.argv[4] if len(sys.argv) > 4 else "cpu"
torch.set_num_threads(threads)
torch.manual_seed(0)
# vaelab computes in plain float32; keep cuBLAS/cuDNN from using TF32 so both do the same arithmetic.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


class BetaVAE(nn.Module):
    def __init__(self, z=10):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU())
        s = size // 16
        self.s = s
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64 * s * s, 256), nn.ReLU(), nn.Linear(256, 2 * z))
        self.dfc = nn.Sequential(nn.Linear(z, 256), nn.ReLU(), nn.Linear(256, 64 * s * s), nn.ReLU())
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))
        self.z = z

    def forward(self, x):
        st = self.fc(self.enc(x)); mu, lv = st[:, :self.z], st[:, self.z:]
        zz = mu + torch.randn_like(mu) * torch.exp(0.5 * lv)
        logits = self.dec(self.dfc(zz).view(-1, 64, self.s, self.s))
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction='sum') / x.shape[0]
        kl = -0.5 * torch.sum(1 + lv - mu ** 2 - lv.exp()) / x.shape[0]
        return rec + kl


def sync():
    if device.startswith("cuda"):
        torch.cuda.synchronize()


m = BetaVAE().to(device); opt = torch.optim.Adam(m.parameters(), 1e-4)
x = (torch.rand(64, 1, size, size) > 0.5).float().to(device)
ts = []
for i in range(steps):
    sync(); t0 = time.perf_counter(); opt.zero_grad(); loss = m(x); loss.backward(); opt.step(); sync()
    dt = time.perf_counter() - t0
    if i >= 2: ts.append(dt)
ts.sort(); med = ts[len(ts) // 2]
mem = f" (peak allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB)" if device.startswith("cuda") else ""
print(f"torch {torch.__version__} {device} threads={threads} size={size}: median step {med:.4f}s => {64/med:.0f} img/s{mem}")
