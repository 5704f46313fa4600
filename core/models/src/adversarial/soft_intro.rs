//! Soft-IntroVAE (Daniel & Tamar 2021, "Soft-IntroVAE: Analyzing and Improving the Introspective
//! Variational Autoencoder", Algorithm 1), in the exponential form of the authors' code: the hard
//! IntroVAE hinge becomes a smooth exp(−ELBO) on generated images.
//!
//! With s = 1/(C·H·W), L_rec(a, b) = Σ_pixels (a − b)² per image, KL(·) per image, x_r = D(z),
//! z ~ q(z|x), x_p = D(z_p), z_p ~ N(0, I), and x_rr, x_pr the reconstructions of sg x_r, sg x_p:
//! - encoder: s(β_rec·L_rec(x, x_r) + β_kl·KL(x)) +
//!   ¼[mean exp(−2s(β_rec·L_rec(x_r, x_rr) + β_neg·KL(x_r))) + mean exp(−2s(β_rec·L_rec(x_p, x_pr) + β_neg·KL(x_p)))],
//!   generated images entering through sg;
//! - decoder: s(β_rec·L_rec(x, x_r) + ½β_kl(KL(x_r) + KL(x_p)) + ½γ_r·β_rec(L_rec(sg x_r, D(sg z_r)) + L_rec(sg x_p, D(sg z_p')))),
//!   with z = sg z as in the authors' decoder step.
//!
//! Batch means everywhere (the authors' `reduction="mean"`: sum over pixels, mean over images).
//! The log names the squared errors `sse`, `sse_rec`, `sse_fake` (`rec` stays the likelihood's term
//! of the warm-up).
//!
//! As in the authors' `train_soft_intro_vae.py`:
//! - the encoder is updated first; the decoder's pass then decodes the encoder pass's z again
//!   (`model.decoder(z.detach())`) and scores the images with the updated encoder;
//! - every reparameterisation draws fresh noise: z, and in each pass z_r and z_p' of the
//!   re-encoded images (`StepData::renoise`);
//! - the encoder's L_rec(x_r, x_rr) keeps x_r on the tape (`calc_reconstruction_loss(rec, rec_rec)`
//!   with `rec` not detached), so that term's gradient also reaches the encoder through
//!   x_r = D(z(x)). `attach_rec_target: false` detaches it instead (the paper's reading).

use super::{decoder_phase_images, per_example_sse, value, Codes, Routed, StepData};
use crate::model::Model;
use dfdx::prelude::*;
use vaelab_nn::{constant, Backend, Ctx, Tensor2};
use vaelab_spec::Adversarial;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftIntroVae {
    pub beta_rec: f32,
    pub beta_kl: f32,
    pub beta_neg: f32,
    pub gamma_r: f32,
    /// Whether the encoder's L_rec(x_r, x_rr) keeps x_r on the tape (the authors' code).
    pub attach_rec_target: bool,
    /// Plain-VAE steps before the introspective objective starts.
    pub warmup: usize,
}

impl SoftIntroVae {
    pub fn from_spec(adversarial: &Adversarial) -> Option<SoftIntroVae> {
        match *adversarial {
            Adversarial::SoftIntroVae { beta_rec, beta_kl, beta_neg, gamma_r, attach_rec_target, warmup } => {
                Some(SoftIntroVae { beta_rec, beta_kl, beta_neg, gamma_r, attach_rec_target, warmup })
            }
            _ => None,
        }
    }

    /// s = 1/(C·H·W): the authors' scale that makes the terms per-pixel.
    fn scale<D: Backend>(data: &StepData<D>) -> f32 {
        1.0 / data.x.shape().0 as f32
    }

    /// The encoder's loss, the codes z it drew, and x_p = D(z_p) with its own tape (the loss holds
    /// only sg(x_p)) for the decoder's loss; see the module documentation.
    pub fn encoder_loss<D: Backend>(&self, model: &Model, ctx: &Ctx<D>, data: &StepData<D>) -> (Routed<D>, Codes<D>, Tensor2<D>) {
        let s = Self::scale(data);
        let post = model.posterior(ctx, data.x.clone()).expect("validated: a Gaussian latent");
        let (z, kl_real) = post.sample_and_kl(data.noise.clone());
        let codes = constant(&z);
        // This pass updates the encoder only, so the decoders that serve only it (of z, and of the
        // generated images' codes below) are frozen: their layers skip the weight gradients that the
        // authors' code computes and then zeroes. D(z_p) keeps its weights' gradients: the decoder's
        // pass reuses it.
        let x_r = model.mean_taped(ctx.frozen(|| model.decode(ctx, z)));
        let x_p = model.mean_taped(model.decode(ctx, data.prior_z.clone().retaped()));
        // sg(x_r), sg(x_p) as constants: encoded as data, the encoder's first layer skips their gradient.
        let (x_r_sg, x_p_sg) = (constant(&x_r), constant(&x_p));
        // The target of L_rec(x_r, x_rr): x_r itself, on the tape (the authors' code), or its values.
        let x_r_target = self.attach_rec_target.then(|| x_r.with_empty_tape());
        let rec = per_example_sse(x_r, data.x.clone()).mean::<(), _>();
        let kl = kl_real.mean::<(), _>();
        // The negative ELBO of a generated image, per image: β_rec·L_rec(x_g, D(z_g)) + β_neg·KL(x_g),
        // z_g drawn with fresh noise.
        let neg_elbo = |image: Codes<D>, target: Option<Tensor2<D>>, noise: &Codes<D>| {
            let post = model.posterior(ctx, image.clone()).expect("validated: a Gaussian latent");
            let (z, kl) = post.sample_and_kl(noise.clone());
            let x_gg = model.mean_taped(ctx.frozen(|| model.decode(ctx, z)));
            let rec = match target {
                Some(target) => (x_gg - target).square().sum::<(usize,), Axis<0>>(),
                None => per_example_sse(x_gg, image),
            };
            let values = (value(&kl.with_empty_tape().mean::<(), _>()), value(&rec.with_empty_tape().mean::<(), _>()));
            (rec * self.beta_rec + kl * self.beta_neg, values)
        };
        let (elbo_r, (kl_r, rec_r)) = neg_elbo(x_r_sg, x_r_target, &data.renoise[0]);
        // The fake's target is D(z_p), which only the decoder moves: its values serve.
        let (elbo_p, (kl_p, rec_p)) = neg_elbo(x_p_sg, None, &data.renoise[1]);
        let exp_r = (elbo_r * (-2.0 * s)).exp().mean::<(), _>();
        let exp_p = (elbo_p * (-2.0 * s)).exp().mean::<(), _>();
        let terms = vec![
            ("sse", value(&rec)),
            ("kl", value(&kl)),
            ("kl_rec", kl_r),
            ("kl_fake", kl_p),
            ("sse_rec", rec_r),
            ("sse_fake", rec_p),
            ("exp_elbo_rec", value(&exp_r)),
            ("exp_elbo_fake", value(&exp_p)),
        ];
        let loss = (rec * self.beta_rec + kl * self.beta_kl) * s + (exp_r + exp_p) * 0.25;
        (Routed { loss, terms }, codes, x_p)
    }

    /// The decoder's loss for x_r = D(z) with the encoder pass's `z`, scored by the updated encoder;
    /// see the module documentation. `x_p`: see [`decoder_phase_images`].
    pub fn decoder_loss<D: Backend>(
        &self,
        model: &Model,
        ctx: &Ctx<D>,
        data: &StepData<D>,
        z: &Codes<D>,
        x_p: Option<Tensor2<D>>,
    ) -> Routed<D> {
        let s = Self::scale(data);
        let (x_r, x_p) = decoder_phase_images(model, ctx, data, z, x_p);
        let rec = per_example_sse(x_r.with_empty_tape(), data.x.clone()).mean::<(), _>();
        // KL of each generated image, with its gradient reaching the decoder through the encoder, and
        // the reconstruction of the image from sg(z_g) for the γ_r term.
        let score = |image: Tensor2<D>, noise: &Codes<D>| {
            let target = constant(&image);
            // The encoder only scores (this phase updates the decoder): frozen, as in IntroVAE.
            let post = ctx.frozen(|| model.posterior_taped(ctx, image)).expect("validated: a Gaussian latent");
            let z = post.sample_values(noise.clone());
            let kl = post.kl().mean::<(), _>();
            let rec = per_example_sse(model.mean_taped(model.decode(ctx, z)), target).mean::<(), _>();
            (kl, rec)
        };
        let (kl_r, rec_r) = score(x_r, &data.renoise[2]);
        let (kl_p, rec_p) = score(x_p, &data.renoise[3]);
        let loss =
            (rec * self.beta_rec + (kl_r + kl_p) * (0.5 * self.beta_kl) + (rec_r + rec_p) * (0.5 * self.gamma_r * self.beta_rec))
                * s;
        Routed { loss, terms: vec![] }
    }
}
