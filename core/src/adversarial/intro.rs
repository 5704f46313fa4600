//! IntroVAE (Huang et al. 2018, "IntroVAE: Introspective Variational Autoencoders for
//! Photographic Image Synthesis", eqs. 10–11, with the official code's averaged hinge terms): the
//! encoder doubles as the critic, scoring images by the KL of their posterior.
//!
//! Each step evaluates the encoder's loss and the decoder's loss in two forward passes at the same
//! parameters and the same random draws; the first updates only the encoder group, the second only
//! the decoder group (`crate::optim::Group`).

use super::{Routed, Scalar, StepData};
use crate::model::Model;
use crate::nn::{stop_gradient, Backend, Ctx, Tensor2};
use crate::spec::Adversarial;
use dfdx::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IntroVae {
    pub margin: f32,
    pub alpha: f32,
    pub beta: f32,
    /// Plain-VAE steps before the introspective objective starts.
    pub warmup: usize,
}

impl IntroVae {
    pub fn from_spec(adversarial: &Adversarial) -> Option<IntroVae> {
        match *adversarial {
            Adversarial::IntroVae { margin, alpha, beta, warmup } => Some(IntroVae { margin, alpha, beta, warmup }),
            _ => None,
        }
    }

    /// L_AE = ½‖x_r − x‖², summed over pixels, averaged over the batch.
    fn half_squared_error<D: Backend>(x_r: Tensor2<D>, x: &Tensor<(usize, usize), f32, D>) -> Scalar<D> {
        let batch = x.shape().1 as f32;
        (x_r - x.clone()).square().sum::<(), _>() * (0.5 / batch)
    }

    /// KL(x), the reconstructions x_r = D(z), z ~ q(z|x), and prior samples x_p = D(z_p), on the
    /// tape (the encoder's operations travel with x_r).
    fn generate<D: Backend>(model: &Model, ctx: &Ctx<D>, data: &StepData<D>) -> (Scalar<D>, Tensor2<D>, Tensor2<D>) {
        let enc = model.encode(ctx, data.x.clone(), data.noise.clone());
        let x_r = model.mean_taped(model.decode(ctx, enc.z));
        (enc.reg, x_r, model.mean_taped(model.decode(ctx, data.prior_z.clone().retaped())))
    }

    /// The encoder's loss: KL(x) + α·½([m − KL(sg x_r)]⁺ + [m − KL(sg x_p)]⁺) + β·L_AE.
    pub fn encoder_loss<D: Backend>(&self, model: &Model, ctx: &Ctx<D>, data: &StepData<D>) -> Routed<D> {
        let (x, noise) = (data.x, data.noise);
        let (real_kl, x_r, x_p) = Self::generate(model, ctx, data);
        // ng(x_r), ng(x_p): new tensors, so the hinge's gradient cannot flow back through the
        // decoder into the encoder's z.
        let (x_r_sg, x_p_sg) = (stop_gradient(&x_r), stop_gradient(&x_p));
        let ae = Self::half_squared_error(x_r, x);
        let kl_r = model.encode_taped(ctx, x_r_sg, noise.clone()).into_reg();
        let kl_p = model.encode_taped(ctx, x_p_sg, noise.clone()).into_reg();
        let values = [real_kl.as_vec()[0], kl_r.as_vec()[0], kl_p.as_vec()[0], ae.as_vec()[0]];
        let hinge = (kl_r.negate() + self.margin).relu() + (kl_p.negate() + self.margin).relu();
        let loss = real_kl + hinge * (0.5 * self.alpha) + ae * self.beta;
        Routed { loss, terms: vec![("kl", values[0]), ("kl_rec", values[1]), ("kl_fake", values[2]), ("rec_ae", values[3])] }
    }

    /// The decoder's loss: α·½(KL(x_r) + KL(x_p)) + β·L_AE, with gradients through the encoder's
    /// scoring of the decoder's images.
    pub fn decoder_loss<D: Backend>(&self, model: &Model, ctx: &Ctx<D>, data: &StepData<D>) -> Routed<D> {
        let (x, noise) = (data.x, data.noise);
        let (_, x_r, x_p) = Self::generate(model, ctx, data);
        let ae = Self::half_squared_error(x_r.with_empty_tape(), x);
        let kl_r = model.encode_taped(ctx, x_r, noise.clone()).into_reg();
        let kl_p = model.encode_taped(ctx, x_p, noise.clone()).into_reg();
        let loss = (kl_r + kl_p) * (0.5 * self.alpha) + ae * self.beta;
        Routed { loss, terms: vec![] }
    }
}
