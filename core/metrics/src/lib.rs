//! Metrics on images and feature rows; they never see a model or a run directory.
//!
//! * [`metric`]: the [`Metric`](metric::Metric) trait, MSE and PSNR; [`ssim`]: SSIM and MS-SSIM;
//!   [`registry`]: the metrics a name can select.
//! * [`fid`] with its [`inception`] network and [`frechet`] distance.
//! * [`disentangle`]: MIG, SAP, DCI (with the gradient-boosted trees of [`gbt`]), FactorVAE and
//!   β-VAE scores on codes and factors.

pub mod disentangle;
pub mod fid;
pub mod frechet;
pub mod gbt;
pub mod inception;
pub mod metric;
pub mod registry;
pub mod sharpness;
pub mod ssim;
