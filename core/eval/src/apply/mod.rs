//! A trained run applied to images it never saw: `vaelab sample`, `reconstruct`, `encode` and
//! `decode`, with outputs other tools read (PNG, CSV, JSON lines, NumPy's NPY).
//!
//! Everything here runs on the CPU and opens no dataset: a run is its `spec.ron` and checkpoint, so
//! a model can be used where its training data are not. Images are encoded, decoded and
//! reconstructed in batches of the run's `data.batch`, in input order, by the same three calls
//! ([`Trained::encode`], [`Trained::decode`]); that is what makes `encode` then `decode` give
//! `reconstruct`'s images bit for bit.

pub mod codes;
pub mod encode;
pub mod inputs;
pub mod output;
pub mod reconstruct;
pub mod sample;

use crate::EvalError;
use dfdx::prelude::*;
use std::path::{Path, PathBuf};
use vaelab_datasets::{Channels, Fit, Preprocess};
use vaelab_models::latent::LatentModel;
use vaelab_models::model::Model;
use vaelab_nn::batch::normal_noise;
use vaelab_nn::{from_batch_last, to_batch_last, Ctx, FeatShape, ParamStore};
use vaelab_runs::checkpoint;
use vaelab_runs::{read_run_spec, OpenOptions, TrainedModel};
use vaelab_spec::{self as spec, Experiment};

pub use codes::{CodeKind, CodeLayout};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Run(#[from] EvalError),
    #[error(transparent)]
    Loaded(#[from] vaelab_runs::RunError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// A problem with what the user gave: a file, a row, a value (the message names them).
    #[error("{0}")]
    Input(String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, String),
}

impl ApplyError {
    pub(crate) fn write(path: &Path) -> impl FnOnce(std::io::Error) -> ApplyError + '_ {
        move |e| ApplyError::Write(path.to_path_buf(), e.to_string())
    }
}

/// A trained run loaded for use on the CPU: spec, model and parameters, without its dataset.
pub struct Trained {
    pub dir: PathBuf,
    pub spec: Experiment,
    pub model: Model,
    pub store: ParamStore<Cpu>,
    /// The checkpoint's step.
    pub step: usize,
}

/// Codes of a batch of images, one entry per image.
pub struct BatchCodes {
    /// The code decoded for a reconstruction: the posterior mean (Gaussian kinds), z (an
    /// autoencoder) or the chosen codebook vectors (quantized).
    pub z: Vec<Vec<f32>>,
    /// log σ² of the Gaussian kinds (empty otherwise).
    pub logvar: Vec<Vec<f32>>,
    /// The codebook index at each position of a quantized code (empty otherwise).
    pub indices: Vec<Vec<usize>>,
}

impl Trained {
    /// Loads `run_dir`'s spec and its latest checkpoint (or `checkpoint`), with a fitted PixelCNN
    /// prior where the run has one.
    pub fn open(run_dir: &Path, checkpoint: Option<&Path>) -> Result<Trained, ApplyError> {
        Trained::open_with(run_dir, checkpoint, &[]).map(|(t, _)| t)
    }

    /// As [`Trained::open`], with `plugins` (`--plugin`) replacing recorded libraries that are
    /// missing; also returns the notes about the run's libraries (replaced, changed).
    pub fn open_with(
        run_dir: &Path,
        checkpoint: Option<&Path>,
        plugins: &[PathBuf],
    ) -> Result<(Trained, Vec<String>), ApplyError> {
        let mut spec = read_run_spec(run_dir)?;
        let notes = vaelab_runs::recorded_plugins::reconcile(run_dir, &mut spec.plugins, plugins)?;
        let (c, h, w) = vaelab_spec::image_shape(&spec);
        let dev = Cpu::seed_from_u64(spec.seed);
        let opts = OpenOptions { checkpoint, ..OpenOptions::default() };
        let TrainedModel { model, store, step, .. } = TrainedModel::open(dev, run_dir, &spec, FeatShape::Image(c, h, w), opts)?;
        Ok((Trained { dir: run_dir.to_path_buf(), spec, model, store, step }, notes))
    }

    pub fn image_shape(&self) -> (usize, usize, usize) {
        vaelab_spec::image_shape(&self.spec)
    }

    pub fn image_len(&self) -> usize {
        let (c, h, w) = self.image_shape();
        c * h * w
    }

    /// How files become model input: the run's size, channels, fit and DICOM window; `fit`
    /// overrides the run's (for a procedural run, whose images never needed fitting: `Exact`).
    pub fn preprocess(&self, fit: Option<Fit>) -> Preprocess {
        let size = self.spec.data.size;
        let (channels, run_fit, window, patches) = match &self.spec.data.dataset {
            spec::Dataset::Folder { channels, fit, .. } => (*channels, *fit, None, None),
            spec::Dataset::Dicom { fit, window, patches, .. } => (Channels::Grey, *fit, *window, *patches),
            _ => (Channels::Grey, Fit::Exact, None, None),
        };
        Preprocess { size, channels, fit: fit.unwrap_or(run_fit), window, patches }
    }

    /// The columns of this run's codes.
    pub fn layout(&self) -> CodeLayout {
        CodeLayout::of(&self.model.latent)
    }

    /// The images of a generator from noise cannot be encoded: say so before any work.
    pub fn require_encoder(&self, command: &str) -> Result<(), ApplyError> {
        if self.model.generator_only {
            return Err(ApplyError::Input(format!(
                "{} is a generator from noise (no encoder): `{command}` needs an encoder; `vaelab sample` and `decode` work",
                self.dir.display()
            )));
        }
        Ok(())
    }

    fn ctx(&self) -> Ctx<'_, Cpu> {
        Ctx::inference(&self.store, self.spec.seed, 0)
    }

    /// Codes of `images` (each C×H×W in [0, 1]), encoded as one batch.
    pub fn encode(&self, images: &[Vec<f32>]) -> Result<BatchCodes, ApplyError> {
        let n = images.len();
        let dev = &self.store.dev;
        let len = self.model.latent.code_shape().len();
        let flat: Vec<f32> = images.concat();
        let x = dev.tensor_from_vec(to_batch_last(&flat, n), (self.image_len(), n));
        let ctx = self.ctx();
        let rows = |v: Vec<f32>| from_batch_last(&v, n).chunks(len).map(<[f32]>::to_vec).collect::<Vec<_>>();
        let codes = match &self.model.latent {
            // One encoder pass: the nearest codes of z_e, and z as their codebook vectors (the very
            // values the model's own lookup gathers).
            LatentModel::Quantized(q) => {
                let ze = self.model.pre_quantization(&ctx, x).expect("a quantized latent");
                let indices = q.nearest_codes(&self.store, &ze, n);
                BatchCodes { z: self.codes_to_z(&indices), logvar: vec![], indices }
            }
            latent => {
                // The noise drives only the sampled z, which is not used: μ is the code.
                let noise = normal_noise(dev, self.spec.seed, "apply", 0, len, n);
                let enc = self.model.encode(&ctx, x, noise);
                let probabilistic = matches!(latent, LatentModel::Gaussian(_) | LatentModel::Spatial(_));
                let logvar = if probabilistic { rows(enc.logvar.as_vec()) } else { vec![] };
                BatchCodes { z: rows(enc.mu.with_empty_tape().as_vec()), logvar, indices: vec![] }
            }
        };
        if let Some(failure) = ctx.failures.take() {
            return Err(ApplyError::Input(failure));
        }
        Ok(codes)
    }

    /// Images in [0, 1] decoded from codes `z` (each of the code's length), as one batch.
    pub fn decode(&self, z: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ApplyError> {
        let n = z.len();
        let len = self.model.latent.code_shape().len();
        let flat: Vec<f32> = z.concat();
        let zt = self.store.dev.tensor_from_vec(to_batch_last(&flat, n), (len, n));
        let ctx = self.ctx();
        let images = self.model.to_image(self.model.decode(&ctx, zt.retaped())).as_vec();
        if let Some(failure) = ctx.failures.take() {
            return Err(ApplyError::Input(failure));
        }
        Ok(from_batch_last(&images, n).chunks(self.image_len()).map(<[f32]>::to_vec).collect())
    }

    /// Codebook vectors for grids of code indices (a quantized run's `decode` input).
    pub fn codes_to_z(&self, grids: &[Vec<usize>]) -> Vec<Vec<f32>> {
        let LatentModel::Quantized(q) = &self.model.latent else { unreachable!("only quantized codes have indices") };
        let n = grids.len();
        let len = q.shape.len();
        from_batch_last(&q.codes_to_z(&self.store, grids).as_vec(), n).chunks(len).map(<[f32]>::to_vec).collect()
    }
}
