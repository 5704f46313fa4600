//! The hidden commands behind `cargo xtask bench` and the CUDA bundle's device check, and
//! `vaelab plugins list`.

use crate::set_threads;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use vaelab::spec::Device;
use vaelab::{check, plugin};

#[derive(Args)]
pub struct BenchArgs {
    pub spec: PathBuf,
    #[arg(long, default_value_t = 12)]
    pub steps: usize,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Override the spec's device: cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<Device>,
}

#[derive(Args)]
pub struct DeviceCheckArgs {
    /// Folder for the report (device-check.md, device-check.json) and the runs.
    #[arg(long)]
    pub out: PathBuf,
    /// The specs folder (its shapes/ specs are trained).
    #[arg(long, default_value = "specs")]
    pub specs: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub ordinal: usize,
    /// The CPU side only: everything up to the first CUDA call.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, default_value_t = 3)]
    pub objective_steps: usize,
    #[arg(long, default_value_t = 200)]
    pub trace_steps: usize,
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args)]
pub struct BenchMsSsimArgs {
    #[arg(long, default_value_t = 256)]
    pub pairs: usize,
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args)]
pub struct BenchPriorArgs {
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// The grid's side (positions per row and column).
    #[arg(long, default_value_t = 16)]
    pub grid: usize,
    #[arg(long, default_value_t = 128)]
    pub codes: usize,
    /// The prior's shape, as `specs/shapes/vqvae.ron` has it.
    #[arg(long, default_value_t = 32)]
    pub channels: usize,
    #[arg(long, default_value_t = 3)]
    pub layers: usize,
    #[arg(long, default_value_t = 7)]
    pub kernel: usize,
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args)]
pub struct BenchLoaderArgs {
    pub root: PathBuf,
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `vaelab plugins list`: each library alone, then all of them together as a run would load them.
pub fn run_plugins_list(paths: Vec<PathBuf>) -> Result<ExitCode> {
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

pub fn run_bench(args: BenchArgs) -> Result<ExitCode> {
    let threads = set_threads(args.threads)?;
    let mut loaded = check::check_file(&args.spec, &crate::extra_plugins(&[])).map_err(|e| anyhow::anyhow!("{e}"))?.loaded;
    if let Some(d) = args.device {
        loaded.experiment.device = d;
    }
    let result = vaelab::bench::time_steps(&loaded.experiment, args.steps)?;
    let [f, b, o] = result.median_parts_s;
    // Adversarial steps interleave their phases and have no parts (all zero).
    let parts = if f + b + o > 0.0 {
        format!("; forward {:.1} ms, backward {:.1} ms, optimizer {:.1} ms", f * 1e3, b * 1e3, o * 1e3)
    } else {
        String::new()
    };
    println!(
        "vaelab threads={threads} size={}: median step {:.4}s => {:.0} img/s (peak RSS {:.0} MiB{parts})",
        loaded.experiment.data.size, result.median_step_s, result.img_per_s, result.peak_rss_mib
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_device_check(args: DeviceCheckArgs) -> Result<ExitCode> {
    set_threads(args.threads)?;
    let DeviceCheckArgs { out, specs, ordinal, dry_run, objective_steps, trace_steps, .. } = args;
    let opts = vaelab::device_check::CheckOptions { out, ordinal, dry_run, specs, objective_steps, trace_steps };
    let results = vaelab::device_check::run(&opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let md = vaelab::device_check::markdown(&results, dry_run);
    std::fs::write(opts.out.join("device-check.md"), &md)?;
    std::fs::write(opts.out.join("device-check.json"), serde_json::to_string_pretty(&results)?)?;
    print!("{md}");
    let failed = results.iter().any(|c| c.pass() == Some(false));
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub fn run_bench_ms_ssim(args: BenchMsSsimArgs) -> Result<ExitCode> {
    let threads = set_threads(args.threads)?;
    let (seconds, mean) = vaelab::bench::time_ms_ssim(args.pairs, args.size)?;
    println!(
        "vaelab ms_ssim threads={threads}: {} pairs in {seconds:.3}s => {:.1} pairs/s (mean {mean:.9})",
        args.pairs,
        args.pairs as f64 / seconds
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_bench_loader(args: BenchLoaderArgs) -> Result<ExitCode> {
    let threads = set_threads(args.threads)?;
    let r = vaelab::bench::time_loader(&args.root, args.size, args.batch)?;
    println!(
        "vaelab loader threads={threads}: {} images in {:.3}s (open {:.3}s) => {:.0} img/s (peak RSS {:.0} MiB)",
        r.images, r.total_s, r.open_s, r.img_per_s, r.peak_rss_mib
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_bench_prior(args: BenchPriorArgs) -> Result<ExitCode> {
    let threads = set_threads(args.threads)?;
    let BenchPriorArgs { samples, grid, codes, channels, layers, kernel, .. } = args;
    let shape = vaelab::spec::Prior::PixelCnn { channels, layers, kernel, steps: 0, lr: 0.0, batch: 0 };
    let t = vaelab::bench::time_prior_sampling(samples, grid, codes, shape);
    let positions = (grid * grid) as f64;
    println!(
        "vaelab prior sampling threads={threads}: {samples} grids of {grid}x{grid}, {codes} codes, PixelCNN {channels} channels, {layers} layers, kernel {kernel}: cached {:.3}s => {:.1} grids/s; one full pass {:.3}s, so the plain sampler's {positions} passes ≈ {:.0}s ({:.0}× the cached)",
        t.cached_s,
        samples as f64 / t.cached_s,
        t.full_pass_s,
        positions * t.full_pass_s,
        positions * t.full_pass_s / t.cached_s
    );
    Ok(ExitCode::SUCCESS)
}
