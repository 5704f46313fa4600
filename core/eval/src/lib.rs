//! `vaelab eval`: metrics on held-out images and the pictures people look at.
//!
//! Writes `eval/metrics.json` and three PNG grids into the run directory:
//! `reconstructions.png` (input beside output), `samples.png` (decoded prior samples) and
//! `traversal.png` (one row per latent dimension, most informative first); then
//! [`crate::report`] adds `loss-curves.png` and the self-contained `report.html`.

pub mod apply;
pub mod compare;
pub mod domain_fd;
mod evaluate;
pub mod factors;
pub mod grid;
mod progress;
pub mod report;

pub use evaluate::evaluate;
use vaelab_metrics::metric::MetricError;
pub use vaelab_metrics::registry::MetricRegistry;
use vaelab_models::latent::PriorDraw;
use vaelab_models::model::Model;
use vaelab_nn::{from_batch_last, Backend, Ctx, ParamStore};
use vaelab_runs::checkpoint::CheckpointError;
use vaelab_runs::{paths, read_run_spec, EvalRecord, MetricEntry};
use vaelab_spec::Experiment;

use std::path::{Path, PathBuf};
use vaelab_datasets::{Dataset, ImageBatch, Split};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Run(#[from] vaelab_runs::RunError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error("{0}")]
    Write(String),
    /// The evaluation asked for does not fit this run (an empty split, metrics a generator cannot make).
    #[error("{0}")]
    Unfit(String),
    /// `--data`: another dataset that cannot be scored with this run.
    #[error("{0}")]
    OtherData(String),
    /// FID's Inception weights are missing or unreadable.
    #[error("{0}")]
    Fid(String),
    /// The domain FD's encoder run, or the statistics of its features.
    #[error("{0}")]
    DomainFd(String),
    #[error("cannot open the dataset: {0}")]
    Data(#[from] vaelab_datasets::DataError),
    #[error(transparent)]
    Device(#[from] vaelab_nn::device::DeviceError),
    #[error("{0}")]
    Plugin(String),
}

/// Metrics computed from the model rather than from image pairs (the factor metrics of [`factors`]
/// among them).
pub const MODEL_METRICS: [&str; 10] =
    ["elbo", "domain_fd", "fid", "sharpness", "mig", "sap", "dci", "dci_linear", "factor_vae", "beta_vae"];

/// Rows of `traversal.png` at most (spatial codes have hundreds of elements).
pub const TRAVERSAL_ROWS: usize = 16;

/// Evaluates the run's latest checkpoint (or `checkpoint`) and writes `RUN_DIR/eval/`.
/// What `vaelab eval` evaluates beyond the run itself.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// A checkpoint file [default: the run's latest].
    pub checkpoint: Option<PathBuf>,
    /// Overrides the run's device.
    pub device: Option<vaelab_spec::Device>,
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
            vaelab_spec::load::load_spec(path).map_err(|e| EvalError::OtherData(format!("--data {}:\n{e}", path.display())))?;
        let data = loaded.experiment.data;
        if data.size != spec.data.size {
            let (theirs, ours) = (data.size, spec.data.size);
            return Err(EvalError::OtherData(format!(
                "--data {}: its images are {theirs}×{theirs} but the run's are {ours}×{ours}; a model scores images of its own size",
                path.display()
            )));
        }
        other.data = data;
        return Ok((other, name));
    }
    if !path.is_dir() {
        return Err(EvalError::OtherData(format!("--data {}: neither a spec file (.ron) nor a folder", path.display())));
    }
    let root = vaelab_spec::load::absolute(path);
    let (channels, fit) = match &spec.data.dataset {
        vaelab_spec::Dataset::Folder { channels, fit, .. } => (*channels, *fit),
        vaelab_spec::Dataset::Dicom { fit, .. } => (vaelab_datasets::Channels::Grey, *fit),
        // A procedural run never fitted images: other sizes are resized to its own.
        _ => (vaelab_datasets::Channels::Grey, vaelab_datasets::Fit::Resize),
    };
    let dicom = vaelab_datasets::list_inputs(path)
        .map(|files| files.iter().any(|f| vaelab_datasets::single::is_dicom_file(&f.path)))
        .unwrap_or(false);
    other.data.dataset = if dicom {
        vaelab_spec::Dataset::Dicom { root, fit, window: None, patches: None, on_bad_file: vaelab_datasets::OnBadFile::Error }
    } else {
        vaelab_spec::Dataset::Folder { root, channels, fit, on_bad_file: vaelab_datasets::OnBadFile::Error, cache_mib: 1024 }
    };
    Ok((other, name))
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
            "{} holds a {} this version cannot read; move it away or choose another folder with --out",
            out_dir.display(),
            paths::METRICS_JSON
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
        vaelab_models::latent::LatentModel::Quantized(_) => "each position's code drawn from the training code frequencies",
        _ => "N(0, I)",
    }
}

/// A generator alone has no reconstructions and no codes of test images: only the metrics that
/// compare distributions (FID, the sharpness ratio, the domain FD against another run's encoder) apply.
fn generator_metrics_apply(spec: &Experiment) -> Result<(), EvalError> {
    let refused: Vec<&str> =
        spec.eval.metrics.iter().map(String::as_str).filter(|m| !compare::DISTRIBUTION_METRICS.contains(m)).collect();
    if !refused.is_empty() {
        return Err(EvalError::Unfit(format!(
            "eval.metrics: {} need reconstructions or codes of test images, which a generator from noise (no encoder) \
             does not make; keep `fid`, `sharpness` and `domain_fd` (with `eval.domain_encoder`)",
            refused.join(", ")
        )));
    }
    if spec.eval.metrics.iter().any(|m| m == "domain_fd") && spec.eval.domain_encoder.is_none() {
        return Err(EvalError::Unfit(
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
    let ctx = Ctx::inference(store, spec.seed, 0);
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

    let ctx = Ctx::inference(store, spec.seed, 0);
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
