//! `cargo xtask repro`: every (spec, seed) of a suite trained and evaluated, finished runs reused,
//! a results table checked against the suite's expectations, plots, and the same suite emitted as
//! a Slurm job array whose finished runs `--collect` turns into the same table.

pub mod bands;
pub mod execute;
pub mod plots;
pub mod results;
pub mod slurm;
pub mod suite;

use execute::Prepared;
use results::Failure;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub enum Mode {
    /// Train and evaluate what is not done yet, then write the table.
    Run,
    /// Write the table from finished runs only (e.g. after a Slurm job array).
    Collect,
    /// Write a Slurm job-array script and one resolved spec per task into this folder.
    EmitSlurm(PathBuf),
}

pub struct Options {
    pub suite_file: PathBuf,
    /// Where specs, runs and results go [default: repro/<suite name>].
    pub out: Option<PathBuf>,
    /// Rayon threads in all.
    pub threads: usize,
    /// Runs at once; each gets threads / jobs threads.
    pub jobs: usize,
    /// Only entries whose name contains this.
    pub filter: Option<String>,
    /// Re-run even finished runs.
    pub fresh: bool,
    pub device: Option<vaelab::spec::Device>,
    pub progress: bool,
    /// Set by Ctrl-C: running tasks checkpoint and stop.
    pub stop: Arc<AtomicBool>,
    /// The `vaelab` binary an emitted Slurm array calls: the CLI of the profile xtask runs in
    /// (`target/release/vaelab`, or `target/debug/vaelab` under `--dev`).
    pub vaelab: PathBuf,
}

pub struct Outcome {
    pub results_dir: PathBuf,
    pub ran: usize,
    pub reused: usize,
    pub failures: Vec<Failure>,
    /// `results.md` as written.
    pub table: String,
}

/// The suite file for a name (`specs/suites/<name>.ron`) or a path.
pub fn suite_path(root: &Path, name_or_path: &str) -> PathBuf {
    let p = Path::new(name_or_path);
    if p.extension().is_some() || p.components().count() > 1 {
        p.to_path_buf()
    } else {
        root.join("specs/suites").join(format!("{name_or_path}.ron"))
    }
}

/// The suite, its reference run (if it has one) and its tasks, each written and resolved.
fn prepare_all(opts: &Options, root: &Path) -> Result<(suite::Suite, Option<Prepared>, Vec<Prepared>), String> {
    let suite = suite::load(&opts.suite_file)?;
    let name_of = |p: &Path| -> Result<String, String> {
        vaelab::spec::load_spec(p).map(|l| l.experiment.name).map_err(|e| format!("{}: {e}", p.display()))
    };
    let reference = match suite.reference_task(&opts.suite_file)? {
        Some(mut t) => {
            if let Some(d) = opts.device {
                t.fields.push(format!("device: {d:?}"));
            }
            Some(execute::prepare(&t, root)?)
        }
        None => None,
    };
    let domain = reference.as_ref().map(|r| r.run_dir.as_path());
    let mut tasks = suite.tasks(&opts.suite_file, name_of, domain)?;
    if let Some(f) = &opts.filter {
        tasks.retain(|t| t.entry.contains(f.as_str()));
        if tasks.is_empty() {
            return Err(format!("--filter {f}: no entry of suite `{}` matches", suite.name));
        }
    }
    if let Some(d) = opts.device {
        for t in &mut tasks {
            t.fields.push(format!("device: {d:?}"));
        }
    }
    let prepared = tasks.iter().map(|t| execute::prepare(t, root)).collect::<Result<Vec<_>, _>>()?;
    Ok((suite, reference, prepared))
}

/// The default results folder of a suite file.
pub fn default_out(workspace: &Path, suite_file: &Path) -> Result<PathBuf, String> {
    Ok(workspace.join("repro").join(suite::load(suite_file)?.name))
}

pub fn run(opts: &Options, mode: &Mode, workspace: &Path) -> Result<Outcome, String> {
    let root = match &opts.out {
        Some(o) => o.clone(),
        None => default_out(workspace, &opts.suite_file)?,
    };
    let root = match mode {
        Mode::EmitSlurm(dir) => dir.clone(),
        _ => root,
    };
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let (suite, reference, prepared) = prepare_all(opts, &root)?;
    // The reference encoder comes first: every entry's evaluation reads it.
    if let Some(r) = &reference {
        match mode {
            Mode::Collect if !execute::is_done(&r.run_dir) => {
                return Err(format!("the reference run {} has not finished", r.run_dir.display()));
            }
            Mode::Collect => {}
            _ => {
                if opts.fresh && matches!(mode, Mode::Run) {
                    let _ = std::fs::remove_dir_all(&r.run_dir);
                }
                execute::execute(r, opts.threads, &opts.stop)?;
            }
        }
    }
    if let Mode::EmitSlurm(dir) = mode {
        let threads = (opts.threads / opts.jobs.max(1)).max(1);
        slurm::emit(&suite, &opts.suite_file, &prepared, dir, threads, &opts.vaelab)?;
        return Ok(Outcome { results_dir: dir.clone(), ran: 0, reused: 0, failures: vec![], table: String::new() });
    }
    let (ran, reused) = match mode {
        Mode::Run => {
            if opts.fresh {
                for p in &prepared {
                    let _ = std::fs::remove_dir_all(&p.run_dir);
                }
            }
            let todo: Vec<&Prepared> = prepared.iter().filter(|p| !execute::is_done(&p.run_dir)).collect();
            run_tasks(&todo, opts)?;
            (todo.len(), prepared.len() - todo.len())
        }
        Mode::Collect => {
            let missing: Vec<String> =
                prepared.iter().filter(|p| !execute::is_done(&p.run_dir)).map(|p| p.run_dir.display().to_string()).collect();
            if !missing.is_empty() {
                return Err(format!("{} run(s) have not finished:\n  {}", missing.len(), missing.join("\n  ")));
            }
            (0, prepared.len())
        }
        Mode::EmitSlurm(_) => unreachable!("returned above"),
    };
    let runs = prepared.iter().map(|p| results::read_run(p).map(|r| (p.task.entry.clone(), r))).collect::<Result<Vec<_>, _>>()?;
    let entries = results::group(runs);
    let failures = results::check(&suite, &entries, opts.filter.is_some());
    let machine = machine(opts);
    let table = results::markdown(&suite, &entries, &failures, &machine);
    results::write(&root, "results.md", &table)?;
    results::write(&root, "results.csv", &results::csv(&entries, &failures))?;
    results::write(
        &root,
        "bands.ron",
        &bands::derive(&suite.name, &entries, &results::check_absolute(&suite, &entries, opts.filter.is_some()), &machine),
    )?;
    let save = |img: image::RgbImage, name: &str| {
        img.save(root.join(name)).map_err(|e| format!("cannot write {}: {e}", root.join(name).display()))
    };
    save(plots::metric_bars(&entries, &results::columns(&entries)), "metrics.png")?;
    save(vaelab::report::plot::plot(&results::loss_series(&entries)), vaelab::runs::paths::LOSS_CURVES_PNG)?;
    // Two rows of each entry's prior samples and its originals-over-reconstructions strip.
    for (file, rows_px) in
        [(vaelab::runs::paths::SAMPLES_PNG, SAMPLE_STRIP_PX), (vaelab::runs::paths::RECONSTRUCTIONS_PNG, u32::MAX)]
    {
        if let Some(img) = plots::sheet(&entries, file, rows_px) {
            save(img, file)?;
        }
    }
    Ok(Outcome { results_dir: root, ran, reused, failures, table })
}

/// Height of the strip of prior samples each entry shows in `samples.png`: two rows of an
/// evaluation grid of 64 px images (2 px borders).
const SAMPLE_STRIP_PX: u32 = 2 * (64 + 2) + 2;

/// Runs `todo` with `opts.jobs` at a time, each with its share of the threads.
fn run_tasks(todo: &[&Prepared], opts: &Options) -> Result<(), String> {
    let jobs = opts.jobs.clamp(1, todo.len().max(1));
    let threads = (opts.threads / jobs).max(1);
    let bar = if opts.progress { indicatif::ProgressBar::new(todo.len() as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} run {pos}/{len} {bar:25} {msg}").expect("valid template"),
    );
    let next = AtomicUsize::new(0);
    let running: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                if opts.stop.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(p) = todo.get(i) else { return };
                let slug = p.task.slug();
                running.lock().expect("not poisoned").push(slug.clone());
                bar.set_message(running.lock().expect("not poisoned").join(", "));
                if let Err(e) = execute::execute(p, threads, &opts.stop) {
                    errors.lock().expect("not poisoned").push(e);
                }
                running.lock().expect("not poisoned").retain(|s| s != &slug);
                bar.set_message(running.lock().expect("not poisoned").join(", "));
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    let errors = errors.into_inner().expect("not poisoned");
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{} run(s) failed:\n  {}", errors.len(), errors.join("\n  ")))
    }
}

/// The machine line of the results: CPU model, cores, threads, vaelab's version, the date.
fn machine(opts: &Options) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "Machine: {cpu}, {cores} cores, gemm's {} kernels; {} thread(s) per run, {} run(s) at once; vaelab {}; table written {}.",
        vaelab::nn::kernels::gemm_kernel(),
        (opts.threads / opts.jobs.max(1)).max(1),
        opts.jobs.max(1),
        env!("CARGO_PKG_VERSION"),
        chrono::Utc::now().format("%Y-%m-%d")
    )
}
