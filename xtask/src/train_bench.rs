//! `cargo xtask bench train`: training-step throughput and whole-process peak memory of vaelab
//! beside PyTorch on the CPU, for every workload of the speed issue in one run: the β-VAE step at
//! 64 and 256 px, an IntroVAE step and a GAN step (specs in `specs/bench/`, PyTorch scripts in
//! `xtask/bench/`). On a CPU with AVX-512, vaelab runs twice: with gemm's AVX-512 kernels (the
//! default build) and with its AVX2+FMA kernels (a build without the `avx512` feature), the
//! kernels a CPU without AVX-512 runs. Sides alternate within each round, so all see the same load.

use crate::{alternate, flag, median, number_after, root, run, Side};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One workload: its name in the table, vaelab's spec, the PyTorch script and its arguments
/// after THREADS STEPS, and how many steps a run takes relative to `--steps`.
struct Workload {
    name: &'static str,
    spec: &'static str,
    script: &'static str,
    script_args: &'static [&'static str],
    steps_divisor: usize,
}

const WORKLOADS: [Workload; 4] = [
    Workload {
        name: "β-VAE 64 px",
        spec: "specs/bench/betavae64.ron",
        script: "torch_betavae_step.py",
        script_args: &["64"],
        steps_divisor: 1,
    },
    Workload {
        name: "β-VAE 256 px",
        spec: "specs/bench/betavae256.ron",
        script: "torch_betavae_step.py",
        script_args: &["256"],
        steps_divisor: 3,
    },
    Workload {
        name: "IntroVAE 64 px",
        spec: "specs/bench/introvae64.ron",
        script: "torch_introvae_step.py",
        script_args: &[],
        steps_divisor: 2,
    },
    Workload {
        name: "GAN 64 px",
        spec: "specs/bench/gan64.ron",
        script: "torch_gan_step.py",
        script_args: &[],
        steps_divisor: 2,
    },
];

fn cpu_has_avx512() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| s.split_whitespace().any(|w| w == "avx512f"))
}

/// Builds the release CLI, and where the CPU has AVX-512 also the AVX2-kernel build, kept beside
/// it as `vaelab-avx2` (both builds share the target folder, so switching costs only relinking).
fn build_binaries() -> Result<Vec<(&'static str, PathBuf)>, String> {
    let release = root().join("target/release");
    let avx512 = cpu_has_avx512();
    let mut binaries = vec![];
    if avx512 {
        run(Command::new("cargo").args(["build", "--release", "-p", "vaelab-cli", "--no-default-features"]))?;
        std::fs::copy(release.join("vaelab"), release.join("vaelab-avx2"))
            .map_err(|e| format!("cannot copy the AVX2 build: {e}"))?;
        binaries.push(("vaelab AVX2", release.join("vaelab-avx2")));
    }
    run(Command::new("cargo").args(["build", "--release", "-p", "vaelab-cli"]))?;
    binaries.insert(0, (if avx512 { "vaelab AVX-512" } else { "vaelab AVX2" }, release.join("vaelab")));
    Ok(binaries)
}

pub fn bench_train(args: &[String], python: &str) -> Result<(), String> {
    let rounds: usize = flag(args, "--rounds").map_or(Ok(3), |s| s.parse()).map_err(|_| "--rounds takes a number")?;
    let steps: usize = flag(args, "--steps").map_or(Ok(15), |s| s.parse()).map_err(|_| "--steps takes a number")?;
    let threads = flag(args, "--threads").unwrap_or_else(|| "2".into());
    let only = flag(args, "--only");
    let binaries = build_binaries()?;
    let scripts = root().join("xtask/bench");
    let torch_ok = Path::new(python).exists();
    if !torch_ok {
        eprintln!("note: PyTorch reference not run: no {python}.\n  set up: python3 -m venv ~/.torchenv && ~/.torchenv/bin/pip install torch");
    }
    let mut table = vec![];
    for w in WORKLOADS.iter().filter(|w| only.as_ref().is_none_or(|o| w.name.contains(o.as_str()))) {
        let n = (steps / w.steps_divisor).max(5).to_string();
        let mut argv = vec![w.script.to_string(), threads.clone(), n.clone()];
        argv.extend(w.script_args.iter().map(|s| s.to_string()));
        // The scripts' folder on the path for their shared helper; peak memory of the PyTorch
        // process, read from inside it once the script has run.
        let wrapper = format!(
            "import runpy, resource, sys; sys.path.insert(0, {:?}); sys.argv = {argv:?}; \
             runpy.run_path({:?}, run_name='__main__'); \
             print('peak_rss_mib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)",
            scripts.display().to_string(),
            scripts.join(w.script).display().to_string()
        );
        let (n, threads) = (&n, &threads);
        let ours: Vec<Box<dyn Fn() -> Command + '_>> = binaries
            .iter()
            .map(|(_, bin)| {
                Box::new(move || {
                    let mut c = Command::new(bin);
                    c.args(["bench", w.spec, "--steps", n, "--threads", threads]);
                    c
                }) as Box<dyn Fn() -> Command>
            })
            .collect();
        let theirs = || {
            let mut c = Command::new(python);
            c.args(["-c", &wrapper]).env("PYTHONWARNINGS", "ignore");
            c
        };
        let mut sides: Vec<Side> =
            binaries.iter().zip(&ours).map(|((name, _), command)| Side { name, command: &**command }).collect();
        if torch_ok {
            sides.push(Side { name: "PyTorch", command: &theirs });
        }
        let results = alternate(rounds, &format!("{}, ", w.name), "img/s", &sides)?;
        // Each side's median rate and peak RSS: each vaelab build, then PyTorch.
        let rss_keys = std::iter::repeat_n("peak RSS ", binaries.len()).chain(std::iter::once("peak_rss_mib "));
        let medians: Vec<(f64, f64)> = results
            .into_iter()
            .zip(rss_keys)
            .map(|(mut r, key)| {
                let mut rss: Vec<f64> = r.outputs.iter().map(|o| number_after(o, key).unwrap_or(0.0)).collect();
                (median(&mut r.rates), median(&mut rss))
            })
            .collect();
        table.push((w.name, medians));
    }
    print_table(&binaries, torch_ok, &threads, rounds, steps, &table);
    Ok(())
}

fn print_table(
    binaries: &[(&str, PathBuf)],
    torch_ok: bool,
    threads: &str,
    rounds: usize,
    steps: usize,
    table: &[(&str, Vec<(f64, f64)>)],
) {
    println!("\nTraining steps, batch 64, {threads} threads, median of {rounds} rounds (each the median of its timed steps; {steps} steps at 64 px):");
    let mut header = "| workload |".to_string();
    let mut rule = "|---|".to_string();
    for (name, _) in binaries {
        header += &format!(" {name} img/s |");
        rule += "---|";
    }
    if torch_ok {
        header += " PyTorch img/s |";
        rule += "---|";
        for (name, _) in binaries {
            header += &format!(" {name} / PyTorch |");
            rule += "---|";
        }
    }
    header += " peak RSS vaelab |";
    rule += "---|";
    if torch_ok {
        header += " peak RSS PyTorch | RSS ratio |";
        rule += "---|---|";
    }
    println!("{header}\n{rule}");
    for (name, medians) in table {
        let mut row = format!("| {name} |");
        for (rate, _) in &medians[..binaries.len()] {
            row += &format!(" {rate:.1} |");
        }
        let ours_rss = medians[0].1;
        if torch_ok {
            let (torch_rate, torch_rss) = medians[binaries.len()];
            row += &format!(" {torch_rate:.1} |");
            for (rate, _) in &medians[..binaries.len()] {
                row += &format!(" {:.2}× |", rate / torch_rate);
            }
            row += &format!(" {ours_rss:.0} MiB | {torch_rss:.0} MiB | {:.2}× |", ours_rss / torch_rss);
        } else {
            row += &format!(" {ours_rss:.0} MiB |");
        }
        println!("{row}");
    }
}
