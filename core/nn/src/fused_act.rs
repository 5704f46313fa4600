//! A fused CPU LeakyReLU: one parallel pass each way. dfdx's LeakyReLU (`prelu`) is a comparison,
//! a scale and a `choose`, each a single-threaded pass over memory with a tensor of its own
//! (measured: 22 % of a GAN step). The backward pass needs only the sign of each input, so that is
//! kept as one bit per value, not the input itself: the layer's input can be freed as soon as the
//! forward pass is done with it. The op computes ReLU too (`slope` = 0), but a lone ReLU layer keeps
//! dfdx's `relu`: one pass over a buffer it reuses in place, faster than the copy this op needs
//! (measured: the β-VAE's forward pass took 57 ms this way against 44 ms). A ReLU or LeakyReLU right
//! after a convolution is fused into it instead (`activate_in_place`, `activation_grad_in_place`).

use super::cpu_values::{dense, grad_slices};
use super::Tensor2;
use dfdx::prelude::*;
use rayon::prelude::*;

/// Values per parallel task: a multiple of 64 (one mask word), large enough to amortise rayon.
const CHUNK: usize = 1 << 14;

/// ReLU (`slope` = 0: y = max(x, 0), gradient dy where x > 0) or LeakyReLU (y = `slope`·x where
/// x < 0, else x; gradient `slope`·dy where x < 0, else dy): dfdx's `relu` and `prelu` to the bit,
/// as the test below checks.
pub fn leaky_relu(x: Tensor2<Cpu>, slope: f32) -> Tensor2<Cpu> {
    let shape = *x.shape();
    let dev = x.device().clone();
    let (x, tape) = x.split_tape();
    let mut y = dense(&x);
    let xg = x.ghost();
    drop(x);
    let mask = activate_in_place(&mut y, slope);
    let out = dev.tensor_from_vec(y, shape);
    let og = out.ghost();
    let mut tape = tape;
    tape.add_backward_op(move |grads| {
        let (gx, gy) = grad_slices!(grads, [&xg, &og]);
        let gy: &[f32] = gy;
        gx.par_chunks_mut(CHUNK).zip(gy.par_chunks(CHUNK)).zip(mask.par_chunks(CHUNK / 64)).for_each(|((gx, gy), words)| {
            for ((gx, gy), word) in gx.chunks_mut(64).zip(gy.chunks(64)).zip(words) {
                for ((a, d), f) in gx.iter_mut().zip(gy).zip(factors(*word, slope)) {
                    *a += d * f;
                }
            }
        });
        Ok(())
    });
    out.put_tape(tape)
}

/// The derivatives of the activation at the 64 values of a mask word: 1 where the input passed, else
/// `slope` (d·1 is d exactly, so gradients are dfdx's to the bit). Built in groups of eight with one
/// mask byte each, a shape the compiler vectorises; the gradient loops then multiply by an array
/// (a loop that shifted the word per value ran value by value: 4 % of a GAN step).
#[inline(always)]
fn factors(word: u64, slope: f32) -> [f32; 64] {
    let mut f = [0.0; 64];
    for (j, group) in f.chunks_exact_mut(8).enumerate() {
        let byte = (word >> (8 * j)) as u8;
        for (i, v) in group.iter_mut().enumerate() {
            *v = if (byte >> i) & 1 != 0 { 1.0 } else { slope };
        }
    }
    f
}

/// Applies ReLU (`slope` = 0) or LeakyReLU to `y` in place, in parallel, and returns which values
/// passed unchanged, one bit each: all that the backward pass needs. The fused convolutions call it
/// on their own output, so the pre-activation values are never stored.
pub fn activate_in_place(y: &mut [f32], slope: f32) -> Vec<u64> {
    let mut mask = vec![0u64; y.len().div_ceil(64)];
    y.par_chunks_mut(CHUNK).zip(mask.par_chunks_mut(CHUNK / 64)).for_each(|(ys, words)| {
        for (ys, word) in ys.chunks_mut(64).zip(words) {
            *word = activate_64(ys, slope);
        }
    });
    mask
}

/// [`activate_in_place`] without the mask, on one thread: what an inference pass needs, applied by
/// the convolutions to each tile of their output while it is still in cache (a separate pass over a
/// layer's whole output was 7 % of an encoder's inference time in evaluation). Same values to the bit.
pub fn activate(y: &mut [f32], slope: f32) {
    for ys in y.chunks_mut(64) {
        activate_64(ys, slope);
    }
}

/// ReLU (`slope` = 0) or LeakyReLU on up to 64 values, returning which passed unchanged: the one
/// definition of "passes" that [`activate_in_place`] and [`activate`] share.
#[inline(always)]
fn activate_64(ys: &mut [f32], slope: f32) -> u64 {
    if slope == 0.0 {
        activate_word(ys, |v| v > 0.0, 0.0)
    } else {
        activate_word(ys, |v| v >= 0.0 || v.is_nan(), slope)
    }
}

/// Up to 64 values: those for which `passes` holds stay, the others become `slope`·v (0 for ReLU, so
/// that −0 and NaN give 0, as dfdx's `max(x, 0)` does). Groups of eight with one byte of mask each,
/// a shape the compiler turns into vector compares and a movemask (measured: the per-value loop
/// with a shifted bit was 15 % of an encoder's inference time).
#[inline(always)]
fn activate_word(ys: &mut [f32], passes: impl Fn(f32) -> bool, slope: f32) -> u64 {
    let mut bits = 0u64;
    let done = ys.len() / 8 * 8;
    let mut groups = ys.chunks_exact_mut(8);
    for (j, group) in groups.by_ref().enumerate() {
        let mut byte = 0u8;
        for (i, v) in group.iter_mut().enumerate() {
            let p = passes(*v);
            byte |= (p as u8) << i;
            *v = if p {
                *v
            } else if slope == 0.0 {
                0.0
            } else {
                *v * slope
            };
        }
        bits |= (byte as u64) << (8 * j);
    }
    for (i, v) in groups.into_remainder().iter_mut().enumerate() {
        let p = passes(*v);
        bits |= (p as u64) << (done + i);
        *v = if p {
            *v
        } else if slope == 0.0 {
            0.0
        } else {
            *v * slope
        };
    }
    bits
}

/// Turns the gradient of an activation's output into that of its input, in place: `0 + dy·f` with
/// f = 1 or `slope` from the mask, the sum dfdx's backward pass forms into a fresh zeroed buffer (so
/// the values are the same to the bit, NaN and signed zeros included).
pub fn activation_grad_in_place(gy: &mut [f32], mask: &[u64], slope: f32) {
    gy.par_chunks_mut(CHUNK).zip(mask.par_chunks(CHUNK / 64)).for_each(|(gy, words)| {
        for (gy, word) in gy.chunks_mut(64).zip(words) {
            for (d, f) in gy.iter_mut().zip(factors(*word, slope)) {
                *d = 0.0 + *d * f;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OT;

    /// Values with exact zeros, both signs, and a length that is no multiple of 64 or of a chunk.
    fn inputs(len: usize) -> Vec<f32> {
        (0..len).map(|i| if i % 7 == 0 { 0.0 } else { ((i as f32) * 0.37).sin() * 3.0 }).collect()
    }

    /// The in-place gradient of a fused activation against the value-by-value formula, for lengths
    /// that end inside a group of eight, inside a mask word and inside a parallel chunk.
    #[test]
    fn activation_gradient_in_place_follows_the_mask_to_the_bit() {
        for len in [1, 7, 9, 63, 64, 65, 2 * CHUNK + 75] {
            for slope in [0.0f32, 0.2] {
                let mut y = inputs(len);
                let x = y.clone();
                let mask = activate_in_place(&mut y, slope);
                let dy: Vec<f32> = (0..len).map(|i| ((i as f32) * 0.11).cos()).collect();
                let mut fused = dy.clone();
                activation_grad_in_place(&mut fused, &mask, slope);
                let passes = |v: f32| if slope == 0.0 { v > 0.0 } else { v >= 0.0 || v.is_nan() };
                let expected: Vec<u32> =
                    x.iter().zip(&dy).map(|(x, d)| (0.0 + d * if passes(*x) { 1.0 } else { slope }).to_bits()).collect();
                let got: Vec<u32> = fused.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, expected, "length {len}, slope {slope}");
            }
        }
    }

    #[test]
    fn fused_relu_and_leaky_relu_match_dfdx_to_the_bit() {
        let dev = Cpu::default();
        let (rows, batch) = (3 * CHUNK / 64 + 5, 67);
        let xv = inputs(rows * batch);
        let dy: Vec<f32> = (0..rows * batch).map(|i| ((i as f32) * 0.11).cos()).collect();
        for slope in [0.0f32, 0.2] {
            let run = |fused: bool| {
                let x = dev.tensor_from_vec(xv.clone(), (rows, batch)).retaped::<OT<Cpu>>();
                let y = if fused {
                    leaky_relu(x.with_empty_tape(), slope)
                } else if slope == 0.0 {
                    x.with_empty_tape().relu()
                } else {
                    x.with_empty_tape().prelu(slope)
                };
                let weights = dev.tensor_from_vec(dy.clone(), (rows, batch));
                let yv = y.as_vec();
                let loss = (y * weights).sum::<(), _>();
                let g = loss.backward();
                (yv, g.get(&x).as_vec())
            };
            let (fused, reference) = (run(true), run(false));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fused.0), bits(&reference.0), "forward, slope {slope}");
            assert_eq!(bits(&fused.1), bits(&reference.1), "gradient, slope {slope}");
        }
    }
}
