//! Latent variables. Each kind maps encoder features to a code, a sample and a regulariser,
//! and knows its prior: none (a plain autoencoder), a flat Gaussian, a spatial C×h×w Gaussian.
//! A quantized kind adds a variant here without touching the trainer.

use crate::nn::{Act, Backend, Ctx, FeatShape, NoBlocks, ParamStore, Sequential, Tensor2, OT};
use crate::spec::{Latent, Layer};
use dfdx::prelude::*;

pub enum LatentModel {
    /// The encoder's output is the code.
    Identity(FeatShape),
    Gaussian(GaussianLatent),
    Spatial(SpatialLatent),
}

/// A per-element Gaussian over a C×h×w code: 1×1 convolutions give mean and log-variance.
pub struct SpatialLatent {
    pub shape: FeatShape,
    mu: Sequential,
    logvar: Sequential,
}

/// q(z|x) = N(μ(h), diag exp(logvar(h))), p(z) = N(0, I) (Kingma & Welling 2014).
pub struct GaussianLatent {
    pub dim: usize,
    mu: Sequential,
    logvar: Sequential,
}

/// What the encoder side of a step produced.
pub struct Encoded<D: Device<f32>> {
    pub z: Tensor2<D>,
    /// The posterior mean, off the tape (for decoding reconstructions and reading codes).
    pub mu: Tensor<(usize, usize), f32, D, OT<D>>,
    pub logvar: Tensor<(usize, usize), f32, D>,
    /// KL(q(z|x) ‖ p(z)) summed over latent dimensions and averaged over the batch.
    pub kl: Tensor<(), f32, D, OT<D>>,
}

impl LatentModel {
    pub fn build<D: Device<f32>>(
        spec: &Latent,
        features: FeatShape,
        store: &mut ParamStore<D>,
    ) -> Result<LatentModel, (String, String)> {
        match *spec {
            Latent::None => Ok(LatentModel::Identity(features)),
            Latent::Spatial { channels } => {
                let FeatShape::Image(_, h, w) = features else {
                    return Err((
                        "model.encoder".into(),
                        format!(
                            "the Spatial latent needs an image-shaped encoder output (C, H, W), got {features}; drop the Flatten"
                        ),
                    ));
                };
                let head = [Layer::Conv { out: channels, k: 1, s: 1, p: 0 }];
                let mu = Sequential::build(&head, features, "latent.mu", "model.latent", store, &NoBlocks)?;
                let logvar = Sequential::build(&head, features, "latent.logvar", "model.latent", store, &NoBlocks)?;
                Ok(LatentModel::Spatial(SpatialLatent { shape: FeatShape::Image(channels, h, w), mu, logvar }))
            }
            Latent::Gaussian { dim } => {
                if let FeatShape::Image(..) = features {
                    return Err((
                        "model.encoder".into(),
                        format!(
                            "the Gaussian latent needs a flat encoder output (N), got {features}; end the encoder with Flatten"
                        ),
                    ));
                }
                let head = [Layer::Dense { out: dim }];
                let mu = Sequential::build(&head, features, "latent.mu", "model.latent", store, &NoBlocks)?;
                let logvar = Sequential::build(&head, features, "latent.logvar", "model.latent", store, &NoBlocks)?;
                Ok(LatentModel::Gaussian(GaussianLatent { dim, mu, logvar }))
            }
        }
    }

    /// The shape of a code, which is the decoder's input.
    pub fn code_shape(&self) -> FeatShape {
        match self {
            LatentModel::Identity(shape) => *shape,
            LatentModel::Gaussian(g) => FeatShape::Flat(g.dim),
            LatentModel::Spatial(s) => s.shape,
        }
    }

    /// `count` codes drawn from the prior, batch-last (code shape × count), from the random stream
    /// (seed, purpose, 0). Each latent kind owns its prior: N(0, I) over the code's shape for the
    /// Gaussian kinds. An autoencoder has no prior; N(0, I) is drawn all the same, so its samples
    /// show what the decoder makes of codes it was never trained on.
    pub fn sample_prior<D: Device<f32>>(
        &self,
        dev: &D,
        seed: u64,
        purpose: &str,
        count: usize,
    ) -> Tensor<(usize, usize), f32, D> {
        crate::data::normal_noise(dev, seed, purpose, 0, self.code_shape().len(), count)
    }

    /// Encodes features `h`; `noise` (standard normal, the code's shape × batch) drives the
    /// reparameterised sample z = μ + σ·ε, so every random draw comes from the caller's stream.
    pub fn encode<D: Backend>(&self, ctx: &Ctx<D>, h: Act<D>, noise: Tensor<(usize, usize), f32, D>) -> Encoded<D> {
        let (mu_head, logvar_head) = match self {
            LatentModel::Identity(_) => {
                // z = h; no posterior, so no KL (a zero that keeps the loss's shape and tape type).
                let (rows, batch) = *h.t.shape();
                let mu = h.t.with_empty_tape();
                let kl = h.t.with_empty_tape().sum::<(), _>() * 0.0;
                let logvar = ctx.store.dev.zeros_like(&(rows, batch));
                return Encoded { z: h.t, mu, logvar, kl };
            }
            LatentModel::Gaussian(g) => (&g.mu, &g.logvar),
            LatentModel::Spatial(s) => (&s.mu, &s.logvar),
        };
        let batch = h.batch();
        let h2 = Act { t: h.t.with_empty_tape(), shape: h.shape, needs_grad: h.needs_grad };
        let mu = mu_head.forward(ctx, h).t;
        let logvar = logvar_head.forward(ctx, h2).t;
        // dfdx records each op on exactly one tape: every tensor below is consumed once
        // with its tape (mu → z, logvar → kl) and read elsewhere through empty-tape copies.
        let logvar_values = logvar.with_empty_tape().split_tape().0;
        let mu_values = mu.with_empty_tape();
        let std = (logvar.with_empty_tape() * 0.5).exp();
        // KL(N(μ, σ²) ‖ N(0, 1)) = −½ Σ (1 + log σ² − μ² − σ²)   (Kingma & Welling 2014, App. B)
        let kl_elems = (logvar.with_empty_tape() + 1.0) - mu.with_empty_tape().square() - logvar.exp();
        let kl = kl_elems.sum::<(), _>() * (-0.5 / batch as f32);
        let z = mu + std * noise;
        Encoded { z, mu: mu_values, logvar: logvar_values, kl }
    }
}
