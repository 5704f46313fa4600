//! The training log (`log.jsonl`): one JSON line per logged step.

use std::path::Path;

/// One JSONL log record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    pub step: usize,
    pub loss: f32,
    /// Each loss term, unweighted, by name.
    pub terms: std::collections::BTreeMap<String, f32>,
    /// Each term's weight at this step (after warm-up).
    pub weights: std::collections::BTreeMap<String, f32>,
    pub lr: f32,
    pub grad_norm: f32,
    pub img_per_s: f32,
    /// Diagnostics of the step (a quantized latent's perplexity and codes in use).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub stats: std::collections::BTreeMap<String, f32>,
}

/// The records of a run's log, in order; unreadable lines are skipped (a run killed mid-write
/// leaves at most one), and a run without a log has none.
pub fn read_log(run: &Path) -> Vec<LogLine> {
    let Ok(text) = std::fs::read_to_string(super::paths::log_file(run)) else { return vec![] };
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}
