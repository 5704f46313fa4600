//! A GAN discriminator beside the model (spec `adversarial: Gan(…)`).
//!
//! A training step with a GAN runs in two phases, each updating only its own parameter group:
//! 1. the discriminator, `d_steps` times: the model makes fakes (reconstructions of the batch and
//!    decoded prior samples) with no gradient, and the discriminator's loss on real images and
//!    those fakes updates `discriminator.*` with its own optimizer;
//! 2. the generator (encoder and decoder): the model's losses plus `weight ×` the generator loss of
//!    its fakes under the updated discriminator; gradients reaching the discriminator are dropped.

use dfdx::prelude::*;
use vaelab_nn::{Act, Backend, BlockSource, Ctx, FeatShape, ParamStore, Sequential, Tensor2, OT};
use vaelab_nn::{BuildError, ParamGroup};
use vaelab_spec::{Adversarial, GanLoss, Layer};

/// A built discriminator and its loss.
pub struct Gan {
    pub discriminator: Sequential,
    pub loss: GanLoss,
    pub weight: f32,
    pub d_steps: usize,
    /// γ of the R1 penalty (0: none).
    pub r1_gamma: f32,
    /// Whether the generator loss on reconstructions reaches the encoder (`Adversarial::Gan`).
    pub trains_encoder: bool,
    /// The discriminator layer whose features judge reconstructions (`Adversarial::Gan`).
    pub feature_layer: Option<usize>,
}

type Scalar<D> = Tensor<(), f32, D, OT<D>>;

impl Gan {
    /// Builds the discriminator's parameters under `discriminator.` (none for `Adversarial::None`).
    pub fn build<D: Device<f32>>(
        adversarial: &Adversarial,
        data_shape: FeatShape,
        store: &mut ParamStore<D>,
        blocks: &dyn BlockSource,
    ) -> Result<Option<Gan>, BuildError> {
        let Adversarial::Gan { discriminator, loss, weight, d_steps, r1_gamma, gan_trains_encoder, feature_layer, .. } =
            adversarial
        else {
            return Ok(None);
        };
        let net = store.in_group(ParamGroup::Discriminator, |store| {
            Sequential::build(discriminator, data_shape, "discriminator", "adversarial.discriminator", store, blocks)
        })?;
        check_one_logit(net.output)?;
        let (loss, weight, d_steps, r1_gamma, trains_encoder) = (*loss, *weight, *d_steps, *r1_gamma, *gan_trains_encoder);
        let feature_layer = *feature_layer;
        Ok(Some(Gan { discriminator: net, loss, weight, d_steps, r1_gamma, trains_encoder, feature_layer }))
    }

    /// The summary rows of `vaelab check` for the discriminator (checked as [`Gan::build`] checks it).
    pub fn summary(
        layers: &[Layer],
        data_shape: FeatShape,
        blocks: &dyn BlockSource,
    ) -> Result<Vec<vaelab_nn::SummaryRow>, BuildError> {
        let (output, rows) = vaelab_nn::infer(layers, data_shape, "discriminator", "adversarial.discriminator", blocks)?;
        check_one_logit(output)?;
        Ok(rows)
    }

    /// Logits `(1, batch)` of images `(features, batch)` in [0, 1].
    fn logits<D: Backend>(&self, ctx: &Ctx<D>, images: Tensor2<D>, needs_grad: bool) -> Tensor2<D> {
        self.discriminator.forward(ctx, Act { t: images, shape: self.discriminator.input, needs_grad }).t
    }

    /// The discriminator's loss on `real` images and `fakes` (values only; no gradient reaches the
    /// model), averaged over the fake sets.
    pub fn discriminator_loss<D: Backend>(
        &self,
        ctx: &Ctx<D>,
        real: Tensor<(usize, usize), f32, D>,
        fakes: &[Tensor<(usize, usize), f32, D>],
    ) -> Scalar<D> {
        let real_logits = self.logits(ctx, real.retaped(), false);
        let mut loss = match self.loss {
            GanLoss::NonSaturating => mean_softplus(real_logits, -1.0),
            GanLoss::Hinge => mean((real_logits.negate() + 1.0).relu()),
        };
        let share = 1.0 / fakes.len().max(1) as f32;
        for fake in fakes {
            let l = self.logits(ctx, fake.clone().retaped(), false);
            let term = match self.loss {
                GanLoss::NonSaturating => mean_softplus(l, 1.0),
                GanLoss::Hinge => mean((l + 1.0).relu()),
            };
            loss = loss + term * share;
        }
        loss
    }

    /// The R1 penalty on `real` images (Mescheder et al. 2018, "Which Training Methods for GANs do
    /// actually Converge?", eq. 9): P = γ/2 · mean_i ‖∇ₓ D(x_i)‖², D the logit. Its gradient in the
    /// discriminator's parameters is a Hessian-vector product, ∇_θ P = (γ/B)·Σ_i (∂_θ∇ₓD(x_i))ᵀ c_i with
    /// c = ∇ₓ D(x) held constant, and Σ_i ∇ₓD(x_i)·c_i is the directional derivative of Σ_i D along c.
    /// dfdx differentiates once, so that derivative is taken by a central difference:
    /// S = (γ/B)·(Σ D(x + εc) − Σ D(x − εc))/(2ε), whose gradient is ∇_θ P up to O(ε²), with ε chosen
    /// so that εc moves pixels by 1e-2 (RMS). Returns (S, on the tape; P's value), or `None` when γ = 0.
    pub fn r1<D: Backend>(&self, ctx: &Ctx<D>, real: &Tensor<(usize, usize), f32, D>) -> Option<(Scalar<D>, f32)> {
        if self.r1_gamma == 0.0 {
            return None;
        }
        let batch = real.shape().1 as f32;
        let logits = self.logits(ctx, real.clone().retaped(), true);
        let c = logits.sum::<(), _>().backward().get(real).as_vec();
        let rms = (c.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / c.len().max(1) as f64).sqrt();
        let penalty = 0.5 * self.r1_gamma * (c.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / batch as f64) as f32;
        if rms == 0.0 {
            return Some((self.logits(ctx, real.clone().retaped(), true).sum::<(), _>() * 0.0, penalty));
        }
        let eps = (1e-2 / rms) as f32;
        let shift = real.device().tensor_from_vec(c, *real.shape()) * eps;
        let up = self.logits(ctx, (real.clone() + shift.clone()).retaped(), true).sum::<(), _>();
        let down = self.logits(ctx, (real.clone() - shift).retaped(), true).sum::<(), _>();
        Some(((up - down) * (self.r1_gamma / (2.0 * eps * batch)), penalty))
    }

    /// The reconstruction term in discriminator features (Larsen et al. 2016, eq. 6–7): with
    /// p(D_n(x) | z) = N(D_n(x̃), I), −log p = ½·Σ_features (D_n(x̃) − D_n(x))² + const, averaged over
    /// the batch. `recon` is x̃ on the model's tape; D_n(x) is a constant. `None` without
    /// `feature_layer`.
    pub fn feature_loss<D: Backend>(
        &self,
        ctx: &Ctx<D>,
        real: &Tensor<(usize, usize), f32, D>,
        recon: Tensor2<D>,
    ) -> Option<Scalar<D>> {
        let layer = self.feature_layer?;
        let input = self.discriminator.input;
        let target =
            self.discriminator.forward_through(ctx, Act { t: real.clone().retaped(), shape: input, needs_grad: false }, layer);
        let target = vaelab_nn::constant(&target.t);
        // Frozen: the generator's phase does not update the discriminator (see `generator_loss`).
        let features =
            ctx.frozen(|| self.discriminator.forward_through(ctx, Act { t: recon, shape: input, needs_grad: true }, layer).t);
        let batch = features.shape().1 as f32;
        Some((features - target).square().sum::<(), _>() * (0.5 / batch))
    }

    /// The generator's loss for `fakes` on the model's tape, averaged over the fake sets. The
    /// discriminator is frozen: this phase does not update it, so its layers skip their parameters'
    /// gradients (PyTorch's loop computes them and zeroes them before the next update).
    pub fn generator_loss<D: Backend>(&self, ctx: &Ctx<D>, fakes: Vec<Tensor2<D>>) -> Scalar<D> {
        let share = 1.0 / fakes.len().max(1) as f32;
        let mut total: Option<Scalar<D>> = None;
        for fake in fakes {
            let l = ctx.frozen(|| self.logits(ctx, fake, true));
            let term = match self.loss {
                GanLoss::NonSaturating => mean_softplus(l, -1.0),
                GanLoss::Hinge => mean(l.negate()),
            } * share;
            total = Some(match total {
                None => term,
                Some(t) => t + term,
            });
        }
        total.expect("at least one fake set")
    }
}

/// A discriminator must end in one logit per image.
fn check_one_logit(output: FeatShape) -> Result<(), BuildError> {
    if output == FeatShape::Flat(1) {
        return Ok(());
    }
    let message = format!("the discriminator must output one logit per image, but its layers output {output}");
    Err(BuildError::new("adversarial.discriminator".into(), message))
}

fn mean<D: Backend>(t: Tensor2<D>) -> Scalar<D> {
    t.mean::<(), _>()
}

/// The mean of softplus(sign·x) = log(1 + e^{sign·x}) over all elements, for sign = ±1: binary
/// cross-entropy with logits against target 0 (sign +1) or 1 (sign −1), whose dfdx kernel is
/// stable for large |x| and has the exact gradient sign·σ(sign·x) everywhere (including x = 0,
/// where a max(x, 0) + log(1 + e^−|x|) composition would give 0).
pub fn mean_softplus<D: Backend>(x: Tensor2<D>, sign: f32) -> Scalar<D> {
    let target = if sign > 0.0 { 0.0 } else { 1.0 };
    let shape = *x.shape();
    let t = x.device().ones_like(&shape) * target;
    dfdx::losses::binary_cross_entropy_with_logits_loss(x, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mean softplus(±x) against log(1 + e^{±x}) in f64, and its gradient against ±σ(±x)/n,
    /// including |x| = 60 where the naive form overflows and x = 0.
    #[test]
    fn mean_softplus_values_and_gradient() {
        let dev = Cpu::default();
        let xs = [-60.0f32, -3.0, -0.5, 0.0, 0.5, 3.0, 60.0];
        let n = xs.len() as f64;
        for sign in [1.0f32, -1.0] {
            let x = dev.tensor_from_vec(xs.to_vec(), (1, xs.len())).retaped::<OT<Cpu>>();
            let y = mean_softplus(x.with_empty_tape(), sign);
            let value = y.as_vec()[0] as f64;
            let g = y.backward().get(&x).as_vec();
            let sp = |v: f64| if v > 30.0 { v } else { (1.0 + v.exp()).ln() };
            let want: f64 = xs.iter().map(|&v| sp(sign as f64 * v as f64)).sum::<f64>() / n;
            assert!((value - want).abs() < 1e-5 * want, "sign {sign}: {value} vs {want}");
            for (i, &v) in xs.iter().enumerate() {
                let s = sign as f64;
                let sigma = 1.0 / (1.0 + (-s * v as f64).exp());
                assert!((g[i] as f64 - s * sigma / n).abs() < 1e-6, "sign {sign}, x {v}: {} vs {}", g[i], s * sigma / n);
            }
        }
    }
}
