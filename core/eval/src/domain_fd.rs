//! The domain Fréchet distance: the Fréchet distance (see [`vaelab_metrics::frechet`]) between Gaussians fitted
//! to encoder features of the test images and of as many decoded prior samples. Medical-imaging papers
//! use such a distance where ImageNet's Inception features fit radiographs poorly. It is reported
//! under its own name, never as FID.
//!
//! The features are the posterior means of a vaelab encoder: by default the evaluated run's own
//! (then values compare checkpoints of one run, not different runs), or the encoder of a fixed
//! reference run named in `eval.domain_encoder`, which makes values comparable across runs.

use super::EvalError;
use std::path::Path;
use vaelab_datasets::ImageBatch;
use vaelab_metrics::frechet::{frechet_distance, Gaussian};
use vaelab_models::latent::PriorDraw;
use vaelab_models::model::Model;
use vaelab_nn::batch::{normal_noise, to_tensor};
use vaelab_nn::{from_batch_last, Backend, Ctx, FeatShape, ParamStore};
use vaelab_runs::{OpenOptions, RunError, TrainedModel};

/// An encoder whose posterior means serve as features.
pub struct FeatureEncoder<'a, D: Backend> {
    model: &'a Model,
    store: &'a ParamStore<D>,
    seed: u64,
}

/// A reference run's model and parameters, built for images of `shape`.
pub fn load_reference<D: Backend>(dev: &D, run_dir: &Path, shape: FeatShape) -> Result<(Model, ParamStore<D>, u64), EvalError> {
    let spec = super::read_run_spec(run_dir)?;
    // Only the encoder is used: a fitted prior is not needed.
    let opts = OpenOptions { checkpoint: None, fitted_prior: false };
    let trained = TrainedModel::open(dev.clone(), run_dir, &spec, shape, opts).map_err(|e| match e {
        RunError::Build(e) => EvalError::DomainFd(format!("domain encoder {}: {e}", run_dir.display())),
        other => other.into(),
    })?;
    Ok((trained.model, trained.store, spec.seed))
}

impl<'a, D: Backend> FeatureEncoder<'a, D> {
    pub fn new(model: &'a Model, store: &'a ParamStore<D>, seed: u64) -> Self {
        FeatureEncoder { model, store, seed }
    }

    /// Posterior means of `images`, one f64 row per image, in batches of `batch`.
    pub fn features(&self, images: &ImageBatch, batch: usize) -> Vec<Vec<f64>> {
        let dev = &self.store.dev;
        let code = self.model.latent.code_shape().len();
        let mut rows = Vec::with_capacity(images.n);
        for start in (0..images.n).step_by(batch.max(1)) {
            let end = (start + batch).min(images.n);
            let chunk = images.range(start, end);
            let ctx = Ctx::inference(self.store, self.seed, start as u64);
            let noise = normal_noise(dev, self.seed, "domain-fd", start as u64, code, end - start);
            let mu = self.model.encode(&ctx, to_tensor(dev, &chunk), noise).mu.as_vec();
            rows.extend(
                from_batch_last(&mu, end - start).chunks(code).map(|c| c.iter().map(|v| *v as f64).collect::<Vec<f64>>()),
            );
        }
        rows
    }
}

/// `count` images decoded from the evaluated model's prior, in batches.
pub fn prior_samples<D: Backend>(model: &Model, store: &ParamStore<D>, seed: u64, like: &ImageBatch, batch: usize) -> ImageBatch {
    let count = like.n;
    let z = model.sample_prior(store, PriorDraw::new(seed, "eval-domain-fd", count)).as_vec();
    let code = model.latent.code_shape().len();
    let mut pixels = Vec::with_capacity(count * like.image_len());
    for start in (0..count).step_by(batch.max(1)) {
        let end = (start + batch).min(count);
        let cols: Vec<f32> = (0..code).flat_map(|d| z[d * count + start..d * count + end].iter().copied()).collect();
        let zt = store.dev.tensor_from_vec(cols, (code, end - start));
        let ctx = Ctx::inference(store, seed, start as u64);
        let imgs = model.to_image(model.decode(&ctx, zt.retaped())).as_vec();
        pixels.extend(from_batch_last(&imgs, end - start));
    }
    like.with_pixels(pixels)
}

/// The domain FD between two feature sets.
pub fn distance(real: &[Vec<f64>], fake: &[Vec<f64>]) -> Result<f64, EvalError> {
    let dim = real.first().map_or(0, Vec::len);
    let fit = |rows: &[Vec<f64>]| Gaussian::fit(rows, dim).map_err(|m| EvalError::DomainFd(format!("domain FD: {m}")));
    Ok(frechet_distance(&fit(real)?, &fit(fake)?))
}
