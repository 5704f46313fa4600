//! A fused CPU BatchNorm in training mode (batch statistics), with the activation after it fused in.
//! dfdx's composition (mean, centre, square, mean, sqrt, divide, scale, shift) is eight passes, each
//! single-threaded with a tensor of its own, and as many again backward: measured, most of a GAN
//! step's generator time. Here it is one parallel pass per channel each way, and the backward pass
//! keeps only the normalised values x̂ and one bit per value for the activation.
//!
//! Formulas (Ioffe & Szegedy 2015, Algorithm 1 and its backward pass), per channel over the
//! n = H·W·B values of a batch:
//!   μ = Σx/n, σ² = Σ(x − μ)²/n (biased), x̂ = (x − μ)/√(σ² + ε), y = γx̂ + β;
//!   dβ = Σdy, dγ = Σdy·x̂, dx = γ/√(σ² + ε) · (dy − dβ/n − x̂·dγ/n).
//! Sums run in f64 (dfdx's run in f32), so values agree with the generic path to a tolerance, not
//! to the bit; `tests/all/gradients.rs` checks forward and every gradient against it.

use super::cpu_values::{dense, free_grad, grad_slices};
use super::fused_act::{activate_in_place, activation_grad_in_place};
use super::{BatchStats, Flat, Tensor2, OT};
use dfdx::prelude::*;
use rayon::prelude::*;

/// BatchNorm over `c` channels of x (C·HW, B) with scale `w` and shift `b` (C), then `act` if any
/// (`Some(slope)`: LeakyReLU, ReLU for 0). Returns the output and the batch statistics.
pub fn batch_norm_train(
    x: Tensor2<Cpu>,
    w: Flat<Cpu, OT<Cpu>>,
    b: Flat<Cpu, OT<Cpu>>,
    c: usize,
    eps: f32,
    act: Option<f32>,
) -> (Tensor2<Cpu>, BatchStats) {
    let shape = *x.shape();
    let dev = x.device().clone();
    let (x, tx) = x.split_tape();
    let (w, tw) = w.split_tape();
    let (b, tb) = b.split_tape();
    let (gamma, beta) = (dense(&w), dense(&b));
    // x̂ is computed in the input's copy; the input itself is not kept.
    let mut xhat = dense(&x);
    let xg = x.ghost();
    drop(x);
    let n = xhat.len() / c.max(1);
    // Per channel: (mean, biased variance, 1/√(variance + ε)).
    let mut stats = vec![(0.0f64, 0.0f64, 0.0f64); c];
    xhat.par_chunks_mut(n).zip(stats.par_iter_mut()).for_each(|(ch, st)| {
        let mean = ch.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
        let var = ch.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let inv_std = 1.0 / (var + eps as f64).sqrt();
        for v in ch.iter_mut() {
            *v = ((*v as f64 - mean) * inv_std) as f32;
        }
        *st = (mean, var, inv_std);
    });
    // Written once, in parallel, without zeroing first (a serial pass over fresh memory otherwise).
    let mut y: Vec<f32> = Vec::with_capacity(xhat.len());
    y.spare_capacity_mut().par_chunks_mut(n).zip(xhat.par_chunks(n)).enumerate().for_each(|(ch, (ys, xs))| {
        let (g, s) = (gamma[ch], beta[ch]);
        for (y, x) in ys.iter_mut().zip(xs) {
            y.write(g * x + s);
        }
    });
    // SAFETY: the chunks above cover all xhat.len() values of the capacity, each written once.
    unsafe { y.set_len(xhat.len()) };
    let mask = act.map(|slope| (activate_in_place(&mut y, slope), slope));
    let batch_stats =
        BatchStats { mean: stats.iter().map(|s| s.0 as f32).collect(), var: stats.iter().map(|s| s.1 as f32).collect() };
    let out = dev.tensor_from_vec(y, shape);
    let (wg, bg, og) = (w.ghost(), b.ghost(), out.ghost());
    let mut tape = tx.merge(tw).merge(tb);
    tape.add_backward_op(move |grads| {
        let (gx, gw, gb, gy) = grad_slices!(grads, [&xg, &wg, &bg, &og]);
        if let Some((mask, slope)) = &mask {
            activation_grad_in_place(gy, mask, *slope);
        }
        let gy: &[f32] = gy;
        let sums: Vec<(f64, f64)> = gy
            .par_chunks(n)
            .zip(xhat.par_chunks(n))
            .map(|(dy, xs)| {
                dy.iter().zip(xs).fold((0.0f64, 0.0f64), |(s, sx), (d, x)| (s + *d as f64, sx + *d as f64 * *x as f64))
            })
            .collect();
        for (ch, (s, sx)) in sums.iter().enumerate() {
            gb[ch] += *s as f32;
            gw[ch] += *sx as f32;
        }
        gx.par_chunks_mut(n).zip(gy.par_chunks(n)).zip(xhat.par_chunks(n)).enumerate().for_each(|(ch, ((gx, dy), xs))| {
            let (s, sx) = sums[ch];
            let (mean_dy, mean_dyx) = (s / n as f64, sx / n as f64);
            let scale = gamma[ch] as f64 * stats[ch].2;
            for ((a, d), x) in gx.iter_mut().zip(dy).zip(xs) {
                *a += (scale * (*d as f64 - mean_dy - *x as f64 * mean_dyx)) as f32;
            }
        });
        free_grad!(grads, &og)
    });
    (out.put_tape(tape), batch_stats)
}
