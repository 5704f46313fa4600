//! The run directory, owned here: every file name in it ([`paths`]), the files vaelab writes there
//! (checkpoints, the log, evaluation records, a fitted prior) and the one loader of a trained run
//! ([`LoadedRun`]). Training, evaluation, analysis and xtask reach a run's files only through this
//! module.

pub mod checkpoint;
pub mod evaluation;
pub mod loaded;
pub mod log;
pub mod paths;
pub mod prior_file;
pub mod recorded_plugins;

pub use evaluation::{evaluations, EvalRecord, MetricEntry};
pub use loaded::LoadedRun;
pub use log::{read_log, LogLine};

use crate::spec::Experiment;
use std::path::{Path, PathBuf};

/// What can go wrong reading a run directory.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0} is not a vaelab run directory (no readable spec.ron): {1}")]
    NotARun(PathBuf, String),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("cannot open the dataset: {0}")]
    Data(#[from] vaelab_datasets::DataError),
    /// The run's model, plugins or files do not fit together (the message says how).
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, String),
}

/// Reads the resolved spec a run was trained with.
pub fn read_run_spec(run_dir: &Path) -> Result<Experiment, RunError> {
    let path = paths::spec_file(run_dir);
    let text = std::fs::read_to_string(&path).map_err(|e| RunError::NotARun(run_dir.to_path_buf(), e.to_string()))?;
    ron::from_str(&text).map_err(|e| RunError::NotARun(run_dir.to_path_buf(), e.to_string()))
}
