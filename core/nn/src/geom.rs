//! Geometry of a convolution, shared by the fused CPU kernels and the gather-based path.

/// A convolution between an "image side" of `c`×`h`×`w` and a "column side" of `oh`×`ow`
/// positions. For `Conv` the image side is the input; for `ConvT` it is the output, since a
/// transposed convolution is the adjoint of the convolution with the same kernel, stride and padding.
///
/// Kernels, strides and paddings are `(vertical, horizontal)`: spec layers are square, while
/// Inception-v3 (the FID network) factorises 7×7 kernels into 1×7 and 7×1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: (usize, usize),
    pub s: (usize, usize),
    pub p: (usize, usize),
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Output side of a convolution of `n` pixels, or `None` when the kernel does not fit.
    pub fn conv_out(n: usize, k: usize, s: usize, p: usize) -> Option<usize> {
        let padded = n + 2 * p;
        (padded >= k && s > 0).then(|| (padded - k) / s + 1)
    }

    /// Output side of a transposed convolution of `n` pixels (no output padding).
    pub fn conv_t_out(n: usize, k: usize, s: usize, p: usize) -> Option<usize> {
        let full = (n.checked_sub(1)?) * s + k;
        full.checked_sub(2 * p).filter(|&o| o > 0)
    }

    /// Geometry of a square `Conv` on a `c`×`h`×`w` input.
    pub fn conv(c: usize, h: usize, w: usize, k: usize, s: usize, p: usize) -> Option<ConvGeom> {
        Self::conv_rect(c, h, w, (k, k), (s, s), (p, p))
    }

    /// Geometry of a `Conv` with a `k.0`×`k.1` kernel on a `c`×`h`×`w` input.
    pub fn conv_rect(c: usize, h: usize, w: usize, k: (usize, usize), s: (usize, usize), p: (usize, usize)) -> Option<ConvGeom> {
        let (oh, ow) = (Self::conv_out(h, k.0, s.0, p.0)?, Self::conv_out(w, k.1, s.1, p.1)?);
        Some(ConvGeom { c, h, w, k, s, p, oh, ow })
    }

    /// Geometry of a square `ConvT` producing `c` channels from an `ih`×`iw` input.
    pub fn conv_t(c: usize, ih: usize, iw: usize, k: usize, s: usize, p: usize) -> Option<ConvGeom> {
        let (h, w) = (Self::conv_t_out(ih, k, s, p)?, Self::conv_t_out(iw, k, s, p)?);
        Some(ConvGeom { c, h, w, k: (k, k), s: (s, s), p: (p, p), oh: ih, ow: iw })
    }

    /// Rows of the column matrix: c·kh·kw.
    pub fn col_rows(&self) -> usize {
        self.c * self.k.0 * self.k.1
    }

    /// Column-side positions: oh·ow.
    pub fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// Image-side row for column row `r` at position (oy, ox), or `None` in the zero padding.
    #[inline]
    pub fn source(&self, r: usize, oy: usize, ox: usize) -> Option<usize> {
        let taps = self.k.0 * self.k.1;
        let (c, kk) = (r / taps, r % taps);
        let (ky, kx) = (kk / self.k.1, kk % self.k.1);
        let y = (oy * self.s.0 + ky).checked_sub(self.p.0).filter(|&y| y < self.h)?;
        let x = (ox * self.s.1 + kx).checked_sub(self.p.1).filter(|&x| x < self.w)?;
        Some((c * self.h + y) * self.w + x)
    }

    /// [`source`](Self::source) for column row `r` at the positions `p0..p1` (row-major over
    /// (oy, ox)), as runs in position order: `f(first, count, None)` for `count` positions in the zero
    /// padding, `f(first, count, Some(src))` for positions whose image rows are `src`, `src + s.1`,
    /// `src + 2·s.1`, … (along one image row). The kernels copy or add a whole run at once; position
    /// by position, `source`'s six integer divisions cost more than the copy of a batch of 16 values.
    pub fn runs(&self, r: usize, (p0, p1): (usize, usize), mut f: impl FnMut(usize, usize, Option<usize>)) {
        let taps = self.k.0 * self.k.1;
        let (c, kk) = (r / taps, r % taps);
        let (ky, kx) = (kk / self.k.1, kk % self.k.1);
        let ((sy, sx), (py, px)) = (self.s, self.p);
        // The output columns whose image column ox·sx + kx − px lies in 0..w.
        let ox_lo = px.saturating_sub(kx).div_ceil(sx);
        let ox_hi = if self.w + px > kx { ((self.w + px - kx - 1) / sx + 1).min(self.ow) } else { 0 };
        let mut emit = |first: usize, count: usize, src: Option<usize>| {
            if count > 0 {
                f(first, count, src)
            }
        };
        // One division for the first position; after it, each output row starts at ox = 0.
        let (mut oy, mut ox) = (p0 / self.ow.max(1), p0 % self.ow.max(1));
        let mut pos = p0;
        while pos < p1 {
            let line = pos - ox; // the position of (oy, 0)
            let end = (line + self.ow).min(p1) - line; // this output row's part of the range: ox..end
            match (oy * sy + ky).checked_sub(py).filter(|&y| y < self.h) {
                None => emit(pos, end - ox, None),
                Some(y) => {
                    let lo = ox_lo.clamp(ox, end);
                    let hi = ox_hi.clamp(lo, end);
                    emit(pos, lo - ox, None);
                    if hi > lo {
                        emit(line + lo, hi - lo, Some((c * self.h + y) * self.w + lo * sx + kx - px));
                    }
                    emit(line + hi, end - hi, None);
                }
            }
            pos = line + end;
            (oy, ox) = (oy + 1, 0);
        }
    }
}
