//! `vaelab metrics REAL FAKE`: image metrics between two image files or two folders of images, with
//! no model involved (what `python -m pytorch_fid A B` is for FID). Folders are paired by sorted file
//! name; counts and sizes must agree.

use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vaelab_datasets::folder::{image_files, read_image, DecodedImage};
use vaelab_datasets::{Channels, ImageBatch};
use vaelab_metrics::metric::{MetricError, Scored};
use vaelab_metrics::registry::MetricRegistry;

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{0}: {1}")]
    Input(PathBuf, String),
    #[error("{real} holds {n_real} images but {fake} holds {n_fake}; pairwise metrics need the same count")]
    Count { real: PathBuf, n_real: usize, fake: PathBuf, n_fake: usize },
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error("{0}")]
    Setup(String),
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

/// One side of a comparison.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImageSet {
    pub images: usize,
    pub width: usize,
    pub height: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    pub real: ImageSet,
    pub fake: ImageSet,
    pub channels: usize,
    /// Bits per sample of the deeper of the two sets' files (data range is [0, 1] either way).
    pub bit_depth: u8,
    pub metrics: BTreeMap<String, ComparedMetric>,
    /// Metrics that could not be computed, with why; the others are still reported (as `eval` does).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
}

/// Metrics that compare the two sets as distributions: counts and sizes may differ.
pub const DISTRIBUTION_METRICS: [&str; 3] = ["fid", "domain_fd", "sharpness"];

/// What `vaelab metrics` computes and with what.
pub struct CompareOptions<'a> {
    pub channels: Channels,
    pub names: &'a [String],
    /// Pairwise metrics by name (built-in and plugin).
    pub registry: &'a MetricRegistry,
    /// pytorch-fid's Inception weights for `fid` (else `VAELAB_FID_WEIGHTS`).
    pub fid_weights: Option<PathBuf>,
    /// A run whose encoder gives `domain_fd`'s features.
    pub domain_encoder: Option<PathBuf>,
}

fn is_distribution(name: &str) -> bool {
    DISTRIBUTION_METRICS.contains(&name)
}

/// Every pairwise metric named must exist (the distribution metrics always do).
fn check_names(opts: &CompareOptions) -> Result<(), CompareError> {
    for name in opts.names.iter().filter(|n| !is_distribution(n)) {
        if opts.registry.get(name).is_none() {
            let mut available = opts.registry.names();
            available.extend(DISTRIBUTION_METRICS);
            return Err(MetricError::Unknown { name: name.clone(), available: available.join(", ") }.into());
        }
    }
    Ok(())
}

/// `domain_fd` needs a run's encoder.
fn check_domain_encoder(opts: &CompareOptions) -> Result<(), CompareError> {
    if opts.names.iter().any(|n| n == "domain_fd") && opts.domain_encoder.is_none() {
        return Err(CompareError::Setup(
            "domain_fd needs an encoder: give --domain-encoder RUN_DIR (a trained vaelab run for images of this size)".into(),
        ));
    }
    Ok(())
}

/// FID's Inception network, where `fid` is asked for.
fn fid_network(opts: &CompareOptions) -> Result<Option<vaelab_metrics::inception::Inception>, CompareError> {
    if !opts.names.iter().any(|n| n == "fid") {
        return Ok(None);
    }
    let path = vaelab_metrics::fid::weights_path(opts.fid_weights.as_deref())
        .ok_or_else(|| CompareError::Setup(vaelab_metrics::fid::missing_weights_help()))?;
    Ok(Some(vaelab_metrics::fid::load(&path).map_err(CompareError::Setup)?))
}

/// One set's images and their (width, height).
type LoadedSet = (ImageBatch, (usize, usize));

/// Both sets' images and sizes; pairwise metrics need as many fakes as reals, and they and
/// `domain_fd` need one image size.
fn load_sets(real: &Path, fake: &Path, opts: &CompareOptions) -> Result<[LoadedSet; 2], CompareError> {
    let pairwise = opts.names.iter().any(|n| !is_distribution(n));
    let (real_files, fake_files) = (files(real)?, files(fake)?);
    if pairwise && real_files.len() != fake_files.len() {
        return Err(CompareError::Count {
            real: real.to_path_buf(),
            n_real: real_files.len(),
            fake: fake.to_path_buf(),
            n_fake: fake_files.len(),
        });
    }
    let (a, (w, h)) = load(&real_files, opts.channels)?;
    let (b, size_b) = load(&fake_files, opts.channels)?;
    let same_size_needed = pairwise || opts.names.iter().any(|n| n == "domain_fd");
    if same_size_needed && size_b != (w, h) {
        return Err(CompareError::Input(
            fake_files[0].clone(),
            format!("image is {}×{} but {} is {w}×{h}", size_b.0, size_b.1, real_files[0].display()),
        ));
    }
    Ok([(a, (w, h)), (b, size_b)])
}

/// One metric's entries (a metric may report several keys), or why it failed.
fn score(
    name: &str,
    (a, b): (&ImageBatch, &ImageBatch),
    fid_net: Option<&vaelab_metrics::inception::Inception>,
    opts: &CompareOptions,
) -> Result<Vec<(String, ComparedMetric)>, String> {
    match name {
        "fid" => {
            let net = fid_net.expect("loaded when fid is asked for");
            let fa = vaelab_metrics::fid::features(net, a, Some("FID features, real"));
            let fb = vaelab_metrics::fid::features(net, b, Some("FID features, fake"));
            vaelab_metrics::fid::distance(&fa, &fb).map(|value| {
                let note = vaelab_metrics::fid::sample_note(a.n, b.n);
                let definition = vaelab_metrics::fid::DEFINITION.into();
                vec![("fid".into(), ComparedMetric { value, higher_is_better: false, definition, note })]
            })
        }
        "sharpness" => vaelab_metrics::sharpness::sharpness_ratio(a, b).map(|value| {
            let definition = vaelab_metrics::sharpness::DEFINITION.into();
            vec![("sharpness".into(), ComparedMetric { value, higher_is_better: true, definition, note: None })]
        }),
        "domain_fd" => {
            let dir = opts.domain_encoder.as_deref().expect("checked by check_domain_encoder");
            domain_distance(dir, a, b).map_err(|e| e.to_string()).map(|value| {
                let definition = format!(
                    "Fréchet distance between Gaussians fitted to the posterior means of the encoder of run {}; not FID",
                    dir.display()
                );
                vec![("domain_fd".into(), ComparedMetric { value, higher_is_better: false, definition, note: None })]
            })
        }
        _ => {
            let m = opts.registry.get(name).expect("checked by check_names");
            m.evaluate(a, b).map_err(|e| e.to_string()).map(|scored| {
                scored
                    .into_iter()
                    .map(|Scored { key, value, note }| {
                        let entry = ComparedMetric {
                            value,
                            higher_is_better: m.higher_is_better(),
                            definition: m.definition().into(),
                            note,
                        };
                        (key, entry)
                    })
                    .collect()
            })
        }
    }
}

/// Scores `fake` against `real` (files or folders) with the named metrics.
pub fn compare(real: &Path, fake: &Path, opts: &CompareOptions) -> Result<Comparison, CompareError> {
    check_names(opts)?;
    let fid_net = fid_network(opts)?;
    check_domain_encoder(opts)?;
    let [(a, (w, h)), (b, size_b)] = load_sets(real, fake, opts)?;
    let mut metrics = BTreeMap::new();
    let mut failed = BTreeMap::new();
    for name in opts.names {
        // One metric's failure (a plugin's error, say) is reported; the other metrics still run.
        match score(name, (&a, &b), fid_net.as_ref(), opts) {
            Ok(entries) => metrics.extend(entries),
            Err(e) => {
                failed.insert(name.clone(), e);
            }
        }
    }
    Ok(Comparison {
        real: ImageSet { images: a.n, width: w, height: h },
        fake: ImageSet { images: b.n, width: size_b.0, height: size_b.1 },
        channels: a.c,
        bit_depth: a.bit_depth.max(b.bit_depth),
        metrics,
        failed,
    })
}

/// The domain FD between two image sets with a run's encoder, on the CPU.
fn domain_distance(run: &Path, a: &ImageBatch, b: &ImageBatch) -> Result<f64, CompareError> {
    use crate::domain_fd::{distance, load_reference, FeatureEncoder};
    use dfdx::prelude::Cpu;
    let setup = |e: crate::EvalError| CompareError::Setup(e.to_string());
    let shape = vaelab_nn::FeatShape::Image(a.c, a.h, a.w);
    let (model, store, seed) = load_reference(&Cpu::default(), run, shape).map_err(setup)?;
    let encoder = FeatureEncoder::new(&model, &store, seed);
    distance(&encoder.features(a, 64), &encoder.features(b, 64)).map_err(setup)
}

/// The text report.
pub fn format(c: &Comparison) -> String {
    let kind = if c.channels == 3 { "RGB" } else { "grey" };
    let mut s = if c.real == c.fake {
        format!(
            "compared {} image pair{} ({kind}, {}×{}, {}-bit), paired by sorted file name\n",
            c.real.images,
            if c.real.images == 1 { "" } else { "s" },
            c.real.width,
            c.real.height,
            c.bit_depth
        )
    } else {
        format!(
            "compared {} real images ({}×{}) with {} fake images ({}×{}), {kind}, {}-bit\n",
            c.real.images, c.real.width, c.real.height, c.fake.images, c.fake.width, c.fake.height, c.bit_depth
        )
    };
    for (name, m) in &c.metrics {
        let better = if m.higher_is_better { "higher is better" } else { "lower is better" };
        s += &format!("  {name:<10} {:>12.6}  {better}\n", m.value);
        if let Some(note) = &m.note {
            s += &format!("  {:<10} note: {note}\n", "");
        }
    }
    for (name, why) in &c.failed {
        s += &format!("  {name:<10} FAILED: {why}\n");
    }
    s
}
