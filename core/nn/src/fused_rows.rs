//! Nearest-neighbour upsampling and average pooling on the CPU, in one parallel pass each way. Both
//! layers pick rows of the batch-last activation (`Upsample`: output row i is input row `rows[i]`;
//! `AvgPool`: output row o averages the `group` input rows `rows[o·group..]`). The generic backend
//! does that with dfdx's `gather` (and a sum), whose CPU kernel works out the strided index of every
//! value, single-threaded, both ways, and keeps the input alive for its backward pass (measured:
//! 12 % of a 128 px knee autoencoder's training step). Here each row is one contiguous copy or sum
//! of `batch` values, and the backward pass keeps only the row table.
//!
//! The values are dfdx's to the bit, as the tests below check: each output value sums its rows in
//! the table's order starting from 0, then scales, as dfdx's sum and scalar product do; each input
//! gradient adds its contributions in ascending output order onto whatever it held, as dfdx's
//! gather backward does (an input row that several outputs read, as in upsampling, gets them in
//! that order; the parallel split is by input row, so no value's order changes).

use super::cpu_values::{free_grad, grad_slices, with_values, zeros};
use super::Tensor2;
use dfdx::prelude::*;
use rayon::prelude::*;

/// Output or input rows per parallel task.
const ROWS_PER_TASK: usize = 256;

/// `Upsample`: output row i is input row `rows[i]` (dfdx's `gather` along the rows).
pub fn gather_rows(x: Tensor2<Cpu>, rows: &[usize]) -> Tensor2<Cpu> {
    pick_rows(x, rows, 1, None)
}

/// `AvgPool`: output row o is the mean of input rows `rows[o·group..(o+1)·group]` (dfdx's `gather`,
/// a sum over each group, then a product with 1/`group`).
pub fn avg_pool_rows(x: Tensor2<Cpu>, rows: &[usize], group: usize) -> Tensor2<Cpu> {
    pick_rows(x, rows, group, Some(1.0 / group as f32))
}

/// Output row o = `scale`·Σ_j x[rows[o·group + j]] (no product without a scale).
fn pick_rows(x: Tensor2<Cpu>, rows: &[usize], group: usize, scale: Option<f32>) -> Tensor2<Cpu> {
    let (in_rows, batch) = *x.shape();
    let out_rows = rows.len() / group;
    let dev = x.device().clone();
    let (x, tape) = x.split_tape();
    let mut y = zeros(out_rows * batch);
    with_values(&x, |xv| {
        y.par_chunks_mut(ROWS_PER_TASK * batch.max(1)).enumerate().for_each(|(task, ys)| {
            for (k, out) in ys.chunks_mut(batch.max(1)).enumerate() {
                let o = task * ROWS_PER_TASK + k;
                let members = &rows[o * group..(o + 1) * group];
                match scale {
                    None => out.copy_from_slice(&xv[members[0] * batch..][..batch]),
                    Some(s) => {
                        // `out` starts at 0: the first row is added to it, as dfdx's sum starts from 0.
                        for &r in members {
                            for (a, v) in out.iter_mut().zip(&xv[r * batch..][..batch]) {
                                *a += *v;
                            }
                        }
                        for a in out.iter_mut() {
                            *a *= s;
                        }
                    }
                }
            }
        });
    });
    let xg = x.ghost();
    drop(x);
    let out = dev.tensor_from_vec(y, (out_rows, batch));
    let og = out.ghost();
    // The table of readers is built when the backward pass runs: an inference pass never needs it.
    let rows = rows.to_vec();
    let mut tape = tape;
    tape.add_backward_op(move |grads| {
        let readers = readers(&rows, in_rows);
        let (gx, gy) = grad_slices!(grads, [&xg, &og]);
        let gy: &[f32] = gy;
        gx.par_chunks_mut(ROWS_PER_TASK * batch.max(1)).enumerate().for_each(|(task, gxs)| {
            for (k, g) in gxs.chunks_mut(batch.max(1)).enumerate() {
                let r = task * ROWS_PER_TASK + k;
                for &i in &readers.list[readers.start[r]..readers.start[r + 1]] {
                    let d = &gy[i / group * batch..][..batch];
                    match scale {
                        None => g.iter_mut().zip(d).for_each(|(a, d)| *a += *d),
                        // dfdx forms 0 + dy·scale in the product's (then the sum's) fresh gradient
                        // buffer before the gather adds it.
                        Some(s) => g.iter_mut().zip(d).for_each(|(a, d)| *a += 0.0 + *d * s),
                    }
                }
            }
        });
        free_grad!(grads, &og)
    });
    out.put_tape(tape)
}

/// For each input row, the positions i of `rows` that read it, in ascending order (a compressed
/// table: row r's are `list[start[r]..start[r + 1]]`).
struct Readers {
    start: Vec<usize>,
    list: Vec<usize>,
}

fn readers(rows: &[usize], in_rows: usize) -> Readers {
    let mut start = vec![0usize; in_rows + 1];
    for &r in rows {
        start[r + 1] += 1;
    }
    for r in 0..in_rows {
        start[r + 1] += start[r];
    }
    let mut next = start.clone();
    let mut list = vec![0usize; rows.len()];
    for (i, &r) in rows.iter().enumerate() {
        list[next[r]] = i;
        next[r] += 1;
    }
    Readers { start, list }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OT;

    /// Values with exact and signed zeros, and a length no multiple of anything used here.
    fn values(n: usize, phase: f32) -> Vec<f32> {
        (0..n).map(|i| if i % 11 == 0 { -0.0 } else { ((i as f32) * 0.37 + phase).sin() * 3.0 }).collect()
    }

    /// The fused ops against dfdx's gather (and sum and scale), forward and input gradient, to the
    /// bit: upsampling (input rows read by several outputs) and pooling, odd sizes whose last input
    /// rows no output reads, more rows than one parallel task, and an input that another op also
    /// differentiates (the gradient is added onto what that op left).
    #[test]
    fn fused_upsample_and_pool_match_dfdx_to_the_bit() {
        let dev = Cpu::default();
        // (input rows, the row table, group): upsampling a 3×(19×23) image by 2, pooling a 3×(41×37)
        // image by 2 (its last row and column unread) and by 3.
        let upsample: Vec<usize> =
            (0..3).flat_map(|c| (0..38).flat_map(move |y| (0..46).map(move |x| c * 19 * 23 + (y / 2) * 23 + x / 2))).collect();
        let pool = |k: usize, h: usize, w: usize| -> Vec<usize> {
            (0..3)
                .flat_map(|c| {
                    (0..h / k).flat_map(move |oy| {
                        (0..w / k).flat_map(move |ox| {
                            (0..k).flat_map(move |dy| (0..k).map(move |dx| c * h * w + (oy * k + dy) * w + ox * k + dx))
                        })
                    })
                })
                .collect()
        };
        let cases = [(3 * 19 * 23, upsample, 1), (3 * 41 * 37, pool(2, 41, 37), 4), (3 * 41 * 37, pool(3, 41, 37), 9)];
        let batch = 5;
        for (in_rows, rows, group) in cases {
            let out_rows = rows.len() / group;
            let xv = values(in_rows * batch, 0.0);
            let weights = values(out_rows * batch, 1.0);
            let side = values(in_rows * batch, 2.0);
            let run = |fused: bool| {
                let x = dev.tensor_from_vec(xv.clone(), (in_rows, batch)).retaped::<OT<Cpu>>();
                let y = match (fused, group) {
                    (true, 1) => gather_rows(x.with_empty_tape(), &rows),
                    (true, _) => avg_pool_rows(x.with_empty_tape(), &rows, group),
                    (false, 1) => crate::gather_rows_generic(x.with_empty_tape(), &rows),
                    (false, _) => crate::avg_pool_rows_generic(x.with_empty_tape(), &rows, group),
                };
                let yv = y.as_vec();
                let loss = (y * dev.tensor_from_vec(weights.clone(), (out_rows, batch))).sum::<(), _>()
                    + (x.with_empty_tape() * dev.tensor_from_vec(side.clone(), (in_rows, batch))).sum::<(), _>();
                let g = loss.backward();
                (yv, g.get(&x).as_vec())
            };
            let (fused, reference) = (run(true), run(false));
            assert_same_bits(&fused.0, &reference.0, &format!("forward, group {group}"));
            assert_same_bits(&fused.1, &reference.1, &format!("input gradient, group {group}"));
        }
    }

    /// Names the first value that differs, rather than printing thousands.
    fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
            panic!("{what}: value {i} is {:e}, dfdx's {:e}", got[i], want[i]);
        }
    }

    #[test]
    fn readers_list_each_rows_readers_in_ascending_order() {
        let r = readers(&[2, 0, 2, 1, 2, 0], 4);
        assert_eq!(r.start, vec![0, 2, 3, 6, 6]);
        assert_eq!(r.list, vec![1, 5, 3, 0, 2, 4]);
    }
}
