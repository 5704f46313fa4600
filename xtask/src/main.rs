//! `cargo xtask <command>`: project automation that needs more than one cargo call.
//!
//! * `test`  — the full suite, as CI runs it (tests, then the CUDA build's dry run).
//! * `cuda-build`, `device-check [--dry-run]` — the CUDA binary, linked here, in a bundle for the
//!   device tool's GPU machine, and its check (`cuda.rs`).
//! * `bench [train|loader|msssim|prior]` — training steps (β-VAE at 64 and 256 px, IntroVAE, GAN; both
//!   gemm kernel paths) beside the PyTorch reference scripts (`train_bench.rs`), image-folder
//!   loading beside torchvision (`loader`), MS-SSIM beside pytorch-msssim (`msssim`), and PixelCNN
//!   prior sampling (`prior`); each alternates its sides in one run so all see the same machine
//!   load. Without a name, all four run.

mod cuda;
mod loader;
mod msssim;
mod prior_bench;
mod train_bench;

use xtask::repro;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("repro") => return repro_command(&args[1..]),
        Some("cuda-build") => cuda::BuildOptions::from_args(&args[1..]).and_then(|o| cuda::cuda_build(&o)).map(|_| ()),
        Some("device-check") => cuda::device_check(&args[1..]),
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("train") => train_bench::bench_train(&args[2..], &python(&args[2..])),
            Some("loader") => loader::bench_loader(&args[2..], &python(&args[2..])),
            Some("msssim") => msssim::bench_msssim(&args[2..], &python(&args[2..])),
            Some("prior") => prior_bench::bench_prior(&args[2..]),
            _ => train_bench::bench_train(&args[1..], &python(&args[1..]))
                .and_then(|()| loader::bench_loader(&args[1..], &python(&args[1..])))
                .and_then(|()| msssim::bench_msssim(&args[1..], &python(&args[1..])))
                .and_then(|()| prior_bench::bench_prior(&args[1..])),
        },
        _ => {
            eprintln!(
                "usage: cargo xtask test | bench [train|loader|msssim|prior] [--rounds N] [--steps N] [--threads N] [--only WORKLOAD] [--python PATH]\n       cargo xtask repro {REPRO_USAGE}\n       {}",
                cuda::USAGE
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

const REPRO_USAGE: &str = "[--suite quick|study|FILE] [--threads N] [--jobs N] [--filter TEXT] [--fresh] [--device cpu|cuda:N] [--out DIR] [--collect] [--emit slurm DIR] [--dev]";

/// Builds xtask in release together with the CLI and returns the binary. The CLI is built because
/// a suite's Slurm array runs `target/release/vaelab`; building both in one cargo call also resolves
/// their shared dependencies' features once (the CLI's clap turns on syn's `full`), so the library
/// crates are the ones `cargo build --release -p vaelab-cli` made, not a second release build of
/// them all (`cargo run --release -p xtask` alone resolved them differently: two minutes of CI).
fn release_xtask() -> Result<PathBuf, String> {
    run(Command::new("cargo").args(["build", "--quiet", "--release", "-p", "xtask", "-p", "vaelab-cli"]))?;
    Ok(root().join("target/release/xtask"))
}

/// `cargo xtask repro`: runs a suite (release build of the library), writes its table and plots,
/// and exits 1 when an expectation fails, naming each.
fn repro_command(args: &[String]) -> ExitCode {
    // `cargo xtask` builds the dev profile, and a user's suite trains in release. `--dev` trains in this
    // build as it is: CI runs the quick suite on the dev binaries its test stage built (a quarter slower
    // than release, measured, which costs CI less than a six-minute release build of everything).
    let dev = args.iter().any(|a| a == "--dev");
    if cfg!(debug_assertions) && !dev && std::env::var_os("VAELAB_XTASK_RELEASE").is_none() {
        return match release_xtask() {
            Ok(xtask) => {
                let status = Command::new(xtask).arg("repro").args(args).env("VAELAB_XTASK_RELEASE", "1").status();
                match status {
                    Ok(s) if s.success() => ExitCode::SUCCESS,
                    Ok(s) => ExitCode::from(s.code().unwrap_or(1).clamp(1, 255) as u8),
                    Err(e) => {
                        eprintln!("xtask repro: cannot start the release build: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("xtask repro: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let known_flags = ["--suite", "--threads", "--jobs", "--filter", "--device", "--out", "--emit"];
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if known_flags.contains(&a) {
            i += if a == "--emit" { 3 } else { 2 };
        } else if a == "--fresh" || a == "--collect" || a == "--dev" {
            i += 1;
        } else {
            eprintln!("xtask repro: unknown argument `{a}`\nusage: cargo xtask repro {REPRO_USAGE}");
            return ExitCode::from(2);
        }
    }
    let threads = flag(args, "--threads")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let device = match flag(args, "--device").map(|d| d.parse()) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            eprintln!("xtask repro: --device: {e}");
            return ExitCode::from(2);
        }
        None => None,
    };
    let mode = match args.iter().position(|a| a == "--emit") {
        Some(i) if args.get(i + 1).map(String::as_str) == Some("slurm") && args.get(i + 2).is_some() => {
            repro::Mode::EmitSlurm(PathBuf::from(&args[i + 2]))
        }
        Some(_) => {
            eprintln!("xtask repro: --emit takes `slurm DIR`");
            return ExitCode::from(2);
        }
        None if args.iter().any(|a| a == "--collect") => repro::Mode::Collect,
        None => repro::Mode::Run,
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag_stop = stop.clone();
    let _ = ctrlc::set_handler(move || {
        eprintln!("\ninterrupt: running runs checkpoint and stop; run the suite again to continue");
        flag_stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let opts = repro::Options {
        suite_file: repro::suite_path(&root(), &flag(args, "--suite").unwrap_or_else(|| "quick".into())),
        out: flag(args, "--out").map(PathBuf::from),
        threads,
        jobs: flag(args, "--jobs").and_then(|j| j.parse().ok()).unwrap_or(1),
        filter: flag(args, "--filter"),
        fresh: args.iter().any(|a| a == "--fresh"),
        device,
        progress: true,
        stop,
        // The CLI of the build that trains: this process's profile (the release re-run above, or `--dev`).
        vaelab: root().join(if cfg!(debug_assertions) { "target/debug/vaelab" } else { "target/release/vaelab" }),
    };
    match repro::run(&opts, &mode, &root()) {
        Ok(outcome) if matches!(mode, repro::Mode::EmitSlurm(_)) => {
            let _ = outcome;
            ExitCode::SUCCESS
        }
        Ok(outcome) => {
            println!("{}", outcome.table);
            println!(
                "{} run(s) trained, {} reused; wrote results.md, results.csv, bands.ron (expectations from this run) and the \
                 pictures (metrics, loss-curves, samples, reconstructions .png) in {}",
                outcome.ran,
                outcome.reused,
                outcome.results_dir.display()
            );
            if outcome.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("{} expectation(s) failed:", outcome.failures.len());
                for f in &outcome.failures {
                    eprintln!("  {}: {}", f.entry, f.what);
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("xtask repro: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("$ {cmd:?}");
    let status = cmd.current_dir(root()).status().map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    status.success().then_some(()).ok_or_else(|| format!("{cmd:?} failed with {status}"))
}

fn test() -> Result<(), String> {
    run(Command::new("cargo").args(["test", "--workspace"]))?;
    cuda::device_check(&["--dry-run".into(), "--dev".into()])
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn capture(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.current_dir(root()).output().map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed with {}: {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The number after `key` in `text`, e.g. `number("… => 812 img/s", "=> ")`.
fn number_after(text: &str, key: &str) -> Option<f64> {
    let rest = &text[text.find(key)? + key.len()..];
    rest.split(|c: char| !(c.is_ascii_digit() || c == '.')).next()?.parse().ok()
}

/// One side of a benchmark: its name for the round lines, and how to run it.
struct Side<'a> {
    name: &'a str,
    command: &'a dyn Fn() -> Command,
}

/// Each side's rate (the number after `=> ` in its output) and whole output, round by round.
struct Rounds {
    rates: Vec<f64>,
    outputs: Vec<String>,
}

/// Runs the sides one after another, round after round, so that all see the same machine load,
/// printing each round's rates in `unit` on a line that starts with `label`.
fn alternate(rounds: usize, label: &str, unit: &str, sides: &[Side]) -> Result<Vec<Rounds>, String> {
    let mut results: Vec<Rounds> = sides.iter().map(|_| Rounds { rates: vec![], outputs: vec![] }).collect();
    for round in 1..=rounds {
        let mut line = format!("{label}round {round}/{rounds}:");
        for (side, record) in sides.iter().zip(&mut results) {
            let out = capture(&mut (side.command)())?;
            let rate = number_after(&out, "=> ").ok_or(format!("unexpected {} output: {out}", side.name))?;
            line += &format!(" {} {rate:.1} {unit}", side.name);
            record.rates.push(rate);
            record.outputs.push(out);
        }
        eprintln!("{line}");
    }
    Ok(results)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The Python with torch (and torchvision) for the reference scripts.
fn python(args: &[String]) -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    flag(args, "--python").unwrap_or_else(|| format!("{home}/.torchenv/bin/python"))
}
