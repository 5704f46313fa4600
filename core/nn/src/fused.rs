//! Fused CPU convolution ops: im2col + gemm forward, and the matching backward, recorded on
//! dfdx's tape with `Tape::add_backward_op`. Work runs in bands of output rows whose column
//! matrices stay in cache (see `kernels::bands`); column matrices are rebuilt in the backward pass
//! rather than kept, which trades a cheap copy for a lot of memory traffic and peak memory. These are the fast path; `gather.rs` computes the
//! same functions from dfdx's own ops (any device) and the tests compare the two.

use super::cpu_values::{dense, free_grad, grad_slices, planes, with_values};
use super::fused_act::{activate, activate_in_place, activation_grad_in_place};
use super::geom::ConvGeom;
use super::kernels::{
    add_row_sums, col2im_range_add, gemm_into, im2col_range, scatter_tiles, tiles, with_scratch, OuterSum, SendPtr, View,
};
use super::{Flat, GradNeeds, Rebuild, Tensor2, OT};
use dfdx::prelude::*;
use rayon::prelude::*;
use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::sync::Arc;

/// A `Conv` whose product has an inner dimension (input channels × kernel taps) of at most this
/// offers a [`Rebuild`] of its output: computing a value again costs at most 128 flops, against
/// 1,024 and more per value of the layer after it (a 4×4 convolution of 32 channels), while
/// storing it costs as much memory as any other activation of its size. The first layer of a
/// network on grey (16) or RGB (48) images qualifies.
const REBUILD_MAX_INNER: usize = 64;

/// What a backward pass keeps of its input for the weight gradient: the values, or the producer's
/// way to compute them again.
enum Kept {
    Values(Arc<Vec<f32>>),
    Rebuilt(Rebuild),
}

impl Kept {
    fn new(values: Arc<Vec<f32>>, input: Option<Rebuild>) -> Self {
        match input {
            Some(r) => Kept::Rebuilt(r),
            None => Kept::Values(values),
        }
    }

    fn values(&self) -> Cow<'_, [f32]> {
        match self {
            Kept::Values(v) => Cow::Borrowed(v),
            Kept::Rebuilt(r) => Cow::Owned(r.values()),
        }
    }
}

/// A tile's column range `(offset, count)` in a batch-last matrix with `batch` columns per position.
fn span(batch: usize, (p0, p1): (usize, usize)) -> (usize, usize) {
    (p0 * batch, (p1 - p0) * batch)
}

/// Columns `off..` of a row-major matrix with rows of `row_len`: a view for gemm.
fn columns(data: &[f32], row_len: usize, off: usize) -> View<'_> {
    View { data: &data[off..], rs: row_len, cs: 1 }
}

/// A convolution's weight gradient, `dw += column_side · im2col(image_side)ᵀ` tile by tile, where
/// `column_side` is `rows` × P·B (the output gradient of a `Conv`, the input of a `ConvT`) and
/// `image_side` is what `g` calls the image (a `Conv`'s input, a `ConvT`'s output gradient).
fn add_weight_grad(
    dw: &mut [f32],
    rows: usize,
    column_side: &[f32],
    image_side: &[f32],
    g: &ConvGeom,
    batch: usize,
    tiles: &[(usize, usize)],
) {
    let (kdim, n) = (g.col_rows(), g.positions() * batch);
    OuterSum::new(rows, kdim).run(tiles, dw, |tile, acc| {
        let (off, cols) = span(batch, tile);
        with_scratch(kdim * cols, |col| {
            im2col_range(image_side, g, batch, tile, col);
            acc.add(cols, columns(column_side, n, off), View::rows(col, cols));
        })
    });
}

/// The forward pass of `Conv` on raw batch-last values: x (C·H·W, B), weight (Cout, C·kh·kw),
/// bias (Cout) → (Cout·OH·OW, B), then the activation `act` if any (as [`activate`]; a pass that
/// needs the activation's mask for backward passes `None` and applies [`activate_in_place`]).
/// Inference-only networks (the FID Inception) call it directly.
pub fn conv_forward(x: &[f32], batch: usize, w: &[f32], b: &[f32], g: &ConvGeom, cout: usize, act: Option<f32>) -> Vec<f32> {
    let (kdim, n) = (g.col_rows(), g.positions() * batch);
    debug_assert_eq!((x.len(), w.len(), b.len()), (g.c * g.h * g.w * batch, cout * kdim, cout));
    // Not zeroed: every tile fills its columns with the bias before the product adds to them, and the
    // tiles cover all n columns, so zeroing first would only cost a pass over the output.
    let mut y: Vec<f32> = Vec::with_capacity(cout * n);
    let yp = SendPtr(y.as_mut_ptr());
    tiles(g, batch).par_iter().for_each(|&tile| {
        let (off, cols) = span(batch, tile);
        with_scratch(kdim * cols, |col| {
            im2col_range(x, g, batch, tile, col);
            // SAFETY: each tile owns columns off..off+cols of every row of y.
            unsafe {
                for (o, &bias) in b.iter().enumerate() {
                    // As `MaybeUninit`: the memory is not initialised yet. (`fill` vectorises; the
                    // write-by-write loop it replaces was 4 % of an encoder's inference time.)
                    let row = std::slice::from_raw_parts_mut(yp.get().add(o * n + off).cast::<MaybeUninit<f32>>(), cols);
                    row.fill(MaybeUninit::new(bias));
                }
                gemm_into(cout, cols, kdim, yp.get().add(off), n, true, View::rows(w, kdim), View::rows(col, cols), false);
                if let Some(slope) = act {
                    for o in 0..cout {
                        activate(std::slice::from_raw_parts_mut(yp.get().add(o * n + off), cols), slope);
                    }
                }
            }
        });
    });
    debug_assert_eq!(tiles(g, batch).iter().map(|&t| span(batch, t).1).sum::<usize>(), n);
    // SAFETY: the tiles wrote every element of the cout·n values (asserted above in debug builds).
    unsafe { y.set_len(cout * n) };
    y
}

/// `Conv`: x (C·H·W, B), weight (Cout, C·k·k), bias (Cout) → (Cout·OH·OW, B), then the activation
/// `act` if any (`Some(slope)`: LeakyReLU, ReLU for 0; see [`activate_in_place`]).
/// `needs` says which gradients to compute: not the input's for data (the first layer), not the
/// parameters' for a frozen network, neither (and no backward op at all) in inference. The
/// backward pass keeps `input` (x's [`Rebuild`]) if given, else a copy of x's values, and only
/// when it computes the weight gradient. Returns the output and, when it is cheap to compute
/// (see [`REBUILD_MAX_INNER`]) and a backward pass follows, its `Rebuild`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: Tensor2<Cpu>,
    needs: GradNeeds,
    w: Flat<Cpu, OT<Cpu>>,
    b: Flat<Cpu, OT<Cpu>>,
    g: ConvGeom,
    cout: usize,
    act: Option<f32>,
    input: Option<Rebuild>,
) -> (Tensor2<Cpu>, Option<Rebuild>) {
    let batch = x.shape().1;
    let dev = x.device().clone();
    let (x, tx) = x.split_tape();
    let (w, tw) = w.split_tape();
    let (b, tb) = b.split_tape();
    let (kdim, n) = (g.col_rows(), g.positions() * batch);
    if needs.none() {
        // No backward pass: the input's values are read only here (see `with_values`).
        let y = with_values(&x, |xv| conv_forward(xv, batch, &dense(&w), &dense(&b), &g, cout, act));
        let out = dev.tensor_from_vec(y, (cout * g.positions(), batch));
        return (out.put_tape(tx.merge(tw).merge(tb)), None);
    }
    let (x_vals, w_vals, b_vals) = (Arc::new(dense(&x)), Arc::new(dense(&w)), Arc::new(dense(&b)));
    // The copy is what backward uses; the input itself can go now, not when this function returns
    // (at 256 px that is 134 MB less at the forward pass's peak).
    let xg = x.ghost();
    drop(x);
    let tiles = tiles(&g, batch);
    let mut y = conv_forward(&x_vals, batch, &w_vals, &b_vals, &g, cout, None);
    // The activation is applied here, so its input (this convolution's output before it) is never
    // stored: one bit per value is all its gradient needs.
    let mask = act.map(|slope| (activate_in_place(&mut y, slope), slope));
    let out = dev.tensor_from_vec(y, (cout * g.positions(), batch));
    let mut tape = tx.merge(tw).merge(tb);
    let rebuild = (kdim <= REBUILD_MAX_INNER).then(|| {
        let (x, w, b) = (x_vals.clone(), w_vals.clone(), b_vals.clone());
        Rebuild::new(move || conv_forward(&x, batch, &w, &b, &g, cout, act))
    });
    // A frozen layer's backward pass reads no input values: they go now, not after it.
    let kept = needs.params.then(|| Kept::new(x_vals, input));

    let (wg, bg, og) = (w.ghost(), b.ghost(), out.ghost());
    tape.add_backward_op(move |grads| {
        let (gy,) = grad_slices!(grads, [&og]);
        if let Some((mask, slope)) = &mask {
            activation_grad_in_place(gy, mask, *slope);
        }
        let gy: &[f32] = gy;
        if let Some(kept) = kept {
            let (gw, gb) = grad_slices!(grads, [&wg, &bg]);
            add_row_sums(gy, n, gb);
            add_weight_grad(gw, cout, gy, &kept.values(), &g, batch, &tiles);
            // The input's values are done with (dropped here) before its gradient is allocated.
        }
        if needs.input {
            let (gx,) = grad_slices!(grads, [&xg]);
            let gxp = SendPtr(gx.as_mut_ptr());
            scatter_tiles(&g, batch, |tile| {
                let (off, cols) = span(batch, tile);
                with_scratch(kdim * cols, |dcol| {
                    // SAFETY: `dcol` holds kdim·cols values; concurrent tiles lie in bands that
                    // reach disjoint rows of gx.
                    unsafe {
                        gemm_into(
                            kdim,
                            cols,
                            cout,
                            dcol.as_mut_ptr(),
                            cols,
                            false,
                            View::transposed(&w_vals, kdim),
                            columns(gy, n, off),
                            false,
                        );
                        col2im_range_add(dcol, &g, batch, tile, gxp.get());
                    }
                });
            });
        }
        free_grad!(grads, &og)
    });
    (out.put_tape(tape), rebuild)
}

/// `ConvT`: x (Cin·IH·IW, B), weight (Cin, Cout·k·k), bias (Cout) → (Cout·H·W, B), where `g` is
/// the geometry of the adjoint convolution (image side = this op's output); then `act`, `needs` and
/// `input` as in [`conv2d`] (it offers no `Rebuild` of its own output).
#[allow(clippy::too_many_arguments)]
pub fn conv_t2d(
    x: Tensor2<Cpu>,
    needs: GradNeeds,
    w: Flat<Cpu, OT<Cpu>>,
    b: Flat<Cpu, OT<Cpu>>,
    g: ConvGeom,
    cin: usize,
    act: Option<f32>,
    input: Option<Rebuild>,
) -> Tensor2<Cpu> {
    let batch = x.shape().1;
    let dev = x.device().clone();
    let (x, tx) = x.split_tape();
    let (w, tw) = w.split_tape();
    let (b, tb) = b.split_tape();
    let (kdim, m) = (g.col_rows(), g.positions() * batch);
    let (x_vals, w_vals, b_vals) = (dense(&x), dense(&w), dense(&b));
    let xg = x.ghost();
    drop(x);
    let tiles = tiles(&g, batch);
    let plane = g.h * g.w * batch;
    let mut y = planes(&b_vals, plane);
    // Per band: col = Wᵀ x, then scatter the columns onto the output image (col2im). No zeros are
    // inserted and multiplied, unlike the "dilate then convolve" formulation.
    let yp = SendPtr(y.as_mut_ptr());
    scatter_tiles(&g, batch, |tile| {
        let (off, cols) = span(batch, tile);
        with_scratch(kdim * cols, |col| {
            // SAFETY: `col` holds kdim·cols values; concurrent tiles lie in bands that reach
            // disjoint rows of y.
            unsafe {
                gemm_into(
                    kdim,
                    cols,
                    cin,
                    col.as_mut_ptr(),
                    cols,
                    false,
                    View::transposed(&w_vals, kdim),
                    columns(&x_vals, m, off),
                    false,
                );
                col2im_range_add(col, &g, batch, tile, yp.get());
            }
        });
    });
    let mask = act.map(|slope| (activate_in_place(&mut y, slope), slope));
    let out = dev.tensor_from_vec(y, (g.c * g.h * g.w, batch));
    let mut tape = tx.merge(tw).merge(tb);
    if needs.none() {
        return out.put_tape(tape);
    }

    let kept = needs.params.then(|| Kept::new(Arc::new(x_vals), input));
    let (wg, bg, og) = (w.ghost(), b.ghost(), out.ghost());
    tape.add_backward_op(move |grads| {
        let (gy,) = grad_slices!(grads, [&og]);
        if let Some((mask, slope)) = &mask {
            activation_grad_in_place(gy, mask, *slope);
        }
        let gy: &[f32] = gy;
        // Two passes over the tiles, each building the output gradient's column matrix: the weight
        // gradient first (it needs the input's values), then the input gradient, so that the input's
        // values are freed before the input's gradient is allocated. The extra im2col is a copy; the
        // memory it saves is one activation (134 MB for the last layer at 256 px).
        if let Some(kept) = kept {
            let (gw, gb) = grad_slices!(grads, [&wg, &bg]);
            add_row_sums(gy, plane, gb);
            add_weight_grad(gw, cin, &kept.values(), gy, &g, batch, &tiles);
        }
        if needs.input {
            let (gx,) = grad_slices!(grads, [&xg]);
            let gxp = SendPtr(gx.as_mut_ptr());
            tiles.par_iter().for_each(|&tile| {
                let (off, cols) = span(batch, tile);
                with_scratch(kdim * cols, |dcol| {
                    im2col_range(gy, &g, batch, tile, dcol);
                    // SAFETY: each tile owns columns off..off+cols of every row of gx.
                    unsafe {
                        gemm_into(
                            cin,
                            cols,
                            kdim,
                            gxp.get().add(off),
                            m,
                            true,
                            View::rows(&w_vals, kdim),
                            View::rows(dcol, cols),
                            false,
                        )
                    };
                })
            });
        }
        free_grad!(grads, &og)
    });
    out.put_tape(tape)
}
