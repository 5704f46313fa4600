//! The sharpness ratio: how sharp a set of images is next to another, by the variance of the
//! Laplacian.
//!
//! The variance of an image's Laplacian is the classic focus measure (Pech-Pacheco et al. 2000,
//! "Diatom autofocusing in brightfield microscopy: a comparative study", ICPR): blur removes high
//! frequencies and with them the Laplacian's spread. The ratio of two sets' means says "blurry"
//! (≪ 1), "as sharp as the data" (≈ 1) or "noisier than the data" (≫ 1). It needs no network, so it
//! also works on images no feature extractor was trained for (the knee radiographs).

use vaelab_datasets::ImageBatch;

/// The 4-neighbour discrete Laplacian ∇²f ≈ f(x−1,y) + f(x+1,y) + f(x,y−1) + f(x,y+1) − 4f(x,y) at
/// every interior pixel of one `h`×`w` plane, and the population variance of those values.
pub fn laplacian_variance(plane: &[f32], h: usize, w: usize) -> f64 {
    if h < 3 || w < 3 {
        return 0.0;
    }
    let at = |y: usize, x: usize| plane[y * w + x] as f64;
    let (mut sum, mut sq) = (0.0f64, 0.0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let l = at(y - 1, x) + at(y + 1, x) + at(y, x - 1) + at(y, x + 1) - 4.0 * at(y, x);
            sum += l;
            sq += l * l;
        }
    }
    let n = ((h - 2) * (w - 2)) as f64;
    let mean = sum / n;
    (sq / n - mean * mean).max(0.0)
}

/// The mean over images and channels of [`laplacian_variance`].
pub fn mean_laplacian_variance(images: &ImageBatch) -> f64 {
    let plane = images.h * images.w;
    let planes = images.n * images.c;
    let total: f64 = images.pixels.chunks(plane).map(|p| laplacian_variance(p, images.h, images.w)).sum();
    total / planes.max(1) as f64
}

/// What `sharpness` reports, in `metrics.json` and `vaelab metrics`.
pub const DEFINITION: &str =
    "sharpness ratio: mean variance of the 4-neighbour Laplacian of the generated images over that of the \
test images (Pech-Pacheco et al. 2000's focus measure); ≪ 1 blurry, ≈ 1 as sharp as the data, ≫ 1 noisier than the data";

/// Mean Laplacian variance of `fake` over that of `real`: counts may differ, channels must not.
pub fn sharpness_ratio(real: &ImageBatch, fake: &ImageBatch) -> Result<f64, String> {
    if real.n == 0 || fake.n == 0 {
        return Err("no images".into());
    }
    if real.h < 3 || real.w < 3 || fake.h < 3 || fake.w < 3 {
        return Err("images must be at least 3×3 pixels".into());
    }
    let reference = mean_laplacian_variance(real);
    if reference <= 0.0 {
        return Err("the reference images are flat (their Laplacian does not vary), so no ratio exists".into());
    }
    Ok(mean_laplacian_variance(fake) / reference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vaelab_datasets::{Dataset, KneeConfig, KneePhantom, Split, SplitSizes};

    #[test]
    fn a_checkerboards_laplacian_is_plus_or_minus_four() {
        // Interior pixels of a 0/1 checkerboard: a 1 among four 0s gives −4, a 0 among four 1s +4,
        // equally often on a 6×6 board, so the variance is 16.
        let board: Vec<f32> = (0..36).map(|i| ((i / 6 + i % 6) % 2) as f32).collect();
        assert_eq!(laplacian_variance(&board, 6, 6), 16.0);
        // A plane and a ramp have a zero Laplacian.
        let ramp: Vec<f32> = (0..36).map(|i| 0.1 * (i % 6) as f32 + 0.05 * (i / 6) as f32).collect();
        assert!(laplacian_variance(&ramp, 6, 6) < 1e-12);
    }

    /// A 3×3 box blur of every plane, edges clamped.
    fn blurred(images: &ImageBatch) -> ImageBatch {
        let (h, w) = (images.h, images.w);
        let mut out = images.pixels.clone();
        for (src, dst) in images.pixels.chunks(h * w).zip(out.chunks_mut(h * w)) {
            for y in 0..h {
                for x in 0..w {
                    let mut s = 0.0;
                    for dy in -1i32..=1 {
                        for dx in -1i32..=1 {
                            let yy = (y as i32 + dy).clamp(0, h as i32 - 1) as usize;
                            let xx = (x as i32 + dx).clamp(0, w as i32 - 1) as usize;
                            s += src[yy * w + xx];
                        }
                    }
                    dst[y * w + x] = s / 9.0;
                }
            }
        }
        images.with_pixels(out)
    }

    #[test]
    fn blurred_knees_score_far_below_one_and_noisy_ones_above() {
        let splits = SplitSizes { train: 1, val: 1, test: 16 };
        let knees = KneePhantom::new(KneeConfig { size: 128, splits, seed: 3, patella: true });
        let test = knees.batch(Split::Test, &(0..16).collect::<Vec<_>>());
        assert_eq!(sharpness_ratio(&test, &test).unwrap(), 1.0);
        let once = sharpness_ratio(&test, &blurred(&test)).unwrap();
        let twice = sharpness_ratio(&test, &blurred(&blurred(&test))).unwrap();
        assert!(once < 0.5, "one 3×3 box blur: {once}");
        assert!(twice < once, "more blur must score lower: {twice} vs {once}");
        let mut rng = vaelab_datasets::StreamRng::new(1, &[]);
        let noisy =
            test.with_pixels(test.pixels.iter().map(|p| (p + 0.1 * (rng.uniform() as f32 - 0.5)).clamp(0.0, 1.0)).collect());
        assert!(sharpness_ratio(&test, &noisy).unwrap() > 1.0);
    }

    #[test]
    fn flat_references_are_refused() {
        let flat = ImageBatch { n: 2, c: 1, h: 4, w: 4, pixels: vec![0.5; 32], factors: vec![], bit_depth: 8 };
        assert!(sharpness_ratio(&flat, &flat).unwrap_err().contains("flat"));
    }
}
