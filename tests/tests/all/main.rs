//! vaelab's integration tests: one binary, a module per area.

mod adversarial;
mod apply;
mod browser;
mod datasets;
mod dicom;
mod disentangle;
mod eval;
mod frechet;
mod gradients;
mod inception;
mod latent;
mod layering;
mod model;
mod optim;
mod plugins;
mod prior;
mod report;
mod repro;
mod specs;
mod split_objectives;
mod tolerance;
mod training;
