//! A trained run loaded on the CPU for analysis, the explorer and prior fitting.

use super::{checkpoint, paths, read_run_spec, RunError};
use crate::data::{build_dataset, data_shape};
use crate::model::Model;
use crate::nn::ParamStore;
use crate::plugin::PluginSet;
use crate::spec::Experiment;
use dfdx::prelude::*;
use std::path::{Path, PathBuf};
use vaelab_datasets::Dataset;

/// A trained run, loaded on the CPU: its spec, data, model and parameters.
pub struct LoadedRun {
    pub dir: PathBuf,
    pub spec: Experiment,
    pub dataset: Box<dyn Dataset>,
    pub model: Model,
    pub store: ParamStore<Cpu>,
    pub step: usize,
}

impl LoadedRun {
    /// Loads `run_dir`'s spec, dataset and latest checkpoint (or `checkpoint`).
    pub fn open(run_dir: &Path, checkpoint: Option<&Path>) -> Result<LoadedRun, RunError> {
        Self::open_with_prior(run_dir, checkpoint, true)
    }

    /// As [`LoadedRun::open`]; `with_prior: false` leaves a learned prior as initialised (for fitting
    /// it afresh) instead of laying the run's fitted `prior.safetensors` over it.
    pub fn open_with_prior(run_dir: &Path, checkpoint: Option<&Path>, with_prior: bool) -> Result<LoadedRun, RunError> {
        let mut spec = read_run_spec(run_dir)?;
        for note in crate::runs::recorded_plugins::reconcile(run_dir, &mut spec.plugins, &[]).map_err(RunError::Invalid)? {
            eprintln!("note: {note}");
        }
        let dataset = build_dataset(&spec)?;
        let shape = data_shape(dataset.as_ref());
        let plugins = PluginSet::load(&spec.plugins).map_err(|(_, e)| RunError::Invalid(e.to_string()))?;
        let mut store = ParamStore::new(Cpu::seed_from_u64(spec.seed), spec.seed);
        let model = Model::build(&spec.model, shape, &mut store, &plugins).map_err(|e| RunError::Invalid(e.to_string()))?;
        if model.generator_only {
            return Err(RunError::Invalid(format!(
                "{} is a generator from noise (no encoder): latent analysis and the explorer need codes of images; \
                 its samples and noise traversals are in eval/",
                run_dir.display()
            )));
        }
        let ckpt = match checkpoint {
            Some(p) => p.to_path_buf(),
            None => checkpoint::latest(&paths::checkpoints_dir(run_dir))?,
        };
        let step = checkpoint::load(&ckpt, &mut store, &mut [])?.step;
        if with_prior {
            super::prior_file::overlay(run_dir, step, &mut store).map_err(RunError::Invalid)?;
        }
        Ok(LoadedRun { dir: run_dir.to_path_buf(), spec, dataset, model, store, step })
    }
}
