//! Every file name inside a run directory. Nothing else in vaelab (xtask included) spells one: a
//! renamed file changes here and nowhere else.

use std::path::{Path, PathBuf};
use vaelab_datasets::Split;

/// The resolved spec the run was trained with.
pub fn spec_file(run: &Path) -> PathBuf {
    run.join("spec.ron")
}

/// The run's provenance: version, threads, CPU kind, plugins (`run.json`).
pub fn run_json(run: &Path) -> PathBuf {
    run.join("run.json")
}

/// The training log, one JSON line per logged step.
pub fn log_file(run: &Path) -> PathBuf {
    run.join("log.jsonl")
}

/// Checkpoints and the `latest` pointer.
pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// A fitted PixelCNN prior (`vaelab train-prior`).
pub fn prior_file(run: &Path) -> PathBuf {
    run.join("prior.safetensors")
}

/// The default evaluation: latest checkpoint, test split, the run's own data.
pub fn eval_dir(run: &Path) -> PathBuf {
    run.join("eval")
}

/// Any other evaluation: `eval-<step>-<split>[-<data>]`, the data named by its file stem.
pub fn other_eval_dir(run: &Path, step: usize, split: Split, data: Option<&str>) -> PathBuf {
    let mut name = format!("eval-{step}-{}", split.name());
    if let Some(d) = data {
        let stem = Path::new(d).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let clean: String =
            stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        name += &format!("-{}", clean.trim_matches('_'));
    }
    run.join(name)
}

/// An evaluation's metrics, inside its folder.
pub fn metrics_file(eval_dir: &Path) -> PathBuf {
    eval_dir.join(METRICS_JSON)
}

/// The name of [`metrics_file`], for messages.
pub const METRICS_JSON: &str = "metrics.json";
/// The name of [`report_file`], for messages and links between evaluations.
pub const REPORT_HTML: &str = "report.html";

/// An evaluation's self-contained HTML report, inside its folder.
pub fn report_file(eval_dir: &Path) -> PathBuf {
    eval_dir.join(REPORT_HTML)
}

/// An evaluation's pictures, inside its folder: test images beside their reconstructions.
pub const RECONSTRUCTIONS_PNG: &str = "reconstructions.png";
/// Decoded prior samples.
pub const SAMPLES_PNG: &str = "samples.png";
/// One row per latent dimension, most informative first.
pub const TRAVERSAL_PNG: &str = "traversal.png";
/// The training-loss curves.
pub const LOSS_CURVES_PNG: &str = "loss-curves.png";

/// An evaluation's loss curves, inside its folder.
pub fn loss_curves_file(eval_dir: &Path) -> PathBuf {
    eval_dir.join(LOSS_CURVES_PNG)
}

/// Latent analysis output (`vaelab latent`).
pub fn latent_dir(run: &Path) -> PathBuf {
    run.join("latent")
}

/// Images and codes saved from the explorer.
pub fn explore_dir(run: &Path) -> PathBuf {
    run.join("explore")
}

/// A reproducibility suite's record of a finished run (`cargo xtask repro`).
pub fn repro_record(run: &Path) -> PathBuf {
    run.join("repro.json")
}

/// A reproducibility suite's record of an interrupted run, to be continued.
pub fn repro_partial(run: &Path) -> PathBuf {
    run.join("repro-partial.json")
}
