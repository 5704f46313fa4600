//! Adversarial terms beside the losses (spec `adversarial:`): a GAN discriminator ([`gan`]) or
//! IntroVAE's encoder-as-critic objective ([`intro`]). Each routes its losses to parameter groups
//! with their own optimizers (`crate::optim::Group`).

pub mod gan;
pub mod intro;

pub use gan::Gan;
pub use intro::IntroVae;
