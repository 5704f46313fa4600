//! The training loop: batches → loss terms → gradients → optimizer, with JSONL logging,
//! atomic checkpoints, exact resume, Ctrl-C handling and a stop on non-finite losses.

pub mod bench;
pub mod device_check;
pub mod prior_fit;
mod session;

use session::Session;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use vaelab_datasets::ImageBatch;
use vaelab_nn::optim::StepFailure;
use vaelab_nn::pool::PoolAwareThread;
use vaelab_nn::Backend;
use vaelab_plugin_host::PluginSet;
use vaelab_runs::checkpoint::{self, CheckpointError};
use vaelab_runs::data::{build_dataset, data_shape, train_batch};
use vaelab_runs::{paths, LogLine};
use vaelab_spec::{Experiment, Loss};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {what}: {source}")]
    Io { path: PathBuf, what: &'static str, source: std::io::Error },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("step {step}: loss term `{term}` is {value}; training stopped.\n{kept}")]
    NonFinite { step: usize, term: String, value: f32, kept: String },
    #[error("{0}")]
    Model(String),
    #[error("cannot open the dataset: {0}")]
    Data(#[from] vaelab_datasets::DataError),
    #[error("run directory {0} already holds a run; continue it with `--resume {0}`, or pass another `--out`")]
    RunExists(PathBuf),
    #[error(transparent)]
    Device(#[from] vaelab_nn::device::DeviceError),
    #[error("{0}")]
    Plugin(String),
    #[error("step {step}: {failure}; training stopped before this step changed any parameter.\n{kept}")]
    PluginFailed { step: usize, failure: String, kept: String },
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.to_path_buf();
    move |source| TrainError::Io { path, what, source }
}

pub struct TrainOptions {
    pub run_dir: PathBuf,
    /// Continue the run in `run_dir` from its latest checkpoint.
    pub resume: bool,
    pub progress: bool,
    /// Set by the Ctrl-C handler: checkpoint and stop after the current step.
    pub stop: Arc<AtomicBool>,
    /// Stop (with a checkpoint) once this many steps are done, as if interrupted. For tests and
    /// for splitting a long run into jobs.
    pub stop_at: Option<usize>,
    /// Rayon threads in use; recorded in `run.json`.
    pub threads: usize,
}

#[derive(Debug, PartialEq)]
pub enum TrainOutcome {
    Finished { steps: usize, checkpoint: PathBuf },
    Interrupted { step: usize, checkpoint: PathBuf },
}

/// Trains `spec` into `opts.run_dir` (creating it, or resuming it).
pub fn train(spec: &Experiment, opts: &TrainOptions) -> Result<TrainOutcome, TrainError> {
    // The steps run on a pool thread, where their kernels split work without waking the caller
    // (see `vaelab_nn::pool`).
    vaelab_nn::pool::on_pool_thread(|| vaelab_nn::on_device!(spec.device, spec.seed, |dev| train_on(dev, spec, opts)))
}

/// The weight of each loss term at `step` (warm-ups applied).
pub fn term_weights(losses: &[Loss], step: usize) -> Vec<(&'static str, f32)> {
    losses
        .iter()
        .map(|l| match *l {
            Loss::Reconstruction { weight } => ("rec", weight),
            Loss::Kl { weight, warmup } => {
                ("kl", if warmup == 0 { weight } else { weight * (step as f32 / warmup as f32).min(1.0) })
            }
            Loss::Vq { weight } => ("vq", weight),
        })
        .collect()
}

fn train_on<D: Backend>(dev: D, spec: &Experiment, opts: &TrainOptions) -> Result<TrainOutcome, TrainError> {
    let dir = &opts.run_dir;
    let ckpt_dir = paths::checkpoints_dir(dir);
    if !opts.resume && checkpoint::latest_pointer(&ckpt_dir).exists() {
        return Err(TrainError::RunExists(dir.clone()));
    }
    std::fs::create_dir_all(dir).map_err(io(dir, "cannot create the run directory"))?;
    let dataset = build_dataset(spec)?;
    let plugins = PluginSet::load(&spec.plugins).map_err(|(_, e)| TrainError::Plugin(e.to_string()))?;
    let mut session = Session::build(dev, spec, data_shape(dataset.as_ref()), &plugins)?;
    let log_path = paths::log_file(dir);
    let mut start = 0;
    if opts.resume {
        start = session.resume(&checkpoint::latest(&ckpt_dir)?)?;
        truncate_log(&log_path, start)?;
    } else {
        let text = vaelab_spec::format_resolved(spec);
        checkpoint::write_atomic(&paths::spec_file(dir), text.as_bytes())
            .map_err(io(&paths::spec_file(dir), "cannot write the resolved spec"))?;
        let _ = std::fs::remove_file(&log_path);
    }
    let skipped: Vec<String> = dataset.skipped().iter().map(|(p, why)| format!("{}: {why}", p.display())).collect();
    let run_info = serde_json::json!({
        "vaelab": env!("CARGO_PKG_VERSION"), "threads": opts.threads, "device": format!("{:?}", spec.device),
        "cpu_kernels": vaelab_nn::kernels::gemm_kernel(),
        "resumed_at": if opts.resume { Some(start) } else { None },
        "skipped_files": skipped.len(), "skipped": skipped,
        "plugins": vaelab_runs::recorded_plugins::fingerprints(&plugins),
    });
    checkpoint::write_atomic(&paths::run_json(dir), run_info.to_string().as_bytes())
        .map_err(io(&paths::run_json(dir), "cannot write"))?;
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(io(&log_path, "cannot open the log"))?;
    let last_checkpoint = opts.resume.then(|| checkpoint::latest(&ckpt_dir).ok()).flatten();
    run_steps(&mut session, dataset.as_ref(), opts, start, Log { file: log, path: log_path }, last_checkpoint)
}

/// The open training log.
struct Log {
    file: std::fs::File,
    path: PathBuf,
}

/// Steps `start..` of the spec's budget: each step's batch, its update, the log line and the
/// checkpoints, until the budget is spent or the run is told to stop.
fn run_steps<D: Backend>(
    session: &mut Session<D>,
    dataset: &dyn vaelab_datasets::Dataset,
    opts: &TrainOptions,
    start: usize,
    mut log: Log,
    mut last_checkpoint: Option<PathBuf>,
) -> Result<TrainOutcome, TrainError> {
    let spec = session.spec;
    let (total, batch) = (spec.train.steps, spec.data.batch);
    let ckpt_dir = paths::checkpoints_dir(&opts.run_dir);
    let bar = progress_bar(opts.progress, total, start);
    let fetch = |step: usize| train_batch(dataset, spec.seed, step, batch, &spec.data.augment);
    // The next step's batch is decoded, generated and augmented on another thread while this step
    // trains; batches are pure functions of (seed, step), so this changes no number.
    std::thread::scope(|scope| {
        // The steps run on a pool thread (see [`train`]) and the prefetch decodes its images with
        // rayon, in the same pool, so every wait for it, on any way out, must keep the pool going.
        let mut prefetched: Option<PoolAwareThread<'_, ImageBatch>> = None;
        for step in start..total {
            let t0 = Instant::now();
            let images = match prefetched.take() {
                Some(thread) => thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                None => fetch(step),
            };
            if step + 1 < total {
                prefetched = Some(PoolAwareThread::spawn(scope, move || fetch(step + 1)));
            }
            let mut values = BTreeMap::new();
            let summary = match session.step(step, &images, &mut values) {
                Ok(summary) => summary,
                Err(failure) => {
                    bar.abandon();
                    return Err(step_error(step, failure, &last_checkpoint));
                }
            };
            let done = step + 1;
            if done % spec.train.log_every == 0 || done == total {
                let line = LogLine {
                    step: done,
                    loss: summary.loss,
                    terms: values.clone(),
                    weights: summary.weights.iter().map(|(n, w)| (n.to_string(), *w)).collect(),
                    lr: summary.lr,
                    grad_norm: summary.grad_norm,
                    img_per_s: batch as f32 / t0.elapsed().as_secs_f32(),
                    stats: summary.stats,
                };
                writeln!(log.file, "{}", serde_json::to_string(&line).expect("log lines serialize"))
                    .map_err(io(&log.path, "cannot append to the log"))?;
            }
            bar.set_position(done as u64);
            bar.set_message(values.iter().map(|(k, v)| format!("{k} {v:.3}")).collect::<Vec<_>>().join("  "));

            let interrupted = opts.stop.load(Ordering::SeqCst) || opts.stop_at == Some(done);
            if done % spec.train.checkpoint_every == 0 || done == total || interrupted {
                log.file.flush().map_err(io(&log.path, "cannot flush the log"))?;
                let path = session.save(&ckpt_dir, done)?;
                last_checkpoint = Some(path.clone());
                if interrupted && done < total {
                    bar.abandon_with_message(format!("interrupted at step {done}; checkpoint saved"));
                    return Ok(TrainOutcome::Interrupted { step: done, checkpoint: path });
                }
            }
        }
        bar.finish();
        let checkpoint = match last_checkpoint {
            Some(p) => p,
            None => session.save(&ckpt_dir, total)?,
        };
        Ok(TrainOutcome::Finished { steps: total, checkpoint })
    })
}

/// The error for a step that stopped at 0-based `step`.
fn step_error(step: usize, failure: StepFailure, last_checkpoint: &Option<PathBuf>) -> TrainError {
    match failure {
        StepFailure::NonFinite(term, value) => non_finite(step, term, value, last_checkpoint),
        StepFailure::Plugin(failure) => TrainError::PluginFailed { step: step + 1, failure, kept: kept(last_checkpoint) },
    }
}

/// The error for a loss term that stopped being finite at 0-based `step`.
fn non_finite(step: usize, term: impl Into<String>, value: f32, last_checkpoint: &Option<PathBuf>) -> TrainError {
    TrainError::NonFinite { step: step + 1, term: term.into(), value, kept: kept(last_checkpoint) }
}

/// What a stopped run leaves behind.
fn kept(last_checkpoint: &Option<PathBuf>) -> String {
    match last_checkpoint {
        Some(p) => format!("The last good checkpoint is kept: {}", p.display()),
        None => "No checkpoint was written before it.".to_string(),
    }
}

fn progress_bar(show: bool, total: usize, start: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} step {pos}/{len} {bar:25} {per_sec:>9} ETA {eta:>4}  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_position(start as u64);
    bar.reset_eta();
    bar
}

/// Drops log lines after `step`: a resumed run rewrites them, exactly as it did the first time.
fn truncate_log(path: &Path, step: usize) -> Result<(), TrainError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<LogLine>(l).map(|r| r.step <= step).unwrap_or(false))
        .map(|l| format!("{l}\n"))
        .collect();
    checkpoint::write_atomic(path, kept.as_bytes()).map_err(io(path, "cannot rewrite the log"))
}
