//! SSIM and MS-SSIM (Wang, Bovik, Sheikh & Simoncelli 2004; Wang, Simoncelli & Bovik 2003).
//!
//! * Gaussian window of 11 taps, σ = 1.5, applied as separable "valid" convolutions (no padding);
//!   K1 = 0.01, K2 = 0.03, data range 1.
//! * SSIM: the mean of the SSIM map per channel, averaged over channels, then over images.
//! * MS-SSIM: 5 scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); contrast-structure
//!   terms at every scale and luminance only at the coarsest; between scales a 2×2 average pool,
//!   zero-padding odd sizes (the pad counts in the average). Negative contrast-structure (and
//!   coarsest SSIM) terms are clamped to 0 before the weighted product, as pytorch-msssim does, so a
//!   negative base never meets a fractional power.
//! * Images whose smaller side is ≤ 160 px cannot take 5 scales of an 11-tap window: the largest
//!   number that fits is used (side > 10·2^(scales−1)), with the first weights re-normalised to sum
//!   to 1, and the scale count is reported beside the value.
//!
//! Computed in f64. Checked against pytorch-msssim on fixed inputs (tests/fixtures/ssim_reference.json).

use super::metric::{check_pair, Metric, MetricError};
use rayon::prelude::*;
use vaelab_datasets::ImageBatch;

pub const WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];
const WIN: usize = 11;
const SIGMA: f64 = 1.5;
const C1: f64 = 0.01 * 0.01;
const C2: f64 = 0.03 * 0.03;

fn window() -> [f64; WIN] {
    let mut g = [0.0; WIN];
    for (i, v) in g.iter_mut().enumerate() {
        let d = i as f64 - (WIN / 2) as f64;
        *v = (-(d * d) / (2.0 * SIGMA * SIGMA)).exp();
    }
    let s: f64 = g.iter().sum();
    g.map(|v| v / s)
}

/// Separable valid filtering; a dimension smaller than the window is left unfiltered.
fn blur(img: &[f64], h: usize, w: usize, g: &[f64; WIN]) -> (Vec<f64>, usize, usize) {
    let (ow, horizontal) = if w >= WIN { (w - WIN + 1, true) } else { (w, false) };
    let mut tmp = vec![0.0; h * ow];
    for y in 0..h {
        for x in 0..ow {
            tmp[y * ow + x] = if horizontal { (0..WIN).map(|k| g[k] * img[y * w + x + k]).sum() } else { img[y * w + x] };
        }
    }
    let (oh, vertical) = if h >= WIN { (h - WIN + 1, true) } else { (h, false) };
    let mut out = vec![0.0; oh * ow];
    for y in 0..oh {
        for x in 0..ow {
            out[y * ow + x] = if vertical { (0..WIN).map(|k| g[k] * tmp[(y + k) * ow + x]).sum() } else { tmp[y * ow + x] };
        }
    }
    (out, oh, ow)
}

/// (mean SSIM, mean contrast-structure) of one channel pair.
fn ssim_cs(x: &[f64], y: &[f64], h: usize, w: usize) -> (f64, f64) {
    let g = window();
    let prod = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).collect::<Vec<f64>>();
    let (mu1, oh, ow) = blur(x, h, w, &g);
    let (mu2, ..) = blur(y, h, w, &g);
    let (xx, ..) = blur(&prod(x, x), h, w, &g);
    let (yy, ..) = blur(&prod(y, y), h, w, &g);
    let (xy, ..) = blur(&prod(x, y), h, w, &g);
    let (mut ssim, mut cs) = (0.0, 0.0);
    for i in 0..oh * ow {
        let (m1, m2) = (mu1[i], mu2[i]);
        let (s1, s2, s12) = (xx[i] - m1 * m1, yy[i] - m2 * m2, xy[i] - m1 * m2);
        let c = (2.0 * s12 + C2) / (s1 + s2 + C2);
        cs += c;
        ssim += (2.0 * m1 * m2 + C1) / (m1 * m1 + m2 * m2 + C1) * c;
    }
    let n = (oh * ow) as f64;
    (ssim / n, cs / n)
}

/// 2×2 average pooling; odd sizes get one zero of padding on each side (counted in the average).
fn pool(img: &[f64], h: usize, w: usize) -> (Vec<f64>, usize, usize) {
    let (ph, pw) = (h % 2, w % 2);
    let (oh, ow) = ((h + 2 * ph - 2) / 2 + 1, (w + 2 * pw - 2) / 2 + 1);
    let at = |y: isize, x: isize| {
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            0.0
        } else {
            img[y as usize * w + x as usize]
        }
    };
    let mut out = vec![0.0; oh * ow];
    for oy in 0..oh {
        for ox in 0..ow {
            let (y0, x0) = ((2 * oy) as isize - ph as isize, (2 * ox) as isize - pw as isize);
            out[oy * ow + ox] = (at(y0, x0) + at(y0, x0 + 1) + at(y0 + 1, x0) + at(y0 + 1, x0 + 1)) / 4.0;
        }
    }
    (out, oh, ow)
}

/// The number of MS-SSIM scales an image of this size takes (1 to 5).
pub fn scales_for(h: usize, w: usize) -> usize {
    let side = h.min(w);
    (1..=5).rev().find(|&l| side > (WIN - 1) * (1 << (l - 1))).unwrap_or(1)
}

/// MS-SSIM of one channel pair over `weights.len()` scales.
fn ms_ssim_channel(x: &[f64], y: &[f64], h: usize, w: usize, weights: &[f64]) -> f64 {
    let (mut x, mut y, mut h, mut w) = (x.to_vec(), y.to_vec(), h, w);
    let mut value = 1.0;
    for (level, weight) in weights.iter().enumerate() {
        let (ssim, cs) = ssim_cs(&x, &y, h, w);
        if level + 1 == weights.len() {
            value *= ssim.max(0.0).powf(*weight);
        } else {
            value *= cs.max(0.0).powf(*weight);
            let (px, ..) = pool(&x, h, w);
            let (py, nh, nw) = pool(&y, h, w);
            (x, y, h, w) = (px, py, nh, nw);
        }
    }
    value
}

/// Mean over images of the mean over channels of `per_channel`.
fn mean_over(real: &ImageBatch, fake: &ImageBatch, per_channel: impl Fn(&[f64], &[f64]) -> f64 + Sync) -> f64 {
    let plane = real.h * real.w;
    // Per-image values in parallel, summed in image order: a parallel f64 sum's order follows rayon's
    // work stealing, and two evaluations of one run differed in their last bit.
    let per_image: Vec<f64> = (0..real.n)
        .into_par_iter()
        .map(|i| {
            let (a, b) = (real.image(i), fake.image(i));
            (0..real.c)
                .map(|c| {
                    let x: Vec<f64> = a[c * plane..(c + 1) * plane].iter().map(|v| *v as f64).collect();
                    let y: Vec<f64> = b[c * plane..(c + 1) * plane].iter().map(|v| *v as f64).collect();
                    per_channel(&x, &y)
                })
                .sum::<f64>()
                / real.c as f64
        })
        .collect();
    per_image.iter().sum::<f64>() / real.n as f64
}

pub struct Ssim;

impl Metric for Ssim {
    fn name(&self) -> &str {
        "ssim"
    }
    fn definition(&self) -> &str {
        "SSIM (Wang et al. 2004): 11-tap Gaussian window σ=1.5, K1=0.01, K2=0.03, data range [0, 1], valid filtering; mean over pixels, channels, images"
    }
    fn higher_is_better(&self) -> bool {
        true
    }
    fn compute(&self, real: &ImageBatch, fake: &ImageBatch) -> Result<f64, MetricError> {
        check_pair(self.name(), real, fake)?;
        Ok(mean_over(real, fake, |x, y| ssim_cs(x, y, real.h, real.w).0))
    }
}

pub struct MsSsim;

impl MsSsim {
    /// The weights used for images of this size: the first `scales_for` weights, re-normalised.
    pub fn weights(h: usize, w: usize) -> Vec<f64> {
        let l = scales_for(h, w);
        let sum: f64 = WEIGHTS[..l].iter().sum();
        WEIGHTS[..l].iter().map(|v| v / sum).collect()
    }
}

impl Metric for MsSsim {
    fn name(&self) -> &str {
        "ms_ssim"
    }
    fn definition(&self) -> &str {
        "MS-SSIM (Wang et al. 2003): 5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), luminance at the coarsest scale only, negative terms clamped to 0; fewer scales (weights re-normalised) below 161 px"
    }
    fn higher_is_better(&self) -> bool {
        true
    }
    fn compute(&self, real: &ImageBatch, fake: &ImageBatch) -> Result<f64, MetricError> {
        check_pair(self.name(), real, fake)?;
        let weights = Self::weights(real.h, real.w);
        Ok(mean_over(real, fake, |x, y| ms_ssim_channel(x, y, real.h, real.w, &weights)))
    }
    fn note(&self, real: &ImageBatch) -> Option<String> {
        let l = scales_for(real.h, real.w);
        (l < 5).then(|| format!("{l} scales: images of {}×{} px are too small for 5", real.h, real.w))
    }
}
