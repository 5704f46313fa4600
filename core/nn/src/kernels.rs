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

/// The family of gemm kernels that this build runs on this CPU, named as `run.json` records it:
/// `avx512` (AVX-512F, with the `avx512` feature), `avx2` (AVX2+FMA), `neon` or `scalar`.
///
/// It mirrors gemm 0.19's own dispatch (`init_gemm_fn` in gemm-common: AVX-512F where the CPU has it
/// and `x86-v4` is compiled in, else FMA, else scalar). The kernels sum in different orders, so the
/// same run agrees only to a tolerance across kernel families, and bit for bit within one.
pub fn gemm_kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
            "avx512"
        } else if std::arch::is_x86_feature_detected!("fma") {
            "avx2"
        } else {
            "scalar"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            "neon"
        } else {
            "scalar"
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

/// Column matrices are built a tile of output positions at a time, sized to stay in L2 cache.
/// Tile and band sizes depend only on the geometry, never on the thread count, so the order of
/// every floating-point sum is fixed for a given model.
const TILE_BYTES: usize = 256 << 10;

/// Output positions per tile (each position is a run of `batch` columns of every column row).
pub fn tile_positions(g: &ConvGeom, batch: usize) -> usize {
    (TILE_BYTES / (g.col_rows() * batch * 4).max(1)).clamp(1, g.positions().max(1))
}

/// Position ranges `[p0, p1)` tiling `0..g.positions()`.
pub fn tiles(g: &ConvGeom, batch: usize) -> Vec<(usize, usize)> {
    let t = tile_positions(g, batch);
    (0..g.positions()).step_by(t).map(|a| (a, (a + t).min(g.positions()))).collect()
}

/// Bands of whole output rows for scatters: the fewest rows such that bands two apart never
/// write the same image rows, so even bands can scatter in parallel, then odd ones.
pub fn bands(g: &ConvGeom) -> Vec<(usize, usize)> {
    let (k, s) = (g.k.0, g.s.0);
    let rows = if k > s { (k - s).div_ceil(s) } else { 1 }.clamp(1, g.oh.max(1));
    (0..g.oh).step_by(rows).map(|a| (a, (a + rows).min(g.oh))).collect()
}

/// The tiles of a band: position ranges inside output rows `oy0..oy1`.
pub fn band_tiles(g: &ConvGeom, batch: usize, (oy0, oy1): (usize, usize)) -> Vec<(usize, usize)> {
    let t = tile_positions(g, batch);
    let (a, b) = (oy0 * g.ow, oy1 * g.ow);
    (a..b).step_by(t).map(|p| (p, (p + t).min(b))).collect()
}

/// `col[r, (pos − p0)·B + b] = img[source(r, pos), b]` for positions `p0..p1` (0 in the padding).
/// `col` has `g.col_rows()` rows of `(p1 − p0)·batch` values. A run of positions along an image row
/// is one copy of `count·batch` values at stride 1 (see [`ConvGeom::runs`]).
pub fn im2col_range(img: &[f32], g: &ConvGeom, batch: usize, (p0, p1): (usize, usize), col: &mut [f32]) {
    let row_len = (p1 - p0) * batch;
    debug_assert_eq!(col.len(), g.col_rows() * row_len);
    let step = g.s.1;
    for (r, row) in col.chunks_mut(row_len.max(1)).enumerate() {
        g.runs(r, (p0, p1), |first, count, src| {
            let dst = &mut row[(first - p0) * batch..][..count * batch];
            match src {
                None => dst.fill(0.0),
                Some(src) if step == 1 => dst.copy_from_slice(&img[src * batch..][..count * batch]),
                Some(src) => {
                    for (i, d) in dst.chunks_exact_mut(batch.max(1)).enumerate() {
                        d.copy_from_slice(&img[(src + i * step) * batch..][..batch]);
                    }
                }
            }
        });
    }
}

/// The adjoint of [`im2col_range`]: `img[source(r, pos), b] += col[r, …]`, through a raw pointer
/// because bands of one phase write disjoint image rows in parallel (see [`scatter_bands`]). Within
/// a column row no two positions share an image value, so adding a run at once keeps every value's
/// order of additions (column row by column row).
///
/// # Safety
/// `img` must point to `g.c·g.h·g.w·batch` values that no other thread touches in the image rows
/// these positions reach.
pub unsafe fn col2im_range_add(col: &[f32], g: &ConvGeom, batch: usize, (p0, p1): (usize, usize), img: *mut f32) {
    let row_len = (p1 - p0) * batch;
    let step = g.s.1;
    for (r, row) in col.chunks(row_len.max(1)).enumerate() {
        g.runs(r, (p0, p1), |first, count, src| {
            let Some(src) = src else { return };
            let seg = &row[(first - p0) * batch..][..count * batch];
            if step == 1 {
                let dst = std::slice::from_raw_parts_mut(img.add(src * batch), count * batch);
                for (d, v) in dst.iter_mut().zip(seg) {
                    *d += v;
                }
            } else {
                for (i, part) in seg.chunks_exact(batch.max(1)).enumerate() {
                    let dst = std::slice::from_raw_parts_mut(img.add((src + i * step) * batch), batch);
                    for (d, v) in dst.iter_mut().zip(part) {
                        *d += v;
                    }
                }
            }
        });
    }
}

/// A pointer that may cross threads; each use documents why the accesses are disjoint.
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `SendPtr` rather than its raw field).
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `f` on every tile, band by band: even bands in parallel, then odd bands, and the tiles of a
/// band in order. Bands two apart reach disjoint image rows (guaranteed by [`bands`]), so `f` may
/// scatter into a shared image; the fixed order keeps the sums deterministic.
pub fn scatter_tiles(g: &ConvGeom, batch: usize, f: impl Fn((usize, usize)) + Sync) {
    let bands = bands(g);
    for phase in 0..2 {
        bands.par_iter().skip(phase).step_by(2).for_each(|&b| band_tiles(g, batch, b).into_iter().for_each(&f));
    }
}

/// Σ over tiles of `a_t · b_tᵀ` (an m_a × m_b weight gradient), computed in parallel.
///
/// Tiles are split into a fixed number of contiguous groups; each group accumulates its tiles in
/// order into one buffer, and the groups are summed in order: deterministic for any thread count,
/// with a handful of buffers instead of one per tile. gemm is several times faster when the larger
/// of m_a, m_b is its row dimension (measured: 15 ms vs 3.4 ms for 32×512 outputs over 16,384
/// columns), so the product is accumulated transposed when m_a < m_b and transposed back once.
pub struct OuterSum {
    m_a: usize,
    m_b: usize,
    transposed: bool,
}

/// One group's accumulator, handed to the per-tile closure of [`OuterSum::run`].
pub struct OuterAcc<'a> {
    sum: &'a OuterSum,
    buf: &'a mut [f32],
    started: bool,
}

impl OuterAcc<'_> {
    /// Adds `a · bᵀ` for row-major views `a` (m_a × n) and `b` (m_b × n).
    pub fn add(&mut self, n: usize, a: View, b: View) {
        let (m_a, m_b) = (self.sum.m_a, self.sum.m_b);
        // SAFETY: `buf` holds m_a·m_b values, in either orientation.
        unsafe {
            if self.sum.transposed {
                gemm_into(m_b, m_a, n, self.buf.as_mut_ptr(), m_a, self.started, b, a.t(), false);
            } else {
                gemm_into(m_a, m_b, n, self.buf.as_mut_ptr(), m_b, self.started, a, b.t(), false);
            }
        }
        self.started = true;
    }
}

const OUTER_GROUPS: usize = 8;

impl OuterSum {
    pub fn new(m_a: usize, m_b: usize) -> Self {
        OuterSum { m_a, m_b, transposed: m_a < m_b }
    }

    /// Runs `per_tile` over `tiles` and adds the total into `dst` (m_a × m_b, row-major).
    pub fn run(&self, tiles: &[(usize, usize)], dst: &mut [f32], per_tile: impl Fn((usize, usize), &mut OuterAcc) + Sync) {
        let len = self.m_a * self.m_b;
        let group = tiles.len().div_ceil(OUTER_GROUPS).max(1);
        let partials: Vec<Vec<f32>> = tiles
            .par_chunks(group)
            .map(|chunk| {
                let mut buf = vec![0.0; len];
                let mut acc = OuterAcc { sum: self, buf: &mut buf, started: false };
                for &t in chunk {
                    per_tile(t, &mut acc);
                }
                buf
            })
            .collect();
        if partials.is_empty() {
            return;
        }
        // dst += ((p₀ + p₁) + p₂) + …, element by element in that order, in parallel over ranges of
        // elements (the order within each element is fixed, so the thread count changes nothing).
        // The partials are in the product's layout: transposed (m_b × m_a) when m_a < m_b.
        assert_eq!(dst.len(), len, "OuterSum: destination is not m_a × m_b");
        let (m_a, m_b, transposed) = (self.m_a, self.m_b, self.transposed);
        let dp = SendPtr(dst.as_mut_ptr());
        (0..len).into_par_iter().with_min_len(1 << 12).for_each(|k| {
            let mut v = partials[0][k];
            for p in &partials[1..] {
                v += p[k];
            }
            let d = if transposed { (k % m_a) * m_b + k / m_a } else { k };
            // SAFETY: k ↦ d is a bijection on 0..len (a transpose or the identity), so each element
            // of dst is written by exactly one k.
            unsafe { *dp.get().add(d) += v };
        });
    }
}

thread_local! {
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A per-thread buffer reused across calls (see [`with_reused`]).
pub(crate) type ReusedBuffer = std::thread::LocalKey<std::cell::Cell<Vec<f32>>>;

/// Runs `f` on the first `len` values of the per-thread buffer `slot`, grown as needed and reused
/// across calls, so that callers neither allocate nor page-fault. Its contents are unspecified:
/// `f` must write before it reads. A nested call on the same slot (a rayon task run while `f`
/// waits) simply gets a buffer of its own.
pub(crate) fn with_reused<R>(slot: &'static ReusedBuffer, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = slot.with(|c| c.take());
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    slot.with(|c| c.set(buf));
    r
}

/// Runs `f` on a per-thread scratch buffer of `len` values (column matrices of a tile), reused
/// across calls. Its contents are unspecified: `f` must write before it reads.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_reused(&SCRATCH, len, f)
}

/// `col[r, pos·B + b] = img[source(r, pos), b]` over all positions (one tile).
pub fn im2col(img: &[f32], g: &ConvGeom, batch: usize, col: &mut [f32]) {
    im2col_range(img, g, batch, (0, g.positions()), col);
}

/// The adjoint of [`im2col`]: `img[source(r, pos), b] += col[r, pos·B + b]`.
pub fn col2im_add(col: &[f32], g: &ConvGeom, batch: usize, img: &mut [f32]) {
    assert_eq!(img.len(), g.c * g.h * g.w * batch);
    // SAFETY: `img` is exclusively borrowed and has the size `col2im_range_add` needs.
    unsafe { col2im_range_add(col, g, batch, (0, g.positions()), img.as_mut_ptr()) }
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
    /// This view transposed.
    pub fn t(self) -> Self {
        View { data: self.data, rs: self.cs, cs: self.rs }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        View { data, rs: 1, cs: cols }
    }
}

/// `dst (m×n, row-major) (+)= lhs (m×k) · rhs (k×n)`, parallelised by gemm when large.
pub fn gemm(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: View, rhs: View) {
    assert!(dst.len() >= m * n);
    let parallel = rayon::current_num_threads() > 1 && m * n * k > 64 * 64 * 64;
    // SAFETY: `dst` holds m·n values in rows of n.
    unsafe { gemm_into(m, n, k, dst.as_mut_ptr(), n, accumulate, lhs, rhs, parallel) }
}

/// `dst (+)= lhs · rhs` where `dst` is an m×n block with row stride `dst_rs` (a column band of a
/// larger matrix). Single-threaded unless `parallel`.
///
/// # Safety
/// `dst` must be valid for writes at `i·dst_rs + j` for i < m, j < n, and not aliased meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(k == 0 || lhs.data.len() > (m - 1) * lhs.rs + (k - 1) * lhs.cs);
    assert!(k == 0 || rhs.data.len() > (k - 1) * rhs.rs + (n - 1) * rhs.cs);
    let parallelism =
        if parallel { gemm_common::Parallelism::Rayon(rayon::current_num_threads()) } else { gemm_common::Parallelism::None };
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(dst.add(i * dst_rs), n).fill(0.0);
            }
        }
        return;
    }
    // gemm-f32's kernels prefer a column-major destination: for a row-major one (row stride above
    // the column stride 1), compute the transpose, dstᵀ = rhsᵀ·lhsᵀ, by swapping the operands and
    // every stride pair. The `gemm` front crate makes this same swap before it calls gemm-f32, so the
    // kernels see the same problem and sum in the same order as they did behind it. (Its other
    // rewrites are for negative strides, which a `View` cannot have.)
    let (lhs_ptr, rhs_ptr) = (lhs.data.as_ptr(), rhs.data.as_ptr());
    let (lhs_cs, lhs_rs, rhs_cs, rhs_rs) = (lhs.cs as isize, lhs.rs as isize, rhs.cs as isize, rhs.rs as isize);
    let (m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs) = if dst_rs > 1 {
        (n, m, dst_rs as isize, 1, rhs_ptr, rhs_rs, rhs_cs, lhs_ptr, lhs_rs, lhs_cs)
    } else {
        (m, n, 1, dst_rs as isize, lhs_ptr, lhs_cs, lhs_rs, rhs_ptr, rhs_cs, rhs_rs)
    };
    let gemm = gemm_f32::gemm::f32::get_gemm_fn();
    #[rustfmt::skip]
    gemm(m, n, k, dst, dst_cs, dst_rs, accumulate, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, 1.0, 1.0, false, false, false, parallelism);
}

/// `out[i] += Σ_j m[i, j]` for a row-major matrix with rows of `row_len` (a convolution's bias
/// gradient: rows are channels, a row every position of every example).
///
/// Each row is summed in order from −0 (what `Iterator::sum` does), so the values do not depend on
/// how rows are split. A single sum is a chain of dependent additions, one every few cycles (it
/// was ~5 % of a β-VAE step); eight rows summed side by side keep eight chains in flight, and
/// groups of rows run in parallel.
pub fn add_row_sums(m: &[f32], row_len: usize, out: &mut [f32]) {
    const ROWS: usize = 8;
    if row_len == 0 {
        return;
    }
    out.par_chunks_mut(ROWS).zip(m.par_chunks(ROWS * row_len)).for_each(|(outs, block)| {
        let mut acc = [-0.0f32; ROWS];
        let rows: Vec<&[f32]> = block.chunks(row_len).collect();
        if rows.len() == ROWS {
            for j in 0..row_len {
                for (a, row) in acc.iter_mut().zip(&rows) {
                    *a += row[j];
                }
            }
        } else {
            for (a, row) in acc.iter_mut().zip(&rows) {
                *a = row.iter().fold(-0.0, |s, v| s + v);
            }
        }
        for (o, a) in outs.iter_mut().zip(acc) {
            *o += a;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// im2col and col2im by runs against their definitions position by position (`ConvGeom::source`),
    /// bit for bit, on geometries with stride 1 and 2, rectangular kernels, padding wider than the
    /// kernel, kernels wider than the image, and position ranges that start and end inside output rows.
    #[test]
    fn runs_match_the_position_by_position_definition() {
        let geoms = [
            ConvGeom::conv(2, 7, 6, 3, 1, 1).unwrap(),
            ConvGeom::conv(3, 9, 8, 4, 2, 1).unwrap(),
            ConvGeom::conv(1, 5, 5, 5, 1, 2).unwrap(),
            ConvGeom::conv(2, 6, 6, 2, 1, 3).unwrap(),
            ConvGeom::conv(1, 3, 4, 5, 1, 3).unwrap(),
            ConvGeom::conv_rect(2, 6, 9, (3, 5), (1, 2), (1, 2)).unwrap(),
            ConvGeom::conv_t(2, 4, 4, 4, 2, 1).unwrap(),
            ConvGeom::conv(2, 8, 8, 1, 1, 0).unwrap(),
        ];
        let batch = 3;
        for (gi, g) in geoms.iter().enumerate() {
            let img: Vec<f32> =
                (0..g.c * g.h * g.w * batch).map(|i| (i as f32 * 0.37).sin() * 10f32.powi((i % 5) as i32 - 2)).collect();
            let n = g.positions();
            for (p0, p1) in [(0, n), (1, n - 1), (g.ow / 2, n.min(g.ow * 2 + 1)), (n - 1, n), (0, 1)] {
                if p0 >= p1 {
                    continue;
                }
                let row_len = (p1 - p0) * batch;
                let mut col = vec![f32::NAN; g.col_rows() * row_len];
                im2col_range(&img, g, batch, (p0, p1), &mut col);
                let mut back: Vec<f32> = (0..img.len()).map(|i| (i as f32 * 0.11).cos()).collect();
                let mut want_back = back.clone();
                unsafe { col2im_range_add(&col, g, batch, (p0, p1), back.as_mut_ptr()) };
                for r in 0..g.col_rows() {
                    for pos in p0..p1 {
                        for b in 0..batch {
                            let got = col[r * row_len + (pos - p0) * batch + b];
                            let src = g.source(r, pos / g.ow, pos % g.ow);
                            let want = src.map_or(0.0, |s| img[s * batch + b]);
                            assert_eq!(got.to_bits(), want.to_bits(), "geometry {gi}, range {p0}..{p1}, row {r}, position {pos}");
                            if let Some(s) = src {
                                want_back[s * batch + b] += got;
                            }
                        }
                    }
                }
                let same = back.iter().zip(&want_back).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "col2im, geometry {gi}, range {p0}..{p1}");
            }
        }
    }

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

    /// Row sums taken eight rows side by side and in parallel are the in-order sums to the bit (13
    /// rows: one full group of eight and a group of five), added onto what `out` held.
    #[test]
    fn row_sums_are_the_in_order_sums_to_the_bit() {
        let (rows, row_len) = (13, 1001);
        // Magnitudes from 1e-3 to 1e3, so a different order would round differently.
        let m: Vec<f32> =
            (0..rows * row_len).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) * 10f32.powi((i % 7) as i32 - 3)).collect();
        let mut out: Vec<f32> = (0..rows).map(|i| i as f32 * 0.25).collect();
        add_row_sums(&m, row_len, &mut out);
        for (i, o) in out.iter().enumerate() {
            let want = i as f32 * 0.25 + m[i * row_len..][..row_len].iter().sum::<f32>();
            assert_eq!(o.to_bits(), want.to_bits(), "row {i}: {o} vs {want}");
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

    #[test]
    fn rectangular_kernels_gather_their_own_rows_and_columns() {
        // A 1×3 kernel with horizontal padding 1 on a 2×4 image: taps run along x only.
        let g = ConvGeom::conv_rect(1, 2, 4, (1, 3), (1, 1), (0, 1)).unwrap();
        assert_eq!((g.oh, g.ow, g.col_rows()), (2, 4, 3));
        let img: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let mut col = vec![0.0; g.col_rows() * g.positions()];
        im2col(&img, &g, 1, &mut col);
        // Row r = tap kx; column = output position (y, x); value = img[y, x + kx − 1] or 0.
        assert_eq!(&col[..8], &[0.0, 0.0, 1.0, 2.0, 0.0, 4.0, 5.0, 6.0]);
        assert_eq!(&col[8..16], &img[..]);
        assert_eq!(&col[16..], &[1.0, 2.0, 3.0, 0.0, 5.0, 6.0, 7.0, 0.0]);
        // A 3×1 kernel with stride (2, 1) keeps every column and every other row.
        let g = ConvGeom::conv_rect(1, 5, 2, (3, 1), (2, 1), (1, 0)).unwrap();
        assert_eq!((g.oh, g.ow), (3, 2));
    }
}
