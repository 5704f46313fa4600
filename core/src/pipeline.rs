//! What `vaelab train` and a reproducibility suite (`cargo xtask repro`) both do with a spec: train
//! (or resume) it, fit its learned prior when the spec has one, and evaluate it. One function, so the
//! two never drift apart.

use std::path::PathBuf;
use std::time::Instant;
use vaelab_eval::{EvalError, EvalOptions};
use vaelab_runs::EvalRecord;
use vaelab_spec::{Experiment, Prior};
use vaelab_train::prior_fit::{PriorError, PriorFit, PriorOptions};
use vaelab_train::{TrainError, TrainOptions, TrainOutcome};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Prior(#[from] PriorError),
    #[error(transparent)]
    Eval(#[from] EvalError),
}

pub struct PipelineOptions {
    pub train: TrainOptions,
    /// Evaluate after training (and prior fitting) with these options; `None` stops after them.
    pub eval: Option<EvalOptions>,
    /// Progress bars while fitting the prior.
    pub prior_progress: bool,
}

/// A stage that has just finished, for a caller that reports as it goes.
pub enum Stage<'a> {
    Trained { steps: usize, checkpoint: &'a std::path::Path },
    PriorFitted(&'a PriorFit),
}

pub enum PipelineOutcome {
    /// Training stopped (Ctrl-C or `stop_at`) with a checkpoint; nothing after it ran.
    Interrupted { step: usize, checkpoint: PathBuf, train_s: f64 },
    Finished {
        steps: usize,
        checkpoint: PathBuf,
        prior: Option<PriorFit>,
        /// Boxed: an evaluation record is large beside the other variant.
        eval: Option<Box<EvalRecord>>,
        /// Seconds of training in this call.
        train_s: f64,
        /// Seconds of prior fitting and evaluation.
        eval_s: f64,
    },
}

/// Trains `spec` into `opts.train.run_dir`, fits a PixelCNN prior if the spec has one (to the final
/// codes: the prior is part of the model the spec describes), then evaluates unless `opts.eval` is
/// `None`. `on_stage` hears of each finished stage before the next begins.
pub fn run(spec: &Experiment, opts: &PipelineOptions, mut on_stage: impl FnMut(Stage)) -> Result<PipelineOutcome, PipelineError> {
    let run_dir = &opts.train.run_dir;
    let t0 = Instant::now();
    let (steps, checkpoint) = match vaelab_train::train(spec, &opts.train)? {
        TrainOutcome::Interrupted { step, checkpoint } => {
            return Ok(PipelineOutcome::Interrupted { step, checkpoint, train_s: t0.elapsed().as_secs_f64() });
        }
        TrainOutcome::Finished { steps, checkpoint } => (steps, checkpoint),
    };
    let train_s = t0.elapsed().as_secs_f64();
    on_stage(Stage::Trained { steps, checkpoint: &checkpoint });
    let t1 = Instant::now();
    let prior = match spec.model.prior {
        Prior::PixelCnn { .. } => {
            let fit = vaelab_train::prior_fit::fit_prior(run_dir, &PriorOptions { progress: opts.prior_progress, force: true })?;
            on_stage(Stage::PriorFitted(&fit));
            Some(fit)
        }
        Prior::Frequencies => None,
    };
    let eval = match &opts.eval {
        Some(eval_opts) => Some(Box::new(vaelab_eval::evaluate(run_dir, eval_opts)?)),
        None => None,
    };
    Ok(PipelineOutcome::Finished { steps, checkpoint, prior, eval, train_s, eval_s: t1.elapsed().as_secs_f64() })
}
