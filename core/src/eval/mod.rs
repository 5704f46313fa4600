//! `vaelab eval`: metrics on held-out images and the pictures people look at.
//!
//! Writes `eval/metrics.json` and three PNG grids into the run directory:
//! `reconstructions.png` (input beside output), `samples.png` (decoded prior samples) and
//! `traversal.png` (one row per latent dimension, most informative first); then
//! [`crate::report`] adds `loss-curves.png` and the self-contained `report.html`.

pub mod compare;
pub mod disentangle;
pub mod domain_fd;
pub mod factors;
pub mod fid;
pub mod frechet;
pub mod gbt;
pub mod grid;
pub mod inception;
pub mod metric;
pub mod registry;
pub mod ssim;

use crate::data::{build_dataset, data_shape, normal_noise, to_tensor};
use crate::latent::PriorDraw;
use crate::model::Model;
use crate::nn::{from_batch_last, Backend, Ctx, ParamStore};
use crate::plugin::PluginSet;
use crate::runs::checkpoint::{self, CheckpointError};
use crate::runs::{evaluations, paths, read_run_spec, EvalRecord, MetricEntry};
use crate::spec::Experiment;
use dfdx::prelude::*;
use metric::MetricError;
pub use registry::MetricRegistry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vaelab_datasets::{Dataset, ImageBatch, Split};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Run(#[from] crate::runs::RunError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error("{0}")]
    Write(String),
    #[error("{0}")]
    Model(String),
    #[error("cannot open the dataset: {0}")]
    Data(#[from] vaelab_datasets::DataError),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    #[error("{0}")]
    Plugin(String),
}

/// Metrics computed from the model rather than from image pairs (the factor metrics of [`factors`]
/// among them).
pub const MODEL_METRICS: [&str; 9] = ["elbo", "domain_fd", "fid", "mig", "sap", "dci", "dci_linear", "factor_vae", "beta_vae"];

/// Rows of `traversal.png` at most (spatial codes have hundreds of elements).
pub const TRAVERSAL_ROWS: usize = 16;

/// Evaluates the run's latest checkpoint (or `checkpoint`) and writes `RUN_DIR/eval/`.
/// What `vaelab eval` evaluates beyond the run itself.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// A checkpoint file [default: the run's latest].
    pub checkpoint: Option<PathBuf>,
    /// Overrides the run's device.
    pub device: Option<crate::spec::Device>,
    /// The split scored: `Test` writes `eval/`, the others `eval-<split>/`.
    pub split: Split,
    /// Metric names to compute instead of the spec's `eval.metrics`.
    pub metrics: Option<Vec<String>>,
    /// Plugin libraries to load besides the run's own (for their metrics).
    pub plugins: Vec<PathBuf>,
    /// pytorch-fid's Inception weights (safetensors) for `fid`, instead of the spec's.
    pub fid_weights: Option<PathBuf>,
    /// The run whose encoder gives `domain_fd`'s features, instead of the spec's.
    pub domain_encoder: Option<PathBuf>,
    /// Another dataset of the same image size to score the model on: a spec file (its `data`
    /// section) or a folder of images or DICOM files.
    pub data: Option<PathBuf>,
    /// The folder (under the run) to write [default: `eval/` for the latest checkpoint on the test
    /// split of the run's own data, else `eval-<step>-<split>[-<data>]/`].
    pub out: Option<String>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            checkpoint: None,
            device: None,
            split: Split::Test,
            metrics: None,
            plugins: vec![],
            fid_weights: None,
            domain_encoder: None,
            data: None,
            out: None,
        }
    }
}

/// The dataset `--data` names, as the run's spec with that data section, and a short description.
fn other_data(spec: &Experiment, path: &Path) -> Result<(Experiment, String), EvalError> {
    let mut other = spec.clone();
    let name = path.display().to_string();
    if path.is_file() && path.extension().is_some_and(|e| e == "ron") {
        let loaded =
            crate::spec::load::load_spec(path).map_err(|e| EvalError::Model(format!("--data {}:\n{e}", path.display())))?;
        let data = loaded.experiment.data;
        if data.size != spec.data.size {
            let (theirs, ours) = (data.size, spec.data.size);
            return Err(EvalError::Model(format!(
                "--data {}: its images are {theirs}×{theirs} but the run's are {ours}×{ours}; a model scores images of its own size",
                path.display()
            )));
        }
        other.data = data;
        return Ok((other, name));
    }
    if !path.is_dir() {
        return Err(EvalError::Model(format!("--data {}: neither a spec file (.ron) nor a folder", path.display())));
    }
    let root = crate::spec::load::absolute(path);
    let (channels, fit) = match &spec.data.dataset {
        crate::spec::Dataset::Folder { channels, fit, .. } => (*channels, *fit),
        crate::spec::Dataset::Dicom { fit, .. } => (vaelab_datasets::Channels::Grey, *fit),
        // A procedural run never fitted images: other sizes are resized to its own.
        _ => (vaelab_datasets::Channels::Grey, vaelab_datasets::Fit::Resize),
    };
    let dicom = vaelab_datasets::list_inputs(path)
        .map(|files| files.iter().any(|f| vaelab_datasets::single::is_dicom_file(&f.path)))
        .unwrap_or(false);
    other.data.dataset = if dicom {
        crate::spec::Dataset::Dicom { root, fit, window: None, patches: None, on_bad_file: vaelab_datasets::OnBadFile::Error }
    } else {
        crate::spec::Dataset::Folder { root, channels, fit, on_bad_file: vaelab_datasets::OnBadFile::Error, cache_mib: 1024 }
    };
    Ok((other, name))
}

pub fn evaluate(run_dir: &Path, opts: &EvalOptions) -> Result<EvalRecord, EvalError> {
    let mut spec = read_run_spec(run_dir)?;
    if let Some(d) = opts.device {
        spec.device = d;
    }
    if let Some(m) = &opts.metrics {
        spec.eval.metrics = m.clone();
    }
    let plugin_notes =
        crate::runs::recorded_plugins::reconcile(run_dir, &mut spec.plugins, &opts.plugins).map_err(EvalError::Plugin)?;
    if opts.domain_encoder.is_some() {
        spec.eval.domain_encoder = opts.domain_encoder.clone();
    }
    if opts.fid_weights.is_some() {
        spec.eval.fid_weights = opts.fid_weights.clone();
    }
    let data = match &opts.data {
        Some(path) => {
            let (other, name) = other_data(&spec, path)?;
            spec = other;
            Some(name)
        }
        None => None,
    };
    let target = Target { checkpoint: opts.checkpoint.as_deref(), split: opts.split, data, out: opts.out.clone(), plugin_notes };
    crate::device::on_device!(spec.device, spec.seed, |dev| evaluate_on(dev, &spec, run_dir, &target))
}

/// Which evaluation this is, and where it goes.
struct Target<'a> {
    checkpoint: Option<&'a Path>,
    split: Split,
    data: Option<String>,
    out: Option<String>,
    /// What became of the run's plugin libraries (missing and replaced, or changed).
    plugin_notes: Vec<String>,
}

fn evaluate_on<D: Backend>(dev: D, spec: &Experiment, run_dir: &Path, target: &Target) -> Result<EvalRecord, EvalError> {
    let (checkpoint, split) = (target.checkpoint, target.split);
    let dataset = build_dataset(spec)?;
    let shape = data_shape(dataset.as_ref());
    let plugins = PluginSet::load(&spec.plugins).map_err(|(_, e)| EvalError::Plugin(e.to_string()))?;
    let mut store = ParamStore::new(dev.clone(), spec.seed);
    let model = Model::build(&spec.model, shape, &mut store, &plugins).map_err(|e| EvalError::Model(e.to_string()))?;
    let latest = checkpoint::latest(&paths::checkpoints_dir(run_dir));
    let ckpt = match checkpoint {
        Some(p) => p.to_path_buf(),
        None => checkpoint::latest(&paths::checkpoints_dir(run_dir))?,
    };
    let info = checkpoint::load(&ckpt, &mut store, &mut [])?;
    let learned_prior = crate::runs::prior_file::overlay(run_dir, info.step, &mut store).map_err(EvalError::Model)?;
    let is_latest = match &latest {
        Ok(l) => checkpoint.is_none() || same_file(l, &ckpt),
        Err(_) => false,
    };
    let out_dir = match &target.out {
        Some(name) => run_dir.join(name),
        None if is_latest && split == Split::Test && target.data.is_none() => paths::eval_dir(run_dir),
        None => paths::other_eval_dir(run_dir, info.step, split, target.data.as_deref()),
    };

    let mut registry = MetricRegistry::builtin();
    plugins.register_metrics(&mut registry, spec.data.batch).map_err(EvalError::Plugin)?;
    let wants_elbo = spec.eval.metrics.iter().any(|m| m == "elbo");
    let wants_domain_fd = spec.eval.metrics.iter().any(|m| m == "domain_fd");
    if model.generator_only {
        generator_metrics_apply(spec)?;
    }
    // Load the FID network before the long part, so a missing weight file fails at once.
    let fid_net = if spec.eval.metrics.iter().any(|m| m == "fid") {
        let path =
            fid::weights_path(spec.eval.fid_weights.as_deref()).ok_or_else(|| EvalError::Model(fid::missing_weights_help()))?;
        Some(fid::load(&path).map_err(EvalError::Model)?)
    } else {
        None
    };
    for name in spec.eval.metrics.iter().filter(|m| !MODEL_METRICS.contains(&m.as_str())) {
        if registry.get(name).is_none() {
            let mut available = registry.names();
            available.extend(MODEL_METRICS);
            return Err(MetricError::Unknown { name: name.clone(), available: available.join(", ") }.into());
        }
    }

    // Reconstruct the test images (decoding the posterior mean) and accumulate the ELBO terms.
    let n = spec.eval.test_images.min(dataset.len(split));
    if n == 0 {
        return Err(EvalError::Model(format!(
            "the {} split is empty{}",
            split.name(),
            if split == Split::Val { "; set `data.val_size` in the spec to hold out validation images" } else { "" }
        )));
    }
    let bs = spec.data.batch;
    let code = model.latent.code_shape().len();
    let (mut real_px, mut fake_px) = (Vec::new(), Vec::new());
    let (mut rec_sum, mut kl_sum) = (0.0f64, 0.0f64);
    let mut kl_dims = vec![0.0f64; code];
    let mut first_code: Vec<f32> = Vec::new();
    // Each test image's posterior mean and ground-truth factors, for the per-factor grids.
    let (mut codes, mut factors): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (Vec::new(), Vec::new());
    // Not the first n in storage order (class folders list the lowest grade first): a seeded
    // shuffle, stratified by label where the dataset has labels.
    let labels = dataset.labels(split);
    let mut indices = vaelab_datasets::stratified_order(&labels, spec.seed, "eval-subset");
    indices.truncate(n);
    let mut label_counts = BTreeMap::new();
    for l in indices.iter().filter_map(|&i| labels[i]) {
        *label_counts.entry(l).or_insert(0) += 1;
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    for (bi, chunk) in indices.chunks(bs).enumerate() {
        let batch = dataset.batch(split, chunk);
        if model.generator_only {
            // Nothing to encode: the test images serve only the distribution metrics.
            factors.extend(batch.factors.iter().cloned());
            real_px.extend_from_slice(&batch.pixels);
            bar.inc(chunk.len() as u64);
            continue;
        }
        let x = to_tensor(&dev, &batch);
        let ctx = Ctx::new(&store, false, spec.seed, bi as u64);
        let noise = normal_noise(&dev, spec.seed, "eval-noise", bi as u64, code, chunk.len());
        // One encoder pass serves both: the sampled code scores the ELBO, the mean is reconstructed.
        let enc = model.encode(&ctx, x.clone(), noise);
        rec_sum += model.nll(&ctx, model.decode(&ctx, enc.z), x).as_vec()[0] as f64 * chunk.len() as f64;
        kl_sum += enc.reg.as_vec()[0] as f64 * chunk.len() as f64;
        let (mu, lv) = (enc.mu.with_empty_tape().as_vec(), enc.logvar.as_vec());
        for d in 0..code {
            for j in 0..chunk.len() {
                let (m, l) = (mu[d * chunk.len() + j] as f64, lv[d * chunk.len() + j] as f64);
                kl_dims[d] += -0.5 * (1.0 + l - m * m - l.exp());
            }
        }
        if bi == 0 {
            first_code = (0..code).map(|d| mu[d * chunk.len()]).collect();
        }
        codes.extend((0..chunk.len()).map(|j| (0..code).map(|d| mu[d * chunk.len() + j]).collect::<Vec<f32>>()));
        factors.extend(batch.factors.iter().cloned());
        let recon = model.to_image(model.decode(&ctx, enc.mu));
        if let Some(failure) = ctx.failures.take() {
            return Err(EvalError::Plugin(failure));
        }
        fake_px.extend(from_batch_last(&recon.as_vec(), chunk.len()));
        real_px.extend_from_slice(&batch.pixels);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let (c, h, w) = dataset.image_shape();
    let real = ImageBatch { n, c, h, w, pixels: real_px, factors, bit_depth: dataset.bit_depth() };
    // A generator alone reconstructs nothing; its grids show samples and traversals only.
    let fake = if model.generator_only { real.clone() } else { real.with_pixels(fake_px) };

    let mut metrics = BTreeMap::new();
    let mut failed = BTreeMap::new();
    for name in &spec.eval.metrics {
        if MODEL_METRICS.contains(&name.as_str()) {
            continue;
        }
        let m = registry.get(name).expect("checked above");
        // One failing metric (a plugin's error, NaN everywhere) must not cost the others.
        match m.evaluate(&real, &fake) {
            Ok(scored) => {
                for s in scored {
                    let entry = MetricEntry {
                        value: s.value,
                        higher_is_better: m.higher_is_better(),
                        definition: m.definition().into(),
                        note: s.note,
                    };
                    metrics.insert(s.key, entry);
                }
            }
            Err(e) => {
                failed.insert(name.clone(), e.to_string());
            }
        }
    }
    let probabilistic = spec.model.latent.is_probabilistic();
    if wants_elbo {
        let (rec, kl) = (rec_sum / n as f64, kl_sum / n as f64);
        let entry = |value, hib, def: &str| MetricEntry { value, higher_is_better: hib, definition: def.into(), note: None };
        metrics.insert("rec_nll".into(), entry(rec, false, "−log p(x|z) summed over pixels, nats per image, one z sample"));
        // An autoencoder has no posterior or prior: only its reconstruction term means something.
        if probabilistic {
            metrics.insert(
                "elbo".into(),
                entry(-(rec + kl), true, "evidence lower bound E[log p(x|z)] − KL(q(z|x)‖p(z)), nats per image, one z sample"),
            );
            metrics.insert("kl".into(), entry(kl, false, "KL(q(z|x) ‖ N(0, I)) summed over latent dimensions, nats per image"));
        }
    }

    let factor_metrics: Vec<&str> = spec.eval.metrics.iter().map(String::as_str).filter(|m| factors::NAMES.contains(m)).collect();
    if !factor_metrics.is_empty() {
        factors::evaluate(
            &factor_metrics,
            spec,
            &model,
            &store,
            &codes,
            &real,
            &dataset.factor_names(),
            &mut metrics,
            &mut failed,
        );
    }
    // Prior samples, as many as test images, for the distribution metrics.
    let samples = (wants_domain_fd || fid_net.is_some()).then(|| domain_fd::prior_samples(&model, &store, spec.seed, &real, bs));
    if let (Some(net), Some(samples)) = (&fid_net, &samples) {
        let real_features = fid::features(net, &real, Some("FID features, test"));
        let fake_features = fid::features(net, samples, Some("FID features, samples"));
        match fid::distance(&real_features, &fake_features) {
            Ok(value) => {
                let definition = format!("{} of the {n} test images and {n} decoded prior samples", fid::DEFINITION);
                let note = fid::sample_note(n, n);
                metrics.insert("fid".into(), MetricEntry { value, higher_is_better: false, definition, note });
            }
            Err(m) => {
                failed.insert("fid".into(), m);
            }
        }
    }
    // The mean training image, once per test image: the MSE baseline and a domain-FD baseline.
    let mean_image: Vec<f32> = mean_training_image(dataset.as_ref()).iter().map(|v| *v as f32).collect();
    let mean_images = real.with_pixels(mean_image.repeat(n));
    let mut domain_fd_baselines = BTreeMap::new();
    if let (true, Some(fake_samples)) = (wants_domain_fd, &samples) {
        let reference = match &spec.eval.domain_encoder {
            Some(dir) => Some(domain_fd::load_reference(&dev, dir, shape)?),
            None => None,
        };
        let encoder = match &reference {
            Some((m, s, seed)) => domain_fd::FeatureEncoder::new(m, s, *seed),
            None => domain_fd::FeatureEncoder::new(&model, &store, spec.seed),
        };
        // The run's own encoder already gave the test images' means above.
        let real_features = match &reference {
            Some(_) => encoder.features(&real, bs),
            None => codes.iter().map(|c| c.iter().map(|v| *v as f64).collect()).collect(),
        };
        let value = domain_fd::distance(&real_features, &encoder.features(fake_samples, bs))?;
        let mut rng = vaelab_datasets::StreamRng::new(spec.seed, &[vaelab_datasets::tag("domain-fd-noise")]);
        let noise_images = real.with_pixels((0..real.pixels.len()).map(|_| rng.uniform() as f32).collect());
        for (name, images) in [("mean_image", &mean_images), ("noise", &noise_images)] {
            domain_fd_baselines.insert(name.to_string(), domain_fd::distance(&real_features, &encoder.features(images, bs))?);
        }
        let source = match &spec.eval.domain_encoder {
            Some(dir) => format!("the encoder of run {}", dir.display()),
            None => "this run's own encoder (compare checkpoints of this run only)".into(),
        };
        metrics.insert(
            "domain_fd".into(),
            MetricEntry {
                value,
                higher_is_better: false,
                definition: format!(
                    "Fréchet distance between Gaussians fitted to encoder means of the {n} test images and of {n} decoded prior samples; features from {source}; not FID"
                ),
                note: None,
            },
        );
    }

    let mean_image_mse = metric::Metric::compute(&metric::Mse, &real, &mean_images).expect("same geometry");
    let kl_per_dim: Vec<f64> = if probabilistic { kl_dims.iter().map(|k| k / n as f64).collect() } else { vec![] };
    let score: Vec<f64> = if probabilistic {
        kl_per_dim.clone()
    } else {
        (0..code)
            .map(|d| {
                let mean = codes.iter().map(|c| c[d] as f64).sum::<f64>() / n as f64;
                codes.iter().map(|c| (c[d] as f64 - mean).powi(2)).sum::<f64>() / n as f64
            })
            .collect()
    };
    let mut order: Vec<usize> = (0..code).collect();
    if model.generator_only {
        // Every noise dimension has the same prior; traverse the first ones from the prior mean.
        first_code = vec![0.0; code];
    } else {
        order.sort_by(|a, b| score[*b].total_cmp(&score[*a]));
    }
    order.truncate(TRAVERSAL_ROWS);

    let mut notes = target.plugin_notes.clone();
    let (moved, earlier) = make_room(run_dir, &out_dir, info.step, split, target.data.as_deref())?;
    notes.extend(moved);
    std::fs::create_dir_all(&out_dir).map_err(|e| EvalError::Write(format!("cannot create {}: {e}", out_dir.display())))?;
    write_grids(&dev, &model, &store, spec, &real, &fake, &first_code, &order, &out_dir)?;
    let factor_grids = if model.generator_only {
        vec![]
    } else {
        write_factor_grids(&dev, &model, &store, spec, &fake, &codes, &dataset.factor_names(), &out_dir)?
    };

    let mut report = EvalRecord {
        run: spec.name.clone(),
        checkpoint_step: info.step,
        split,
        test_images: n,
        label_counts,
        bit_depth: real.bit_depth,
        metrics,
        mean_image_mse,
        domain_fd_baselines,
        kl_per_dim,
        traversal_order: order,
        factor_grids,
        failed,
        prior: prior_description(&model, learned_prior).into(),
        data: target.data.clone(),
        folder: out_dir.clone(),
        notes,
    };
    if let Some(earlier) = earlier {
        merge_earlier(&mut report, earlier);
    }
    let json = serde_json::to_string_pretty(&report).expect("reports serialize");
    let path = paths::metrics_file(&out_dir);
    checkpoint::write_atomic(&path, json.as_bytes())
        .map_err(|e| EvalError::Write(format!("cannot write {}: {e}", path.display())))?;
    crate::report::write(run_dir, &out_dir, &report).map_err(EvalError::Write)?;
    // Every report lists every evaluation of the run: the others' pages are rendered again.
    let all = evaluations(run_dir);
    for (_, other) in all.iter().filter(|(_, r)| r.folder != out_dir) {
        crate::report::rewrite_html(&other.folder, other, &all).map_err(EvalError::Write)?;
    }
    Ok(report)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// What `out_dir` already holds: an evaluation of the same checkpoint, split and data is returned
/// for merging; one of anything else is moved aside to its own folder (`eval-<step>-<split>[-<data>]`,
/// numbered if that exists), never overwritten, with a note saying so.
fn make_room(
    run_dir: &Path,
    out_dir: &Path,
    step: usize,
    split: Split,
    data: Option<&str>,
) -> Result<(Vec<String>, Option<EvalRecord>), EvalError> {
    let Ok(text) = std::fs::read_to_string(paths::metrics_file(out_dir)) else { return Ok((vec![], None)) };
    let Ok(mut earlier) = serde_json::from_str::<EvalRecord>(&text) else {
        return Err(EvalError::Write(format!(
            "{} holds a metrics.json this version cannot read; move it away or choose another folder with --out",
            out_dir.display()
        )));
    };
    if (earlier.checkpoint_step, earlier.split, earlier.data.as_deref()) == (step, split, data) {
        earlier.folder = out_dir.to_path_buf();
        return Ok((vec![], Some(earlier)));
    }
    let base = paths::other_eval_dir(run_dir, earlier.checkpoint_step, earlier.split, earlier.data.as_deref());
    let mut aside = base.clone();
    let mut k = 2;
    while aside.exists() {
        aside = PathBuf::from(format!("{}-{k}", base.display()));
        k += 1;
    }
    std::fs::rename(out_dir, &aside)
        .map_err(|e| EvalError::Write(format!("cannot move {} to {}: {e}", out_dir.display(), aside.display())))?;
    let note = format!(
        "moved the earlier evaluation in {} (step {}, {} split{}) to {}",
        out_dir.display(),
        earlier.checkpoint_step,
        earlier.split.name(),
        earlier.data.as_deref().map(|d| format!(", data {d}")).unwrap_or_default(),
        aside.display()
    );
    Ok((vec![note], None))
}

/// Metrics of an earlier evaluation of the same checkpoint, split and data in the same folder are
/// kept beside the new ones (a newer value replaces an older one of the same name).
fn merge_earlier(report: &mut EvalRecord, earlier: EvalRecord) {
    let mut kept = Vec::new();
    for (name, entry) in earlier.metrics {
        if !report.metrics.contains_key(&name) && !report.failed.contains_key(&name) {
            report.metrics.insert(name.clone(), entry);
            kept.push(name);
        }
    }
    for (name, why) in earlier.failed {
        if !report.metrics.contains_key(&name) && !report.failed.contains_key(&name) {
            report.failed.insert(name, why);
        }
    }
    for (name, v) in earlier.domain_fd_baselines {
        report.domain_fd_baselines.entry(name).or_insert(v);
    }
    for f in earlier.factor_grids {
        if !report.factor_grids.contains(&f) {
            report.factor_grids.push(f);
        }
    }
    if !kept.is_empty() {
        report.notes.push(format!(
            "kept {} metric(s) of the earlier evaluation of this checkpoint in {}: {}",
            kept.len(),
            report.folder.display(),
            kept.join(", ")
        ));
    }
}

/// Where `model`'s prior samples come from, for the report.
fn prior_description(model: &Model, learned: bool) -> &'static str {
    match &model.latent {
        _ if learned => "the PixelCNN prior fitted by `vaelab train-prior`",
        crate::latent::LatentModel::Quantized(_) => "each position's code drawn from the training code frequencies",
        _ => "N(0, I)",
    }
}

/// A generator alone has no reconstructions and no codes of test images: only FID, and the domain FD
/// against another run's encoder, apply.
fn generator_metrics_apply(spec: &Experiment) -> Result<(), EvalError> {
    let refused: Vec<&str> = spec.eval.metrics.iter().map(String::as_str).filter(|m| *m != "fid" && *m != "domain_fd").collect();
    if !refused.is_empty() {
        return Err(EvalError::Model(format!(
            "eval.metrics: {} need reconstructions or codes of test images, which a generator from noise (no encoder) \
             does not make; keep `fid` and `domain_fd` (with `eval.domain_encoder`)",
            refused.join(", ")
        )));
    }
    if spec.eval.metrics.iter().any(|m| m == "domain_fd") && spec.eval.domain_encoder.is_none() {
        return Err(EvalError::Model(
            "eval.metrics: `domain_fd` of a generator from noise needs `eval.domain_encoder` (a run whose encoder \
             gives the features), since this model has no encoder of its own"
                .into(),
        ));
    }
    Ok(())
}

/// MSE of the mean of 2,000 training images against each test image.
/// The mean of the first 2,000 training images (fewer if the split is smaller).
fn mean_training_image(ds: &dyn Dataset) -> Vec<f64> {
    let count = 2_000.min(ds.len(Split::Train));
    let train = ds.batch(Split::Train, &(0..count).collect::<Vec<_>>());
    let mut mean = vec![0.0f64; train.image_len()];
    for i in 0..count {
        for (m, v) in mean.iter_mut().zip(train.image(i)) {
            *m += *v as f64 / count as f64;
        }
    }
    mean
}

/// Decodes `count` codes given batch-last (`code × count`) into one image per code.
fn decode_codes<D: Backend>(dev: &D, model: &Model, ctx: &Ctx<D>, z: Vec<f32>, count: usize, image_len: usize) -> Vec<Vec<f32>> {
    let code = model.latent.code_shape().len();
    let zt = dev.tensor_from_vec(z, (code, count));
    let imgs = model.to_image(model.decode(ctx, zt.retaped())).as_vec();
    from_batch_last(&imgs, count).chunks(image_len).map(|c| c.to_vec()).collect()
}

/// Factors with 2 to 10 distinct values among the test images (a KL grade, a class label, a shape)
/// get `factor-<name>.png`: one row per value, holding up to `grid_images` reconstructions of test
/// images with that value and, in the last column, the decoded mean code of all of them, which
/// shows what the latent space has learned about the factor.
#[allow(clippy::too_many_arguments)]
fn write_factor_grids<D: Backend>(
    dev: &D,
    model: &Model,
    store: &ParamStore<D>,
    spec: &Experiment,
    fake: &ImageBatch,
    codes: &[Vec<f32>],
    names: &[String],
    out_dir: &Path,
) -> Result<Vec<String>, EvalError> {
    let shape = (fake.c, fake.h, fake.w);
    let k = spec.eval.grid_images;
    let code = model.latent.code_shape().len();
    let ctx = Ctx::new(store, false, spec.seed, 0);
    let mut written = Vec::new();
    for (f, name) in names.iter().enumerate() {
        let values: Vec<f32> = {
            let mut v: Vec<f32> = fake.factors.iter().filter_map(|fs| fs.get(f).copied()).collect();
            v.sort_by(f32::total_cmp);
            v.dedup();
            v
        };
        if !(2..=10).contains(&values.len()) {
            continue;
        }
        let mut cells = Vec::new();
        let mut means = Vec::new();
        for v in &values {
            let members: Vec<usize> = (0..codes.len()).filter(|&i| fake.factors[i].get(f) == Some(v)).collect();
            for slot in 0..k {
                cells.push(match members.get(slot) {
                    Some(&i) => fake.image(i).to_vec(),
                    None => vec![0.38; fake.image_len()],
                });
            }
            cells.push(vec![]); // replaced by the decoded class mean below
            let mean: Vec<f32> =
                (0..code).map(|d| members.iter().map(|&i| codes[i][d]).sum::<f32>() / members.len() as f32).collect();
            means.push(mean);
        }
        let count = means.len();
        let mut z = vec![0.0f32; code * count];
        for (col, m) in means.iter().enumerate() {
            for (d, v) in m.iter().enumerate() {
                z[d * count + col] = *v;
            }
        }
        for (row, img) in decode_codes(dev, model, &ctx, z, count, fake.image_len()).into_iter().enumerate() {
            cells[row * (k + 1) + k] = img;
        }
        let file = format!("factor-{name}.png");
        save(&grid::grid(&cells, shape, k + 1), &out_dir.join(&file))?;
        written.push(file);
    }
    Ok(written)
}

#[allow(clippy::too_many_arguments)]
fn write_grids<D: Backend>(
    dev: &D,
    model: &Model,
    store: &ParamStore<D>,
    spec: &Experiment,
    real: &ImageBatch,
    fake: &ImageBatch,
    first_code: &[f32],
    order: &[usize],
    out_dir: &Path,
) -> Result<(), EvalError> {
    let shape = (real.c, real.h, real.w);
    let k = spec.eval.grid_images.min(real.n);
    // Reconstructions: pairs (input, output) side by side, four pairs per row.
    if !model.generator_only {
        let mut cells = Vec::new();
        for i in 0..k {
            cells.push(real.image(i).to_vec());
            cells.push(fake.image(i).to_vec());
        }
        save(&grid::grid(&cells, shape, 8.min(2 * k)), &out_dir.join(paths::RECONSTRUCTIONS_PNG))?;
    }

    let ctx = Ctx::new(store, false, spec.seed, 0);
    let code = model.latent.code_shape().len();
    let decode = |z: Vec<f32>, count: usize| decode_codes(dev, model, &ctx, z, count, real.image_len());
    // Samples from the prior: grid_images × grid_images.
    let g = spec.eval.grid_images;
    let z = model.sample_prior(store, PriorDraw::new(spec.seed, "eval-samples", g * g)).as_vec();
    save(&grid::grid(&decode(z, g * g), shape, g), &out_dir.join(paths::SAMPLES_PNG))?;

    // Traversal: start from the first test image's code; row d sweeps dimension order[d] over −3…3.
    let steps = spec.eval.traversal_steps;
    let count = order.len() * steps;
    let mut z = vec![0.0f32; code * count];
    for (row, &d) in order.iter().enumerate() {
        for s in 0..steps {
            let col = row * steps + s;
            for (j, base) in first_code.iter().enumerate() {
                z[j * count + col] = *base;
            }
            z[d * count + col] = -3.0 + 6.0 * s as f32 / (steps - 1) as f32;
        }
    }
    save(&grid::grid(&decode(z, count), shape, steps), &out_dir.join(paths::TRAVERSAL_PNG))?;
    Ok(())
}

fn save(img: &image::RgbImage, path: &Path) -> Result<(), EvalError> {
    grid::save_png(img, path).map_err(EvalError::Write)
}
