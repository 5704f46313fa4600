//! vaelab: spec-driven variational autoencoders on dfdx. This front crate re-exports every layer
//! under one name, so the CLI and xtask depend on it alone, and holds what joins the layers:
//! [`pipeline`] (train → fit a learned prior → evaluate), [`check`] (a spec's problems, shapes
//! included) and [`preflight`] (model blocks tried in a child process).
//!
//! The layers, bottom to top (each a crate; `docs/architecture.md` has the graph and its rules):
//! * [`spec`]: RON experiment files → a validated [`spec::Experiment`] (plain data).
//! * [`nn`]: run-time-shaped layers on dfdx, the parameter store, kernels, [`optim`]izers, [`device`]s.
//! * [`latent`], [`model`], [`adversarial`], [`prior`]: the models a spec describes.
//! * [`metrics`]: image metrics, FID, disentanglement; [`plugin`]: the plugin host.
//! * [`runs`]: the run directory (its file names, checkpoints, log, evaluation records, the loader).
//! * [`train`], [`eval`] (with [`report`] and [`apply`]), [`analysis`] (with [`explore`]).

pub mod check;
pub mod pipeline;
pub mod preflight;

pub use vaelab_analysis::{self as analysis, explore};
pub use vaelab_datasets as datasets;
pub use vaelab_eval::{self as eval, apply, report};
pub use vaelab_metrics as metrics;
pub use vaelab_models::{adversarial, latent, model, prior};
pub use vaelab_nn::{self as nn, device, optim};
pub use vaelab_plugin_host as plugin;
pub use vaelab_runs::{self as runs, data};
pub use vaelab_spec as spec;
pub use vaelab_train::{self as train, bench, device_check, prior_fit};
