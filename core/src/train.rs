//! The training loop: batches → loss terms → gradients → optimizer, with JSONL logging,
//! atomic checkpoints, exact resume, Ctrl-C handling and a stop on non-finite losses.

use crate::data::{build_dataset, data_shape, normal_noise, to_tensor, train_batch};
use crate::latent::PriorDraw;
use crate::model::Model;
use crate::nn::{Backend, Ctx, ParamGroup, ParamStore};
use crate::optim::Optimizer;
use crate::plugin::PluginSet;
use crate::runs::checkpoint::{self, CheckpointError, CheckpointInfo};
use crate::runs::{paths, LogLine};
use crate::spec::{Experiment, Loss};
use dfdx::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use vaelab_datasets::ImageBatch;

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
    Device(#[from] crate::device::DeviceError),
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
    crate::device::on_device!(spec.device, spec.seed, |dev| train_on(dev, spec, opts))
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
    let shape = data_shape(dataset.as_ref());
    let plugins = PluginSet::load(&spec.plugins).map_err(|(_, e)| TrainError::Plugin(e.to_string()))?;
    let mut store = ParamStore::new(dev.clone(), spec.seed);
    let model = Model::build(&spec.model, shape, &mut store, &plugins).map_err(|e| TrainError::Model(e.to_string()))?;
    let gan = crate::adversarial::Gan::build(&spec.adversarial, shape, &mut store, &plugins)
        .map_err(|e| TrainError::Model(e.to_string()))?;
    let total = spec.train.steps;
    let split = crate::adversarial::SplitObjective::from_spec(&spec.adversarial);
    // The first optimizer updates the model (only the encoder under a split objective); the
    // second, if any, the discriminator of a GAN or the decoder of a split objective.
    let group_optimizer = |group| {
        Optimizer::for_group(
            group,
            spec.train.optimizer.clone(),
            spec.train.schedule.clone(),
            spec.train.grad_clip.clone(),
            total,
        )
    };
    let mut opt = group_optimizer(if split.is_some() { crate::optim::Group::Encoder } else { crate::optim::Group::Model });
    let mut opt_aux = match &spec.adversarial {
        crate::spec::Adversarial::Gan { optimizer, .. } => Some(Optimizer::for_group(
            crate::optim::Group::Discriminator,
            optimizer.clone().unwrap_or_else(|| spec.train.optimizer.clone()),
            spec.train.schedule.clone(),
            spec.train.grad_clip.clone(),
            total,
        )),
        _ if split.is_some() => Some(group_optimizer(crate::optim::Group::Decoder)),
        _ => None,
    };

    let log_path = paths::log_file(dir);
    let mut start = 0;
    if opts.resume {
        let mut opts: Vec<&mut Optimizer<D>> = std::iter::once(&mut opt).chain(opt_aux.as_mut()).collect();
        let info = checkpoint::load(&checkpoint::latest(&ckpt_dir)?, &mut store, &mut opts)?;
        start = info.step;
        truncate_log(&log_path, start)?;
    } else {
        let text = crate::spec::format_resolved(spec);
        checkpoint::write_atomic(&paths::spec_file(dir), text.as_bytes())
            .map_err(io(&paths::spec_file(dir), "cannot write the resolved spec"))?;
        let _ = std::fs::remove_file(&log_path);
    }
    let skipped: Vec<String> = dataset.skipped().iter().map(|(p, why)| format!("{}: {why}", p.display())).collect();
    let run_info = serde_json::json!({
        "vaelab": env!("CARGO_PKG_VERSION"), "threads": opts.threads, "device": format!("{:?}", spec.device),
        "cpu_kernels": crate::nn::kernels::gemm_kernel(),
        "resumed_at": if opts.resume { Some(start) } else { None },
        "skipped_files": skipped.len(), "skipped": skipped,
        "plugins": crate::runs::recorded_plugins::fingerprints(&plugins),
    });
    checkpoint::write_atomic(&paths::run_json(dir), run_info.to_string().as_bytes())
        .map_err(io(&paths::run_json(dir), "cannot write"))?;
    let mut log =
        std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(io(&log_path, "cannot open the log"))?;

    let bar = progress_bar(opts.progress, total, start);
    let mut last_checkpoint: Option<PathBuf> = opts.resume.then(|| checkpoint::latest(&ckpt_dir).ok()).flatten();
    let save = |store: &ParamStore<D>, opt: &Optimizer<D>, opt_aux: &Option<Optimizer<D>>, step: usize| {
        let opts: Vec<&Optimizer<D>> = std::iter::once(opt).chain(opt_aux.as_ref()).collect();
        checkpoint::save(&ckpt_dir, store, &opts, &CheckpointInfo { step, updates: opt.updates })
    };
    let code_rows = model.latent.code_shape().len();
    let batch = spec.data.batch;
    let fetch = |step: usize| train_batch(dataset.as_ref(), spec.seed, step, batch, &spec.data.augment);

    // The next step's batch is decoded, generated and augmented on another thread while this step
    // trains; batches are pure functions of (seed, step), so this changes no number.
    std::thread::scope(|scope| {
        let mut prefetched: Option<std::thread::ScopedJoinHandle<'_, ImageBatch>> = None;
        for step in start..total {
            let t0 = Instant::now();
            let images = match prefetched.take() {
                Some(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                None => fetch(step),
            };
            if step + 1 < total {
                prefetched = Some(scope.spawn(move || fetch(step + 1)));
            }
            let x = to_tensor(&dev, &images);
            let noise = normal_noise(&dev, spec.seed, "noise", step as u64, code_rows, batch);
            let mut values = std::collections::BTreeMap::new();
            // Prior codes for the adversarial terms, from the latent's own prior (code frequencies for
            // a quantized latent), drawn before any update of this step changes them.
            let prior = (gan.is_some() || split.is_some())
                .then(|| model.sample_prior(&store, PriorDraw::new(spec.seed, "gan-prior", batch).at(step as u64)));
            let prior_z = || prior.clone().expect("drawn for adversarial and split objectives");
            if let (Some(gan), Some(opt_aux)) = (&gan, opt_aux.as_mut()) {
                // Phase 1: the discriminator, on fakes made without gradient.
                let mut d_loss_value = 0.0;
                for _ in 0..gan.d_steps {
                    let ctx_d = Ctx::new(&store, true, spec.seed, step as u64);
                    let fakes = model.fakes(&ctx_d, x.clone(), noise.clone(), prior_z());
                    let fakes: Vec<_> = fakes.into_iter().map(|f| f.split_tape().0).collect();
                    let mut d_loss = gan.discriminator_loss(&ctx_d, x.clone(), &fakes);
                    d_loss_value = d_loss.as_vec()[0];
                    if !d_loss_value.is_finite() {
                        bar.abandon();
                        return Err(non_finite(step, "discriminator", d_loss_value, &last_checkpoint));
                    }
                    // R1: its value is logged; its gradient comes from the surrogate (see `Gan::r1`).
                    if let Some((surrogate, penalty)) = gan.r1(&ctx_d, &x) {
                        if !penalty.is_finite() {
                            bar.abandon();
                            return Err(non_finite(step, "r1", penalty, &last_checkpoint));
                        }
                        d_loss = d_loss + surrogate;
                        values.insert("r1".to_string(), penalty);
                    }
                    let mut d_grads = d_loss.backward();
                    if let Some(failure) = ctx_d.failures.take() {
                        bar.abandon();
                        return Err(TrainError::PluginFailed { step: step + 1, failure, kept: kept(&last_checkpoint) });
                    }
                    // Only the discriminator's running statistics move in this phase.
                    let updates = ctx_d.buffer_updates.take();
                    drop(ctx_d);
                    for (id, v) in updates {
                        if store.get(id).group == ParamGroup::Discriminator {
                            store.set_values(id, v);
                        }
                    }
                    opt_aux.step(&mut store, &mut d_grads, step);
                }
                values.insert("discriminator".to_string(), d_loss_value);
            }
            let (loss_value, lr, grad_norm, weights, stats) = if let Some(objective) = split.filter(|o| step >= o.warmup()) {
                // The encoder's update, then the decoder's at the updated encoder (the authors' order).
                let prior = prior_z();
                let renoise = crate::adversarial::RENOISE_PURPOSES
                    .map(|purpose| normal_noise(&dev, spec.seed, purpose, step as u64, code_rows, batch));
                let data = crate::adversarial::StepData { x: &x, noise: &noise, prior_z: &prior, renoise: &renoise };
                let opt_dec = opt_aux.as_mut().expect("a split objective has a decoder optimizer");
                let done = match objective.step(&model, &mut store, &mut opt, opt_dec, &data, spec.seed, step) {
                    Ok(done) => done,
                    Err(crate::adversarial::StepFailure::NonFinite(name, v)) => {
                        bar.abandon();
                        return Err(non_finite(step, name, v, &last_checkpoint));
                    }
                    Err(crate::adversarial::StepFailure::Plugin(failure)) => {
                        bar.abandon();
                        return Err(TrainError::PluginFailed { step: step + 1, failure, kept: kept(&last_checkpoint) });
                    }
                };
                values.extend(done.values);
                let loss_value = values["encoder"] + values["decoder"];
                (loss_value, done.lr, done.grad_norm, vec![], std::collections::BTreeMap::new())
            } else {
                let ctx = Ctx::new(&store, true, spec.seed, step as u64);
                let (terms, adversarial, feature) = match &gan {
                    Some(gan) if model.generator_only => {
                        let fakes = model.fakes(&ctx, x, noise, prior_z());
                        (None, Some(gan.generator_loss(&ctx, fakes) * gan.weight), None)
                    }
                    Some(gan) => {
                        let real = x.clone();
                        let step_terms =
                            model.terms_and_fakes(&ctx, x, noise, prior_z(), gan.trains_encoder, gan.feature_layer.is_some());
                        let feature = step_terms.recon.and_then(|recon| gan.feature_loss(&ctx, &real, recon));
                        (Some(step_terms.terms), Some(gan.generator_loss(&ctx, step_terms.fakes) * gan.weight), feature)
                    }
                    None => (Some(model.terms(&ctx, x, noise)), None, None),
                };
                let weights = term_weights(&spec.losses, step);
                let mut total_loss: Option<Tensor<(), f32, D, crate::nn::OT<D>>> = None;
                let stats: std::collections::BTreeMap<String, f32> =
                    terms.iter().flat_map(|t| &t.stats).map(|(k, v)| (k.to_string(), *v)).collect();
                let mut pending = match terms {
                    Some(t) => [("rec", Some(t.rec)), (t.reg.0, Some(t.reg.1))],
                    None => [("rec", None), ("none", None)],
                };
                for (name, w) in &weights {
                    let term = pending.iter_mut().find(|(n, _)| n == name).and_then(|(_, t)| t.take()).expect("each term once");
                    let v = term.as_vec()[0];
                    if !v.is_finite() {
                        bar.abandon();
                        return Err(non_finite(step, name.to_string(), v, &last_checkpoint));
                    }
                    values.insert(name.to_string(), v);
                    let weighted = term * *w;
                    total_loss = Some(match total_loss {
                        None => weighted,
                        Some(acc) => acc + weighted,
                    });
                }
                // The terms beside the spec's losses, logged unweighted: the generator loss (its
                // weight divided back out) and the reconstruction in discriminator features.
                let gan_weight = gan.as_ref().map_or(1.0, |g| g.weight.max(f32::MIN_POSITIVE));
                let extra =
                    adversarial.map(|t| ("generator", t, gan_weight)).into_iter().chain(feature.map(|t| ("feature", t, 1.0)));
                for (name, term, weight) in extra {
                    let v = term.as_vec()[0] / weight;
                    if !v.is_finite() {
                        bar.abandon();
                        return Err(non_finite(step, name, v, &last_checkpoint));
                    }
                    values.insert(name.to_string(), v);
                    total_loss = Some(match total_loss {
                        None => term,
                        Some(acc) => acc + term,
                    });
                }
                // Validation guarantees a loss term or a discriminator (a generator from noise).
                let loss = total_loss.expect("validated: a loss term or an adversarial term");
                let loss_value = loss.as_vec()[0];
                let mut grads = loss.backward();
                if let Some(failure) = ctx.failures.take() {
                    bar.abandon();
                    return Err(TrainError::PluginFailed { step: step + 1, failure, kept: kept(&last_checkpoint) });
                }
                let updates = ctx.buffer_updates.take();
                drop(ctx);
                for (id, v) in updates {
                    // The discriminator saw only fakes in this phase: its statistics move in its own.
                    if store.get(id).group != ParamGroup::Discriminator {
                        store.set_values(id, v);
                    }
                }
                let lr = opt.lr(step);
                let grad_norm = opt.step(&mut store, &mut grads, step);
                if let (Some(_), Some(opt_dec)) = (split, opt_aux.as_mut()) {
                    // A split objective's plain-VAE warm-up trains the decoder group too, from the same gradients.
                    opt_dec.step(&mut store, &mut grads, step);
                }
                (loss_value, lr, grad_norm, weights, stats)
            };
            let done = step + 1;
            let img_per_s = batch as f32 / t0.elapsed().as_secs_f32();

            if done % spec.train.log_every == 0 || done == total {
                let line = LogLine {
                    step: done,
                    loss: loss_value,
                    terms: values.clone(),
                    weights: weights.iter().map(|(n, w)| (n.to_string(), *w)).collect(),
                    lr,
                    grad_norm,
                    img_per_s,
                    stats,
                };
                writeln!(log, "{}", serde_json::to_string(&line).expect("log lines serialize"))
                    .map_err(io(&log_path, "cannot append to the log"))?;
            }
            bar.set_position(done as u64);
            bar.set_message(values.iter().map(|(k, v)| format!("{k} {v:.3}")).collect::<Vec<_>>().join("  "));

            let interrupted = opts.stop.load(Ordering::SeqCst) || opts.stop_at == Some(done);
            if done % spec.train.checkpoint_every == 0 || done == total || interrupted {
                log.flush().map_err(io(&log_path, "cannot flush the log"))?;
                let path = save(&store, &opt, &opt_aux, done)?;
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
            None => save(&store, &opt, &opt_aux, total)?,
        };
        Ok(TrainOutcome::Finished { steps: total, checkpoint })
    })
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
