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
    let group = channel_group(c);
    // Per channel: (mean, biased variance, 1/√(variance + ε)).
    let mut stats = vec![(0.0f64, 0.0f64, 0.0f64); c];
    xhat.par_chunks_mut((n * group).max(1)).zip(stats.par_chunks_mut(group)).for_each(|(chs, sts)| {
        let g = sts.len();
        // `Iterator::sum` of f64 starts from −0.0; so do these sums, to give its values to the bit.
        let sums = grouped_sums(g, n, -0.0, |j, i| [chs[j * n + i] as f64]);
        let means: [f64; GROUP] = std::array::from_fn(|j| sums[j][0] / n as f64);
        let squares = grouped_sums(g, n, -0.0, |j, i| [(chs[j * n + i] as f64 - means[j]).powi(2)]);
        for (j, (ch, st)) in chs.chunks_mut(n.max(1)).zip(sts.iter_mut()).enumerate() {
            let (mean, var) = (means[j], squares[j][0] / n as f64);
            let inv_std = 1.0 / (var + eps as f64).sqrt();
            for v in ch.iter_mut() {
                *v = ((*v as f64 - mean) * inv_std) as f32;
            }
            *st = (mean, var, inv_std);
        }
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
            .par_chunks((n * group).max(1))
            .zip(xhat.par_chunks((n * group).max(1)))
            .flat_map_iter(|(dy, xs)| {
                let g = dy.len() / n.max(1);
                let s = grouped_sums(g, n, 0.0, |j, i| {
                    let d = dy[j * n + i] as f64;
                    [d, d * xs[j * n + i] as f64]
                });
                (0..g).map(move |j| (s[j][0], s[j][1]))
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

/// Channels whose sums run side by side (see [`grouped_sums`]).
const GROUP: usize = 4;

/// Channels per parallel task: [`GROUP`], or fewer when that would leave threads idle.
fn channel_group(c: usize) -> usize {
    (c / super::kernels::threads().max(1)).clamp(1, GROUP)
}

/// For each of the first `g` ≤ [`GROUP`] channels of a task (`n` values each), `init` plus the sum of
/// `term(channel, i)` over i = 0, 1, … in that order, in f64: the same sequential sum as a loop over
/// one channel, to the bit. A lone f64 sum waits out each addition's latency (measured: BatchNorm was
/// a tenth of a 128 px knee network's step); with the channels' sums interleaved, their additions
/// overlap. `K` sums per channel.
#[inline]
fn grouped_sums<const K: usize>(
    g: usize,
    n: usize,
    init: f64,
    mut term: impl FnMut(usize, usize) -> [f64; K],
) -> [[f64; K]; GROUP] {
    let mut acc = [[init; K]; GROUP];
    let mut add = |acc: &mut [[f64; K]; GROUP], j: usize, i: usize| {
        for (a, t) in acc[j].iter_mut().zip(term(j, i)) {
            *a += t;
        }
    };
    if g == GROUP {
        for i in 0..n {
            for j in 0..GROUP {
                add(&mut acc, j, i);
            }
        }
    } else {
        for i in 0..n {
            for j in 0..g {
                add(&mut acc, j, i);
            }
        }
    }
    acc
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

    /// `grouped_sums` gives each channel's sequential sum in f64 to the bit, for full and partial groups.
    /// The terms span 2^±60, so any other order of additions rounds differently (the kernel's f32 outputs
    /// hide most such differences: this checks the f64 sums themselves).
    #[test]
    fn grouped_sums_are_each_channels_sequential_sum() {
        let n = 1000;
        let term = |j: usize, i: usize| {
            let k = (j * n + i) as f64;
            [(k * 0.7).sin() * 2f64.powi(((j * n + i) * 7919 % 121) as i32 - 60), (k * 0.3).cos()]
        };
        for g in 1..=GROUP {
            let got = grouped_sums(g, n, -0.0, term);
            for (j, sums) in got.iter().enumerate().take(g) {
                for (k, sum) in sums.iter().enumerate() {
                    let want = (0..n).map(|i| term(j, i)[k]).sum::<f64>();
                    assert_eq!(sum.to_bits(), want.to_bits(), "group of {g}, channel {j}, sum {k}");
                }
            }
        }
    }

    /// The training kernel's output, batch statistics and gradients against a plain loop over one
    /// channel at a time (the kernel before its channels' sums were interleaved), bit for bit: for
    /// channel counts that fill groups of four and leave remainders, thread counts 1 and 2, values of
    /// every magnitude, and a channel of −0.0 only (where a sum's starting value shows).
    #[test]
    fn training_batch_norm_matches_one_channel_at_a_time_to_the_bit() {
        for (c, threads) in [(1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 1), (13, 2)] {
            let (hw, batch) = (50, 7);
            let n = hw * batch;
            let len = c * n;
            // Magnitudes 1e-6 to 1e6, so the f64 sums round; their f32 outputs hide most changes of summation
            // order, which `grouped_sums_are_each_channels_sequential_sum` checks instead.
            let mut x: Vec<f32> =
                (0..len).map(|i| ((i as f32 * 0.37).sin() * 3.7).powi(3) * 10f32.powi((i % 13) as i32 - 6)).collect();
            if c > 2 {
                x[2 * n..3 * n].fill(-0.0);
            }
            let gamma: Vec<f32> = (0..c).map(|j| 0.5 + j as f32 * 0.25).collect();
            let beta: Vec<f32> = (0..c).map(|j| j as f32 * -0.125).collect();
            let dy: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos() * 10f32.powi((i % 5) as i32 - 2)).collect();
            let eps = 1e-5f32;

            // The reference: each channel on its own, sums in index order.
            let mut want_y = vec![0f32; len];
            let mut want_xhat = vec![0f32; len];
            let (mut want_mean, mut want_var) = (vec![0f32; c], vec![0f32; c]);
            let (mut want_gx, mut want_gw, mut want_gb) = (vec![0f32; len], vec![0f32; c], vec![0f32; c]);
            for ch in 0..c {
                let xs = &x[ch * n..][..n];
                let mean = xs.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
                let var = xs.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
                let inv_std = 1.0 / (var + eps as f64).sqrt();
                for i in 0..n {
                    let h = ((xs[i] as f64 - mean) * inv_std) as f32;
                    want_xhat[ch * n + i] = h;
                    want_y[ch * n + i] = gamma[ch] * h + beta[ch];
                }
                (want_mean[ch], want_var[ch]) = (mean as f32, var as f32);
                let (d, h) = (&dy[ch * n..][..n], &want_xhat[ch * n..][..n]);
                let (s, sx) =
                    d.iter().zip(h).fold((0.0f64, 0.0f64), |(s, sx), (d, x)| (s + *d as f64, sx + *d as f64 * *x as f64));
                want_gb[ch] += s as f32;
                want_gw[ch] += sx as f32;
                let scale = gamma[ch] as f64 * inv_std;
                for i in 0..n {
                    want_gx[ch * n + i] += (scale * (d[i] as f64 - s / n as f64 - h[i] as f64 * (sx / n as f64))) as f32;
                }
            }

            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let (y, stats, gx, gw, gb) = pool.install(|| {
                let dev = Cpu::default();
                let xt = dev.tensor_from_vec(x.clone(), (c * hw, batch));
                let wt = dev.tensor_from_vec(gamma.clone(), (c,));
                let bt = dev.tensor_from_vec(beta.clone(), (c,));
                let dyt = dev.tensor_from_vec(dy.clone(), (c * hw, batch));
                let (y, stats) = batch_norm_train(xt.leaky_trace(), wt.leaky_trace(), bt.leaky_trace(), c, eps, None);
                let yv = y.as_vec();
                let grads = (y * dyt).sum::<(), _>().backward();
                (yv, stats, grads.get(&xt).as_vec(), grads.get(&wt).as_vec(), grads.get(&bt).as_vec())
            });
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
            let case = format!("{c} channels, {threads} threads");
            assert_eq!(bits(&y), bits(&want_y), "output, {case}");
            assert_eq!(bits(&stats.mean), bits(&want_mean), "mean, {case}");
            assert_eq!(bits(&stats.var), bits(&want_var), "variance, {case}");
            assert_eq!(bits(&gx), bits(&want_gx), "input gradient, {case}");
            assert_eq!(bits(&gw), bits(&want_gw), "scale gradient, {case}");
            assert_eq!(bits(&gb), bits(&want_gb), "shift gradient, {case}");
        }
    }

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
