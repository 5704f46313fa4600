//! The Bernoulli likelihood's loss as one parallel CPU op: Σ BCE-with-logits over every pixel of a
//! batch. dfdx computes it element by element on one thread, forward and again backward (two `exp`
//! and a `ln` per pixel, through libm): measured, ~10 % of the β-VAE step's single-threaded time at
//! 64 px, while the other core waits. Here both the value and its derivative are computed in one
//! parallel pass; the derivative is kept for the backward pass, which only scales it.
//!
//! Same formulas as dfdx's `BCEKernelOp` (the numerically stable form
//! f(l, p) = max(l, 0) − l·p + ln(1 + e^−|l|), ∂f/∂l = 1 − p − 1/(1 + e^l)), the sum taken in
//! element order from zero as dfdx's `sum` takes it, and the gradient written as dfdx's backward
//! writes it (0 + ∂f/∂l · ḡ): values and gradients are dfdx's to the bit (a test checks).

use super::cpu_values::{dense, grad_slices};
use super::{Tensor2, OT};
use dfdx::prelude::*;
use rayon::prelude::*;

/// Values per parallel task.
const CHUNK: usize = 1 << 13;

/// Σ_i BCE-with-logits(`logits`_i, `targets`_i) on the tape of `logits` (`targets` get no gradient).
pub fn bce_with_logits_sum(logits: Tensor2<Cpu>, targets: Tensor<(usize, usize), f32, Cpu>) -> Tensor<(), f32, Cpu, OT<Cpu>> {
    let dev = logits.device().clone();
    let (logits, mut tape) = logits.split_tape();
    // The copies of the logits and targets become the values f and the derivatives d in place, so
    // the op holds no more memory than dfdx's (its output tensor) at a 256 px batch's peak.
    let (mut f, mut d) = (dense(&logits), dense(&targets));
    let lg = logits.ghost();
    drop((logits, targets));
    f.par_chunks_mut(CHUNK).zip(d.par_chunks_mut(CHUNK)).for_each(|(f, d)| {
        for (f, d) in f.iter_mut().zip(d.iter_mut()) {
            let (l, p) = (*f, *d);
            *f = l.max(0.0) - l * p + (1.0 + (-l.abs()).exp()).ln();
            *d = 1.0 - p - (1.0 + l.exp()).recip();
        }
    });
    let mut sum = 0.0f32;
    for v in &f {
        sum += *v;
    }
    drop(f);
    let out = dev.tensor(sum);
    let og = out.ghost();
    tape.add_backward_op(move |grads| {
        let (gl, go) = grad_slices!(grads, [&lg, &og]);
        let g = go[0];
        gl.par_chunks_mut(CHUNK).zip(d.par_chunks(CHUNK)).for_each(|(gl, d)| {
            for (a, d) in gl.iter_mut().zip(d) {
                *a += d * g;
            }
        });
        Ok(())
    });
    out.put_tape(tape)
}
