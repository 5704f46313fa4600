//! Fused CPU convolution ops: im2col + one gemm forward, and the matching backward, recorded on
//! dfdx's tape with `Tape::add_backward_op`. These are the fast path; `gather.rs` computes the
//! same functions from dfdx's own ops (any device) and the tests compare the two.

use super::geom::ConvGeom;
use super::kernels::{add_row_sums, col2im_add, gemm, im2col, View};
use super::{Flat, Tensor2, OT};
use dfdx::prelude::*;

/// The values of a CPU tensor in row-major order. dfdx keeps tensor storage private, so this is a
/// copy (one memcpy, small next to the gemm it feeds).
fn dense<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    t.as_vec()
}

/// Gradient buffers of several tensors at once: all are allocated first, so no later lookup
/// inserts into the map and the raw pointers stay valid while the slices are in use.
macro_rules! grad_slices {
    ($grads:expr, [$($t:expr),*]) => {{
        $( $grads.try_alloc_for($t)?; )*
        ( $( {
            let v: &mut [f32] = &mut $grads.get_or_alloc_mut($t)?[..];
            // SAFETY: distinct tensors have distinct map entries, and the map is not modified while
            // these references are alive (every entry was allocated above).
            unsafe { &mut *(v as *mut [f32]) }
        }, )* )
    }};
}

/// `Conv`: x (C·H·W, B), weight (Cout, C·k·k), bias (Cout) → (Cout·OH·OW, B).
/// `x_needs_grad = false` skips the input gradient (the first layer sees data, not activations).
pub fn conv2d(
    x: Tensor2<Cpu>,
    x_needs_grad: bool,
    w: Flat<Cpu, OT<Cpu>>,
    b: Flat<Cpu, OT<Cpu>>,
    g: ConvGeom,
    cout: usize,
) -> Tensor2<Cpu> {
    let batch = x.shape().1;
    let dev = x.device().clone();
    let (x, tx) = x.split_tape();
    let (w, tw) = w.split_tape();
    let (b, tb) = b.split_tape();
    let (kdim, n) = (g.col_rows(), g.positions() * batch);
    let mut col = vec![0.0; kdim * n];
    im2col(&dense(&x), &g, batch, &mut col);
    let w_vals = dense(&w);
    let mut y = vec![0.0; cout * n];
    for (row, bias) in y.chunks_mut(n).zip(dense(&b).iter()) {
        row.fill(*bias);
    }
    gemm(cout, n, kdim, &mut y, true, View::rows(&w_vals, kdim), View::rows(&col, n));
    let out = dev.tensor_from_vec(y, (cout * g.positions(), batch));

    let (xg, wg, bg, og) = (x.ghost(), w.ghost(), b.ghost(), out.ghost());
    let mut tape = tx.merge(tw).merge(tb);
    tape.add_backward_op(move |grads| {
        let (gw, gb, gy) = grad_slices!(grads, [&wg, &bg, &og]);
        gemm(cout, kdim, n, gw, true, View::rows(gy, n), View::transposed(&col, n));
        add_row_sums(gy, n, gb);
        if x_needs_grad {
            let (gx,) = grad_slices!(grads, [&xg]);
            let mut dcol = col; // reuse the buffer: col is no longer needed
            gemm(kdim, n, cout, &mut dcol, false, View::transposed(&w_vals, kdim), View::rows(gy, n));
            col2im_add(&dcol, &g, batch, gx);
        }
        Ok(())
    });
    out.put_tape(tape)
}

/// `ConvT`: x (Cin·IH·IW, B), weight (Cin, Cout·k·k), bias (Cout) → (Cout·H·W, B), where `g` is
/// the geometry of the adjoint convolution (image side = this op's output).
pub fn conv_t2d(
    x: Tensor2<Cpu>,
    x_needs_grad: bool,
    w: Flat<Cpu, OT<Cpu>>,
    b: Flat<Cpu, OT<Cpu>>,
    g: ConvGeom,
    cin: usize,
) -> Tensor2<Cpu> {
    let batch = x.shape().1;
    let dev = x.device().clone();
    let (x, tx) = x.split_tape();
    let (w, tw) = w.split_tape();
    let (b, tb) = b.split_tape();
    let (kdim, m) = (g.col_rows(), g.positions() * batch);
    let x_vals = dense(&x);
    let w_vals = dense(&w);
    // col = Wᵀ x, then scatter the columns back onto the output image (col2im): no zeros are
    // inserted and multiplied, unlike the "dilate then convolve" formulation.
    let mut col = vec![0.0; kdim * m];
    gemm(kdim, m, cin, &mut col, false, View::transposed(&w_vals, kdim), View::rows(&x_vals, m));
    let plane = g.h * g.w * batch;
    let mut y = vec![0.0; g.c * plane];
    for (chan, bias) in y.chunks_mut(plane).zip(dense(&b).iter()) {
        chan.fill(*bias);
    }
    col2im_add(&col, &g, batch, &mut y);
    drop(col);
    let out = dev.tensor_from_vec(y, (g.c * g.h * g.w, batch));

    let (xg, wg, bg, og) = (x.ghost(), w.ghost(), b.ghost(), out.ghost());
    let mut tape = tx.merge(tw).merge(tb);
    tape.add_backward_op(move |grads| {
        let (gw, gb, gy) = grad_slices!(grads, [&wg, &bg, &og]);
        let mut dcol = vec![0.0; kdim * m];
        im2col(gy, &g, batch, &mut dcol);
        gemm(cin, kdim, m, gw, true, View::rows(&x_vals, m), View::transposed(&dcol, m));
        add_row_sums(gy, plane, gb);
        if x_needs_grad {
            let (gx,) = grad_slices!(grads, [&xg]);
            gemm(cin, m, kdim, gx, true, View::rows(&w_vals, kdim), View::rows(&dcol, m));
        }
        Ok(())
    });
    out.put_tape(tape)
}
