//! The run directory, owned here: every file name in it ([`paths`]), the files vaelab writes there
//! (checkpoints, the log, evaluation records, a fitted prior) and the one loader of a trained model
//! ([`TrainedModel`]; [`LoadedRun`] adds the run's dataset). Training, evaluation, analysis and xtask reach a run's files only through this
//! module.

pub mod checkpoint;
pub mod data;
pub mod evaluation;
pub mod loaded;
pub mod log;
pub mod paths;
pub mod prior_file;
pub mod recorded_plugins;

pub use evaluation::{evaluations, EvalRecord, MetricEntry};
pub use loaded::{LoadedRun, OpenOptions, TrainedModel};
pub use log::{read_log, LogLine};

use std::path::{Path, PathBuf};
use vaelab_spec::Experiment;

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
    /// The run's plugin libraries did not load.
    #[error("{0}")]
    Plugins(String),
    /// The run's model could not be built from its spec.
    #[error("{0}")]
    Build(String),
    /// The run's fitted prior (`prior.safetensors`) does not fit its model.
    #[error("{0}")]
    Prior(String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, String),
}

/// Reads the resolved spec a run was trained with.
pub fn read_run_spec(run_dir: &Path) -> Result<Experiment, RunError> {
    let path = paths::spec_file(run_dir);
    let text = std::fs::read_to_string(&path).map_err(|e| RunError::NotARun(run_dir.to_path_buf(), e.to_string()))?;
    ron::from_str(&text).map_err(|e| RunError::NotARun(run_dir.to_path_buf(), e.to_string()))
}
