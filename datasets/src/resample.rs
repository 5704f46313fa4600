//! Separable resampling of grey f32 images with a triangle (bilinear) filter that widens with the
//! scale factor when shrinking, so downscaling averages every source pixel (antialiasing) — the
//! same filter as Pillow's `BILINEAR` and the `image` crate's `Triangle`, without their integer
//! rounding and per-call allocations.

/// For each output coordinate, the first source index and the normalised weights of its taps.
struct Taps {
    start: Vec<usize>,
    len: usize,
    weights: Vec<f32>,
}

fn taps(src: usize, dst: usize) -> Taps {
    let scale = src as f64 / dst as f64;
    let support = scale.max(1.0);
    let len = (support.ceil() as usize) * 2 + 1;
    let mut start = Vec::with_capacity(dst);
    let mut weights = vec![0.0f32; dst * len];
    for i in 0..dst {
        let center = (i as f64 + 0.5) * scale;
        let lo = (center - support).floor().max(0.0) as usize;
        let hi = ((center + support).ceil() as usize).min(src);
        let w: Vec<f64> = (lo..hi).map(|j| (1.0 - ((j as f64 + 0.5 - center) / support).abs()).max(0.0)).collect();
        let total: f64 = w.iter().sum();
        for (k, v) in w.iter().enumerate().take(len) {
            weights[i * len + k] = (v / total) as f32;
        }
        start.push(lo);
    }
    Taps { start, len, weights }
}

/// Resizes a row-major `w`×`h` image to `dw`×`dh`.
pub fn resize(src: &[f32], w: usize, h: usize, dw: usize, dh: usize) -> Vec<f32> {
    assert_eq!(src.len(), w * h, "source size");
    if (w, h) == (dw, dh) {
        return src.to_vec();
    }
    let (tx, ty) = (taps(w, dw), taps(h, dh));
    // Horizontal pass: h × dw.
    let mut mid = vec![0.0f32; h * dw];
    for (row, out) in src.chunks_exact(w).zip(mid.chunks_exact_mut(dw)) {
        for (i, o) in out.iter_mut().enumerate() {
            let s = tx.start[i];
            let n = tx.len.min(w - s);
            *o = row[s..s + n].iter().zip(&tx.weights[i * tx.len..i * tx.len + n]).map(|(a, b)| a * b).sum();
        }
    }
    // Vertical pass: dh × dw, accumulating whole rows (contiguous, vectorisable).
    let mut out = vec![0.0f32; dh * dw];
    for (i, dst) in out.chunks_exact_mut(dw).enumerate() {
        let s = ty.start[i];
        for k in 0..ty.len.min(h - s) {
            let wgt = ty.weights[i * ty.len + k];
            if wgt != 0.0 {
                for (d, m) in dst.iter_mut().zip(&mid[(s + k) * dw..(s + k + 1) * dw]) {
                    *d += wgt * m;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halving_averages_pairs_and_constant_images_stay_constant() {
        // A 2× downscale with a triangle of radius 2 source pixels: weights ¼, ¾, ¾, ¼ (normalised
        // to 1/8, 3/8, 3/8, 1/8) around each output pixel, clipped at the borders.
        let src: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let out = resize(&src, 8, 1, 4, 1);
        let want = [(0.0 * 3.0 + 1.0 * 3.0 + 2.0) / 7.0, 2.5, 4.5, (5.0 + 6.0 * 3.0 + 7.0 * 3.0) / 7.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-5, "{out:?}");
        }
        let flat = resize(&vec![0.25; 37 * 23], 37, 23, 11, 7);
        assert!(flat.iter().all(|v| (v - 0.25).abs() < 1e-6));
        let up = resize(&[0.0, 1.0], 2, 1, 4, 1);
        assert!(up.windows(2).all(|p| p[0] <= p[1]) && up[0] == 0.0 && up[3] == 1.0, "{up:?}");
    }

    #[test]
    fn agrees_with_the_image_crate_triangle_filter() {
        let (w, h) = (96, 80);
        let src: Vec<f32> = (0..w * h).map(|i| ((i * 7919) % 251) as f32 / 250.0).collect();
        let ours = resize(&src, w, h, 40, 24);
        let img = image::ImageBuffer::<image::Luma<f32>, _>::from_raw(w as u32, h as u32, src).unwrap();
        let theirs = image::imageops::resize(&img, 40, 24, image::imageops::FilterType::Triangle).into_raw();
        let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-4, "largest difference {worst}");
    }
}
