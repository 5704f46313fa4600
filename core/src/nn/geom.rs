//! Geometry of a convolution, shared by the fused CPU kernels and the gather-based path.

/// A convolution between an "image side" of `c`×`h`×`w` and a "column side" of `oh`×`ow`
/// positions. For `Conv` the image side is the input; for `ConvT` it is the output, since a
/// transposed convolution is the adjoint of the convolution with the same k, s, p.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
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

    /// Geometry of `Conv` on a `c`×`h`×`w` input.
    pub fn conv(c: usize, h: usize, w: usize, k: usize, s: usize, p: usize) -> Option<ConvGeom> {
        Some(ConvGeom { c, h, w, k, s, p, oh: Self::conv_out(h, k, s, p)?, ow: Self::conv_out(w, k, s, p)? })
    }

    /// Geometry of `ConvT` producing `c` channels from an `ih`×`iw` input.
    pub fn conv_t(c: usize, ih: usize, iw: usize, k: usize, s: usize, p: usize) -> Option<ConvGeom> {
        let (h, w) = (Self::conv_t_out(ih, k, s, p)?, Self::conv_t_out(iw, k, s, p)?);
        Some(ConvGeom { c, h, w, k, s, p, oh: ih, ow: iw })
    }

    /// Rows of the column matrix: c·k·k.
    pub fn col_rows(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Column-side positions: oh·ow.
    pub fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// Image-side row for column row `r` at position (oy, ox), or `None` in the zero padding.
    #[inline]
    pub fn source(&self, r: usize, oy: usize, ox: usize) -> Option<usize> {
        let (c, kk) = (r / (self.k * self.k), r % (self.k * self.k));
        let (ky, kx) = (kk / self.k, kk % self.k);
        let y = (oy * self.s + ky).checked_sub(self.p).filter(|&y| y < self.h)?;
        let x = (ox * self.s + kx).checked_sub(self.p).filter(|&x| x < self.w)?;
        Some((c * self.h + y) * self.w + x)
    }
}
