//! Adversarial and introspective objectives beside the losses (spec `adversarial:`): a GAN
//! discriminator ([`gan`]), and objectives that give the encoder and the decoder losses of their
//! own: IntroVAE ([`intro`]), Soft-IntroVAE ([`soft_intro`]) and VPGA ([`vpga`]). Each routes its
//! losses to parameter groups with their own optimizers (`crate::optim::Group`).

pub mod gan;
pub mod intro;
pub mod soft_intro;
pub mod vpga;

pub use gan::Gan;
pub use intro::IntroVae;
pub use soft_intro::SoftIntroVae;
pub use vpga::Vpga;

use crate::model::Model;
use crate::nn::{Backend, Ctx, Tensor2, OT};
use crate::spec::Adversarial;
use dfdx::prelude::*;

pub type Scalar<D> = Tensor<(), f32, D, OT<D>>;

/// A step's inputs: the batch, the posterior noise ε and the prior codes z_p (batch-last).
pub struct StepData<'a, D: Device<f32>> {
    pub x: &'a Tensor<(usize, usize), f32, D>,
    pub noise: &'a Tensor<(usize, usize), f32, D>,
    pub prior_z: &'a Tensor<(usize, usize), f32, D>,
}

/// One loss with the values of its terms for the log.
pub struct Routed<D: Device<f32>> {
    pub loss: Scalar<D>,
    pub terms: Vec<(&'static str, f32)>,
}

/// The value of a scalar loss.
pub fn value<D: Backend>(t: &Scalar<D>) -> f32 {
    t.as_vec()[0]
}

/// Σ_pixels (a − b)² per image: `(batch,)` on `a`'s tape.
pub fn per_example_sse<D: Backend>(a: Tensor2<D>, b: Tensor<(usize, usize), f32, D>) -> Tensor<(usize,), f32, D, OT<D>> {
    (a - b).square().sum::<(usize,), Axis<0>>()
}

/// An objective that gives the encoder group and the decoder group losses of their own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SplitObjective {
    Intro(IntroVae),
    SoftIntro(SoftIntroVae),
    Vpga(Vpga),
}

/// A step of a [`SplitObjective`]: the encoder's loss, and the decoder's when it differs. `None`
/// means one loss serves both: the gradient of `encoder`, restricted to each group, is that group's
/// loss gradient (VPGA builds its loss that way).
pub struct SplitLosses<D: Device<f32>> {
    pub encoder: Routed<D>,
    pub decoder: Option<Routed<D>>,
}

impl SplitObjective {
    pub fn from_spec(adversarial: &Adversarial) -> Option<SplitObjective> {
        IntroVae::from_spec(adversarial)
            .map(SplitObjective::Intro)
            .or_else(|| SoftIntroVae::from_spec(adversarial).map(SplitObjective::SoftIntro))
            .or_else(|| Vpga::from_spec(adversarial).map(SplitObjective::Vpga))
    }

    /// Steps trained by the spec's `losses` as a plain VAE before this objective takes over.
    pub fn warmup(&self) -> usize {
        match self {
            SplitObjective::Intro(iv) => iv.warmup,
            SplitObjective::SoftIntro(s) => s.warmup,
            SplitObjective::Vpga(_) => 0,
        }
    }

    /// The losses at the current parameters; `ctx_d` serves the decoder's pass when there is one.
    pub fn losses<D: Backend>(&self, model: &Model, ctx_e: &Ctx<D>, ctx_d: &Ctx<D>, data: &StepData<D>) -> SplitLosses<D> {
        let (mut encoder, decoder) = match self {
            SplitObjective::Intro(iv) => (iv.encoder_loss(model, ctx_e, data), iv.decoder_loss(model, ctx_d, data)),
            SplitObjective::SoftIntro(s) => (s.encoder_loss(model, ctx_e, data), s.decoder_loss(model, ctx_d, data)),
            SplitObjective::Vpga(v) => return SplitLosses { encoder: v.loss(model, ctx_e, data), decoder: None },
        };
        // Each group's loss is logged as `encoder` and `decoder` beside the terms.
        let (e, d) = (value(&encoder.loss), value(&decoder.loss));
        encoder.terms.extend([("encoder", e), ("decoder", d)]);
        SplitLosses { encoder, decoder: Some(decoder) }
    }
}
