"""PyTorch reference: one step of the plain GAN of vaelab's `specs/bench/gan64.ron`
(`specs/shapes/gan.ron`): a DCGAN generator from 10-d N(0, I) noise with BatchNorm after every
layer but the output and a sigmoid head, a discriminator with spectral normalisation (Miyato et al.
2018, one power iteration per step) on every weight layer and LeakyReLU 0.2, the non-saturating
loss, batch 64, 64x64x1, Adam lr 2e-4 beta1 0.5 on both sides. Update order as DCGAN's reference
training loop: fakes made once; the discriminator's update on them detached, then the generator's
through the updated discriminator. Prints median images/second over timed steps.

    python3 torch_gan_step.py THREADS STEPS"""
import sys, torch, torch.nn as nn, torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm as sn

from step_timing import report

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 12
torch.set_num_threads(threads)
torch.manual_seed(0)
Z, B, SIZE = 10, 64, 64

gen = nn.Sequential(
    nn.Linear(Z, 256), nn.BatchNorm1d(256), nn.ReLU(),
    nn.Linear(256, 1024), nn.BatchNorm1d(1024), nn.ReLU(), nn.Unflatten(1, (64, 4, 4)),
    nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
    nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
    nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
    nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Sigmoid())
disc = nn.Sequential(
    sn(nn.Conv2d(1, 32, 4, 2, 1)), nn.LeakyReLU(0.2),
    sn(nn.Conv2d(32, 64, 4, 2, 1)), nn.LeakyReLU(0.2),
    sn(nn.Conv2d(64, 64, 4, 2, 1)), nn.LeakyReLU(0.2),
    nn.Flatten(), sn(nn.Linear(64 * 64, 1)))
opt_g = torch.optim.Adam(gen.parameters(), 2e-4, betas=(0.5, 0.999))
opt_d = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999))


def step(x):
    fake = gen(torch.randn(B, Z))
    real_logits, fake_logits = disc(x), disc(fake.detach())
    d_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    opt_d.zero_grad(); d_loss.backward(); opt_d.step()
    g_loss = F.softplus(-disc(fake)).mean()
    opt_g.zero_grad(); g_loss.backward(); opt_g.step()


report(step, (torch.rand(B, 1, SIZE, SIZE) > 0.5).float(), steps, threads, SIZE)
