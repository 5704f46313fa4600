//! The results table: each entry's metrics as mean ± std over its seeds, its expectations checked,
//! written as `results.md` and `results.csv`.

use super::execute::{Prepared, RunRecord};
use super::suite::{Expect, Suite};
use std::fmt::Write as _;
use std::path::Path;
use vaelab::runs::{paths, EvalRecord, LogLine};

/// One finished run, as read back from its directory.
pub struct RunResult {
    pub seed: u64,
    pub report: EvalRecord,
    pub log: Vec<LogLine>,
    pub record: RunRecord,
    pub batch: usize,
    pub steps: usize,
    /// The run directory (its `eval/` pictures feed the suite's picture sheets).
    pub dir: std::path::PathBuf,
}

/// An entry's runs (one per seed) in suite order.
pub struct EntryResult {
    pub entry: String,
    pub runs: Vec<RunResult>,
}

/// One failed expectation, said so that a reader knows what moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub entry: String,
    pub what: String,
}

pub fn read_run(p: &Prepared) -> Result<RunResult, String> {
    let dir = &p.run_dir;
    let read = |path: std::path::PathBuf| std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()));
    let metrics = paths::metrics_file(&paths::eval_dir(dir));
    let report: EvalRecord = serde_json::from_str(&read(metrics)?).map_err(|e| format!("{}: {e}", dir.display()))?;
    let record: RunRecord =
        serde_json::from_str(&read(paths::repro_record(dir))?).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log = read(paths::log_file(dir))?.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    Ok(RunResult {
        seed: p.task.seed,
        report,
        log,
        record,
        batch: p.experiment.data.batch,
        steps: p.experiment.train.steps,
        dir: dir.clone(),
    })
}

/// Groups runs by entry, keeping the suite's order.
pub fn group(runs: Vec<(String, RunResult)>) -> Vec<EntryResult> {
    let mut out: Vec<EntryResult> = Vec::new();
    for (entry, r) in runs {
        match out.iter_mut().find(|e| e.entry == entry) {
            Some(e) => e.runs.push(r),
            None => out.push(EntryResult { entry, runs: vec![r] }),
        }
    }
    out
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

impl EntryResult {
    /// The metric's values over seeds, if every run has it.
    pub fn values(&self, metric: &str) -> Option<Vec<f64>> {
        self.runs.iter().map(|r| r.report.metrics.get(metric).map(|m| m.value)).collect()
    }

    /// Every metric key any run reported, sorted (MS-SSIM's and plugins' keys included).
    pub fn metric_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.runs.iter().flat_map(|r| r.report.metrics.keys().cloned()).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The mean-image MSE (mean over seeds), wall time (summed) and img/s (mean of each run's median).
    fn run_summary(&self) -> (f64, f64, f64) {
        let baseline = mean_std(&self.runs.iter().map(|r| r.report.mean_image_mse).collect::<Vec<_>>()).0;
        let wall = self.runs.iter().map(|r| r.record.train_s + r.record.eval_s).sum();
        let speed = mean_std(&self.runs.iter().map(img_per_s).collect::<Vec<_>>()).0;
        (baseline, wall, speed)
    }

    /// Mean logged values of `term` over the first and over the last [`LOSS_WINDOW`] logs; without a
    /// term, of the reconstruction term `rec` when the first and last logs have it (a VQ-VAE's
    /// codebook term grows while it learns), else of the total loss. Windows, not single logs,
    /// because an adversarial loss jumps from one log to the next.
    fn term_values(r: &RunResult, term: Option<&str>) -> Option<(f32, f32)> {
        let (first, last) = (r.log.first()?, r.log.last()?);
        let term = term.or_else(|| (first.terms.contains_key("rec") && last.terms.contains_key("rec")).then_some("rec"));
        let pick = |l: &LogLine| match term {
            None => Some(l.loss),
            Some(t) => l.terms.get(t).copied(),
        };
        let window = (r.log.len() / 5).clamp(1, LOSS_WINDOW);
        let mean = |logs: &[LogLine]| -> Option<f32> {
            let v: Vec<f32> = logs.iter().filter_map(pick).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32)
        };
        Some((mean(&r.log[..window])?, mean(&r.log[r.log.len() - window..])?))
    }
}

/// Logs averaged at each end of a run when checking that a loss fell (a fifth of them when fewer).
pub const LOSS_WINDOW: usize = 5;

/// Checks the suite's expectations; every failure, in suite order. With `filtered`, expectations
/// about entries left out of this run are skipped.
pub fn check(suite: &Suite, entries: &[EntryResult], filtered: bool) -> Vec<Failure> {
    check_each(suite.expect.iter(), entries, filtered)
}

/// As [`check`], for the absolute expectations alone (every one but the `Band`s derived from runs).
pub fn check_absolute(suite: &Suite, entries: &[EntryResult], filtered: bool) -> Vec<Failure> {
    check_each(suite.expect.iter().filter(|e| !matches!(e, Expect::Band { .. })), entries, filtered)
}

fn check_each<'a>(expects: impl Iterator<Item = &'a Expect>, entries: &[EntryResult], filtered: bool) -> Vec<Failure> {
    let mut failures = Vec::new();
    let fail = |failures: &mut Vec<Failure>, entry: &str, what: String| failures.push(Failure { entry: entry.to_string(), what });
    for expect in expects {
        match expect {
            Expect::LearnsAtAll { term, except } => {
                for e in entries.iter().filter(|e| !except.contains(&e.entry)) {
                    for r in &e.runs {
                        match EntryResult::term_values(r, term.as_deref()) {
                            Some((first, last)) if last < first => {}
                            Some((first, last)) => fail(
                                &mut failures,
                                &e.entry,
                                format!(
                                    "seed {}: {} did not fall: {first:.4} over the first logs, {last:.4} over the last",
                                    r.seed,
                                    term.as_deref().unwrap_or("the training loss (`rec` where logged)")
                                ),
                            ),
                            None => fail(
                                &mut failures,
                                &e.entry,
                                format!("seed {}: no `{}` in the log", r.seed, term.as_deref().unwrap_or("loss")),
                            ),
                        }
                    }
                }
            }
            Expect::BeatsMeanImage => {
                for e in entries {
                    for r in &e.runs {
                        if let Some(mse) = r.report.metrics.get("mse") {
                            if mse.value >= r.report.mean_image_mse {
                                fail(
                                    &mut failures,
                                    &e.entry,
                                    format!(
                                        "seed {}: test MSE {:.5} does not beat the mean image's {:.5}",
                                        r.seed, mse.value, r.report.mean_image_mse
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            Expect::SamplesBeatBaselines { except } => {
                for e in entries.iter().filter(|e| !except.contains(&e.entry)) {
                    for r in &e.runs {
                        let Some(fd) = r.report.metrics.get("domain_fd") else { continue };
                        for (baseline, value) in &r.report.domain_fd_baselines {
                            if fd.value >= *value {
                                let what = if baseline == "noise" { "uniform noise" } else { "the mean image" };
                                fail(
                                    &mut failures,
                                    &e.entry,
                                    format!(
                                        "seed {}: samples' domain FD {} does not beat {what}'s {}",
                                        r.seed,
                                        fmt(fd.value),
                                        fmt(*value)
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            Expect::LossFalls { entry, .. } | Expect::Band { entry, .. }
                if filtered && !entries.iter().any(|e| &e.entry == entry) => {}
            Expect::LossFalls { entry, term } => match entries.iter().find(|e| &e.entry == entry) {
                None => fail(&mut failures, entry, "the suite has no such entry".into()),
                Some(e) => {
                    for r in &e.runs {
                        match EntryResult::term_values(r, Some(term)) {
                            Some((first, last)) if last < first => {}
                            Some((first, last)) => fail(
                                &mut failures,
                                entry,
                                format!("seed {}: `{term}` rose from {first:.4} (first logs) to {last:.4} (last logs)", r.seed),
                            ),
                            None => fail(&mut failures, entry, format!("seed {}: no `{term}` in the log", r.seed)),
                        }
                    }
                }
            },
            Expect::Band { entry, metric, mean, tolerance } => match entries.iter().find(|e| &e.entry == entry) {
                None => fail(&mut failures, entry, "the suite has no such entry".into()),
                Some(e) => match e.values(metric) {
                    None => fail(&mut failures, entry, format!("`{metric}` was not computed for every seed")),
                    Some(v) => {
                        let (m, s) = mean_std(&v);
                        if (m - mean).abs() > *tolerance {
                            fail(
                                &mut failures,
                                entry,
                                format!(
                                    "{metric} = {} ± {} over {} seeds, outside the expected {} ± {}",
                                    fmt(m),
                                    fmt(s),
                                    v.len(),
                                    fmt(*mean),
                                    fmt(*tolerance)
                                ),
                            );
                        }
                    }
                },
            },
        }
    }
    failures
}

/// Four significant digits, plain or scientific.
pub fn fmt(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if (1e-3..1e5).contains(&v.abs()) {
        let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{v:.digits$}")
    } else {
        format!("{v:.3e}")
    }
}

/// Median images per second over a run's log.
fn img_per_s(r: &RunResult) -> f64 {
    let mut v: Vec<f64> = r.log.iter().map(|l| l.img_per_s as f64).filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The metric columns: the suite's metrics as reported (a metric may report under several keys).
pub fn columns(entries: &[EntryResult]) -> Vec<String> {
    let mut keys: Vec<String> = entries.iter().flat_map(|e| e.metric_keys()).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// `results.md`: the suite's purpose, the machine, one row per entry, the failures.
pub fn markdown(suite: &Suite, entries: &[EntryResult], failures: &[Failure], machine: &str) -> String {
    let cols = columns(entries);
    let mut md = format!("# Suite `{}`\n\n", suite.name);
    if !suite.about.is_empty() {
        let _ = writeln!(md, "{}\n", suite.about.trim());
    }
    let _ = writeln!(md, "{machine}\n");
    let _ = writeln!(
        md,
        "Each metric: mean ± standard deviation over the seeds. Wall time: training + evaluation, summed over seeds.\n"
    );
    let _ = write!(md, "| entry | seeds | steps |");
    for c in &cols {
        let _ = write!(md, " {c} |");
    }
    let _ = writeln!(md, " mean-image MSE | wall time | img/s | expectations |");
    let _ = writeln!(md, "|{}", "---|".repeat(cols.len() + 7));
    for e in entries {
        let seeds: Vec<String> = e.runs.iter().map(|r| r.seed.to_string()).collect();
        let _ = write!(md, "| {} | {} | {} |", e.entry, seeds.join(", "), e.runs[0].steps);
        for c in &cols {
            let cell = match e.values(c) {
                Some(v) => {
                    let (m, s) = mean_std(&v);
                    format!("{} ± {}", fmt(m), fmt(s))
                }
                None => "—".into(),
            };
            let _ = write!(md, " {cell} |");
        }
        let (baseline, wall, speed) = e.run_summary();
        let verdict = if failures.iter().any(|f| f.entry == e.entry) { "FAIL" } else { "pass" };
        let _ = writeln!(md, " {} | {:.0} s | {:.0} | {verdict} |", fmt(baseline), wall, speed);
    }
    if failures.is_empty() {
        let _ = writeln!(md, "\nEvery expectation holds ({} checked).", suite.expect.len());
    } else {
        let _ = writeln!(md, "\n## Failed expectations\n");
        for f in failures {
            let _ = writeln!(md, "- `{}`: {}", f.entry, f.what);
        }
    }
    md
}

/// `results.csv`: one row per entry; each metric as `<metric>_mean`, `<metric>_std`.
pub fn csv(entries: &[EntryResult], failures: &[Failure]) -> String {
    let cols = columns(entries);
    let mut out = String::from("entry,seeds,steps");
    for c in &cols {
        let _ = write!(out, ",{c}_mean,{c}_std");
    }
    out.push_str(",mean_image_mse,wall_s,img_per_s,pass\n");
    for e in entries {
        let seeds: Vec<String> = e.runs.iter().map(|r| r.seed.to_string()).collect();
        let _ = write!(out, "{},{},{}", e.entry, seeds.join(" "), e.runs[0].steps);
        for c in &cols {
            match e.values(c) {
                Some(v) => {
                    let (m, s) = mean_std(&v);
                    let _ = write!(out, ",{m},{s}");
                }
                None => out.push_str(",,"),
            }
        }
        let (baseline, wall, speed) = e.run_summary();
        let pass = !failures.iter().any(|f| f.entry == e.entry);
        let _ = writeln!(out, ",{baseline},{wall:.1},{speed:.1},{pass}");
    }
    out
}

/// Writes `text` to `dir/name`.
pub fn write(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))
}

/// Loss series per entry (its first seed), for the loss-curve plot.
pub fn loss_series(entries: &[EntryResult]) -> Vec<vaelab::report::plot::Series> {
    entries
        .iter()
        .map(|e| vaelab::report::plot::Series {
            name: format!("{} (seed {})", e.entry, e.runs[0].seed),
            points: e.runs[0].log.iter().map(|l| (l.step as f64, l.loss as f64)).collect(),
        })
        .collect()
}
