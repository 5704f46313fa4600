//! A trained run loaded on the CPU for analysis, the explorer and prior fitting.

use super::{checkpoint, paths, read_run_spec, RunError};
use crate::data::{build_dataset, data_shape};
use dfdx::prelude::*;
use std::path::{Path, PathBuf};
use vaelab_datasets::{Dataset, ImageBatch, Split};
use vaelab_models::latent::LatentModel;
use vaelab_models::model::Model;
use vaelab_nn::batch::{normal_noise, to_tensor};
use vaelab_nn::ParamStore;
use vaelab_nn::{from_batch_last, Backend, Ctx, FeatShape};
use vaelab_plugin_host::PluginSet;
use vaelab_spec::Experiment;

/// What to load from a run besides its model.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions<'a> {
    /// A checkpoint file [default: the run's latest].
    pub checkpoint: Option<&'a Path>,
    /// Lay the run's fitted `prior.safetensors` over the checkpoint where there is one; `false` leaves
    /// a learned prior as initialised (for fitting it afresh, or where only the encoder is used).
    pub fitted_prior: bool,
}

impl Default for OpenOptions<'_> {
    fn default() -> Self {
        OpenOptions { checkpoint: None, fitted_prior: true }
    }
}

/// A trained model rebuilt from a run directory, on any device: the one loader behind evaluation, the
/// domain encoder, `vaelab sample`/`reconstruct`/`encode`/`decode` and [`LoadedRun`].
pub struct TrainedModel<D: Backend> {
    pub model: Model,
    pub store: ParamStore<D>,
    pub plugins: PluginSet,
    /// The checkpoint file loaded, and its step.
    pub checkpoint: PathBuf,
    pub step: usize,
    /// Whether a fitted PixelCNN prior was laid over the checkpoint.
    pub learned_prior: bool,
}

impl<D: Backend> TrainedModel<D> {
    /// Builds `spec`'s model for inputs of `shape` on `dev` and loads `run_dir`'s checkpoint into it.
    /// `spec` is the run's resolved spec ([`crate::read_run_spec`]) as the caller adjusted it: plugins
    /// reconciled, another device, another dataset of the same size.
    pub fn open(dev: D, run_dir: &Path, spec: &Experiment, shape: FeatShape, opts: OpenOptions) -> Result<Self, RunError> {
        // Whatever runs the model next computes as training did (`vaelab_nn::subnormal`).
        vaelab_nn::subnormal::flush_subnormals();
        let plugins = PluginSet::load(&spec.plugins).map_err(|(_, e)| RunError::Plugins(e.to_string()))?;
        let mut store = ParamStore::new(dev, spec.seed);
        let model = Model::build(&spec.model, shape, &mut store, &plugins).map_err(|e| RunError::Build(e.to_string()))?;
        let checkpoint = match opts.checkpoint {
            Some(p) => p.to_path_buf(),
            None => checkpoint::latest(&paths::checkpoints_dir(run_dir))?,
        };
        let step = checkpoint::load(&checkpoint, &mut store, &mut [])?.step;
        let learned_prior = opts.fitted_prior && crate::prior_file::overlay(run_dir, step, &mut store)?;
        Ok(TrainedModel { model, store, plugins, checkpoint, step, learned_prior })
    }
}

/// A trained run, loaded on the CPU: its spec, data, model and parameters.
pub struct LoadedRun {
    pub dir: PathBuf,
    pub spec: Experiment,
    pub dataset: Box<dyn Dataset>,
    pub model: Model,
    pub store: ParamStore<Cpu>,
    pub step: usize,
}

impl LoadedRun {
    /// Loads `run_dir`'s spec, dataset and latest checkpoint (or `checkpoint`).
    pub fn open(run_dir: &Path, checkpoint: Option<&Path>) -> Result<LoadedRun, RunError> {
        Self::open_with(run_dir, OpenOptions { checkpoint, ..OpenOptions::default() })
    }

    /// As [`LoadedRun::open`], with the loader's options.
    pub fn open_with(run_dir: &Path, opts: OpenOptions) -> Result<LoadedRun, RunError> {
        let mut spec = read_run_spec(run_dir)?;
        for note in crate::recorded_plugins::reconcile(run_dir, &mut spec.plugins, &[])? {
            eprintln!("note: {note}");
        }
        let dataset = build_dataset(&spec)?;
        let shape = data_shape(dataset.as_ref());
        let dev = Cpu::seed_from_u64(spec.seed);
        let TrainedModel { model, store, step, .. } = TrainedModel::open(dev, run_dir, &spec, shape, opts)?;
        if model.generator_only {
            return Err(RunError::Invalid(format!(
                "{} is a generator from noise (no encoder): latent analysis and the explorer need codes of images; \
                 its samples and noise traversals are in eval/",
                run_dir.display()
            )));
        }
        Ok(LoadedRun { dir: run_dir.to_path_buf(), spec, dataset, model, store, step })
    }
}

/// Test images with their codes (posterior means) and log-variances, one row per image.
pub struct Codes {
    pub images: ImageBatch,
    pub mu: Vec<Vec<f32>>,
    pub logvar: Vec<Vec<f32>>,
}

impl LoadedRun {
    pub fn code_len(&self) -> usize {
        self.model.latent.code_shape().len()
    }

    pub fn image_shape(&self) -> (usize, usize, usize) {
        self.dataset.image_shape()
    }

    /// The first `n` test images (fewer if the split is smaller) in evaluation's order (a seeded shuffle, stratified by label), so
    /// that test image `i` here is test image `i` of `vaelab eval` and every class is represented.
    pub fn test_images(&self, n: usize) -> ImageBatch {
        let labels = self.dataset.labels(Split::Test);
        let mut order = vaelab_datasets::stratified_order(&labels, self.spec.seed, "eval-subset");
        order.truncate(n);
        self.dataset.batch(Split::Test, &order)
    }

    /// Codes of `images`, in batches of the spec's batch size.
    pub fn encode(&self, images: ImageBatch) -> Codes {
        let dev = &self.store.dev;
        let code = self.code_len();
        let (mut mu, mut logvar) = (Vec::with_capacity(images.n), Vec::with_capacity(images.n));
        let bs = self.spec.data.batch.max(1);
        for start in (0..images.n).step_by(bs) {
            let end = (start + bs).min(images.n);
            let chunk = images.range(start, end);
            let ctx = Ctx::inference(&self.store, self.spec.seed, start as u64);
            let noise = normal_noise(dev, self.spec.seed, "analysis", start as u64, code, end - start);
            let enc = self.model.encode(&ctx, to_tensor(dev, &chunk), noise);
            let rows = |v: Vec<f32>| from_batch_last(&v, end - start).chunks(code).map(<[f32]>::to_vec).collect::<Vec<_>>();
            mu.extend(rows(enc.mu.as_vec()));
            logvar.extend(rows(enc.logvar.as_vec()));
        }
        Codes { images, mu, logvar }
    }

    /// Decodes codes (each of [`Self::code_len`] values) to images in [0, 1].
    pub fn decode(&self, codes: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let (code, len) = (self.code_len(), self.dataset.image_shape());
        let image_len = len.0 * len.1 * len.2;
        let mut out = Vec::with_capacity(codes.len());
        let bs = self.spec.data.batch.max(1);
        for chunk in codes.chunks(bs) {
            let n = chunk.len();
            let mut z = vec![0.0f32; code * n];
            for (j, c) in chunk.iter().enumerate() {
                for (d, v) in c.iter().enumerate() {
                    z[d * n + j] = *v;
                }
            }
            let ctx = Ctx::inference(&self.store, self.spec.seed, 0);
            let zt = self.store.dev.tensor_from_vec(z, (code, n));
            let imgs = self.model.to_image(self.model.decode(&ctx, zt.retaped())).as_vec();
            out.extend(from_batch_last(&imgs, n).chunks(image_len).map(<[f32]>::to_vec));
        }
        out
    }

    /// Where the analysis outputs go: `RUN_DIR/latent/`.
    pub fn out_dir(&self) -> Result<PathBuf, RunError> {
        let dir = paths::latent_dir(&self.dir);
        std::fs::create_dir_all(&dir).map_err(|e| RunError::Write(dir.clone(), e.to_string()))?;
        Ok(dir)
    }

    /// The kind of latent, for messages and summaries.
    pub fn latent_kind(&self) -> &'static str {
        match self.model.latent {
            LatentModel::Identity(_) => "none",
            LatentModel::Gaussian(_) => "gaussian",
            LatentModel::Spatial(_) => "spatial",
            LatentModel::Quantized(_) => "quantized",
        }
    }

    /// Channels and positions of a spatial or quantized code: (C, h·w); flat codes are (len, 1).
    pub fn code_grid(&self) -> (usize, usize) {
        match self.model.latent.code_shape() {
            FeatShape::Image(c, h, w) => (c, h * w),
            FeatShape::Flat(n) => (n, 1),
        }
    }
}
