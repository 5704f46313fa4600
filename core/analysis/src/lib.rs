//! Latent-space analysis of a trained run (`vaelab latent RUN_DIR …`): traversals, interpolation,
//! attribute directions with linear probes, and a 2-D map of the test codes. Each writes PNG grids
//! and a JSON summary into `RUN_DIR/latent/`. The live explorer (`crate::explore`) uses the same
//! [`LoadedRun`].

pub mod attributes;
pub mod embed;
pub mod explore;
pub mod interpolate;
pub mod traverse;

use serde::Serialize;
use std::path::{Path, PathBuf};
use vaelab_eval::EvalError;
use vaelab_models::latent::LatentModel;
use vaelab_runs::checkpoint;
pub use vaelab_runs::loaded::Codes;
use vaelab_runs::{LoadedRun, RunError};

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Run(#[from] EvalError),
    #[error(transparent)]
    Loaded(#[from] RunError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("{0}")]
    Input(String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, String),
}

/// How much each code element matters, largest first: KL (nats, averaged over the images) for the
/// Gaussian kinds, the variance of the codes otherwise (an autoencoder or a quantized code).
pub fn ranked_elements(run: &LoadedRun, codes: &Codes) -> Vec<(usize, f64)> {
    let n = codes.mu.len().max(1) as f64;
    let len = run.code_len();
    let probabilistic = matches!(run.model.latent, LatentModel::Gaussian(_) | LatentModel::Spatial(_));
    let score: Vec<f64> = if probabilistic {
        (0..len)
            .map(|d| {
                let kl = |(m, l): (&Vec<f32>, &Vec<f32>)| {
                    let (m, l) = (m[d] as f64, l[d] as f64);
                    -0.5 * (1.0 + l - m * m - l.exp())
                };
                codes.mu.iter().zip(&codes.logvar).map(kl).sum::<f64>() / n
            })
            .collect()
    } else {
        code_variance(codes)
    };
    let mut order: Vec<(usize, f64)> = score.into_iter().enumerate().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    order
}

/// Per-element variance of the codes over the images (f64).
pub fn code_variance(codes: &Codes) -> Vec<f64> {
    let n = codes.mu.len().max(1) as f64;
    let len = codes.mu.first().map_or(0, Vec::len);
    (0..len)
        .map(|d| {
            let mean = codes.mu.iter().map(|c| c[d] as f64).sum::<f64>() / n;
            codes.mu.iter().map(|c| (c[d] as f64 - mean).powi(2)).sum::<f64>() / n
        })
        .collect()
}

/// Per-element standard deviation of the codes over the images.
pub fn code_std(codes: &Codes) -> Vec<f32> {
    code_variance(codes).into_iter().map(|v| v.sqrt() as f32).collect()
}

/// Numbers a reader (and a snapshot) checks about a grid of decoded images.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GridStats {
    pub rows: usize,
    pub columns: usize,
    /// (channels, height, width) of each image.
    pub image: (usize, usize, usize),
    /// Smallest and largest pixel value, rounded to 3 decimals.
    pub min: f32,
    pub max: f32,
    /// Mean pixel value of each row, rounded to 3 decimals.
    pub row_means: Vec<f32>,
}

impl GridStats {
    pub fn of(images: &[Vec<f32>], columns: usize, image: (usize, usize, usize)) -> GridStats {
        let all = images.iter().flatten();
        let (min, max) = all.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
        let row_means = images
            .chunks(columns.max(1))
            .map(|row| {
                let (sum, count) = row.iter().flatten().fold((0.0f64, 0usize), |(s, c), v| (s + *v as f64, c + 1));
                ((sum / count.max(1) as f64) * 1000.0).round() as f32 / 1000.0
            })
            .collect();
        let round = |v: f32| (v * 1000.0).round() / 1000.0;
        GridStats { rows: images.len().div_ceil(columns.max(1)), columns, image, min: round(min), max: round(max), row_means }
    }
}

/// Writes `images` as a grid PNG and `summary` as pretty JSON beside it.
pub fn write_outputs<S: Serialize>(
    dir: &Path,
    stem: &str,
    images: &[Vec<f32>],
    shape: (usize, usize, usize),
    columns: usize,
    summary: &S,
) -> Result<(PathBuf, PathBuf), AnalysisError> {
    let png = dir.join(format!("{stem}.png"));
    vaelab_eval::grid::save_png(&vaelab_eval::grid::grid(images, shape, columns), &png)
        .map_err(|e| AnalysisError::Write(png.clone(), e))?;
    let json = write_summary(dir, &format!("{stem}.json"), summary)?;
    Ok((png, json))
}

/// Writes `summary` as pretty JSON to `dir/file`.
pub fn write_summary<S: Serialize>(dir: &Path, file: &str, summary: &S) -> Result<PathBuf, AnalysisError> {
    let json = dir.join(file);
    let text = serde_json::to_string_pretty(summary).expect("summaries serialize");
    checkpoint::write_atomic(&json, text.as_bytes()).map_err(|e| AnalysisError::Write(json.clone(), e.to_string()))?;
    Ok(json)
}
