//! `cargo xtask repro`: a suite runs every (entry, seed), reuses finished runs, writes its table,
//! fails with a clear message when a result drifts out of its band, and emits a Slurm job array.

use crate::training::{scratch, within, Tolerance};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use xtask::repro::{self, Mode, Options};

fn tiny_spec() -> PathBuf {
    Path::new("specs/tiny.ron").canonicalize().unwrap()
}

/// A suite over the tiny spec: two seeds of it, and a two-point grid over its KL weight.
fn suite(dir: &Path, runs: &str, expect: &str) -> PathBuf {
    let text = format!(
        r#"Suite(
    name: "tiny",
    about: "The tiny spec, for the tests.",
    metrics: ["mse", "psnr"],
    runs: [{runs}],
    grids: [Grid(spec: {spec:?}, label: "tiny-kl", seeds: [1], steps: 20, vary: [Vary(field: "losses", values: [
        ("w1", "[Reconstruction(), Kl(weight: 1.0)]"),
        ("w4", "[Reconstruction(), Kl(weight: 4.0)]"),
    ])])],
    expect: [{expect}],
)"#,
        spec = tiny_spec().display().to_string()
    );
    let path = dir.join("suite.ron");
    std::fs::write(&path, text).unwrap();
    path
}

fn options(suite_file: PathBuf, out: &Path) -> Options {
    Options {
        suite_file,
        out: Some(out.to_path_buf()),
        threads: 2,
        jobs: 2,
        filter: None,
        fresh: false,
        device: None,
        progress: false,
        stop: Arc::new(AtomicBool::new(false)),
        vaelab: workspace().join("target/release/vaelab"),
    }
}

fn workspace() -> PathBuf {
    Path::new("..").canonicalize().unwrap()
}

/// The suite table's metrics after 20 training steps (means and standard deviations over seeds,
/// four significant digits): a 20-step trace's tolerance, plus one rounding step of the format.
const TABLE: Tolerance = Tolerance { rel: 2e-3, abs: 1e-6 };

/// The table without what differs between machines and runs: the machine line, wall time, img/s.
fn stable(table: &str) -> String {
    table
        .lines()
        .map(|l| {
            if l.starts_with("Machine:") {
                "Machine: [redacted]".to_string()
            } else if l.starts_with("| ") && !l.starts_with("| entry") {
                let mut cells: Vec<&str> = l.split('|').collect();
                let n = cells.len();
                cells[n - 4] = " [wall] ";
                cells[n - 3] = " [img/s] ";
                cells.join("|")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs train and evaluate every task (two at a time); a second call reuses them all and writes
/// the same table; the table, CSV and plots are on disk.
#[test]
fn a_suite_runs_every_task_once_and_writes_its_table() {
    let dir = scratch("repro-suite");
    std::fs::create_dir_all(&dir).unwrap();
    let runs = format!("Run(spec: {:?}, seeds: [1, 2], steps: 20)", tiny_spec().display().to_string());
    let file = suite(&dir, &runs, "LearnsAtAll()");
    let out = dir.join("out");
    let first = repro::run(&options(file.clone(), &out), &Mode::Run, &workspace()).unwrap();
    assert_eq!((first.ran, first.reused), (4, 0));
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    for f in ["results.md", "results.csv", "bands.ron", "metrics.png", "loss-curves.png", "samples.png", "reconstructions.png"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let second = repro::run(&options(file, &out), &Mode::Run, &workspace()).unwrap();
    assert_eq!((second.ran, second.reused), (0, 4));
    assert_eq!(first.table, second.table, "reused runs give the same table");
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(
        csv.starts_with("entry,seeds,steps,mse_mean,mse_std,psnr_mean,psnr_std,mean_image_mse,wall_s,img_per_s,pass\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 4, "{csv}");
    within(TABLE, || insta::assert_snapshot!(stable(&first.table)));
}

/// The regression test of the suite itself: the bands that `bands.ron` derives from the tiny
/// spec's own recorded run hold for it (the run is reused), and fail, naming the entry, the metric,
/// the measured and the expected values, once a KL weight of 300 is injected into the same entry.
#[test]
fn an_injected_regression_fails_the_suite_with_a_clear_message() {
    let dir = scratch("repro-regression");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = tiny_spec().display().to_string();
    let out = dir.join("out");
    let plain = format!("Run(spec: {spec:?}, seeds: [1], steps: 20, label: Some(\"tiny\"))");
    let measured = repro::run(&options(suite(&dir, &plain, ""), &out), &Mode::Run, &workspace()).unwrap();
    assert!(measured.failures.is_empty());
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let row: Vec<&str> = csv.lines().find(|l| l.starts_with("tiny,")).unwrap().split(',').collect();
    let mse: f64 = row[3].parse().unwrap();

    // The derived bands: one per metric of the entry, around the recorded mean.
    let derived = std::fs::read_to_string(out.join("bands.ron")).unwrap();
    let bands: Vec<&str> = derived.lines().filter(|l| l.starts_with("Band(entry: \"tiny\"")).collect();
    assert_eq!(bands.len(), 2, "mse and psnr: {derived}");
    let mse_band = bands.iter().find(|l| l.contains("metric: \"mse\"")).unwrap();
    let mean: f64 = mse_band.split("mean: ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    assert!((mean - mse).abs() <= 5e-4 * mse, "{mse_band} vs the table's {mse}");
    let expect = bands.join(" ");

    let holds = repro::run(&options(suite(&dir, &plain, &expect), &out), &Mode::Run, &workspace()).unwrap();
    assert_eq!(holds.ran, 0, "the unchanged spec reuses its run");
    assert!(holds.failures.is_empty(), "{:?}", holds.failures);

    let regressed = format!(
        "Run(spec: {spec:?}, seeds: [1], steps: 20, label: Some(\"tiny\"), overrides: Some(\"losses: [Reconstruction(), Kl(weight: 300.0)]\"))"
    );
    let failed = repro::run(&options(suite(&dir, &regressed, &expect), &out), &Mode::Run, &workspace()).unwrap();
    assert_eq!(failed.ran, 1, "a changed spec never reuses the old run");
    let f = failed.failures.iter().find(|f| f.what.starts_with("mse = ")).expect("the MSE band fails");
    assert_eq!(f.entry, "tiny");
    assert!(f.what.contains("over 1 seeds, outside the expected"), "{}", f.what);
    assert!(failed.table.contains("## Failed expectations") && failed.table.contains("| FAIL |"), "{}", failed.table);
}

/// `--emit slurm DIR`: one resolved spec per task, a task list, and a job-array script whose text
/// is snapshotted (the vaelab path redacted); `--collect` refuses until the runs have finished.
#[test]
fn slurm_emission_writes_a_job_array() {
    let dir = scratch("repro-slurm");
    std::fs::create_dir_all(&dir).unwrap();
    let runs = format!("Run(spec: {:?}, seeds: [1, 2], steps: 20)", tiny_spec().display().to_string());
    let file = suite(&dir, &runs, "");
    let emit = dir.join("slurm");
    repro::run(&options(file.clone(), &emit), &Mode::EmitSlurm(emit.clone()), &workspace()).unwrap();
    let tasks = std::fs::read_to_string(emit.join("tasks.tsv")).unwrap();
    assert_eq!(tasks.lines().count(), 4, "{tasks}");
    for line in tasks.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "{line}");
        let spec = vaelab::spec::load_spec(&emit.join(cols[1])).unwrap().experiment;
        assert!(cols[2].starts_with("runs/") && cols[2].ends_with(cols[3]), "{line}");
        assert_eq!(xtask::repro::execute::run_hash(&spec), cols[3], "the resolved spec keeps the hash");
    }
    let script = std::fs::read_to_string(emit.join("job.sh")).unwrap();
    let vaelab = workspace().join("target/release/vaelab").display().to_string();
    insta::assert_snapshot!(script.replace(&vaelab, "[vaelab]"));
    let refused = repro::run(&options(file, &emit), &Mode::Collect, &workspace()).err().unwrap();
    assert!(refused.starts_with("4 run(s) have not finished"), "{refused}");
}

/// Every committed suite parses, and each of its tasks is a valid spec (resolved here without
/// training anything).
#[test]
fn committed_suites_expand_into_valid_specs() {
    let mut count = 0;
    for entry in std::fs::read_dir("../specs/suites").unwrap() {
        let file = entry.unwrap().path();
        let suite = xtask::repro::suite::load(&file).unwrap();
        let name_of = |p: &Path| -> Result<String, String> {
            vaelab::spec::load_spec(p).map(|l| l.experiment.name).map_err(|e| e.to_string())
        };
        let dir = scratch(&format!("suite-{}", suite.name));
        let reference = suite.reference_task(&file).unwrap().map(|t| xtask::repro::execute::prepare(&t, &dir).unwrap().run_dir);
        let tasks = suite.tasks(&file, name_of, reference.as_deref()).unwrap();
        assert!(!tasks.is_empty(), "{}", file.display());
        for t in &tasks {
            let p = xtask::repro::execute::prepare(t, &dir).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(p.experiment.seed, t.seed);
            assert_eq!(p.experiment.train.steps, t.steps);
        }
        count += 1;
    }
    assert!(count >= 2, "quick and study");
}
