//! A procedural dSprites-like dataset (Matthey et al. 2017, "dSprites: disentanglement testing
//! sprites dataset"): one white shape on black, described by five independent factors.
//!
//! | factor   | values                                   |
//! |----------|------------------------------------------|
//! | shape    | square, ellipse, heart (3)               |
//! | scale    | 0.5 … 1.0 in 6 steps                     |
//! | rotation | 0 … 2π in 40 steps (2π excluded)         |
//! | x, y     | 0 … 1 in 32 steps each                   |
//!
//! Images are rendered analytically at any size with 4×4 supersampling and quantised to 8-bit
//! levels, so they look the same at 32 px and 1024 px. The factor grid can be enumerated exactly
//! (`grid_index`) or sampled (the train and test splits sample it from disjoint streams).

use crate::procedural::image_rng;
use crate::rng::StreamRng;
use crate::{Dataset, Sample, Split, SplitSizes};
use serde::{Deserialize, Serialize};

pub const SHAPE_NAMES: [&str; 3] = ["square", "ellipse", "heart"];
pub const FACTOR_NAMES: [&str; 5] = ["shape", "scale", "rotation", "x", "y"];
/// Number of values of each factor, in `FACTOR_NAMES` order.
pub const FACTOR_SIZES: [usize; 5] = [3, 6, 40, 32, 32];

/// Options of the shapes dataset, as written in a spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapesConfig {
    /// Image side in pixels.
    pub size: usize,
    /// Images in each split (sampled from the factor grid).
    pub splits: SplitSizes,
    /// Seed of the data streams.
    pub seed: u64,
}

/// The discrete factor values of one image, as grid coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShapeFactors {
    pub shape: usize,
    pub scale: usize,
    pub rotation: usize,
    pub x: usize,
    pub y: usize,
}

impl ShapeFactors {
    /// The `index`-th point of the full factor grid (row-major in `FACTOR_NAMES` order).
    pub fn grid_index(mut index: usize) -> ShapeFactors {
        let mut coords = [0usize; 5];
        for k in (0..5).rev() {
            coords[k] = index % FACTOR_SIZES[k];
            index /= FACTOR_SIZES[k];
        }
        ShapeFactors { shape: coords[0], scale: coords[1], rotation: coords[2], x: coords[3], y: coords[4] }
    }

    /// Total number of grid points: 3 × 6 × 40 × 32 × 32 = 737,280.
    pub fn grid_len() -> usize {
        FACTOR_SIZES.iter().product()
    }

    /// A uniformly random grid point.
    pub fn sample(rng: &mut StreamRng) -> ShapeFactors {
        ShapeFactors {
            shape: rng.below(FACTOR_SIZES[0]),
            scale: rng.below(FACTOR_SIZES[1]),
            rotation: rng.below(FACTOR_SIZES[2]),
            x: rng.below(FACTOR_SIZES[3]),
            y: rng.below(FACTOR_SIZES[4]),
        }
    }

    /// Continuous factor values: shape index, scale in [0.5, 1], rotation in radians, x and y in [0, 1].
    pub fn values(&self) -> [f32; 5] {
        [
            self.shape as f32,
            0.5 + 0.1 * self.scale as f32,
            self.rotation as f32 * std::f32::consts::TAU / 40.0,
            self.x as f32 / 31.0,
            self.y as f32 / 31.0,
        ]
    }

    /// Renders the shape into a `size`×`size` grey image with values in [0, 1].
    pub fn render(&self, size: usize) -> Vec<f32> {
        let mut img = vec![0f32; size * size];
        self.render_into(size, &mut img);
        img
    }

    /// Renders the shape into `img` (`size`×`size`, zeros outside the shape's bounding box, which
    /// the caller provides: only the pixels the shape can cover are written).
    pub fn render_into(&self, size: usize, img: &mut [f32]) {
        assert_eq!(img.len(), size * size, "render_into needs a size×size image");
        const SUB: usize = 4; // supersampling per axis
        let [_, scale, angle, fx, fy] = self.values();
        // Object centre in [0.2, 0.8] of the frame and radius ≈ 0.2·scale of the side, as in dSprites.
        let (cx, cy) = (0.2 + 0.6 * fx, 0.2 + 0.6 * fy);
        let radius = 0.2 * scale;
        let (sin, cos) = angle.sin_cos();
        // Only pixels inside the bounding circle can be covered.
        let reach = radius * 1.5;
        let lo = |c: f32| (((c - reach) * size as f32).floor().max(0.0)) as usize;
        let hi = |c: f32| (((c + reach) * size as f32).ceil().min(size as f32)) as usize;
        for py in lo(cy)..hi(cy) {
            for px in lo(cx)..hi(cx) {
                let mut hits = 0;
                for sy in 0..SUB {
                    for sx in 0..SUB {
                        let x = (px as f32 + (sx as f32 + 0.5) / SUB as f32) / size as f32 - cx;
                        let y = (py as f32 + (sy as f32 + 0.5) / SUB as f32) / size as f32 - cy;
                        // Rotate the sample point into the shape's own frame, in units of the radius.
                        let u = (cos * x + sin * y) / radius;
                        let v = (-sin * x + cos * y) / radius;
                        if inside(self.shape, u, v) {
                            hits += 1;
                        }
                    }
                }
                let coverage = hits as f32 / (SUB * SUB) as f32;
                img[py * size + px] = (coverage * 255.0).round() / 255.0;
            }
        }
    }
}

/// Point-in-shape tests in the shape's frame, where the shape spans roughly [-1, 1].
fn inside(shape: usize, u: f32, v: f32) -> bool {
    match shape {
        0 => u.abs() <= 0.8 && v.abs() <= 0.8,
        1 => u * u + (v * v) / 0.36 <= 1.0, // ellipse, semi-axes 1 and 0.6
        _ => {
            // The heart curve (x² + y² − 1)³ − x²y³ ≤ 0, scaled and flipped so it points down.
            let (x, y) = (u * 1.15, -v * 1.15 + 0.15);
            let a = x * x + y * y - 1.0;
            a * a * a - x * x * y * y * y <= 0.0
        }
    }
}

/// The shapes dataset.
#[derive(Clone, Debug)]
pub struct Shapes {
    cfg: ShapesConfig,
}

impl Shapes {
    pub fn new(cfg: ShapesConfig) -> Self {
        Shapes { cfg }
    }

    /// The factors of image `index` of `split`. Train and test draw from disjoint random streams.
    pub fn factors(&self, split: Split, index: usize) -> ShapeFactors {
        ShapeFactors::sample(&mut image_rng(self.cfg.seed, "shapes", split, index))
    }
}

impl Dataset for Shapes {
    fn name(&self) -> &str {
        "shapes"
    }
    fn image_shape(&self) -> (usize, usize, usize) {
        (1, self.cfg.size, self.cfg.size)
    }
    fn len(&self, split: Split) -> usize {
        self.cfg.splits.get(split)
    }
    fn factor_names(&self) -> Vec<String> {
        FACTOR_NAMES.iter().map(|s| s.to_string()).collect()
    }
    fn sample(&self, split: Split, index: usize) -> Sample {
        let f = self.factors(split, index);
        Sample { pixels: f.render(self.cfg.size), factors: f.values().to_vec() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_index_enumerates_every_point_once() {
        let n = ShapeFactors::grid_len();
        assert_eq!(n, 737_280);
        assert_eq!(ShapeFactors::grid_index(0), ShapeFactors { shape: 0, scale: 0, rotation: 0, x: 0, y: 0 });
        assert_eq!(ShapeFactors::grid_index(n - 1), ShapeFactors { shape: 2, scale: 5, rotation: 39, x: 31, y: 31 });
        assert_eq!(ShapeFactors::grid_index(1).y, 1);
        assert_eq!(ShapeFactors::grid_index(32).x, 1);
    }

    #[test]
    fn area_grows_with_scale_and_images_are_deterministic() {
        let small = ShapeFactors { shape: 0, scale: 0, rotation: 0, x: 16, y: 16 }.render(64);
        let large = ShapeFactors { shape: 0, scale: 5, rotation: 0, x: 16, y: 16 }.render(64);
        let area = |img: &[f32]| img.iter().sum::<f32>();
        // Square side ∝ scale, so area ratio ≈ (1.0 / 0.5)² = 4.
        let ratio = area(&large) / area(&small);
        assert!((ratio - 4.0).abs() < 0.3, "area ratio {ratio}");
        let ds = Shapes::new(ShapesConfig { size: 32, splits: SplitSizes { train: 10, val: 0, test: 10 }, seed: 3 });
        assert_eq!(ds.sample(Split::Train, 4).pixels, ds.sample(Split::Train, 4).pixels);
        assert_ne!(ds.sample(Split::Train, 4).pixels, ds.sample(Split::Test, 4).pixels);
    }

    #[test]
    fn position_moves_the_centre_of_mass() {
        let centre_x = |x| {
            let img = ShapeFactors { shape: 1, scale: 3, rotation: 0, x, y: 10 }.render(64);
            let (mut m, mut s) = (0.0, 0.0);
            for (i, v) in img.iter().enumerate() {
                m += v * (i % 64) as f32;
                s += v;
            }
            m / s / 64.0
        };
        // Centre = 0.2 + 0.6·x/31, measured in pixel-index units (half a pixel below the continuous centre).
        assert!((centre_x(0) - 0.2).abs() < 0.02);
        assert!((centre_x(31) - 0.8).abs() < 0.02);
    }
}
