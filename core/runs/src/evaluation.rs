//! What an evaluation leaves in its folder (`metrics.json`), and the listing of a run's evaluations.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vaelab_datasets::Split;

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct MetricEntry {
    pub value: f64,
    pub higher_is_better: bool,
    pub definition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct EvalRecord {
    pub run: String,
    pub checkpoint_step: usize,
    /// The split scored (`test` unless `--split` says otherwise).
    #[serde(default = "test_split")]
    pub split: Split,
    pub test_images: usize,
    /// How many of the evaluated images carry each class label (datasets with classes: class folders,
    /// IDX labels). The images are a seeded shuffle of the split, stratified by label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_counts: BTreeMap<u32, usize>,
    pub bit_depth: u8,
    pub metrics: BTreeMap<String, MetricEntry>,
    /// MSE of predicting every test image by the mean training image: reconstructions must beat it.
    pub mean_image_mse: f64,
    /// The domain FD (same encoder, same test images) of two generators that learned nothing: one
    /// that draws the mean training image every time (`mean_image`), and one that draws uniform noise
    /// (`noise`). Prior samples must beat both. Present when `domain_fd` is computed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub domain_fd_baselines: BTreeMap<String, f64>,
    /// KL per latent dimension (nats, averaged over test images), in dimension order; empty for an
    /// autoencoder, which has no posterior.
    pub kl_per_dim: Vec<f64>,
    /// Latent dimensions in the order of `traversal.png`'s rows: largest KL first (largest variance
    /// of the test codes for an autoencoder), at most `eval::TRAVERSAL_ROWS`.
    pub traversal_order: Vec<usize>,
    /// `factor-<name>.png` files written: one row per value of each discrete ground-truth factor.
    #[serde(default)]
    pub factor_grids: Vec<String>,
    /// Metrics that failed (e.g. a plugin returned an error), with the message; the others are kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
    /// Where the prior samples (samples.png, FID, domain FD) come from.
    #[serde(default)]
    pub prior: String,
    /// The other dataset scored (`vaelab eval --data`), described; absent for the run's own data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The folder this evaluation was written to (not stored: it is where the file is).
    #[serde(skip)]
    pub folder: PathBuf,
    /// What happened to earlier evaluations there: metrics kept from one, or one moved aside.
    #[serde(skip)]
    pub notes: Vec<String>,
}

fn test_split() -> Split {
    Split::Test
}

/// Every evaluation of a run: `(folder name, report)` for each `eval*/metrics.json`, by name.
pub fn evaluations(run_dir: &Path) -> Vec<(String, EvalRecord)> {
    let Ok(entries) = std::fs::read_dir(run_dir) else { return vec![] };
    let mut found: Vec<(String, EvalRecord)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(super::paths::metrics_file(&e.path())).ok()?;
            let mut report: EvalRecord = serde_json::from_str(&text).ok()?;
            report.folder = e.path();
            Some((name, report))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}
