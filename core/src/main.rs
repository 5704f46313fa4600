//! The `vaelab` command line: a thin layer over `vaelab_core`.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vaelab_core::spec::Device;
use vaelab_core::{check, eval, plugin, train};

mod cli_apply;
mod cli_latent;

// Large, short-lived activation buffers make glibc malloc return memory to the OS and page-fault
// it back every step; mimalloc keeps it (measured: about half the step time on 2 cores).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "vaelab",
    version,
    about = "Spec-driven variational autoencoders: check, train and evaluate RON experiment specs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Call plugin metrics in this process instead of a child process per metric: faster, but a
    /// metric that crashes then ends vaelab.
    #[arg(long, global = true)]
    in_process: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a spec, print it fully resolved and summarise the model it builds.
    Check {
        spec: PathBuf,
        /// A plugin library or folder of libraries to load besides the spec's (repeatable).
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
    },
    /// Train a spec into runs/<name>/, then evaluate it.
    Train {
        /// The spec file (not needed with --resume, which reads the run's own spec).
        spec: Option<PathBuf>,
        /// Run directory [default: runs/<spec name>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override the spec's step budget.
        #[arg(long)]
        steps: Option<usize>,
        /// Override the spec's device: cpu, cuda or cuda:N.
        #[arg(long)]
        device: Option<Device>,
        /// Worker threads [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
        /// Continue the run in this directory from its latest checkpoint.
        #[arg(long, value_name = "RUN_DIR")]
        resume: Option<PathBuf>,
        /// Skip the evaluation after training.
        #[arg(long)]
        no_eval: bool,
        /// A plugin library or folder of libraries to load besides the spec's (repeatable); it is
        /// recorded in the run's spec, so `eval` and `--resume` load it too.
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
    },
    /// Fit a VQ run's PixelCNN prior (spec `prior: PixelCnn(…)`) to its training codes; writes
    /// RUN_DIR/prior.safetensors, which `eval`, `latent` and `explore` then sample from.
    TrainPrior {
        run_dir: PathBuf,
        /// Replace an existing fitted prior.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Evaluate a run: eval/metrics.json and PNG grids.
    Eval {
        run_dir: PathBuf,
        /// A checkpoint file [default: the run's latest].
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[arg(long)]
        device: Option<Device>,
        #[arg(long)]
        threads: Option<usize>,
        /// Which held-out split to score: test or val.
        #[arg(long, default_value = "test")]
        split: vaelab_datasets::Split,
        /// Score another dataset of the same image size: a spec file (its `data` section) or a
        /// folder of images (class folders or flat) or DICOM files; other sizes are fitted as the
        /// run's own data were (resized for a procedural run).
        #[arg(long, value_name = "SPEC_OR_FOLDER")]
        data: Option<PathBuf>,
        /// The folder under the run to write [default: eval/ for the latest checkpoint on the test
        /// split of the run's data, else eval-<step>-<split>[-<data>]/]. An earlier evaluation of the
        /// same checkpoint, split and data there keeps its other metrics; any other is moved aside.
        #[arg(long, value_name = "NAME")]
        out: Option<String>,
        /// Comma-separated metrics to compute instead of the spec's `eval.metrics`.
        #[arg(long, value_delimiter = ',')]
        metrics: Option<Vec<String>>,
        /// A plugin library or folder to load besides the run's own, for its metrics (repeatable).
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
        /// pytorch-fid's Inception weights as safetensors, for `fid` [default: eval.fid_weights,
        /// then $VAELAB_FID_WEIGHTS].
        #[arg(long, value_name = "FILE")]
        fid_weights: Option<PathBuf>,
        /// A run whose encoder gives `domain_fd`'s features [default: eval.domain_encoder, then this
        /// run's own encoder].
        #[arg(long, value_name = "RUN_DIR")]
        domain_encoder: Option<PathBuf>,
    },
    /// Compare two image files, or two folders of images paired by sorted name, with no model.
    Metrics {
        real: PathBuf,
        fake: PathBuf,
        /// Comma-separated metric names (built-in or from --plugin libraries).
        #[arg(long, value_delimiter = ',', default_value = "mse,psnr,ssim,ms_ssim")]
        metrics: Vec<String>,
        /// Read images as RGB instead of grey.
        #[arg(long)]
        rgb: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// A plugin library or folder whose metrics may be named (repeatable).
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
        /// pytorch-fid's Inception weights as safetensors, for `fid` [default: $VAELAB_FID_WEIGHTS].
        #[arg(long, value_name = "FILE")]
        fid_weights: Option<PathBuf>,
        /// A trained run whose encoder gives the features of `domain_fd`.
        #[arg(long, value_name = "RUN_DIR")]
        domain_encoder: Option<PathBuf>,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Draw N images from a trained run's prior into a folder (PNG or one NPY array).
    Sample(cli_apply::SampleArgs),
    /// Reconstruct an image, a folder of images or DICOM files with a trained run; per-image MSE,
    /// PSNR and SSIM in OUT/reconstruct.csv.
    Reconstruct(cli_apply::ReconstructArgs),
    /// Encode images to latent codes: one row per image in a CSV, JSON-lines or NPY file.
    Encode(cli_apply::EncodeArgs),
    /// Decode a code file (as `encode` writes it, possibly edited) to images.
    Decode(cli_apply::DecodeArgs),
    /// Analyse a run's latent space: traverse, interpolate, attributes, embed (writes RUN_DIR/latent/).
    Latent(cli_latent::LatentArgs),
    /// Serve a live latent explorer for a run on http://127.0.0.1:8080/.
    Explore(cli_latent::ExploreArgs),
    /// Inspect plugin libraries.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Time training steps of a spec on a fixed batch (used by `cargo xtask bench`).
    #[command(hide = true)]
    Bench {
        spec: PathBuf,
        #[arg(long, default_value_t = 12)]
        steps: usize,
        #[arg(long)]
        threads: Option<usize>,
        /// Override the spec's device: cpu, cuda or cuda:N.
        #[arg(long)]
        device: Option<Device>,
    },
    /// Compare the CPU and a CUDA device on fixed computations: every layer kind, a few steps of each
    /// objective, a trace of the default spec (used by the CUDA bundle's `run.sh check`).
    #[command(hide = true)]
    DeviceCheck {
        /// Folder for the report (device-check.md, device-check.json) and the runs.
        #[arg(long)]
        out: PathBuf,
        /// The specs folder (its shapes/ specs are trained).
        #[arg(long, default_value = "specs")]
        specs: PathBuf,
        #[arg(long, default_value_t = 0)]
        ordinal: usize,
        /// The CPU side only: everything up to the first CUDA call.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value_t = 3)]
        objective_steps: usize,
        #[arg(long, default_value_t = 200)]
        trace_steps: usize,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Time MS-SSIM on grey image pairs (used by `cargo xtask bench msssim`).
    #[command(hide = true)]
    BenchMsSsim {
        #[arg(long, default_value_t = 256)]
        pairs: usize,
        #[arg(long, default_value_t = 256)]
        size: usize,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Score one plugin metric for a parent vaelab (reads a request and images on stdin), or with
    /// --blocks run every plugin block of a spec once (the pre-flight check before training).
    #[command(hide = true)]
    PluginWorker {
        #[arg(long)]
        blocks: bool,
    },
    /// Time loading an image folder: decode, resize to `--size` and batch every training image
    /// (used by `cargo xtask bench loader`).
    #[command(hide = true)]
    BenchLoader {
        root: PathBuf,
        #[arg(long, default_value_t = 128)]
        size: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long)]
        threads: Option<usize>,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Load each library (or every library in each folder; default: VAELAB_PLUGIN_PATH) and show its
    /// ABI version, metrics with their outputs and flags, and blocks.
    List { paths: Vec<PathBuf> },
}

/// `--plugin` entries then `VAELAB_PLUGIN_PATH`'s, as absolute paths (they are recorded in runs).
fn extra_plugins(cli: &[PathBuf]) -> Vec<PathBuf> {
    cli.iter().map(|p| plugin::absolute(p)).chain(plugin::env_entries()).collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn set_threads(threads: Option<usize>) -> Result<usize> {
    let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("cannot start the thread pool")?;
    Ok(n)
}

fn run(cli: Cli) -> Result<ExitCode> {
    plugin::isolated::set_in_process(cli.in_process);
    match cli.command {
        Command::PluginWorker { blocks: false } => Ok(ExitCode::from(plugin::isolated::worker_main() as u8)),
        Command::PluginWorker { blocks: true } => Ok(ExitCode::from(plugin::preflight::worker_main() as u8)),
        Command::Check { spec, plugins } => match check::check_file(&spec, &extra_plugins(&plugins)) {
            Ok(checked) => {
                print!("{}", check::describe(&checked));
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprint!("{errors}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Train { spec, out, steps, device, threads, resume, no_eval, plugins } => {
            // A resumed run keeps its own thread count unless told otherwise: parallel sums follow the
            // thread count, and only the same count continues the run bit for bit.
            let recorded = resume.as_deref().and_then(run_info);
            let threads = set_threads(
                threads.or_else(|| recorded.as_ref().and_then(|i| i["threads"].as_u64()).map(|t| t as usize).filter(|&t| t > 0)),
            )?;
            let (mut experiment, run_dir) = match (&resume, &spec) {
                (Some(dir), _) => {
                    let mut e = vaelab_core::runs::read_run_spec(dir)?;
                    let notes = vaelab_core::runs::recorded_plugins::reconcile(dir, &mut e.plugins, &extra_plugins(&plugins))
                        .map_err(|m| anyhow::anyhow!(m))?;
                    for note in notes {
                        eprintln!("note: {note}");
                    }
                    (e, dir.clone())
                }
                (None, Some(path)) => {
                    let loaded = match check::check_file(path, &extra_plugins(&plugins)) {
                        Ok(ok) => ok.loaded,
                        Err(errors) => {
                            eprint!("{errors}");
                            return Ok(ExitCode::from(2));
                        }
                    };
                    let e = loaded.experiment;
                    let dir = out.clone().unwrap_or_else(|| PathBuf::from("runs").join(&e.name));
                    (e, dir)
                }
                (None, None) => anyhow::bail!("give a spec file to train, or --resume RUN_DIR"),
            };
            if let Some(s) = steps {
                anyhow::ensure!(s > 0, "--steps must be at least 1");
                experiment.train.steps = s;
            }
            if let Some(d) = device {
                experiment.device = d;
            }
            if let Some(note) = recorded.as_ref().and_then(|info| resume_note(info, threads)) {
                eprintln!("{note}");
            }
            // Plugin blocks run in process; a crash in one is found here, in a child, before step 1.
            match plugin::preflight::check(&experiment) {
                Ok(Some(n)) => eprintln!("pre-flight: {n} plugin block(s) ran forward and backward in a child process"),
                Ok(None) => {}
                Err(m) => {
                    eprintln!("error: {m}");
                    return Ok(ExitCode::from(1));
                }
            }
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
            eprintln!(
                "training `{}` into {} ({} steps, {threads} threads)",
                experiment.name,
                run_dir.display(),
                experiment.train.steps
            );
            let opts = train::TrainOptions {
                run_dir: run_dir.clone(),
                resume: resume.is_some(),
                progress: true,
                stop,
                stop_at: None,
                threads,
            };
            match train::train(&experiment, &opts)? {
                train::TrainOutcome::Interrupted { step, checkpoint } => {
                    eprintln!(
                        "stopped at step {step}; checkpoint {}\ncontinue with: vaelab train --resume {}",
                        checkpoint.display(),
                        run_dir.display()
                    );
                    return Ok(ExitCode::from(130));
                }
                train::TrainOutcome::Finished { steps, checkpoint } => {
                    eprintln!("finished {steps} steps; checkpoint {}", checkpoint.display());
                }
            }
            // A learned prior is part of the model the spec describes: fit it to the final codes.
            if matches!(experiment.model.prior, vaelab_core::spec::Prior::PixelCnn { .. }) {
                let opts = vaelab_core::prior::fit::PriorOptions { progress: true, force: true };
                let r = vaelab_core::prior::fit::fit_prior(&run_dir, &opts)?;
                eprintln!(
                    "fitted the PixelCNN prior: held-out {:.4} nats per code position (code frequencies: {:.4})",
                    r.nll_pixelcnn, r.nll_frequencies
                );
            }
            if no_eval {
                return Ok(ExitCode::SUCCESS);
            }
            let opts = eval::EvalOptions { device, ..Default::default() };
            Ok(print_report(&eval::evaluate(&run_dir, &opts)?))
        }
        Command::Eval {
            run_dir,
            checkpoint,
            device,
            threads,
            split,
            data,
            out,
            metrics,
            plugins,
            fid_weights,
            domain_encoder,
        } => {
            set_threads(threads)?;
            let opts = eval::EvalOptions {
                checkpoint,
                device,
                split,
                metrics,
                plugins: extra_plugins(&plugins),
                fid_weights,
                domain_encoder,
                data,
                out,
            };
            Ok(print_report(&eval::evaluate(&run_dir, &opts)?))
        }
        Command::Metrics { real, fake, metrics, rgb, json, plugins, threads, fid_weights, domain_encoder } => {
            set_threads(threads)?;
            let set = plugin::PluginSet::load(&extra_plugins(&plugins)).map_err(|(_, e)| anyhow::anyhow!("{e}"))?;
            let mut registry = vaelab_core::eval::MetricRegistry::builtin();
            set.register_metrics(&mut registry, 64).map_err(|e| anyhow::anyhow!("{e}"))?;
            let channels = if rgb { vaelab_datasets::Channels::Rgb } else { vaelab_datasets::Channels::Grey };
            let opts =
                eval::compare::CompareOptions { channels, names: &metrics, registry: &registry, fid_weights, domain_encoder };
            let result = eval::compare::compare(&real, &fake, &opts)?;
            if json {
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
        Command::TrainPrior { run_dir, force, threads } => {
            set_threads(threads)?;
            let opts = vaelab_core::prior::fit::PriorOptions { progress: true, force };
            let r = vaelab_core::prior::fit::fit_prior(&run_dir, &opts)?;
            println!(
                "fitted the PixelCNN prior of {} (model step {}) for {} steps on {} training code grids",
                run_dir.display(),
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
                vaelab_core::runs::paths::prior_file(&run_dir).display(),
                run_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Explore(args) => {
            set_threads(args.threads)?;
            cli_latent::run_explore(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sample(args) => {
            set_threads(args.run.threads)?;
            cli_apply::run_sample(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reconstruct(args) => {
            set_threads(args.run.threads)?;
            cli_apply::run_reconstruct(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Encode(args) => {
            set_threads(args.run.threads)?;
            cli_apply::run_encode(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Decode(args) => {
            set_threads(args.run.threads)?;
            cli_apply::run_decode(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Latent(args) => {
            set_threads(args.threads)?;
            cli_latent::run_latent(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins { command: PluginsCommand::List { paths } } => {
            let entries = if paths.is_empty() { plugin::env_entries() } else { paths };
            anyhow::ensure!(!entries.is_empty(), "give plugin files or folders, or set {}", plugin::PLUGIN_PATH_VAR);
            let mut ok = true;
            // The libraries together, as a run would load them: names that clash are reported.
            let mut together = plugin::PluginSet::default();
            for entry in &entries {
                let files = match plugin::expand_entry(entry) {
                    Ok(f) => f,
                    Err(e) => {
                        eprintln!("error: {e}");
                        ok = false;
                        continue;
                    }
                };
                if files.is_empty() {
                    eprintln!("{}: no shared libraries in this folder", entry.display());
                }
                for file in files {
                    match plugin::library::open(&file) {
                        Ok(lib) => {
                            print!("{}", plugin::describe(std::slice::from_ref(&lib)));
                            if let Err(e) = together.add(lib) {
                                eprintln!("error: {e}");
                                ok = false;
                            }
                        }
                        Err(e) => {
                            eprintln!("error: {e}");
                            ok = false;
                        }
                    }
                }
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Bench { spec, steps, threads, device } => {
            let threads = set_threads(threads)?;
            let mut loaded = check::check_file(&spec, &extra_plugins(&[])).map_err(|e| anyhow::anyhow!("{e}"))?.loaded;
            if let Some(d) = device {
                loaded.experiment.device = d;
            }
            let result = vaelab_core::bench::time_steps(&loaded.experiment, steps)?;
            let [f, b, o] = result.median_parts_s;
            println!(
                "vaelab threads={threads} size={}: median step {:.4}s => {:.0} img/s (peak RSS {:.0} MiB; forward {:.1} ms, backward {:.1} ms, optimizer {:.1} ms)",
                loaded.experiment.data.size, result.median_step_s, result.img_per_s, result.peak_rss_mib, f * 1e3, b * 1e3, o * 1e3
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::DeviceCheck { out, specs, ordinal, dry_run, objective_steps, trace_steps, threads } => {
            set_threads(threads)?;
            let opts = vaelab_core::device_check::CheckOptions { out, ordinal, dry_run, specs, objective_steps, trace_steps };
            let results = vaelab_core::device_check::run(&opts).map_err(|e| anyhow::anyhow!("{e}"))?;
            let md = vaelab_core::device_check::markdown(&results, dry_run);
            std::fs::write(opts.out.join("device-check.md"), &md)?;
            std::fs::write(opts.out.join("device-check.json"), serde_json::to_string_pretty(&results)?)?;
            print!("{md}");
            let failed = results.iter().any(|c| c.pass() == Some(false));
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::BenchMsSsim { pairs, size, threads } => {
            let threads = set_threads(threads)?;
            let (seconds, mean) = vaelab_core::bench::time_ms_ssim(pairs, size)?;
            println!(
                "vaelab ms_ssim threads={threads}: {pairs} pairs in {seconds:.3}s => {:.1} pairs/s (mean {mean:.9})",
                pairs as f64 / seconds
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchLoader { root, size, batch, threads } => {
            let threads = set_threads(threads)?;
            let r = vaelab_core::bench::time_loader(&root, size, batch)?;
            println!(
                "vaelab loader threads={threads}: {} images in {:.3}s (open {:.3}s) => {:.0} img/s (peak RSS {:.0} MiB)",
                r.images, r.total_s, r.open_s, r.img_per_s, r.peak_rss_mib
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints the evaluation; a metric that failed makes the exit status 1 (everything else is written).
fn print_report(report: &vaelab_core::runs::EvalRecord) -> ExitCode {
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
        use vaelab_core::runs::paths::*;
        [RECONSTRUCTIONS_PNG, SAMPLES_PNG, TRAVERSAL_PNG, LOSS_CURVES_PNG]
    }
    .into_iter()
    .filter(|f| dir.join(f).exists())
    .collect();
    println!("wrote {}/: report.html (open it in a browser), metrics.json, {}", dir.display(), pictures.join(", "));
    if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A run's `run.json` (thread count and gemm kernels it was trained with).
fn run_info(run_dir: &std::path::Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(vaelab_core::runs::paths::run_json(run_dir)).ok()?).ok()
}

/// Resuming is bit-identical to training straight through only with the thread count and gemm kernel
/// family the run was trained with (recorded in `run.json`); say so when either differs.
fn resume_note(info: &serde_json::Value, threads: usize) -> Option<String> {
    let mut changed = Vec::new();
    if let Some(t) = info["threads"].as_u64().filter(|&t| t as usize != threads) {
        changed.push(format!("{t} thread(s) (now {threads})"));
    }
    let kernels = vaelab_core::nn::kernels::gemm_kernel();
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
