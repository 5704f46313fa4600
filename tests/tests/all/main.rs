//! vaelab's integration tests: one binary, a module per area.

mod datasets;
mod dicom;
mod disentangle;
mod eval;
mod frechet;
mod gradients;
mod inception;
mod model;
mod optim;
mod plugins;
mod report;
mod specs;
mod training;
