//! The `vaelab` command line: a thin layer over `vaelab`.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use vaelab::plugin;

mod cli_apply;
mod cli_latent;
mod cli_run;
mod cli_tools;

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
        /// The data folder to read instead of the spec's `data.dataset` root (as `train --data-root`;
        /// VAELAB_DATA_ROOT does the same for specs whose dataset reads a folder).
        #[arg(long, value_name = "DIR")]
        data_root: Option<PathBuf>,
    },
    /// Train a spec into runs/<name>/, then evaluate it.
    Train(cli_run::TrainArgs),
    /// Fit a VQ run's PixelCNN prior (spec `prior: PixelCnn(…)`) to its training codes; writes
    /// RUN_DIR/prior.safetensors, which `eval`, `latent` and `explore` then sample from.
    TrainPrior(cli_run::TrainPriorArgs),
    /// Evaluate a run: eval/metrics.json and PNG grids.
    Eval(cli_run::EvalArgs),
    /// Compare two image files, or two folders of images paired by sorted name, with no model.
    Metrics(cli_run::MetricsArgs),
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
    Bench(cli_tools::BenchArgs),
    /// Compare the CPU and a CUDA device on fixed computations: every layer kind, a few steps of each
    /// objective, a trace of the default spec (used by the CUDA bundle's `run.sh check`).
    #[command(hide = true)]
    DeviceCheck(cli_tools::DeviceCheckArgs),
    /// Time MS-SSIM on grey image pairs (used by `cargo xtask bench msssim`).
    #[command(hide = true)]
    BenchMsSsim(cli_tools::BenchMsSsimArgs),
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
    BenchLoader(cli_tools::BenchLoaderArgs),
    /// Time drawing code grids from a PixelCNN prior (used by `cargo xtask bench prior`).
    #[command(hide = true)]
    BenchPrior(cli_tools::BenchPriorArgs),
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Load each library (or every library in each folder; default: VAELAB_PLUGIN_PATH) and show its
    /// ABI version, metrics with their outputs and flags, and blocks.
    List { paths: Vec<PathBuf> },
}

/// `--plugin` entries then `VAELAB_PLUGIN_PATH`'s, as absolute paths (they are recorded in runs).
pub(crate) fn extra_plugins(cli: &[PathBuf]) -> Vec<PathBuf> {
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

pub(crate) fn set_threads(threads: Option<usize>) -> Result<usize> {
    let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    // Every compute thread flushes subnormals from its start (see `vaelab::nn::subnormal`).
    vaelab::nn::subnormal::flush_subnormals_on_this_thread();
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .start_handler(|_| vaelab::nn::subnormal::flush_subnormals_on_this_thread())
        .build_global()
        .context("cannot start the thread pool")?;
    Ok(n)
}

fn run(cli: Cli) -> Result<ExitCode> {
    plugin::isolated::set_in_process(cli.in_process);
    match cli.command {
        Command::PluginWorker { blocks: false } => Ok(ExitCode::from(plugin::isolated::worker_main() as u8)),
        Command::PluginWorker { blocks: true } => Ok(ExitCode::from(vaelab::preflight::worker_main() as u8)),
        Command::Check { spec, plugins, data_root } => cli_run::run_check(&spec, &plugins, data_root.as_deref()),
        Command::Train(args) => cli_run::run_train(args),
        Command::TrainPrior(args) => cli_run::run_train_prior(args),
        Command::Eval(args) => cli_run::run_eval(args),
        Command::Metrics(args) => cli_run::run_metrics(args),
        Command::Explore(args) => done(set_threads(args.threads).and_then(|_| cli_latent::run_explore(args))),
        Command::Sample(args) => done(set_threads(args.run.threads).and_then(|_| cli_apply::run_sample(args))),
        Command::Reconstruct(args) => done(set_threads(args.run.threads).and_then(|_| cli_apply::run_reconstruct(args))),
        Command::Encode(args) => done(set_threads(args.run.threads).and_then(|_| cli_apply::run_encode(args))),
        Command::Decode(args) => done(set_threads(args.run.threads).and_then(|_| cli_apply::run_decode(args))),
        Command::Latent(args) => done(set_threads(args.threads).and_then(|_| cli_latent::run_latent(args))),
        Command::Plugins { command: PluginsCommand::List { paths } } => cli_tools::run_plugins_list(paths),
        Command::Bench(args) => cli_tools::run_bench(args),
        Command::DeviceCheck(args) => cli_tools::run_device_check(args),
        Command::BenchMsSsim(args) => cli_tools::run_bench_ms_ssim(args),
        Command::BenchLoader(args) => cli_tools::run_bench_loader(args),
        Command::BenchPrior(args) => cli_tools::run_bench_prior(args),
    }
}

/// Success, or the command's error.
fn done(result: Result<()>) -> Result<ExitCode> {
    result.map(|()| ExitCode::SUCCESS)
}
