//! IntroVAE (Huang et al. 2018, "IntroVAE: Introspective Variational Autoencoders for
//! Photographic Image Synthesis", eqs. 10–11), as the official code trains it (hhb072/IntroVAE,
//! `main.py` `train()` and `networks.py`): the encoder doubles as the critic, scoring images by the
//! KL of their posterior.
//!
//! Where the paper and the code differ, vaelab follows the code:
//! - L_rec = Σ_pixels (x_r − x)² per image, averaged over the batch, **without** the paper's ½
//!   (`reconstruction_loss(..., size_average=False)`);
//! - the KL weight `weight_kl` multiplies the encoder's whole adversarial term and the decoder's KLs;
//!   `weight_neg` (the paper's α) only the hinges;
//! - **the encoder is updated first**; the decoder's KL(x_r), KL(x_p) are then taken by the updated
//!   encoder, of the images the old parameters made (x_r = D(z) with the z of the encoder's pass);
//! - the decoder's gradient keeps weight_rec·∇L_rec from the encoder's backward pass
//!   (`optimizerG.zero_grad()` is commented out between the two), so L_G includes weight_rec·L_rec.
//!
//! The training loop runs the two passes in that order (`super::SplitObjective::step`).

use super::{decoder_phase_images, Routed, Scalar, StepData};
use crate::model::Model;
use dfdx::prelude::*;
use vaelab_nn::{constant, Backend, Ctx, Tensor2};
use vaelab_spec::Adversarial;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IntroVae {
    pub margin: f32,
    pub weight_rec: f32,
    pub weight_kl: f32,
    pub weight_neg: f32,
    /// Plain-VAE steps before the introspective objective starts.
    pub warmup: usize,
}

/// Codes without gradient, batch-last: the z ~ q(z|x) of the encoder's pass, which the decoder's
/// pass decodes again (the official code's `rec` comes from that forward pass).
pub type Codes<D> = Tensor<(usize, usize), f32, D>;

impl IntroVae {
    pub fn from_spec(adversarial: &Adversarial) -> Option<IntroVae> {
        match *adversarial {
            Adversarial::IntroVae { margin, weight_rec, weight_kl, weight_neg, warmup } => {
                Some(IntroVae { margin, weight_rec, weight_kl, weight_neg, warmup })
            }
            _ => None,
        }
    }

    /// L_rec = Σ_pixels (x_r − x)² per image, averaged over the batch (official: no ½).
    fn squared_error<D: Backend>(x_r: Tensor2<D>, x: &Tensor<(usize, usize), f32, D>) -> Scalar<D> {
        let batch = x.shape().1 as f32;
        (x_r - x.clone()).square().sum::<(), _>() * (1.0 / batch)
    }

    /// The encoder's loss
    /// weight_rec·L_rec + weight_kl·(KL(x) + ½·weight_neg·([m − KL(sg x_r)]⁺ + [m − KL(sg x_p)]⁺)),
    /// the codes z it drew, and x_p = D(z_p) with its own tape (the loss holds only sg(x_p)), which
    /// the decoder's loss reuses: the encoder's update leaves the decoder as it is.
    pub fn encoder_loss<D: Backend>(&self, model: &Model, ctx: &Ctx<D>, data: &StepData<D>) -> (Routed<D>, Codes<D>, Tensor2<D>) {
        let (x, noise) = (data.x, data.noise);
        let enc = model.encode(ctx, x.clone(), noise.clone());
        let z = constant(&enc.z);
        let real_kl = enc.reg;
        // This pass updates the encoder only: the decoder is frozen here, so its layers skip the
        // weight gradients that the official code computes and then discards (the decoder's pass
        // decodes z again).
        let x_r = model.mean_taped(ctx.frozen(|| model.decode(ctx, enc.z)));
        let x_p = model.mean_taped(model.decode(ctx, data.prior_z.clone().retaped()));
        // sg(x_r), sg(x_p): constants, so the hinge's gradient cannot flow back through the decoder
        // into the encoder's z (the official `rec.detach()`, `fake.detach()`); encoded as data, the
        // encoder's first layer skips their gradient too.
        let (x_r_sg, x_p_sg) = (constant(&x_r), constant(&x_p));
        let rec = Self::squared_error(x_r, x);
        let kl_r = model.encode(ctx, x_r_sg, noise.clone()).into_reg();
        let kl_p = model.encode(ctx, x_p_sg, noise.clone()).into_reg();
        let values = [real_kl.as_vec()[0], kl_r.as_vec()[0], kl_p.as_vec()[0], rec.as_vec()[0]];
        let hinge = (kl_r.negate() + self.margin).relu() + (kl_p.negate() + self.margin).relu();
        let loss = rec * self.weight_rec + (real_kl + hinge * (0.5 * self.weight_neg)) * self.weight_kl;
        let terms = vec![("kl", values[0]), ("kl_rec", values[1]), ("kl_fake", values[2]), ("sse", values[3])];
        (Routed { loss, terms }, z, x_p)
    }

    /// The decoder's loss weight_rec·L_rec + ½·weight_kl·(KL(x_r) + KL(x_p)) for x_r = D(z) with the
    /// encoder pass's `z`, the KLs scored by the encoder as it is now (after its update), with
    /// gradients reaching the decoder through that scoring. `x_p`: see [`decoder_phase_images`].
    pub fn decoder_loss<D: Backend>(
        &self,
        model: &Model,
        ctx: &Ctx<D>,
        data: &StepData<D>,
        z: &Codes<D>,
        x_p: Option<Tensor2<D>>,
    ) -> Routed<D> {
        let (x, noise) = (data.x, data.noise);
        let (x_r, x_p) = decoder_phase_images(model, ctx, data, z, x_p);
        let rec = Self::squared_error(x_r.with_empty_tape(), x);
        // The encoder only scores here (this phase updates the decoder): frozen, its layers skip
        // their parameters' gradients, which the official code computes and then discards.
        let (kl_r, kl_p) = ctx.frozen(|| {
            let kl = |image| model.encode_taped(ctx, image, noise.clone()).into_reg();
            (kl(x_r), kl(x_p))
        });
        let loss = rec * self.weight_rec + (kl_r + kl_p) * (0.5 * self.weight_kl);
        Routed { loss, terms: vec![] }
    }
}
