//! `vaelab train-prior RUN_DIR`: fits the run's PixelCNN prior to the code grids its trained
//! quantized encoder gives the training images, and writes it to `RUN_DIR/prior.safetensors`.
//! Loaders lay it over the run's checkpoint (`runs::prior_file::overlay`) when it was fitted to that checkpoint.

use dfdx::prelude::*;
use vaelab_models::latent::LatentModel;
use vaelab_nn::optim::{Group, Optimizer};
use vaelab_nn::{Ctx, ParamStore};
use vaelab_runs::{paths, prior_file, LoadedRun, OpenOptions, RunError};
use vaelab_spec::{GradClip, OptimizerSpec, Prior, Schedule};

use std::path::Path;
use vaelab_datasets::Split;

/// At most this many training images give the code grids the prior learns from.
pub const MAX_TRAIN_GRIDS: usize = 10_000;
/// Held-out test images scored by the fitted prior.
pub const TEST_GRIDS: usize = 1_000;

/// Why a prior could not be fitted.
#[derive(Debug, thiserror::Error)]
pub enum PriorError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("{0}")]
    Input(String),
}

pub struct PriorOptions {
    pub progress: bool,
    /// Replace an existing `prior.safetensors`.
    pub force: bool,
}

/// What fitting gave: the held-out negative log-likelihood per code position, under the PixelCNN
/// and under the independent code-frequency prior it replaces.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PriorFit {
    pub model_step: usize,
    pub steps: usize,
    pub train_grids: usize,
    pub test_grids: usize,
    pub nll_pixelcnn: f64,
    pub nll_frequencies: f64,
}

/// Fits the prior of the run in `run_dir`.
pub fn fit_prior(run_dir: &Path, opts: &PriorOptions) -> Result<PriorFit, PriorError> {
    let path = paths::prior_file(run_dir);
    if path.exists() && !opts.force {
        return Err(PriorError::Input(format!("{} already holds a fitted prior; pass --force to fit it again", path.display())));
    }
    let mut run = LoadedRun::open_with(run_dir, OpenOptions { checkpoint: None, fitted_prior: false })?;
    let Prior::PixelCnn { steps, lr, batch, .. } = run.spec.model.prior else {
        return Err(PriorError::Input(format!(
            "the run's spec ({}) has `prior: Frequencies`; write `prior: PixelCnn()` in its model section (defaults: \
             64 channels, 4 mask-B layers, 7×7 mask A, 2000 steps) and run this again",
            paths::spec_file(run_dir).display()
        )));
    };
    let (Some(prior), LatentModel::Quantized(q)) = (&run.model.prior, &run.model.latent) else {
        return Err(PriorError::Input("a PixelCnn prior needs a Quantized latent".into()));
    };
    let grids = |split: Split, max: usize| -> Vec<Vec<usize>> {
        let n = run.dataset.len(split).min(max);
        let mut out = Vec::with_capacity(n);
        let idx: Vec<usize> = (0..n).collect();
        for (bi, chunk) in idx.chunks(run.spec.data.batch).enumerate() {
            let images = run.dataset.batch(split, chunk);
            let x = vaelab_nn::batch::to_tensor(&run.store.dev, &images);
            let ctx = Ctx::inference(&run.store, run.spec.seed, bi as u64);
            let ze = run.model.pre_quantization(&ctx, x).expect("checked: a quantized latent");
            out.extend(q.nearest_codes(&run.store, &ze, chunk.len()));
        }
        out
    };
    let train_grids = grids(Split::Train, MAX_TRAIN_GRIDS);
    let test_grids = grids(Split::Test, TEST_GRIDS);
    let net = &prior.net;
    let mut opt = Optimizer::for_group(
        Group::Prior,
        OptimizerSpec::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
        Schedule::Constant,
        GradClip::Off,
        steps,
    );
    let bar = if opts.progress { indicatif::ProgressBar::new(steps as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("prior step {pos}/{len} {bar:25} ETA {eta:>4}  {msg}").expect("valid template"),
    );
    let mut rng = vaelab_datasets::StreamRng::new(run.spec.seed, &[vaelab_datasets::tag("prior-batches")]);
    for step in 0..steps {
        let picked: Vec<Vec<usize>> = (0..batch).map(|_| train_grids[rng.below(train_grids.len())].clone()).collect();
        let ctx = Ctx::new(&run.store, true, run.spec.seed, step as u64);
        let loss = net.loss(&ctx, &picked);
        let value = loss.as_vec()[0];
        let mut grads = loss.backward();
        drop(ctx);
        opt.step(&mut run.store, &mut grads, step);
        bar.inc(1);
        bar.set_message(format!("nll {value:.3} nats/position"));
    }
    bar.finish_and_clear();
    run.store.set_values(prior.trained_steps, vec![steps as f32]);

    let nll_pixelcnn = held_out_nll(net, &run.store, &test_grids, run.spec.data.batch);
    let freq = q.code_frequencies(&run.store);
    let total: f32 = freq.iter().sum();
    let nll_frequencies =
        test_grids.iter().flat_map(|g| g.iter()).map(|&k| -((freq[k] / total).max(f32::MIN_POSITIVE) as f64).ln()).sum::<f64>()
            / (test_grids.len() * net.h * net.w).max(1) as f64;
    let report = PriorFit {
        model_step: run.step,
        steps,
        train_grids: train_grids.len(),
        test_grids: test_grids.len(),
        nll_pixelcnn,
        nll_frequencies,
    };
    prior_file::save(&path, &run.store, &report)?;
    Ok(report)
}

/// Mean NLL per position of `grids` under the PixelCNN, in batches.
fn held_out_nll(net: &vaelab_models::prior::PixelCnn, store: &ParamStore<Cpu>, grids: &[Vec<usize>], batch: usize) -> f64 {
    let mut sum = 0.0;
    for chunk in grids.chunks(batch.max(1)) {
        let ctx = Ctx::inference(store, 0, 0);
        sum += net.loss(&ctx, chunk).as_vec()[0] as f64 * chunk.len() as f64;
    }
    sum / grids.len().max(1) as f64
}
