"""PyTorch reference: one IntroVAE training step (Huang et al. 2018) as vaelab's
`specs/bench/introvae64.ron` takes it: the beta-VAE conv architecture of torch_betavae_step.py
(conv 32-32-64-64 k4 s2 p1, fc 256, z=10, mirrored decoder, sigmoid images), batch 64, 64x64x1,
one Adam (lr 1e-3) for the encoder and one for the decoder, and the authors' update order
(hhb072/IntroVAE main.py): the encoder's update first, then the decoder's, its KLs taken by the
updated encoder. As in Soft-IntroVAE's official code (and vaelab), the decoder's phase decodes the
encoder pass's z again; the prior sample's graph is kept from the encoder's phase (the encoder
update does not touch the decoder). Prints median images/second over timed steps.

    python3 torch_introvae_step.py THREADS STEPS

Weights are the spec's: weight_rec 2.4, weight_kl 1, weight_neg 0.5, margin 40."""
import sys, torch, torch.nn as nn

from step_timing import report

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 12
torch.set_num_threads(threads)
torch.manual_seed(0)
Z, B, SIZE = 10, 64, 64
W_REC, W_KL, W_NEG, MARGIN = 2.4, 1.0, 0.5, 40.0

enc = nn.Sequential(
    nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
    nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(),
    nn.Flatten(), nn.Linear(64 * 16, 256), nn.ReLU(), nn.Linear(256, 2 * Z))
dec = nn.Sequential(
    nn.Linear(Z, 256), nn.ReLU(), nn.Linear(256, 64 * 16), nn.ReLU(), nn.Unflatten(1, (64, 4, 4)),
    nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
    nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Sigmoid())
opt_e = torch.optim.Adam(enc.parameters(), 1e-3)
opt_d = torch.optim.Adam(dec.parameters(), 1e-3)


def encode(x):
    s = enc(x)
    return s[:, :Z], s[:, Z:]


def kl(mu, lv):
    # KL(q(z|x) || N(0, I)) per image, averaged over the batch.
    return -0.5 * torch.sum(1 + lv - mu ** 2 - lv.exp()) / mu.shape[0]


def step(x):
    # Encoder phase.
    mu, lv = encode(x)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * lv)
    rec = dec(z)
    fake = dec(torch.randn(B, Z))
    loss_rec = ((rec - x) ** 2).sum() / B
    kl_rec = kl(*encode(rec.detach()))
    kl_fake = kl(*encode(fake.detach()))
    margin = torch.relu(MARGIN - kl_rec) + torch.relu(MARGIN - kl_fake)
    loss_e = W_REC * loss_rec + W_KL * (kl(mu, lv) + 0.5 * W_NEG * margin)
    opt_e.zero_grad(); opt_d.zero_grad()
    loss_e.backward()
    opt_e.step()
    # Decoder phase, its KLs by the updated encoder.
    rec = dec(z.detach())
    loss_g = W_REC * ((rec - x) ** 2).sum() / B + 0.5 * W_KL * (kl(*encode(rec)) + kl(*encode(fake)))
    opt_d.zero_grad()
    loss_g.backward()
    opt_d.step()


report(step, (torch.rand(B, 1, SIZE, SIZE) > 0.5).float(), steps, threads, SIZE)
