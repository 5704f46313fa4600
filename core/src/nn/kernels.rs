//! Raw-slice CPU kernels behind the fused convolution ops: im2col, col2im and gemm.
//!
//! Activations are batch-last: image element (c, y, x) of every image in the batch is one
//! contiguous run of B floats. So im2col copies whole runs (plain memcpy), and both
//! convolutions become single large matrix products that the `gemm` crate parallelises.

use super::geom::ConvGeom;
use rayon::prelude::*;

/// Worker threads of the current rayon pool (results are deterministic for a fixed count).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// `col[r, pos·B + b] = img[source(r, pos), b]` (0 in the padding).
/// `col` has `g.col_rows()` rows of `g.positions()·batch` values.
pub fn im2col(img: &[f32], g: &ConvGeom, batch: usize, col: &mut [f32]) {
    let row_len = g.positions() * batch;
    debug_assert_eq!(col.len(), g.col_rows() * row_len);
    col.par_chunks_mut(row_len).enumerate().for_each(|(r, row)| {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let dst = &mut row[(oy * g.ow + ox) * batch..][..batch];
                match g.source(r, oy, ox) {
                    Some(src) => dst.copy_from_slice(&img[src * batch..][..batch]),
                    None => dst.fill(0.0),
                }
            }
        }
    });
}

/// The adjoint of [`im2col`]: `img[source(r, pos), b] += col[r, pos·B + b]`.
///
/// Written as a gather per image row (c, y) so that rows run in parallel without atomics and
/// every sum is taken in the same order whatever the thread count (deterministic results).
pub fn col2im_add(col: &[f32], g: &ConvGeom, batch: usize, img: &mut [f32]) {
    let row_len = g.positions() * batch;
    let (k, s, p) = (g.k, g.s, g.p);
    img.par_chunks_mut(g.w * batch).enumerate().for_each(|(cy, dst_row)| {
        let (c, y) = (cy / g.h, cy % g.h);
        for ky in 0..k {
            // output row oy contributes to y through ky when oy·s + ky − p = y
            let Some(t) = (y + p).checked_sub(ky) else { continue };
            if t % s != 0 || t / s >= g.oh {
                continue;
            }
            let oy = t / s;
            for kx in 0..k {
                let r = (c * k + ky) * k + kx;
                let src_row = &col[r * row_len..][..row_len];
                for x in 0..g.w {
                    let Some(t) = (x + p).checked_sub(kx) else { continue };
                    if t % s != 0 || t / s >= g.ow {
                        continue;
                    }
                    let ox = t / s;
                    let src = &src_row[(oy * g.ow + ox) * batch..][..batch];
                    let dst = &mut dst_row[x * batch..][..batch];
                    for (d, v) in dst.iter_mut().zip(src) {
                        *d += v;
                    }
                }
            }
        }
    });
}

/// A strided matrix view for [`gemm`]: element (i, j) lives at `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        View { data, rs: cols, cs: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        View { data, rs: 1, cs: cols }
    }
}

/// `dst (m×n, row-major) (+)= lhs (m×k) · rhs (k×n)`.
pub fn gemm(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: View, rhs: View) {
    assert!(dst.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    assert!(k == 0 || lhs.data.len() > (m - 1) * lhs.rs + (k - 1) * lhs.cs);
    assert!(k == 0 || rhs.data.len() > (k - 1) * rhs.rs + (n - 1) * rhs.cs);
    let threads = rayon::current_num_threads();
    let parallelism =
        if threads > 1 && m * n * k > 64 * 64 * 64 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above keep every index that gemm touches inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `out[i] += Σ_j m[i, j]` for a row-major matrix with rows of `row_len`.
pub fn add_row_sums(m: &[f32], row_len: usize, out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(m.chunks(row_len)) {
        *o += row.iter().sum::<f32>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_naive_product_with_transposes() {
        let (m, n, k) = (3, 4, 5);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect(); // m×k
        let b: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 - 2.0).collect(); // stored n×k, used as bᵀ
        let mut dst = vec![1.0; m * n];
        gemm(m, n, k, &mut dst, true, View::rows(&a, k), View::transposed(&b, k));
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|l| a[i * k + l] * b[j * k + l]).sum::<f32>();
                assert!((dst[i * n + j] - want).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), y> == <x, col2im(y)> for any x, y: the defining property of an adjoint.
        let g = ConvGeom::conv(2, 5, 6, 3, 2, 1).unwrap();
        let batch = 3;
        let x: Vec<f32> = (0..g.c * g.h * g.w * batch).map(|i| ((i * 37 % 11) as f32) - 5.0).collect();
        let y: Vec<f32> = (0..g.col_rows() * g.positions() * batch).map(|i| ((i * 13 % 7) as f32) - 3.0).collect();
        let mut col = vec![0.0; y.len()];
        im2col(&x, &g, batch, &mut col);
        let mut back = vec![0.0; x.len()];
        col2im_add(&y, &g, batch, &mut back);
        let lhs: f32 = col.iter().zip(&y).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-3, "{lhs} vs {rhs}");
    }
}
