//! vaelab's core runtime: spec → build → train/eval → report.
//!
//! * [`spec`]: RON experiment files → a validated [`spec::Experiment`] (plain data).
//! * [`nn`]: run-time-shaped layers on dfdx, the parameter store and the fused CPU kernels.
//! * [`latent`], [`model`]: the model a spec describes, and its loss terms.
//! * [`optim`], [`train`]: the training loop.
//! * [`runs`]: the run directory (its file names, checkpoints, log, evaluation records, the loader).
//! * [`eval`]: metrics and image grids.
//! * [`plugin`]: metric and model-block plugins loaded at run time through a C ABI.
pub mod adversarial;
pub mod analysis;
pub mod apply;
pub mod bench;
pub mod check;
pub mod data;
pub mod device;
pub mod device_check;
pub mod eval;
pub mod explore;
pub mod latent;
pub mod model;
pub mod nn;
pub mod optim;
pub mod pipeline;
pub mod plugin;
pub mod prior;
pub mod report;
pub mod runs;
pub mod spec;
pub mod train;
