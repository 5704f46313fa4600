//! Runs a task in this process, or finds it already done. A task's run directory is named by the
//! task and a hash of its resolved spec, its seed and the vaelab version, so a changed spec or a new
//! version never reuses an old run, and an interrupted suite continues where it stopped.

use super::suite::Task;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use vaelab::pipeline::{PipelineOptions, PipelineOutcome};
use vaelab::runs::paths;
use vaelab::spec::Experiment;

/// A task's spec, written and resolved.
pub struct Prepared {
    pub task: Task,
    pub spec_file: PathBuf,
    pub experiment: Experiment,
    pub run_dir: PathBuf,
}

/// What a run directory records about the suite's run of it (`repro.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    pub hash: String,
    pub threads: usize,
    /// Seconds spent training (all sessions of a resumed run) and evaluating.
    pub train_s: f64,
    pub eval_s: f64,
}

/// FNV-1a, 64-bit: a stable content hash (no need for a cryptographic one here).
pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Writes the task's spec under `root/specs/`, resolves it, and names its run directory.
pub fn prepare(task: &Task, root: &Path) -> Result<Prepared, String> {
    let spec_dir = root.join("specs");
    std::fs::create_dir_all(&spec_dir).map_err(|e| format!("cannot create {}: {e}", spec_dir.display()))?;
    let spec_file = spec_dir.join(format!("{}.ron", task.slug()));
    std::fs::write(&spec_file, task.spec_text()).map_err(|e| format!("cannot write {}: {e}", spec_file.display()))?;
    let loaded = vaelab::check::check_file(&spec_file, &[]).map_err(|e| format!("{}: {e}", task.entry))?;
    let experiment = loaded.loaded.experiment;
    let hash = run_hash(&experiment);
    let run_dir = root.join("runs").join(format!("{}-{hash}", task.slug()));
    Ok(Prepared { task: task.clone(), spec_file, experiment, run_dir })
}

/// The hash of a resolved experiment (which holds its seed) and this vaelab's version.
pub fn run_hash(e: &Experiment) -> String {
    let text = format!("{}\n{}", vaelab::spec::format_resolved(e), env!("CARGO_PKG_VERSION"));
    format!("{:016x}", fnv1a(&text))[..10].to_string()
}

/// Whether the run finished and was evaluated.
pub fn is_done(run_dir: &Path) -> bool {
    paths::metrics_file(&paths::eval_dir(run_dir)).exists() && paths::repro_record(run_dir).exists()
}

/// Trains (or resumes) and evaluates a prepared task with `threads` rayon threads, unless it is
/// done already. Returns whether it ran.
pub fn execute(p: &Prepared, threads: usize, stop: &Arc<AtomicBool>) -> Result<bool, String> {
    if is_done(&p.run_dir) {
        return Ok(false);
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| e.to_string())?;
    let record_path = paths::repro_record(&p.run_dir);
    let partial: Option<RunRecord> =
        std::fs::read_to_string(paths::repro_partial(&p.run_dir)).ok().and_then(|t| serde_json::from_str(&t).ok());
    let resume = vaelab::runs::checkpoint::latest(&paths::checkpoints_dir(&p.run_dir)).is_ok();
    let train = vaelab::train::TrainOptions {
        run_dir: p.run_dir.clone(),
        resume,
        progress: false,
        stop: stop.clone(),
        stop_at: None,
        threads,
    };
    let opts = PipelineOptions { train, eval: Some(Default::default()), prior_progress: false };
    let outcome =
        pool.install(|| vaelab::pipeline::run(&p.experiment, &opts, |_| {})).map_err(|e| format!("{}: {e}", p.task.slug()))?;
    let earlier_s = partial.as_ref().map_or(0.0, |r| r.train_s);
    let write = |path: &Path, r: &RunRecord| {
        std::fs::write(path, serde_json::to_string_pretty(r).expect("records serialize"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let hash = run_hash(&p.experiment);
    match outcome {
        PipelineOutcome::Interrupted { train_s, .. } => {
            write(&paths::repro_partial(&p.run_dir), &RunRecord { hash, threads, train_s: earlier_s + train_s, eval_s: 0.0 })?;
            Err(format!("{}: interrupted; run the suite again to continue it", p.task.slug()))
        }
        PipelineOutcome::Finished { train_s, eval_s, .. } => {
            write(&record_path, &RunRecord { hash, threads, train_s: earlier_s + train_s, eval_s })?;
            let _ = std::fs::remove_file(paths::repro_partial(&p.run_dir));
            Ok(true)
        }
    }
}
