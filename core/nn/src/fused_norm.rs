//! A fused CPU BatchNorm in training mode (batch statistics), with the activation after it fused in,
//! and one for inference passes (running statistics, no backward op).
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
use super::{BatchStats, Flat, GradNeeds, Tensor2, OT};
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

/// BatchNorm with the running statistics `mean` and `var` (evaluation mode) over `c` channels:
/// y = (x − mean)/√(var + ε)·w + b, in f32 in that order, as the generic composition
/// ([`super::batch_norm_eval_generic`]) computes it, so the values are the same to the bit (the test
/// below checks). In an inference pass (`needs.none()`) that is one parallel pass with no backward op,
/// where the composition made six single-threaded passes, each with a tensor of its own (measured:
/// 17 % of a knee model's evaluation); otherwise the composition, which records its gradients.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_eval(
    x: Tensor2<Cpu>,
    needs: GradNeeds,
    w: Flat<Cpu, OT<Cpu>>,
    b: Flat<Cpu, OT<Cpu>>,
    mean: &Flat<Cpu>,
    var: &Flat<Cpu>,
    c: usize,
    eps: f32,
) -> Tensor2<Cpu> {
    if !needs.none() {
        return super::batch_norm_eval_generic(x, w, b, mean, var, c, eps);
    }
    let shape = *x.shape();
    let dev = x.device().clone();
    let (x, tx) = x.split_tape();
    let (w, tw) = w.split_tape();
    let (b, tb) = b.split_tape();
    let (gamma, beta, mu, var) = (dense(&w), dense(&b), dense(mean), dense(var));
    let mut y = dense(&x);
    drop(x);
    let n = y.len() / c.max(1);
    y.par_chunks_mut(n.max(1)).enumerate().for_each(|(ch, values)| {
        let sd = (var[ch] + eps).sqrt();
        let (m, g, s) = (mu[ch], gamma[ch], beta[ch]);
        for v in values {
            *v = (*v - m) / sd * g + s;
        }
    });
    dev.tensor_from_vec(y, shape).put_tape(tx.merge(tw).merge(tb))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inference kernel gives the generic composition's values to the bit, on values of every
    /// magnitude and sign (and a tiny variance, where ε matters).
    #[test]
    fn inference_batch_norm_matches_the_composition_to_the_bit() {
        let dev = Cpu::default();
        let (c, hw, batch) = (3, 7, 5);
        let wave = |n: usize, k: f32| (0..n).map(|i| ((i as f32 * k).sin() * 3.7).powi(3)).collect::<Vec<f32>>();
        let flat = |v: Vec<f32>| dev.tensor_from_vec(v.clone(), (v.len(),));
        let x = dev.tensor_from_vec(wave(c * hw * batch, 0.37), (c * hw, batch));
        let (w, b) = (flat(vec![0.5, -1.25, 3.0]), flat(vec![0.1, 0.0, -7.5]));
        let (mean, var) = (flat(vec![0.3, -2.0, 11.0]), flat(vec![1.5, 1e-7, 40.0]));
        let none = GradNeeds { input: false, params: false };
        let fused = batch_norm_eval(x.retaped(), none, w.retaped(), b.retaped(), &mean, &var, c, 1e-5).as_vec();
        let generic = super::super::batch_norm_eval_generic(x.retaped(), w.retaped(), b.retaped(), &mean, &var, c, 1e-5).as_vec();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
        assert_eq!(bits(&fused), bits(&generic));
        assert!(fused.iter().any(|v| v.abs() > 100.0), "the case should reach large values");
    }
}
