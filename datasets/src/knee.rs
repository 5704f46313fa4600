//! Synthetic knee radiographs: a standing antero-posterior (AP) view with femur, tibia, fibula
//! head and an optional patella shadow, rendered analytically at any resolution.
//!
//! Bones are signed-distance shapes, so their cortical rims (brighter than the trabecular bone
//! inside) come from the distance to the bone edge. The trabecular texture is anisotropic value
//! noise. Factors, each returned with the image (`FACTOR_NAMES` order):
//!
//! | factor | range | meaning |
//! |---|---|---|
//! | `grade` | 0–4 | KL-like grade, a function of the joint-space width alone (thresholds in `GRADE_JSW`) |
//! | `jsw` | 0.015–0.14 | joint-space width, in units of the image width |
//! | `osteophyte` | 0–1 | size of the marginal bony spurs |
//! | `sclerosis` | 0–1 | density of the subchondral band under both joint surfaces |
//! | `rotation` | −10°…10° | in-plane rotation, in degrees |
//! | `laterality` | 0 / 1 | right / left knee (mirror image: the fibula is on the other side) |
//! | `exposure` | 0–1 | exposure and contrast (gain and gamma of the film response) |
//!
//! Osteophytes and sclerosis are sampled independently of the grade, so every factor can be
//! studied on its own; in real knees they rise with the KL grade (Kellgren & Lawrence 1957).

use crate::procedural::image_rng;
use crate::rng::{tag, StreamRng};
use crate::{Dataset, Sample, Split, SplitSizes};
use serde::{Deserialize, Serialize};

pub const FACTOR_NAMES: [&str; 7] = ["grade", "jsw", "osteophyte", "sclerosis", "rotation", "laterality", "exposure"];

/// Joint-space width at the middle of each grade's band, grade 0 (healthy) to 4 (bone on bone).
pub const GRADE_JSW: [f32; 5] = [0.12, 0.095, 0.07, 0.045, 0.022];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KneeConfig {
    pub size: usize,
    /// Images in each split.
    pub splits: SplitSizes,
    pub seed: u64,
    /// Draw the patella shadow over the femur.
    pub patella: bool,
}

/// The factors of one image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KneeFactors {
    pub grade: u8,
    pub jsw: f32,
    pub osteophyte: f32,
    pub sclerosis: f32,
    pub rotation_deg: f32,
    pub left: bool,
    pub exposure: f32,
    /// Seed of the texture and noise of this image.
    pub texture_seed: u64,
}

impl KneeFactors {
    pub fn sample(rng: &mut StreamRng) -> KneeFactors {
        let grade = rng.below(5) as u8;
        // Uniform within the grade's band (half-way to the neighbouring centres).
        let centre = GRADE_JSW[grade as usize];
        let up = if grade == 0 { 0.14 } else { (GRADE_JSW[grade as usize - 1] + centre) / 2.0 };
        let down = if grade == 4 { 0.015 } else { (GRADE_JSW[grade as usize + 1] + centre) / 2.0 };
        let jsw = down + (up - down) * rng.uniform() as f32;
        KneeFactors {
            grade,
            jsw,
            osteophyte: rng.uniform() as f32,
            sclerosis: rng.uniform() as f32,
            rotation_deg: (rng.uniform() as f32 * 2.0 - 1.0) * 10.0,
            left: rng.below(2) == 1,
            exposure: rng.uniform() as f32,
            texture_seed: rng.next_u64(),
        }
    }

    pub fn values(&self) -> Vec<f32> {
        vec![
            self.grade as f32,
            self.jsw,
            self.osteophyte,
            self.sclerosis,
            self.rotation_deg,
            self.left as u8 as f32,
            self.exposure,
        ]
    }

    /// Renders the radiograph: `size`×`size` grey values in [0, 1] (bone bright, as on film).
    pub fn render(&self, size: usize, patella: bool) -> Vec<f32> {
        let noise = ValueNoise::new(self.texture_seed);
        let (sin, cos) = self.rotation_deg.to_radians().sin_cos();
        let gain = 0.8 + 0.4 * self.exposure;
        let gamma = 1.3 - 0.6 * self.exposure;
        let mut grain = StreamRng::new(self.texture_seed, &[tag("grain")]);
        let mut img = Vec::with_capacity(size * size);
        for py in 0..size {
            for px in 0..size {
                // Image coordinates in [−1, 1], y up; undo rotation and laterality to reach the
                // knee's own frame, where the joint line is y = 0 and the fibula is at x > 0.
                let x0 = (px as f32 + 0.5) / size as f32 * 2.0 - 1.0;
                let y0 = 1.0 - (py as f32 + 0.5) / size as f32 * 2.0;
                let (mut x, y) = (cos * x0 + sin * y0, -sin * x0 + cos * y0);
                if self.left {
                    x = -x;
                }
                let v = self.attenuation(x, y, &noise, patella);
                let film = (gain * v).clamp(0.0, 1.0).powf(gamma);
                let grain = 0.015 * grain.normal() as f32;
                img.push((film + grain).clamp(0.0, 1.0));
            }
        }
        img
    }

    /// Total attenuation along the ray through (x, y): soft tissue plus the bones in front of each other.
    fn attenuation(&self, x: f32, y: f32, noise: &ValueNoise, patella: bool) -> f32 {
        // Soft tissue: a limb silhouette, thickest in the middle (a cylinder seen from the front).
        let half_width = 0.78 - 0.06 * y.abs();
        let t = (1.0 - (x / half_width).powi(2)).max(0.0).sqrt();
        let mut v = 0.06 + 0.22 * t;
        let half_gap = self.jsw;
        // Osteophytes: spurs at the four joint margins, growing with `osteophyte`.
        // They grow out of the margins (blended in with a smooth union), lipping towards the joint.
        let spur = 0.01 + 0.06 * self.osteophyte;
        let femur = smin(sd_femur(x, y - half_gap), sd_circle(x.abs() - 0.47, y - half_gap - 0.035, spur), 0.03);
        let tibia = smin(sd_tibia(x, y + half_gap), sd_circle(x.abs() - 0.5, y + half_gap + 0.025, spur * 0.9), 0.03);
        let fibula = sd_fibula(x, y + half_gap);
        for (d, surface_y, sign) in [(femur, half_gap, 1.0), (tibia, -half_gap, -1.0)] {
            if d < 0.0 {
                // Subchondral sclerosis: a dense band within ~0.06 of the joint surface.
                let depth = (sign * (y - surface_y)).max(0.0);
                let scl = self.sclerosis * 0.25 * (-depth / 0.05).exp();
                v += bone(d, x, y, noise) + scl;
            }
        }
        if fibula < 0.0 {
            v += 0.75 * bone(fibula, x, y, noise);
        }
        if patella {
            let p = sd_ellipse(x, y - half_gap - 0.32, 0.2, 0.26);
            if p < 0.0 {
                v += 0.12 * (1.0 - (-(-p) / 0.04).exp());
            }
        }
        v
    }
}

/// Bone at signed distance `d` < 0: trabecular core with texture, brighter cortical rim.
fn bone(d: f32, x: f32, y: f32, noise: &ValueNoise) -> f32 {
    let depth = -d;
    let cortex = 0.28 * (-depth / 0.025).exp();
    // Trabeculae run mostly along the bone's axis: stretch the noise vertically.
    let tex = 0.6 * noise.at(x * 38.0, y * 12.0) + 0.4 * noise.at(x * 90.0 + 7.0, y * 30.0);
    0.36 + cortex + 0.1 * (tex - 0.5)
}

fn sd_circle(x: f32, y: f32, r: f32) -> f32 {
    (x * x + y * y).sqrt() - r
}

fn sd_ellipse(x: f32, y: f32, a: f32, b: f32) -> f32 {
    // A first-order distance estimate, enough for rims of a few pixels.
    let k = ((x / a).powi(2) + (y / b).powi(2)).sqrt();
    (k - 1.0) * a.min(b)
}

fn sd_box(x: f32, y: f32, hx: f32, hy: f32) -> f32 {
    let (dx, dy) = (x.abs() - hx, y.abs() - hy);
    dx.max(dy).min(0.0) + (dx.max(0.0).powi(2) + dy.max(0.0).powi(2)).sqrt()
}

/// Smooth union (polynomial smooth minimum, Quilez 2013).
fn smin(a: f32, b: f32, k: f32) -> f32 {
    let h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0);
    b + (a - b) * h - k * h * (1.0 - h)
}

/// Distal femur with its surface at y = 0: shaft, flaring metaphysis, two condyles and the notch.
fn sd_femur(x: f32, y: f32) -> f32 {
    let shaft = sd_box(x, y - 0.95, 0.2, 0.6);
    let metaphysis = sd_ellipse(x, y - 0.3, 0.5, 0.32);
    // The condyles' lowest points lie exactly on y = 0, so the joint space is exactly `jsw`.
    let condyles = sd_circle(x.abs() - 0.24, y - 0.23, 0.23).min(sd_box(x, y - 0.33, 0.47, 0.12));
    let body = smin(smin(shaft, metaphysis, 0.12), condyles, 0.06);
    // Intercondylar notch: carve a small rounded gap at the middle of the joint surface.
    body.max(-sd_ellipse(x, y - 0.05, 0.07, 0.09))
}

/// Proximal tibia with its plateau at y = 0, flaring down to the shaft.
fn sd_tibia(x: f32, y: f32) -> f32 {
    let plateau = sd_box(x, y + 0.14, 0.48, 0.12) - 0.02; // top exactly at y = 0
    let metaphysis = sd_ellipse(x, y + 0.3, 0.44, 0.3);
    let shaft = sd_box(x, y + 0.95, 0.19, 0.6);
    // Tibial spines: two small bumps in the middle of the plateau.
    let spines = sd_circle(x.abs() - 0.05, y - 0.005, 0.035);
    smin(smin(plateau.min(spines), metaphysis, 0.1), shaft, 0.12)
}

/// Fibular head, lateral and a little below the plateau (overlapping the tibia on an AP view),
/// with its neck.
fn sd_fibula(x: f32, y: f32) -> f32 {
    let head = sd_ellipse(x - 0.41, y + 0.3, 0.1, 0.085);
    let neck = sd_box(x - 0.45, y + 0.85, 0.045, 0.5);
    smin(head, neck, 0.05)
}

/// 2-D value noise: a hashed lattice with smoothstep interpolation, values in [0, 1].
struct ValueNoise {
    seed: u64,
}

impl ValueNoise {
    fn new(seed: u64) -> Self {
        ValueNoise { seed }
    }
    fn lattice(&self, i: i64, j: i64) -> f32 {
        let mut h = self.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (j as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        (h >> 40) as f32 / (1u64 << 24) as f32
    }
    fn at(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x.floor(), y.floor());
        let (i, j) = (fx as i64, fy as i64);
        let (tx, ty) = (x - fx, y - fy);
        let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
        let a = self.lattice(i, j) + (self.lattice(i + 1, j) - self.lattice(i, j)) * sx;
        let b = self.lattice(i, j + 1) + (self.lattice(i + 1, j + 1) - self.lattice(i, j + 1)) * sx;
        a + (b - a) * sy
    }
}

/// The knee-phantom dataset.
pub struct KneePhantom {
    cfg: KneeConfig,
}

impl KneePhantom {
    pub fn new(cfg: KneeConfig) -> Self {
        KneePhantom { cfg }
    }

    pub fn factors(&self, split: Split, index: usize) -> KneeFactors {
        KneeFactors::sample(&mut image_rng(self.cfg.seed, "knee", split, index))
    }
}

impl Dataset for KneePhantom {
    fn name(&self) -> &str {
        "knee-phantom"
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
        Sample { pixels: f.render(self.cfg.size, self.cfg.patella), factors: f.values() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(jsw: f32) -> KneeFactors {
        KneeFactors {
            grade: 0,
            jsw,
            osteophyte: 0.0,
            sclerosis: 0.0,
            rotation_deg: 0.0,
            left: false,
            exposure: 0.5,
            texture_seed: 9,
        }
    }

    /// Dark rows between femur and tibia in the column through the medial condyle.
    fn gap_rows(img: &[f32], size: usize) -> usize {
        let col = (size as f32 * (1.0 - 0.24) / 2.0) as usize; // x = −0.24
        let mid = size / 2;
        let bright = |y: usize| img[y * size + col] > 0.45;
        let up = (0..mid).rev().find(|&y| bright(y)).unwrap_or(0);
        let down = (mid..size).find(|&y| bright(y)).unwrap_or(size);
        down - up - 1
    }

    #[test]
    fn joint_space_narrows_with_grade_in_the_rendered_image() {
        let size = 256;
        let gaps: Vec<usize> = GRADE_JSW.iter().map(|&j| gap_rows(&plain(j).render(size, false), size)).collect();
        // The gap is 2·jsw of a half-width-1 frame: jsw·size pixels.
        for (g, (&jsw, &rows)) in GRADE_JSW.iter().zip(&gaps).enumerate() {
            let want = jsw * size as f32;
            assert!((rows as f32 - want).abs() <= 3.0, "grade {g}: {rows} rows, expected ≈ {want}");
        }
        assert!(gaps.windows(2).all(|w| w[0] > w[1]), "{gaps:?}");
    }

    #[test]
    fn factors_are_consistent_and_images_deterministic() {
        let ds = KneePhantom::new(KneeConfig {
            size: 32,
            splits: SplitSizes { train: 100, val: 5, test: 10 },
            seed: 4,
            patella: true,
        });
        for i in 0..100 {
            let f = ds.factors(Split::Train, i);
            // The grade is a function of the joint-space width alone.
            let nearest = (0..5).min_by(|&a, &b| (GRADE_JSW[a] - f.jsw).abs().total_cmp(&(GRADE_JSW[b] - f.jsw).abs())).unwrap();
            assert_eq!(nearest as u8, f.grade, "{f:?}");
            assert!(f.rotation_deg.abs() <= 10.0 && (0.0..=1.0).contains(&f.osteophyte));
        }
        assert_eq!(ds.sample(Split::Test, 3).pixels, ds.sample(Split::Test, 3).pixels);
        assert_ne!(ds.sample(Split::Test, 3).pixels, ds.sample(Split::Train, 3).pixels);
        // Laterality mirrors the image.
        let mut f = plain(0.1);
        let right = f.render(32, false);
        f.left = true;
        let left = f.render(32, false);
        let mirrored: Vec<f32> = (0..32 * 32).map(|i| right[(i / 32) * 32 + 31 - i % 32]).collect();
        let diff: f32 = left.iter().zip(&mirrored).map(|(a, b)| (a - b).abs()).sum::<f32>() / 1024.0;
        assert!(diff < 0.03, "mean difference to the mirror image {diff}");
    }
}
