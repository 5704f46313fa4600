//! Convolutions from dfdx's own ops (gather + matmul), so they run on any dfdx device,
//! CUDA included. On the CPU the fused ops in `fused.rs` are faster; tests check both agree.

use super::geom::ConvGeom;
use super::{Flat, Tensor2, OT};
use dfdx::prelude::*;

/// Row indices and 0/1 masks of im2col: row (r, pos) of the column matrix reads image row
/// `idx` (masked to 0 in the padding).
pub fn im2col_table(g: &ConvGeom) -> (Vec<usize>, Vec<f32>) {
    let n = g.col_rows() * g.positions();
    let (mut idx, mut mask) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for r in 0..g.col_rows() {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let src = g.source(r, oy, ox);
                idx.push(src.unwrap_or(0));
                mask.push(if src.is_some() { 1.0 } else { 0.0 });
            }
        }
    }
    (idx, mask)
}

/// For each image row, the column-matrix rows that land on it (col2im as a gather-sum),
/// padded to the same count with masked entries.
pub fn col2im_table(g: &ConvGeom) -> (Vec<usize>, Vec<f32>, usize) {
    let rows = g.c * g.h * g.w;
    let mut lists: Vec<Vec<usize>> = vec![Vec::new(); rows];
    for r in 0..g.col_rows() {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                if let Some(src) = g.source(r, oy, ox) {
                    lists[src].push(r * g.positions() + oy * g.ow + ox);
                }
            }
        }
    }
    let width = lists.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let (mut idx, mut mask) = (Vec::with_capacity(rows * width), Vec::with_capacity(rows * width));
    for list in lists {
        for j in 0..width {
            idx.push(list.get(j).copied().unwrap_or(0));
            mask.push(if j < list.len() { 1.0 } else { 0.0 });
        }
    }
    (idx, mask, width)
}

pub fn conv2d<D: Device<f32>>(x: Tensor2<D>, w: Flat<D, OT<D>>, b: Flat<D, OT<D>>, g: ConvGeom, cout: usize) -> Tensor2<D> {
    let dev = x.device().clone();
    let batch = x.shape().1;
    let (idx, mask) = im2col_table(&g);
    let len = idx.len();
    let idx = dev.tensor_from_vec(idx, (len,));
    let mask = dev.tensor_from_vec(mask, (len,));
    let col = x.gather(idx) * mask.broadcast_like::<_, Axis<1>>(&(len, batch));
    let n = g.positions() * batch;
    let col = col.reshape_like(&(g.col_rows(), n));
    let y = w.reshape_like(&(cout, g.col_rows())).matmul(col);
    let y = y + b.broadcast_like::<_, Axis<1>>(&(cout, n));
    y.reshape_like(&(cout * g.positions(), batch))
}

pub fn conv_t2d<D: Device<f32>>(x: Tensor2<D>, w: Flat<D, OT<D>>, b: Flat<D, OT<D>>, g: ConvGeom, cin: usize) -> Tensor2<D> {
    let dev = x.device().clone();
    let batch = x.shape().1;
    let m = g.positions() * batch;
    let x = x.reshape_like(&(cin, m));
    let w = w.reshape_like(&(cin, g.col_rows()));
    let col = w.permute::<_, Axes2<1, 0>>().matmul(x).reshape_like(&(g.col_rows() * g.positions(), batch));
    let (idx, mask, width) = col2im_table(&g);
    let rows = g.c * g.h * g.w;
    let len = idx.len();
    let idx = dev.tensor_from_vec(idx, (len,));
    let mask = dev.tensor_from_vec(mask, (len,));
    let picked = col.gather(idx) * mask.broadcast_like::<_, Axis<1>>(&(len, batch));
    let y = picked.reshape_like(&(rows, width, batch)).sum::<(usize, usize), Axis<1>>();
    let plane = g.h * g.w * batch;
    let bias = b.broadcast_like::<_, Axis<1>>(&(g.c, plane)).reshape_like(&(rows, batch));
    y + bias
}
