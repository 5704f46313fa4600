//! The models a spec describes, built on `vaelab-nn`: no file I/O and no knowledge of run directories.
//!
//! * [`latent`]: Gaussian, spatial and quantized latents, their KL and commitment terms.
//! * [`model`]: encoder → latent → decoder assembled from a spec, and its loss terms.
//! * [`adversarial`]: the GAN discriminator and the IntroVAE, Soft-IntroVAE and VPGA objectives.
//! * [`prior`]: the PixelCNN prior network over quantized code grids (fitted by `vaelab-train`).

pub mod adversarial;
pub mod latent;
pub mod model;
pub mod prior;
mod prior_sampler;
