//! `vaelab metrics REAL FAKE`: image metrics between two image files or two folders of images, with
//! no model involved (what `python -m pytorch_fid A B` is for FID). Folders are paired by sorted file
//! name; counts and sizes must agree.

use super::metric::{MetricError, MetricRegistry, Scored};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vaelab_datasets::folder::{image_files, read_image, DecodedImage};
use vaelab_datasets::{Channels, ImageBatch};

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{0}: {1}")]
    Input(PathBuf, String),
    #[error("{real} holds {n_real} images but {fake} holds {n_fake}; pairwise metrics need the same count")]
    Count { real: PathBuf, n_real: usize, fake: PathBuf, n_fake: usize },
    #[error(transparent)]
    Metric(#[from] MetricError),
}

/// The image files `path` stands for: itself, or the images in the folder sorted by name.
fn files(path: &Path) -> Result<Vec<PathBuf>, CompareError> {
    let err = |m: String| CompareError::Input(path.to_path_buf(), m);
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(err("no such file or folder".into()));
    }
    let v = image_files(path).map_err(|e| err(e.to_string()))?;
    if v.is_empty() {
        return Err(err("no image files (png, jpg, jpeg, tif, tiff, bmp)".into()));
    }
    Ok(v)
}

/// Decodes files into one batch; every image must have the first one's size.
fn load(paths: &[PathBuf], channels: Channels) -> Result<(ImageBatch, (usize, usize)), CompareError> {
    let decoded: Vec<_> = paths
        .par_iter()
        .map(|p| read_image(p, channels).map_err(|m| CompareError::Input(p.clone(), m)))
        .collect::<Result<_, _>>()?;
    let (w, h) = (decoded[0].width, decoded[0].height);
    let mut pixels = Vec::new();
    let mut depth = 0;
    for (DecodedImage { pixels: px, width: iw, height: ih, bit_depth: d }, path) in decoded.into_iter().zip(paths) {
        if (iw, ih) != (w, h) {
            return Err(CompareError::Input(
                path.clone(),
                format!("image is {iw}×{ih} but {} is {w}×{h}; metrics compare images of one size", paths[0].display()),
            ));
        }
        depth = depth.max(d);
        pixels.extend(px);
    }
    let c = if channels == Channels::Rgb { 3 } else { 1 };
    Ok((ImageBatch { n: paths.len(), c, h, w, pixels, factors: vec![], bit_depth: depth }, (w, h)))
}

/// One metric's value as `vaelab metrics` reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComparedMetric {
    pub value: f64,
    pub higher_is_better: bool,
    pub definition: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    pub pairs: usize,
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    /// Bits per sample of the deeper of the two sets' files (data range is [0, 1] either way).
    pub bit_depth: u8,
    pub metrics: BTreeMap<String, ComparedMetric>,
}

/// Scores `fake` against `real` (files or folders) with the named metrics from `registry`.
pub fn compare(
    real: &Path,
    fake: &Path,
    channels: Channels,
    names: &[String],
    registry: &MetricRegistry,
) -> Result<Comparison, CompareError> {
    for name in names {
        if registry.get(name).is_none() {
            return Err(MetricError::Unknown { name: name.clone(), available: registry.names().join(", ") }.into());
        }
    }
    let (real_files, fake_files) = (files(real)?, files(fake)?);
    if real_files.len() != fake_files.len() {
        return Err(CompareError::Count {
            real: real.to_path_buf(),
            n_real: real_files.len(),
            fake: fake.to_path_buf(),
            n_fake: fake_files.len(),
        });
    }
    let (a, (w, h)) = load(&real_files, channels)?;
    let (b, size_b) = load(&fake_files, channels)?;
    if size_b != (w, h) {
        return Err(CompareError::Input(
            fake_files[0].clone(),
            format!("image is {}×{} but {} is {w}×{h}", size_b.0, size_b.1, real_files[0].display()),
        ));
    }
    let bit_depth = a.bit_depth.max(b.bit_depth);
    let mut metrics = BTreeMap::new();
    for name in names {
        let m = registry.get(name).expect("checked above");
        for Scored { key, value, note } in m.evaluate(&a, &b)? {
            let entry = ComparedMetric { value, higher_is_better: m.higher_is_better(), definition: m.definition().into(), note };
            metrics.insert(key, entry);
        }
    }
    Ok(Comparison { pairs: a.n, width: w, height: h, channels: a.c, bit_depth, metrics })
}

/// The text report.
pub fn format(c: &Comparison) -> String {
    let mut s = format!(
        "compared {} image pair{} ({}, {}×{}, {}-bit), paired by sorted file name\n",
        c.pairs,
        if c.pairs == 1 { "" } else { "s" },
        if c.channels == 3 { "RGB" } else { "grey" },
        c.width,
        c.height,
        c.bit_depth
    );
    for (name, m) in &c.metrics {
        let better = if m.higher_is_better { "higher is better" } else { "lower is better" };
        s += &format!("  {name:<10} {:>12.6}  {better}\n", m.value);
        if let Some(note) = &m.note {
            s += &format!("  {:<10} note: {note}\n", "");
        }
    }
    s
}
