//! `vaelab explore RUN_DIR`: a live latent explorer in the browser. A small HTTP server on
//! 127.0.0.1 serves one page (sliders per latent dimension, attribute sliders, the original and its
//! reconstruction) and a JSON/PNG API under `/api/runs/<run name>/`.
//!
//! Decoding runs on one worker thread that owns the model, never on an HTTP thread. The worker
//! holds at most one pending decode: a newer request replaces an older one that has not started,
//! and the older one is answered `409 superseded`, so a fast slider never builds a queue.

mod server;

pub use server::{ExploreOptions, Explorer};

use crate::{attributes, ranked_elements};
use serde::Serialize;
use vaelab_models::latent::LatentModel;
use vaelab_runs::LoadedRun;

/// Code values beyond this are refused (400): far outside anything a slider produces.
pub const MAX_ABS_VALUE: f32 = 1e3;

/// One slider over one code element.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Slider {
    pub index: usize,
    pub label: String,
    pub min: f32,
    pub max: f32,
    /// KL (nats) or variance that ranked it.
    pub score: f64,
}

/// An attribute slider: adds `strength × direction` to the code.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttributeSlider {
    pub name: String,
    pub from: String,
    pub to: String,
    pub direction: Vec<f32>,
}

/// What the page needs to build itself (`GET /api/runs/<run>/info`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Info {
    pub run: String,
    pub checkpoint_step: usize,
    pub latent: &'static str,
    pub code_len: usize,
    pub image: (usize, usize, usize),
    pub images: usize,
    pub sliders: Vec<Slider>,
    pub attributes: Vec<AttributeSlider>,
}

/// Sliders over the `count` most informative code elements. Gaussian kinds range over ±3 (the
/// prior's σ); an autoencoder's or a quantized code's over the test codes' mean ± 3 std.
pub fn sliders(run: &LoadedRun, codes: &crate::Codes, count: usize) -> Vec<Slider> {
    let std = crate::code_std(codes);
    let mean = crate::traverse::mean_code(codes);
    let (channels, positions) = run.code_grid();
    ranked_elements(run, codes)
        .into_iter()
        .take(count)
        .map(|(index, score)| {
            let (min, max) = match run.model.latent {
                LatentModel::Gaussian(_) | LatentModel::Spatial(_) => (-3.0, 3.0),
                _ => (mean[index] - 3.0 * std[index].max(1e-3), mean[index] + 3.0 * std[index].max(1e-3)),
            };
            let label = if positions > 1 && channels > 0 {
                format!("c{} @{}", index / positions, index % positions)
            } else {
                format!("z{index}")
            };
            Slider { index, label, min, max, score }
        })
        .collect()
}

/// Attribute sliders from the dataset's factors or labels (none when it has neither).
pub fn attribute_sliders(run: &LoadedRun, codes: &crate::Codes) -> Vec<AttributeSlider> {
    attributes::directions(run, codes, None)
        .map(|attrs| {
            attrs.into_iter().map(|a| AttributeSlider { name: a.name, from: a.from, to: a.to, direction: a.direction }).collect()
        })
        .unwrap_or_default()
}

/// Checks a code sent by the page: its length and that every value is finite and in range.
pub fn check_code(z: &[f32], code_len: usize) -> Result<(), String> {
    if z.len() != code_len {
        return Err(format!("the code has {} values; this run's codes have {code_len}", z.len()));
    }
    if let Some((i, v)) = z.iter().enumerate().find(|(_, v)| !v.is_finite() || v.abs() > MAX_ABS_VALUE) {
        return Err(format!("value {i} is {v}; values must be finite and within ±{MAX_ABS_VALUE}"));
    }
    Ok(())
}

/// PNG bytes of one image (`c`×`h`×`w` in [0, 1]).
pub fn png(pixels: &[f32], (c, h, w): (usize, usize, usize)) -> Vec<u8> {
    let img = vaelab_eval::grid::grid(&[pixels.to_vec()], (c, h, w), 1);
    // The grid adds a frame and upscales small images; crop the frame off.
    let inner = image::imageops::crop_imm(&img, 2, 2, img.width() - 4, img.height() - 4).to_image();
    let mut out = std::io::Cursor::new(Vec::new());
    inner.write_to(&mut out, image::ImageFormat::Png).expect("PNG encoding into memory");
    out.into_inner()
}
