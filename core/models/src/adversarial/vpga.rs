//! VPGA: variational perceptual generative autoencoders (Zhang, Huang & Bach 2020, "Perceptual
//! Generative Autoencoders", §3–4, with the terms as in the authors' code). The encoder learns to
//! invert the decoder in latent space, which makes D(z), z ~ N(0, I) match the data without a critic.
//!
//! With μ, log σ² from the encoder E, the decoder D, sg the stop-gradient and f̃ the encoder mean with
//! frozen weights (gradients pass through to its input), means taken over elements:
//! - L_img = mean(x − D(μ(x)))²;
//! - L_zN = mean(μ(D(z)) − z)², z ~ N(0, I);
//! - L_zH = mean(μ(D(sg μ(x))) − sg μ(x))²;
//! - L_vrec = mean_{b,j}([f̃(D(sg μ + σ⊙ε)) − f̃(D(sg μ))]_j / n_j)², n_j = sg √(mean_b μ_bj²);
//! - L_kl = mean_{b,j} −½(1 + log σ² − μ² − σ²);
//! - the encoder minimises L_img + a_N·L_zN + a_H·L_zH + a_v·L_vrec + a_kl·L_kl,
//!   the decoder L_img + a_v·L_vrec.
//!
//! One pass computes both. The decoder's terms (L_img, L_vrec) have the same weights in both losses,
//! and the encoder-only terms are built so that no gradient reaches the decoder's weights (the images
//! L_zN and L_zH encode are constants: D(z) decoded off the tape, and the values of D(sg μ) that
//! L_vrec computes anyway; L_kl never touches D). So the gradient of the sum, restricted to each
//! group, is exactly that group's loss gradient: the caller steps both groups from it.

use super::{value, Routed, StepData};
use crate::latent::kl_elements;
use crate::model::Model;
use dfdx::prelude::*;
use vaelab_nn::{constant, Backend, Ctx, Tensor2};
use vaelab_spec::Adversarial;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Vpga {
    pub a_n: f32,
    pub a_h: f32,
    pub a_v: f32,
    pub a_kl: f32,
}

/// n_j below this is raised to it: a latent whose means are all 0 would divide by zero.
const MIN_NORM: f32 = 1e-6;

impl Vpga {
    pub fn from_spec(adversarial: &Adversarial) -> Option<Vpga> {
        match *adversarial {
            Adversarial::Vpga { a_n, a_h, a_v, a_kl } => Some(Vpga { a_n, a_h, a_v, a_kl }),
            _ => None,
        }
    }

    /// The summed loss whose gradient serves both groups; its terms are the unweighted L_img, L_zN,
    /// L_zH (when a_H > 0), L_vrec and L_kl, plus the two groups' losses `encoder` and `decoder`.
    pub fn loss<D: Backend>(&self, model: &Model, ctx: &Ctx<D>, data: &StepData<D>) -> Routed<D> {
        let post = model.posterior(ctx, data.x.clone()).expect("validated: a Gaussian latent");
        let (mu, logvar) = (post.mu, post.logvar);
        let (rows, batch) = *mu.shape();
        let mu_sg = constant(&mu);
        // 1/n_j per latent element, broadcast over the batch.
        let mu_values = mu_sg.as_vec();
        let inv_norm: Vec<f32> = (0..rows)
            .flat_map(|j| {
                let row = &mu_values[j * batch..(j + 1) * batch];
                let n = (row.iter().map(|m| m * m).sum::<f32>() / batch as f32).sqrt().max(MIN_NORM);
                std::iter::repeat_n(1.0 / n, batch)
            })
            .collect();
        let inv_norm = ctx.store.dev.tensor_from_vec(inv_norm, (rows, batch));
        let mean_sq = |t: Tensor2<D>| t.square().mean::<(), _>();
        let encoder_mean = |image: Tensor2<D>| model.posterior_taped(ctx, image).expect("validated: a Gaussian latent").mu;

        let kl = (kl_elements(mu.with_empty_tape(), logvar.with_empty_tape())).mean::<(), _>() * -0.5;
        let img = mean_sq(model.mean_taped(model.decode(ctx, mu)) - data.x.clone());
        // Encoder-only terms. The decoder must not move, and its inputs are constants (z, sg μ), so
        // the images it makes for them are constants too: decoded off the tape, no backward pass runs
        // through the decoder (it would reach nothing) nor into the encoder's input. The gradient
        // that reaches the encoder's weights is the same as through a frozen, taped decoder.
        let decoded_prior = constant(&ctx.untaped(|| model.mean_taped(model.decode(ctx, data.prior_z.clone().retaped()))));
        let z_n = mean_sq(model.posterior(ctx, decoded_prior).expect("validated: a Gaussian latent").mu - data.prior_z.clone());
        // L_vrec: the decoder gets its gradient; the encoder only through σ; f̃ is frozen.
        let sigma = (logvar * 0.5).exp();
        let perturbed = model.mean_taped(model.decode(ctx, sigma * data.noise.clone() + mu_sg.clone()));
        let centre = model.mean_taped(model.decode(ctx, mu_sg.clone().retaped()));
        // L_zH decodes sg μ as `centre` does, with the same weights and the same step's batch
        // statistics and dropout masks: the same values, so they are reused (one decoder pass fewer).
        let decoded_means = (self.a_h > 0.0).then(|| constant(&centre));
        let (f_perturbed, f_centre) = ctx.frozen(|| (encoder_mean(perturbed), encoder_mean(centre)));
        let vrec = mean_sq((f_perturbed - f_centre) * inv_norm);
        let z_h = decoded_means
            .map(|images| mean_sq(model.posterior(ctx, images).expect("validated: a Gaussian latent").mu - mu_sg.clone()));

        let (v_img, v_zn, v_zh, v_vrec, v_kl) =
            (value(&img), value(&z_n), z_h.as_ref().map_or(0.0, |t| value(t)), value(&vrec), value(&kl));
        let decoder_loss = v_img + self.a_v * v_vrec;
        let encoder_loss = decoder_loss + self.a_n * v_zn + self.a_h * v_zh + self.a_kl * v_kl;
        let mut terms = vec![("img", v_img), ("z_n", v_zn), ("vrec", v_vrec), ("kl", v_kl)];
        if z_h.is_some() {
            terms.push(("z_h", v_zh));
        }
        terms.extend([("encoder", encoder_loss), ("decoder", decoder_loss)]);
        let mut loss = img + vrec * self.a_v + z_n * self.a_n + kl * self.a_kl;
        if let Some(z_h) = z_h {
            loss = loss + z_h * self.a_h;
        }
        Routed { loss, terms }
    }
}
