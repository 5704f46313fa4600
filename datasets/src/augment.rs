//! Training-time augmentation: random flips, small rotations and intensity jitter. Every draw comes
//! from the stream (seed, "augment", step, image), so augmented batches are as reproducible as the
//! batches themselves and a resumed run sees the same images. Evaluation never augments.

use crate::rng::{tag, StreamRng};
use crate::ImageBatch;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// What a spec's `data.augment` asks for; the default changes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// Mirror left–right with probability ½ (for knees: swaps laterality).
    pub flip_horizontal: bool,
    /// Mirror top–bottom with probability ½.
    pub flip_vertical: bool,
    /// Rotate by an angle drawn uniformly from ±this many degrees (bilinear, edges extended).
    pub rotate_degrees: f32,
    /// Add an offset drawn uniformly from ±this (values are in [0, 1]).
    pub brightness: f32,
    /// Scale deviations from the image mean by a factor drawn uniformly from 1 ± this.
    pub contrast: f32,
}

impl Augment {
    pub fn is_identity(&self) -> bool {
        *self == Augment::default()
    }

    /// Problems with the settings, as (field, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(0.0..=45.0).contains(&self.rotate_degrees) {
            out.push(("rotate_degrees", format!("must be in [0, 45], got {}", self.rotate_degrees)));
        }
        for (name, v) in [("brightness", self.brightness), ("contrast", self.contrast)] {
            if !(0.0..1.0).contains(&v) {
                out.push((name, format!("must be in [0, 1), got {v}")));
            }
        }
        out
    }

    /// Augments one C×H×W image in place. Five draws are always taken, in a fixed order, so that
    /// turning one option on does not change the others' draws.
    pub fn apply(&self, img: &mut [f32], (c, h, w): (usize, usize, usize), rng: &mut StreamRng) {
        let (flip_h, flip_v) = (rng.uniform() < 0.5, rng.uniform() < 0.5);
        let angle = (rng.uniform() * 2.0 - 1.0) as f32 * self.rotate_degrees;
        let offset = (rng.uniform() * 2.0 - 1.0) as f32 * self.brightness;
        let gain = 1.0 + (rng.uniform() * 2.0 - 1.0) as f32 * self.contrast;
        for plane in img.chunks_exact_mut(h * w).take(c) {
            if self.flip_horizontal && flip_h {
                plane.chunks_exact_mut(w).for_each(|row| row.reverse());
            }
            if self.flip_vertical && flip_v {
                for y in 0..h / 2 {
                    let (top, bottom) = plane.split_at_mut((h - 1 - y) * w);
                    top[y * w..(y + 1) * w].swap_with_slice(&mut bottom[..w]);
                }
            }
            if angle != 0.0 {
                let rotated = rotate(plane, h, w, angle);
                plane.copy_from_slice(&rotated);
            }
        }
        if self.brightness > 0.0 || self.contrast > 0.0 {
            let mean = img.iter().sum::<f32>() / img.len().max(1) as f32;
            for v in img.iter_mut() {
                *v = ((*v - mean) * gain + mean + offset).clamp(0.0, 1.0);
            }
        }
    }

    /// Augments every image of a training batch, in parallel; image `i` of step `step` always gets
    /// the same draws.
    pub fn apply_batch(&self, batch: &mut ImageBatch, seed: u64, step: u64) {
        if self.is_identity() {
            return;
        }
        let shape = (batch.c, batch.h, batch.w);
        let len = batch.image_len();
        batch.pixels.par_chunks_mut(len).enumerate().for_each(|(i, img)| {
            let mut rng = StreamRng::new(seed, &[tag("augment"), step, i as u64]);
            self.apply(img, shape, &mut rng);
        });
    }
}

/// One `h`×`w` plane rotated counter-clockwise by `degrees` about its centre: each output pixel
/// samples the input bilinearly at the inversely rotated position, clamped to the edges.
pub fn rotate(plane: &[f32], h: usize, w: usize, degrees: f32) -> Vec<f32> {
    let (s, c) = (degrees as f64).to_radians().sin_cos();
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let at = |y: isize, x: isize| plane[y.clamp(0, h as isize - 1) as usize * w + x.clamp(0, w as isize - 1) as usize];
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            let (dy, dx) = (y as f64 - cy, x as f64 - cx);
            // Inverse rotation (image y points down, so counter-clockwise on screen is +angle here).
            let sx = c * dx - s * dy + cx;
            let sy = s * dx + c * dy + cy;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = ((sx - x0) as f32, (sy - y0) as f32);
            let (x0, y0) = (x0 as isize, y0 as isize);
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x0 + 1) * fx;
            let bottom = at(y0 + 1, x0) * (1.0 - fx) + at(y0 + 1, x0 + 1) * fx;
            out[y * w + x] = top * (1.0 - fy) + bottom * fy;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(h: usize, w: usize) -> Vec<f32> {
        (0..h * w).map(|i| ((i * 37) % 101) as f32 / 100.0).collect()
    }

    #[test]
    fn the_default_changes_nothing_and_zero_rotation_is_exact() {
        let img = image(6, 5);
        let mut a = img.clone();
        Augment::default().apply(&mut a, (1, 6, 5), &mut StreamRng::new(1, &[]));
        assert_eq!(a, img);
        assert_eq!(rotate(&img, 6, 5, 0.0), img);
    }

    #[test]
    fn a_quarter_turn_moves_pixels_where_expected_and_flips_mirror() {
        // Counter-clockwise on screen: the top-centre pixel lands on the left-centre. Four quarter
        // turns (exact on a square grid) give the image back, and +θ then −θ does too at 90°.
        let (h, w) = (5, 5);
        let mut dot = vec![0.0; h * w];
        dot[2] = 1.0; // row 0, column 2
        let r = rotate(&dot, h, w, 90.0);
        assert!((r[2 * w] - 1.0).abs() < 1e-6 && r.iter().sum::<f32>() > 0.999, "{r:?}");
        let img = image(h, w);
        let four = (0..4).fold(img.clone(), |acc, _| rotate(&acc, h, w, 90.0));
        assert!(four.iter().zip(&img).all(|(a, b)| (a - b).abs() < 1e-5));
        let back = rotate(&rotate(&img, h, w, 90.0), h, w, -90.0);
        assert!(back.iter().zip(&img).all(|(a, b)| (a - b).abs() < 1e-5));
        let flips = Augment { flip_horizontal: true, flip_vertical: true, ..Default::default() };
        // Find a stream whose first two draws flip both ways: the result is a 180° turn.
        let mut seed = 0;
        while {
            let mut r = StreamRng::new(seed, &[]);
            !(r.uniform() < 0.5 && r.uniform() < 0.5)
        } {
            seed += 1;
        }
        let mut f = img.clone();
        flips.apply(&mut f, (1, h, w), &mut StreamRng::new(seed, &[]));
        let turned: Vec<f32> = img.iter().rev().copied().collect();
        assert_eq!(f, turned);
    }

    #[test]
    fn jitter_stays_in_range_and_batches_are_reproducible() {
        let aug = Augment { flip_horizontal: true, rotate_degrees: 10.0, brightness: 0.2, contrast: 0.3, ..Default::default() };
        let batch = ImageBatch {
            n: 8,
            c: 1,
            h: 6,
            w: 6,
            pixels: (0..8).flat_map(|_| image(6, 6)).collect(),
            factors: vec![],
            bit_depth: 8,
        };
        let run = |step| {
            let mut b = batch.clone();
            aug.apply_batch(&mut b, 3, step);
            b.pixels
        };
        let (a, b, other) = (run(5), run(5), run(6));
        assert_eq!(a, b, "same seed and step, same images");
        assert_ne!(a, other, "another step, other draws");
        assert_ne!(a, batch.pixels);
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(Augment { rotate_degrees: 90.0, contrast: 1.5, ..Default::default() }.problems().len() == 2);
    }
}
