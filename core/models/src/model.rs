//! A model built from a spec: encoder → latent → decoder → likelihood, with its loss terms.

use crate::latent::{Encoded, LatentModel, Posterior, PriorDraw};
use dfdx::prelude::*;
use vaelab_nn::{
    infer, Act, Backend, BlockSource, Ctx, FeatShape, Init, ParamId, ParamStore, Role, Sequential, SummaryRow, Tensor2, OT,
};
use vaelab_nn::{BuildError, ParamGroup};
use vaelab_spec::{self as spec, Likelihood, Sigma};

pub struct Model {
    pub encoder: Sequential,
    pub latent: LatentModel,
    pub decoder: Sequential,
    pub likelihood: LikelihoodHead,
    pub data_shape: FeatShape,
    /// The name of the latent's own loss term (`kl`, `vq`), if it has one.
    pub regulariser: Option<&'static str>,
    /// A generator from noise (spec `noise_dim`, no encoder): nothing can be encoded or reconstructed.
    pub generator_only: bool,
    /// A learned prior over a quantized latent's codes (spec `prior: PixelCnn(…)`); it samples once
    /// `vaelab train-prior` has trained it.
    pub prior: Option<LearnedPrior>,
}

/// A PixelCNN prior and the buffer that counts its training steps (0: untrained).
pub struct LearnedPrior {
    pub net: crate::prior::PixelCnn,
    pub trained_steps: ParamId,
}

pub enum LikelihoodHead {
    Bernoulli,
    Gaussian { sigma: f32 },
    GaussianLearned { log_sigma: ParamId },
}

/// One forward pass of a training step: the named loss terms before weighting.
pub struct StepTerms<D: Device<f32>> {
    pub rec: Tensor<(), f32, D, OT<D>>,
    /// The latent's own term (`kl`, `vq`) under its name; a zero named `none` for an autoencoder.
    pub reg: (&'static str, Tensor<(), f32, D, OT<D>>),
    /// Diagnostics for the log.
    pub stats: Vec<(&'static str, f32)>,
}

/// A generator-side forward pass beside a discriminator ([`Model::terms_and_fakes`]).
pub struct GanTerms<D: Backend> {
    pub terms: StepTerms<D>,
    /// The images the discriminator judges: the reconstruction, then decoded prior samples.
    pub fakes: Vec<Tensor2<D>>,
    /// The reconstruction's mean image with its gradient reaching encoder and decoder, when asked
    /// (for a reconstruction term in discriminator features).
    pub recon: Option<Tensor2<D>>,
}

impl Model {
    /// Builds the model's layers into `store`. Errors are (spec path, message).
    pub fn build<D: Device<f32>>(
        spec: &spec::ModelSpec,
        data_shape: FeatShape,
        store: &mut ParamStore<D>,
        blocks: &dyn BlockSource,
    ) -> Result<Model, BuildError> {
        let (encoder, latent) = store.in_group(ParamGroup::Encoder, |store| {
            let encoder = Sequential::build(&spec.encoder, data_shape, "encoder", "model.encoder", store, blocks)?;
            let latent = match spec.noise_dim {
                Some(noise) => LatentModel::Identity(FeatShape::Flat(noise)),
                None => LatentModel::build(&spec.latent, encoder.output, store)?,
            };
            Ok::<_, BuildError>((encoder, latent))
        })?;
        let decoder = store.in_group(ParamGroup::Decoder, |store| {
            Sequential::build(&spec.decoder, latent.code_shape(), "decoder", "model.decoder", store, blocks)
        })?;
        let prior = match (&latent, &spec.prior) {
            (LatentModel::Quantized(q), spec::Prior::PixelCnn { .. }) => {
                let FeatShape::Image(_, h, w) = q.shape else { unreachable!("a quantized code is an image") };
                store.in_group(ParamGroup::Prior, |store| {
                    crate::prior::PixelCnn::build(&spec.prior, q.codes, h, w, store).map(|net| LearnedPrior {
                        net,
                        trained_steps: store.add("prior.trained_steps".into(), vec![1], Init::Zeros, Role::Buffer),
                    })
                })
            }
            _ => None,
        };
        if decoder.output != data_shape {
            return Err(BuildError::new(
                "model.decoder".into(),
                format!("the decoder outputs {} but the data are {data_shape}", decoder.output),
            ));
        }
        let likelihood = match spec.likelihood {
            Likelihood::Bernoulli => LikelihoodHead::Bernoulli,
            Likelihood::Gaussian { sigma: Sigma::Fixed(sigma) } => LikelihoodHead::Gaussian { sigma },
            Likelihood::Gaussian { sigma: Sigma::Learned } => LikelihoodHead::GaussianLearned {
                log_sigma: store.in_group(ParamGroup::Decoder, |store| {
                    store.add("likelihood.log_sigma".into(), vec![1], Init::Zeros, Role::Trainable)
                }),
            },
        };
        Ok(Model {
            encoder,
            latent,
            decoder,
            likelihood,
            data_shape,
            regulariser: spec.latent.regulariser(),
            generator_only: spec.noise_dim.is_some(),
            prior,
        })
    }

    /// The rows of `vaelab check`'s summary table, without allocating any parameter.
    pub fn summary(
        spec: &spec::ModelSpec,
        data_shape: FeatShape,
        blocks: &dyn BlockSource,
    ) -> Result<Vec<SummaryRow>, BuildError> {
        let (enc_out, mut rows) = infer(&spec.encoder, data_shape, "encoder", "model.encoder", blocks)?;
        // Building the latent and likelihood into a scratch store gives their rows exactly.
        let mut scratch = ParamStore::new(Cpu::default(), 0);
        let latent = match spec.noise_dim {
            Some(noise) => LatentModel::Identity(FeatShape::Flat(noise)),
            None => LatentModel::build(&spec.latent, enc_out, &mut scratch)?,
        };
        let code = latent.code_shape();
        let latent_params: Vec<_> = scratch
            .iter()
            .map(|p| vaelab_nn::shape::ParamDecl { suffix: String::new(), shape: p.shape.clone(), init: p.init, role: p.role })
            .collect();
        rows.push(SummaryRow {
            name: "latent".into(),
            kind: if spec.noise_dim.is_some() { "N(0,I)" } else { latent_kind(&spec.latent) }.into(),
            output: code,
            params: latent_params,
        });
        let (dec_out, dec_rows) = infer(&spec.decoder, code, "decoder", "model.decoder", blocks)?;
        rows.extend(dec_rows);
        if let (LatentModel::Quantized(q), FeatShape::Image(_, h, w)) = (&latent, code) {
            let mut prior_store = ParamStore::new(Cpu::default(), 0);
            if crate::prior::PixelCnn::build(&spec.prior, q.codes, h, w, &mut prior_store).is_some() {
                let params = prior_store
                    .iter()
                    .map(|p| vaelab_nn::shape::ParamDecl {
                        suffix: String::new(),
                        shape: p.shape.clone(),
                        init: p.init,
                        role: p.role,
                    })
                    .collect();
                rows.push(SummaryRow {
                    name: "prior".into(),
                    kind: "PixelCnn".into(),
                    output: FeatShape::Image(q.codes, h, w),
                    params,
                });
            }
        }
        if dec_out != data_shape {
            return Err(BuildError::new(
                "model.decoder".into(),
                format!("the decoder outputs {dec_out} but the data are {data_shape}"),
            ));
        }
        Ok(rows)
    }

    /// Codes from the model's prior, batch-last: the learned prior once trained, else the latent's
    /// own (see [`LatentModel::sample_prior`]).
    pub fn sample_prior<D: Backend>(&self, store: &ParamStore<D>, draw: PriorDraw) -> Tensor<(usize, usize), f32, D> {
        if let (Some(net), LatentModel::Quantized(q)) = (self.fitted_prior(store), &self.latent) {
            let grids = net.sample(store, draw);
            return q.codes_to_z(store, &grids);
        }
        self.latent.sample_prior(store, draw)
    }

    /// The PixelCNN prior, once `train-prior` has fitted it (its step counter is above 0).
    pub fn fitted_prior<D: Device<f32>>(&self, store: &ParamStore<D>) -> Option<&crate::prior::PixelCnn> {
        let prior = self.prior.as_ref()?;
        (store.get(prior.trained_steps).tensor.as_vec()[0] > 0.0).then_some(&prior.net)
    }

    /// Decoder output (logits or means) for codes `z`.
    pub fn decode<D: Backend>(&self, ctx: &Ctx<D>, z: Tensor2<D>) -> Tensor2<D> {
        self.decoder.forward(ctx, Act { t: z, shape: self.latent.code_shape(), needs_grad: true }).t
    }

    /// Reconstruction and KL terms for a batch `x` (batch-last, values in [0, 1]).
    pub fn terms<D: Backend>(
        &self,
        ctx: &Ctx<D>,
        x: Tensor<(usize, usize), f32, D>,
        noise: Tensor<(usize, usize), f32, D>,
    ) -> StepTerms<D> {
        let enc = self.encode(ctx, x.clone(), noise);
        let out = self.decode(ctx, enc.z);
        let rec = self.nll(ctx, out, x);
        let name = self.regulariser.unwrap_or("none");
        StepTerms { rec, reg: (name, enc.reg), stats: enc.stats }
    }

    /// As [`Model::terms`], plus the images the step produces, on the tape (for an adversarial
    /// term): the reconstruction of `x` and, given codes `prior_z`, decoded prior samples.
    ///
    /// With `fakes_reach_encoder` false (VAE-GAN after Larsen et al. 2016), the reconstruction among
    /// the fakes is decoded again from sg(z): the decoder gets the adversarial gradient, the encoder
    /// none. With `want_recon`, the result also holds the reconstruction on the full tape.
    pub fn terms_and_fakes<D: Backend>(
        &self,
        ctx: &Ctx<D>,
        x: Tensor<(usize, usize), f32, D>,
        noise: Tensor<(usize, usize), f32, D>,
        prior_z: Tensor<(usize, usize), f32, D>,
        fakes_reach_encoder: bool,
        want_recon: bool,
    ) -> GanTerms<D> {
        let enc = self.encode(ctx, x.clone(), noise);
        let z_values = (!fakes_reach_encoder).then(|| vaelab_nn::constant(&enc.z));
        let out = self.decode(ctx, enc.z);
        let recon = want_recon.then(|| self.mean_taped(out.with_empty_tape()));
        let judged = match z_values {
            Some(z) => self.mean_taped(self.decode(ctx, z.retaped())),
            None => self.mean_taped(out.with_empty_tape()),
        };
        let rec = self.nll(ctx, out, x);
        let sample = self.mean_taped(self.decode(ctx, prior_z.retaped()));
        let name = self.regulariser.unwrap_or("none");
        GanTerms { terms: StepTerms { rec, reg: (name, enc.reg), stats: enc.stats }, fakes: vec![judged, sample], recon }
    }

    /// The images an adversarial term judges, on the tape: the reconstruction of `x` (unless the
    /// model is a generator alone) and the decoded prior codes `prior_z`.
    pub fn fakes<D: Backend>(
        &self,
        ctx: &Ctx<D>,
        x: Tensor<(usize, usize), f32, D>,
        noise: Tensor<(usize, usize), f32, D>,
        prior_z: Tensor<(usize, usize), f32, D>,
    ) -> Vec<Tensor2<D>> {
        let sample = self.mean_taped(self.decode(ctx, prior_z.retaped()));
        if self.generator_only {
            return vec![sample];
        }
        // The reconstruction alone: no likelihood term, which the discriminator's phase would discard.
        let enc = self.encode(ctx, x, noise);
        vec![self.mean_taped(self.decode(ctx, enc.z)), sample]
    }

    /// Encoder and latent for a batch `x` (batch-last); `noise` drives the posterior sample.
    pub fn encode<D: Backend>(
        &self,
        ctx: &Ctx<D>,
        x: Tensor<(usize, usize), f32, D>,
        noise: Tensor<(usize, usize), f32, D>,
    ) -> Encoded<D> {
        let h = self.encoder.forward(ctx, Act { t: x.retaped(), shape: self.data_shape, needs_grad: false });
        self.latent.encode(ctx, h, noise)
    }

    /// A quantized latent's z_e `(dim·h·w, batch)` for data `x`, before the codebook lookup; `None`
    /// for the other latents.
    pub fn pre_quantization<D: Backend>(&self, ctx: &Ctx<D>, x: Tensor<(usize, usize), f32, D>) -> Option<Vec<f32>> {
        let LatentModel::Quantized(q) = &self.latent else { return None };
        let h = self.encoder.forward(ctx, Act { t: x.retaped(), shape: self.data_shape, needs_grad: false });
        Some(q.pre_quantized(ctx, h))
    }

    /// As [`Model::encode`] for images on the tape (generated ones whose gradient must reach the
    /// decoder through the encoder, as in IntroVAE's decoder loss).
    pub fn encode_taped<D: Backend>(&self, ctx: &Ctx<D>, x: Tensor2<D>, noise: Tensor<(usize, usize), f32, D>) -> Encoded<D> {
        let h = self.encoder.forward(ctx, Act { t: x, shape: self.data_shape, needs_grad: true });
        self.latent.encode(ctx, h, noise)
    }

    /// The Gaussian posterior q(z|x) for data `x`, on the tape; `None` unless the latent is Gaussian
    /// or spatial (validation requires one for the objectives that call this).
    pub fn posterior<D: Backend>(&self, ctx: &Ctx<D>, x: Tensor<(usize, usize), f32, D>) -> Option<Posterior<D>> {
        let h = self.encoder.forward(ctx, Act { t: x.retaped(), shape: self.data_shape, needs_grad: false });
        self.latent.posterior(ctx, h)
    }

    /// As [`Model::posterior`] for images on the tape (gradients reach whatever made them).
    pub fn posterior_taped<D: Backend>(&self, ctx: &Ctx<D>, x: Tensor2<D>) -> Option<Posterior<D>> {
        let h = self.encoder.forward(ctx, Act { t: x, shape: self.data_shape, needs_grad: true });
        self.latent.posterior(ctx, h)
    }

    /// The likelihood's mean image for decoder output, on the tape: σ(logits) for Bernoulli, the
    /// output itself for Gaussian. Unclamped, so squared errors, a discriminator and an
    /// introspective encoder keep their gradient everywhere: a clamp to [0, 1] stops it at every
    /// pixel outside, and a generator that overshoots to black never comes back (measured: a plain
    /// GAN with a Gaussian head drew only black images after 400 steps).
    pub fn mean_taped<D: Backend>(&self, out: Tensor2<D>) -> Tensor2<D> {
        match self.likelihood {
            LikelihoodHead::Bernoulli => out.sigmoid(),
            LikelihoodHead::Gaussian { .. } | LikelihoodHead::GaussianLearned { .. } => out,
        }
    }

    /// −log p(x | decoder output), summed over pixels and averaged over the batch.
    pub fn nll<D: Backend>(&self, ctx: &Ctx<D>, out: Tensor2<D>, x: Tensor<(usize, usize), f32, D>) -> Tensor<(), f32, D, OT<D>> {
        let (features, batch) = *out.shape();
        match self.likelihood {
            LikelihoodHead::Bernoulli => {
                // BCE-with-logits (the numerically stable form) averaged over elements, as dfdx's
                // `binary_cross_entropy_with_logits_loss` composes it (sum, then times 1/n in f32),
                // with the sum from the backend's parallel kernel.
                let inv_n = (1.0 / (features * batch) as f64) as f32;
                D::bce_with_logits_sum(out, x) * inv_n * features as f32
            }
            LikelihoodHead::Gaussian { sigma } => {
                let sq = (out - x).square().sum::<(), _>() * (0.5 / (batch as f32 * sigma * sigma));
                sq + features as f32 * (sigma.ln() + 0.5 * (2.0 * std::f32::consts::PI).ln())
            }
            LikelihoodHead::GaussianLearned { log_sigma } => {
                let ls = ctx.param(log_sigma).sum::<(), _>();
                let sq = (out - x).square().sum::<(), _>() * (0.5 / batch as f32);
                sq * (ls.with_empty_tape() * -2.0).exp()
                    + ls * features as f32
                    + features as f32 * 0.5 * (2.0 * std::f32::consts::PI).ln()
            }
        }
    }

    /// Maps decoder output to images in [0, 1].
    pub fn to_image<D: Backend>(&self, out: Tensor2<D>) -> Tensor<(usize, usize), f32, D> {
        let (out, _) = out.split_tape();
        match self.likelihood {
            LikelihoodHead::Bernoulli => out.sigmoid(),
            LikelihoodHead::Gaussian { .. } | LikelihoodHead::GaussianLearned { .. } => out.clamp(0.0, 1.0),
        }
    }
}

fn latent_kind(l: &spec::Latent) -> &'static str {
    l.kind()
}
