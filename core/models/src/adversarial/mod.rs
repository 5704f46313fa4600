//! Adversarial and introspective objectives beside the losses (spec `adversarial:`): a GAN
//! discriminator ([`gan`]), and objectives that give the encoder and the decoder losses of their
//! own: IntroVAE ([`intro`]), Soft-IntroVAE ([`soft_intro`]) and VPGA ([`vpga`]). Each routes its
//! losses to parameter groups with their own optimizers (`vaelab_nn::optim::Group`).

pub mod gan;
pub mod intro;
pub mod soft_intro;
pub mod vpga;

pub use gan::Gan;
pub use intro::IntroVae;
pub use soft_intro::SoftIntroVae;
pub use vpga::Vpga;

use crate::model::Model;
use dfdx::prelude::*;
use vaelab_nn::optim::{backward, StepFailure};
use vaelab_nn::{Backend, Ctx, Tensor2, OT};
use vaelab_spec::Adversarial;

pub type Scalar<D> = Tensor<(), f32, D, OT<D>>;

/// Values without gradient, batch-last: noise, codes.
pub type Codes<D> = Tensor<(usize, usize), f32, D>;

/// A step's inputs: the batch, the posterior noise ε and the prior codes z_p (batch-last).
pub struct StepData<'a, D: Device<f32>> {
    pub x: &'a Tensor<(usize, usize), f32, D>,
    pub noise: &'a Tensor<(usize, usize), f32, D>,
    pub prior_z: &'a Tensor<(usize, usize), f32, D>,
    /// Fresh ε for the further reparameterisations of a step (each drawn from its own stream, as
    /// each of the authors' `reparameterize` calls draws anew): the re-encoded reconstruction and
    /// fake of the encoder's pass, then those of the decoder's pass.
    pub renoise: &'a [Codes<D>; 4],
}

/// The stream names of [`StepData::renoise`] (`vaelab_nn::batch::normal_noise` purposes).
pub const RENOISE_PURPOSES: [&str; 4] = ["renoise-rec-e", "renoise-fake-e", "renoise-rec-d", "renoise-fake-d"];

/// A finished step of a [`SplitObjective`].
pub struct SplitStep {
    /// Every term by name, plus each group's loss as `encoder` and `decoder`.
    pub values: std::collections::BTreeMap<String, f32>,
    pub lr: f32,
    /// The encoder group's gradient norm before clipping.
    pub grad_norm: f32,
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

/// The decoder phase's images of IntroVAE and Soft-IntroVAE, on the tape: x_r = D(z) from the
/// encoder pass's codes `z`, and x_p = D(z_p), the encoder pass's own when given (`x_p`), else
/// decoded here (the same values: the encoder's update leaves the decoder as it is).
pub fn decoder_phase_images<D: Backend>(
    model: &Model,
    ctx: &Ctx<D>,
    data: &StepData<D>,
    z: &Codes<D>,
    x_p: Option<Tensor2<D>>,
) -> (Tensor2<D>, Tensor2<D>) {
    let x_r = model.mean_taped(model.decode(ctx, z.clone().retaped()));
    let x_p = x_p.unwrap_or_else(|| model.mean_taped(model.decode(ctx, data.prior_z.clone().retaped())));
    (x_r, x_p)
}

/// An objective that gives the encoder group and the decoder group losses of their own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SplitObjective {
    Intro(IntroVae),
    SoftIntro(SoftIntroVae),
    Vpga(Vpga),
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

    /// One training step in the authors' order. The encoder's loss is taken, and the encoder group
    /// updated; then, for IntroVAE and Soft-IntroVAE, the decoder's loss is taken at the updated
    /// parameters (of the z the encoder's pass drew, and of the prior sample that pass decoded, its
    /// tape kept: one decoder pass fewer) and the decoder group updated. VPGA's one loss
    /// serves both groups, its gradient taken before either update. Running statistics move once,
    /// from the encoder's pass. A failure leaves the parameters of the group it stopped before
    /// unchanged (a non-finite encoder term, or a plugin failure in the encoder's pass: nothing).
    #[allow(clippy::too_many_arguments)]
    pub fn step<D: Backend>(
        &self,
        model: &Model,
        store: &mut vaelab_nn::ParamStore<D>,
        opt_encoder: &mut vaelab_nn::optim::Optimizer<D>,
        opt_decoder: &mut vaelab_nn::optim::Optimizer<D>,
        data: &StepData<D>,
        seed: u64,
        step: usize,
    ) -> Result<SplitStep, StepFailure> {
        let mut values = std::collections::BTreeMap::new();
        let ctx = Ctx::new(store, true, seed, step as u64);
        // IntroVAE and Soft-IntroVAE hand over the codes z they drew and D(z_p) with its tape.
        let (encoder, kept) = match self {
            SplitObjective::Intro(iv) => {
                let (r, z, x_p) = iv.encoder_loss(model, &ctx, data);
                (r, Some((z, x_p)))
            }
            SplitObjective::SoftIntro(s) => {
                let (r, z, x_p) = s.encoder_loss(model, &ctx, data);
                (r, Some((z, x_p)))
            }
            SplitObjective::Vpga(v) => (v.loss(model, &ctx, data), None),
        };
        for (name, v) in encoder.terms.iter().copied() {
            if !v.is_finite() {
                return Err(StepFailure::NonFinite(name.to_string(), v));
            }
            values.insert(name.to_string(), v);
        }
        // Running statistics move from the encoder's pass only.
        let e = backward(encoder.loss, "encoder", ctx)?;
        let e_value = e.value;
        let Some((z, x_p)) = kept else {
            // VPGA: one loss, whose `encoder` and `decoder` terms it logs itself.
            let (lr, grad_norm) = e.step(store, |_| true, &mut [opt_encoder, opt_decoder], step);
            return Ok(SplitStep { values, lr, grad_norm });
        };
        let (lr, grad_norm) = e.step(store, |_| true, &mut [opt_encoder], step);
        let ctx = Ctx::new(store, true, seed, step as u64);
        let decoder = match self {
            SplitObjective::Intro(iv) => iv.decoder_loss(model, &ctx, data, &z, Some(x_p)),
            SplitObjective::SoftIntro(s) => s.decoder_loss(model, &ctx, data, &z, Some(x_p)),
            SplitObjective::Vpga(_) => unreachable!("VPGA returned above"),
        };
        let d = backward(decoder.loss, "decoder", ctx)?;
        let d_value = d.value;
        d.step(store, |_| false, &mut [opt_decoder], step);
        values.insert("encoder".into(), e_value);
        values.insert("decoder".into(), d_value);
        Ok(SplitStep { values, lr, grad_norm })
    }
}
