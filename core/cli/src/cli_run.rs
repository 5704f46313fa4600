//! `vaelab check`, `train`, `train-prior`, `eval` and `metrics`: the command-line side of
//! `vaelab::{check, pipeline, prior, eval}`.

use crate::extra_plugins;
use crate::set_threads;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vaelab::pipeline::{PipelineOptions, PipelineOutcome, Stage};
use vaelab::runs::{paths, EvalRecord};
use vaelab::spec::{Device, Experiment};
use vaelab::{check, eval, plugin, train};

#[derive(Args)]
pub struct TrainArgs {
    /// The spec file (not needed with --resume, which reads the run's own spec).
    pub spec: Option<PathBuf>,
    /// Run directory [default: runs/<spec name>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override the spec's step budget.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Override the spec's device: cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<Device>,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Continue the run in this directory from its latest checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Skip the evaluation after training.
    #[arg(long)]
    pub no_eval: bool,
    /// A plugin library or folder of libraries to load besides the spec's (repeatable); it is
    /// recorded in the run's spec, so `eval` and `--resume` load it too.
    #[arg(long = "plugin", value_name = "PATH")]
    pub plugins: Vec<PathBuf>,
    /// The data folder to read instead of the spec's `data.dataset` root (for data that cannot ship
    /// with the spec, such as the Knee OA grading images of specs/knee-oa/). The environment variable
    /// VAELAB_DATA_ROOT does the same for specs whose dataset reads a folder. Recorded in the run's spec.
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
}

#[derive(Args)]
pub struct TrainPriorArgs {
    pub run_dir: PathBuf,
    /// Replace an existing fitted prior.
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args)]
pub struct EvalArgs {
    pub run_dir: PathBuf,
    /// A checkpoint file [default: the run's latest].
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    #[arg(long)]
    pub device: Option<Device>,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Which held-out split to score: test or val.
    #[arg(long, default_value = "test")]
    pub split: vaelab::datasets::Split,
    /// Score another dataset of the same image size: a spec file (its `data` section) or a
    /// folder of images (class folders or flat) or DICOM files; other sizes are fitted as the
    /// run's own data were (resized for a procedural run).
    #[arg(long, value_name = "SPEC_OR_FOLDER")]
    pub data: Option<PathBuf>,
    /// The folder under the run to write [default: eval/ for the latest checkpoint on the test
    /// split of the run's data, else eval-<step>-<split>[-<data>]/]. An earlier evaluation of the
    /// same checkpoint, split and data there keeps its other metrics; any other is moved aside.
    #[arg(long, value_name = "NAME")]
    pub out: Option<String>,
    /// Comma-separated metrics to compute instead of the spec's `eval.metrics`.
    #[arg(long, value_delimiter = ',')]
    pub metrics: Option<Vec<String>>,
    /// A plugin library or folder to load besides the run's own, for its metrics (repeatable).
    #[arg(long = "plugin", value_name = "PATH")]
    pub plugins: Vec<PathBuf>,
    /// pytorch-fid's Inception weights as safetensors, for `fid` [default: eval.fid_weights,
    /// then $VAELAB_FID_WEIGHTS].
    #[arg(long, value_name = "FILE")]
    pub fid_weights: Option<PathBuf>,
    /// A run whose encoder gives `domain_fd`'s features [default: eval.domain_encoder, then this
    /// run's own encoder].
    #[arg(long, value_name = "RUN_DIR")]
    pub domain_encoder: Option<PathBuf>,
}

#[derive(Args)]
pub struct MetricsArgs {
    pub real: PathBuf,
    pub fake: PathBuf,
    /// Comma-separated metric names (built-in or from --plugin libraries).
    #[arg(long, value_delimiter = ',', default_value = "mse,psnr,ssim,ms_ssim")]
    pub metrics: Vec<String>,
    /// Read images as RGB instead of grey.
    #[arg(long)]
    pub rgb: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A plugin library or folder whose metrics may be named (repeatable).
    #[arg(long = "plugin", value_name = "PATH")]
    pub plugins: Vec<PathBuf>,
    /// pytorch-fid's Inception weights as safetensors, for `fid` [default: $VAELAB_FID_WEIGHTS].
    #[arg(long, value_name = "FILE")]
    pub fid_weights: Option<PathBuf>,
    /// A trained run whose encoder gives the features of `domain_fd`.
    #[arg(long, value_name = "RUN_DIR")]
    pub domain_encoder: Option<PathBuf>,
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `vaelab check`: the resolved spec and the model's summary, or every problem with the spec.
pub fn run_check(spec: &Path, plugins: &[PathBuf], data_root: Option<&Path>) -> Result<ExitCode> {
    match check::check_file_with(spec, &extra_plugins(plugins), check::DataRoot::from_flag_or_env(data_root).as_ref()) {
        Ok(checked) => {
            print!("{}", check::describe(&checked));
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprint!("{errors}");
            Ok(ExitCode::from(2))
        }
    }
}

/// `vaelab train`: train (or resume), fit a learned prior, evaluate.
pub fn run_train(args: TrainArgs) -> Result<ExitCode> {
    // A resumed run keeps its own thread count unless told otherwise: parallel sums follow the
    // thread count, and only the same count continues the run bit for bit.
    let recorded = args.resume.as_deref().and_then(run_info);
    let recorded_threads = recorded.as_ref().and_then(|i| i["threads"].as_u64()).map(|t| t as usize).filter(|&t| t > 0);
    let threads = set_threads(args.threads.or(recorded_threads))?;
    let Some((mut experiment, run_dir)) = train_target(&args)? else { return Ok(ExitCode::from(2)) };
    if let Some(s) = args.steps {
        anyhow::ensure!(s > 0, "--steps must be at least 1");
        experiment.train.steps = s;
    }
    if let Some(d) = args.device {
        experiment.device = d;
    }
    if let Some(note) = recorded.as_ref().and_then(|info| resume_note(info, threads)) {
        eprintln!("{note}");
    }
    // Plugin blocks run in process; a crash in one is found here, in a child, before step 1.
    match vaelab::preflight::check(&experiment) {
        Ok(Some(n)) => eprintln!("pre-flight: {n} plugin block(s) ran forward and backward in a child process"),
        Ok(None) => {}
        Err(m) => {
            eprintln!("error: {m}");
            return Ok(ExitCode::from(1));
        }
    }
    eprintln!("training `{}` into {} ({} steps, {threads} threads)", experiment.name, run_dir.display(), experiment.train.steps);
    let train = train::TrainOptions {
        run_dir: run_dir.clone(),
        resume: args.resume.is_some(),
        progress: true,
        stop: interrupt_flag()?,
        stop_at: None,
        threads,
    };
    let eval = (!args.no_eval).then(|| eval::EvalOptions { device: args.device, ..Default::default() });
    let opts = PipelineOptions { train, eval, prior_progress: true };
    match vaelab::pipeline::run(&experiment, &opts, report_stage)? {
        PipelineOutcome::Interrupted { step, checkpoint, .. } => {
            eprintln!(
                "stopped at step {step}; checkpoint {}\ncontinue with: vaelab train --resume {}",
                checkpoint.display(),
                run_dir.display()
            );
            Ok(ExitCode::from(130))
        }
        PipelineOutcome::Finished { eval: Some(record), .. } => Ok(print_report(&record)),
        PipelineOutcome::Finished { eval: None, .. } => Ok(ExitCode::SUCCESS),
    }
}

/// The spec to train and its run directory: the run's own spec with `--resume`, else the checked
/// spec file (`None` when it has problems, which are printed).
fn train_target(args: &TrainArgs) -> Result<Option<(Experiment, PathBuf)>> {
    let data_root = check::DataRoot::from_flag_or_env(args.data_root.as_deref());
    match (&args.resume, &args.spec) {
        (Some(dir), _) => {
            anyhow::ensure!(
                args.data_root.is_none(),
                "--data-root: a resumed run reads the data folder it recorded when it started"
            );
            let mut e = vaelab::runs::read_run_spec(dir)?;
            let notes = vaelab::runs::recorded_plugins::reconcile(dir, &mut e.plugins, &extra_plugins(&args.plugins))?;
            for note in notes {
                eprintln!("note: {note}");
            }
            Ok(Some((e, dir.clone())))
        }
        (None, Some(path)) => match check::check_file_with(path, &extra_plugins(&args.plugins), data_root.as_ref()) {
            Ok(ok) => {
                let mut e = ok.loaded.experiment;
                // `check_file_with` put the given folder in place of any dataset root.
                if let (Some(given), Some(_)) = (&data_root, e.data.dataset.root_mut()) {
                    eprintln!("data: reading {} ({})", given.path.display(), given.source);
                }
                let dir = args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(&e.name));
                Ok(Some((e, dir)))
            }
            Err(errors) => {
                eprint!("{errors}");
                Ok(None)
            }
        },
        (None, None) => anyhow::bail!("give a spec file to train, or --resume RUN_DIR"),
    }
}

/// Ctrl-C finishes the step and checkpoints; a second Ctrl-C exits at once.
fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing this step and writing a checkpoint (Ctrl-C again to abort)");
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(stop)
}

fn report_stage(stage: Stage) {
    match stage {
        Stage::Trained { steps, checkpoint } => eprintln!("finished {steps} steps; checkpoint {}", checkpoint.display()),
        Stage::PriorFitted(r) => eprintln!(
            "fitted the PixelCNN prior: held-out {:.4} nats per code position (code frequencies: {:.4})",
            r.nll_pixelcnn, r.nll_frequencies
        ),
    }
}

/// `vaelab train-prior`.
pub fn run_train_prior(args: TrainPriorArgs) -> Result<ExitCode> {
    set_threads(args.threads)?;
    let opts = vaelab::prior_fit::PriorOptions { progress: true, force: args.force };
    let r = vaelab::prior_fit::fit_prior(&args.run_dir, &opts)?;
    println!(
        "fitted the PixelCNN prior of {} (model step {}) for {} steps on {} training code grids",
        args.run_dir.display(),
        r.model_step,
        r.steps,
        r.train_grids
    );
    println!(
        "held-out NLL on {} test grids: {:.4} nats per position (the code-frequency prior: {:.4})",
        r.test_grids, r.nll_pixelcnn, r.nll_frequencies
    );
    println!(
        "wrote {}; run `vaelab eval {}` to draw samples from it",
        paths::prior_file(&args.run_dir).display(),
        args.run_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `vaelab eval`.
pub fn run_eval(args: EvalArgs) -> Result<ExitCode> {
    set_threads(args.threads)?;
    let opts = eval::EvalOptions {
        checkpoint: args.checkpoint,
        device: args.device,
        split: args.split,
        metrics: args.metrics,
        plugins: extra_plugins(&args.plugins),
        fid_weights: args.fid_weights,
        domain_encoder: args.domain_encoder,
        data: args.data,
        out: args.out,
    };
    Ok(print_report(&eval::evaluate(&args.run_dir, &opts)?))
}

/// `vaelab metrics`: two images or folders compared with no model.
pub fn run_metrics(args: MetricsArgs) -> Result<ExitCode> {
    set_threads(args.threads)?;
    let set = plugin::PluginSet::load(&extra_plugins(&args.plugins)).map_err(|(_, e)| anyhow::anyhow!("{e}"))?;
    let mut registry = vaelab::eval::MetricRegistry::builtin();
    set.register_metrics(&mut registry, 64).map_err(|e| anyhow::anyhow!("{e}"))?;
    let channels = if args.rgb { vaelab::datasets::Channels::Rgb } else { vaelab::datasets::Channels::Grey };
    let opts = eval::compare::CompareOptions {
        channels,
        names: &args.metrics,
        registry: &registry,
        fid_weights: args.fid_weights,
        domain_encoder: args.domain_encoder,
    };
    let result = eval::compare::compare(&args.real, &args.fake, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", eval::compare::format(&result));
    }
    for (name, why) in &result.failed {
        let why = why.strip_prefix(&format!("metric `{name}`: ")).unwrap_or(why);
        eprintln!("error: metric `{name}` failed: {why}");
    }
    Ok(if result.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Prints the evaluation; a metric that failed makes the exit status 1 (everything else is written).
fn print_report(report: &EvalRecord) -> ExitCode {
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    let data = report.data.as_deref().map(|d| format!(" of {d}")).unwrap_or_default();
    println!(
        "evaluation of `{}` at step {} on {} {}{data} images:",
        report.run,
        report.checkpoint_step,
        report.test_images,
        report.split.name()
    );
    let width = report.metrics.keys().map(String::len).max().unwrap_or(10).max(10);
    for (name, m) in &report.metrics {
        println!(
            "  {name:<width$} {:>12.5}  ({})",
            m.value,
            if m.higher_is_better { "higher is better" } else { "lower is better" }
        );
        if let Some(note) = &m.note {
            println!("  {:<width$} note: {note}", "");
        }
    }
    for (name, why) in &report.failed {
        eprintln!("  {name:<10} FAILED: {why}");
    }
    println!("  mean-image MSE baseline: {:.5}", report.mean_image_mse);
    let dir = &report.folder;
    let pictures: Vec<&str> = {
        use vaelab::runs::paths::*;
        [RECONSTRUCTIONS_PNG, SAMPLES_PNG, TRAVERSAL_PNG, LOSS_CURVES_PNG]
    }
    .into_iter()
    .filter(|f| dir.join(f).exists())
    .collect();
    println!(
        "wrote {}/: {} (open it in a browser), {}, {}",
        dir.display(),
        vaelab::runs::paths::REPORT_HTML,
        vaelab::runs::paths::METRICS_JSON,
        pictures.join(", ")
    );
    if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A run's `run.json` (thread count and gemm kernels it was trained with).
fn run_info(run_dir: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(paths::run_json(run_dir)).ok()?).ok()
}

/// Resuming is bit-identical to training straight through only with the thread count and gemm kernel
/// family the run was trained with (recorded in `run.json`); say so when either differs.
fn resume_note(info: &serde_json::Value, threads: usize) -> Option<String> {
    let mut changed = Vec::new();
    if let Some(t) = info["threads"].as_u64().filter(|&t| t as usize != threads) {
        changed.push(format!("{t} thread(s) (now {threads})"));
    }
    let kernels = vaelab::nn::kernels::gemm_kernel();
    if let Some(k) = info["cpu_kernels"].as_str().filter(|&k| k != kernels) {
        changed.push(format!("gemm's {k} kernels (now {kernels})"));
    }
    (!changed.is_empty()).then(|| {
        format!(
            "note: this run was trained with {}; the resumed run will agree with an uninterrupted one \
             to the cross-kernel tolerance, not bit for bit (README, \"Determinism\")",
            changed.join(" and ")
        )
    })
}
