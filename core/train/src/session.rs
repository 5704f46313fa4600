//! A run being trained: the model, its parameters and optimizers, and one training step in its
//! phases: the discriminator's (a GAN), then either a split objective's encoder and decoder
//! updates or one joint update. Each phase ends in `optim::backward` and `BackwardPass::step`.

use super::{term_weights, TrainError};
use dfdx::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vaelab_datasets::ImageBatch;
use vaelab_models::adversarial::{Gan, SplitObjective, StepData, RENOISE_PURPOSES};
use vaelab_models::latent::PriorDraw;
use vaelab_models::model::{GanTerms, Model};
use vaelab_nn::batch::{normal_noise, to_tensor};
use vaelab_nn::optim::{backward, Group, Optimizer, StepFailure};
use vaelab_nn::{Backend, BlockSource, Ctx, FeatShape, ParamGroup, ParamStore, Tensor2, OT};
use vaelab_runs::checkpoint::{self, CheckpointError, CheckpointInfo};
use vaelab_spec::{Adversarial, Experiment};

type Codes<D> = Tensor<(usize, usize), f32, D>;

/// A GAN's generator pass, made once a step by the discriminator's phase and handed, on the tape,
/// to the generator's phase.
enum Generated<D: Backend> {
    /// A generator from noise: its fakes.
    Fakes(Vec<Tensor2<D>>),
    /// A model with an encoder (VAE-GAN, VQ-GAN): its terms, fakes and reconstruction.
    Terms(Box<GanTerms<D>>),
}

/// The fakes the discriminator judges, wherever `generated` holds them.
fn taped_fakes<D: Backend>(generated: &mut Generated<D>) -> &mut Vec<Tensor2<D>> {
    match generated {
        Generated::Fakes(fakes) => fakes,
        Generated::Terms(terms) => &mut terms.fakes,
    }
}

/// What one step gives the log besides its terms.
pub struct StepSummary {
    pub loss: f32,
    pub lr: f32,
    pub grad_norm: f32,
    pub weights: Vec<(&'static str, f32)>,
    pub stats: BTreeMap<String, f32>,
}

pub struct Session<'a, D: Backend> {
    pub spec: &'a Experiment,
    dev: D,
    model: Model,
    gan: Option<Gan>,
    split: Option<SplitObjective>,
    store: ParamStore<D>,
    /// The model's optimizer (the encoder's under a split objective).
    opt: Optimizer<D>,
    /// The discriminator's (a GAN) or the decoder's (a split objective), if any.
    opt_aux: Option<Optimizer<D>>,
}

impl<'a, D: Backend> Session<'a, D> {
    /// Builds the model, a discriminator if the spec has one, and the optimizers.
    pub fn build(dev: D, spec: &'a Experiment, shape: FeatShape, blocks: &dyn BlockSource) -> Result<Self, TrainError> {
        let mut store = ParamStore::new(dev.clone(), spec.seed);
        let model = Model::build(&spec.model, shape, &mut store, blocks).map_err(|e| TrainError::Model(e.to_string()))?;
        let gan = Gan::build(&spec.adversarial, shape, &mut store, blocks).map_err(|e| TrainError::Model(e.to_string()))?;
        let split = SplitObjective::from_spec(&spec.adversarial);
        let t = &spec.train;
        let for_group =
            |group, optimizer| Optimizer::for_group(group, optimizer, t.schedule.clone(), t.grad_clip.clone(), t.steps);
        // The first optimizer updates the model (only the encoder under a split objective); the
        // second, if any, the discriminator of a GAN or the decoder of a split objective.
        let opt = for_group(if split.is_some() { Group::Encoder } else { Group::Model }, t.optimizer.clone());
        let opt_aux = match &spec.adversarial {
            Adversarial::Gan { optimizer, .. } => {
                Some(for_group(Group::Discriminator, optimizer.clone().unwrap_or_else(|| t.optimizer.clone())))
            }
            _ if split.is_some() => Some(for_group(Group::Decoder, t.optimizer.clone())),
            _ => None,
        };
        Ok(Session { spec, dev, model, gan, split, store, opt, opt_aux })
    }

    /// Loads parameters and optimizer state from `checkpoint`; returns its step.
    pub fn resume(&mut self, checkpoint: &Path) -> Result<usize, CheckpointError> {
        let mut opts: Vec<&mut Optimizer<D>> = std::iter::once(&mut self.opt).chain(self.opt_aux.as_mut()).collect();
        Ok(checkpoint::load(checkpoint, &mut self.store, &mut opts)?.step)
    }

    /// Writes a checkpoint of `step` into `dir`.
    pub fn save(&self, dir: &Path, step: usize) -> Result<PathBuf, CheckpointError> {
        let opts: Vec<&Optimizer<D>> = std::iter::once(&self.opt).chain(self.opt_aux.as_ref()).collect();
        checkpoint::save(dir, &self.store, &opts, &CheckpointInfo { step, updates: self.opt.updates })
    }

    /// One training step (0-based `step`) on `images`; every logged term goes into `values`.
    pub fn step(
        &mut self,
        step: usize,
        images: &ImageBatch,
        values: &mut BTreeMap<String, f32>,
    ) -> Result<StepSummary, StepFailure> {
        let (seed, batch) = (self.spec.seed, self.spec.data.batch);
        let code_rows = self.model.latent.code_shape().len();
        let x = to_tensor(&self.dev, images);
        let noise = normal_noise(&self.dev, seed, "noise", step as u64, code_rows, batch);
        // Prior codes for the adversarial terms, from the latent's own prior (code frequencies for
        // a quantized latent), drawn before any update of this step changes them.
        let prior = (self.gan.is_some() || self.split.is_some())
            .then(|| self.model.sample_prior(&self.store, PriorDraw::new(seed, "gan-prior", batch).at(step as u64)));
        let generated = match &prior {
            Some(prior) => self.discriminator_phase(step, &x, &noise, prior, values)?,
            None => None,
        };
        match (self.split.filter(|o| step >= o.warmup()), &prior) {
            (Some(objective), Some(prior)) => self.split_phase(objective, step, &x, &noise, prior, values),
            _ => self.joint_phase(step, x, noise, generated, values),
        }
    }

    /// A GAN's discriminator, `d_steps` times, on fakes without gradient; only its own parameters
    /// and running statistics change. The generator's whole forward pass is made once, before the
    /// discriminator's updates, which change neither the generator nor its inputs: every update
    /// would see the same fakes, and the generator's phase needs exactly this pass (terms, fakes
    /// and reconstruction, on the tape). It is returned for that phase, and its running statistics
    /// are written here.
    fn discriminator_phase(
        &mut self,
        step: usize,
        x: &Codes<D>,
        noise: &Codes<D>,
        prior_z: &Codes<D>,
        values: &mut BTreeMap<String, f32>,
    ) -> Result<Option<Generated<D>>, StepFailure> {
        let Session { spec, model, gan: Some(gan), store, opt_aux: Some(opt_d), .. } = self else { return Ok(None) };
        let generator_ctx = Ctx::new(store, true, spec.seed, step as u64);
        let mut generated = if model.generator_only {
            Generated::Fakes(model.fakes(&generator_ctx, x.clone(), noise.clone(), prior_z.clone()))
        } else {
            let (x, noise, z) = (x.clone(), noise.clone(), prior_z.clone());
            Generated::Terms(Box::new(model.terms_and_fakes(
                &generator_ctx,
                x,
                noise,
                z,
                gan.trains_encoder,
                gan.feature_layer.is_some(),
            )))
        };
        let (fakes, tapes): (Vec<_>, Vec<_>) =
            std::mem::take(taped_fakes(&mut generated)).into_iter().map(|f| f.split_tape()).unzip();
        if let Some(failure) = generator_ctx.failures.take() {
            return Err(StepFailure::Plugin(failure));
        }
        let generator_buffers = generator_ctx.buffer_updates.take();
        drop(generator_ctx);
        let mut d_loss_value = 0.0;
        for _ in 0..gan.d_steps {
            let ctx = Ctx::new(store, true, spec.seed, step as u64);
            let mut d_loss = gan.discriminator_loss(&ctx, x.clone(), &fakes);
            d_loss_value = d_loss.as_vec()[0];
            if !d_loss_value.is_finite() {
                return Err(StepFailure::NonFinite("discriminator".into(), d_loss_value));
            }
            // R1: its value is logged; its gradient comes from the surrogate (see `Gan::r1`).
            if let Some((surrogate, penalty)) = gan.r1(&ctx, x) {
                if !penalty.is_finite() {
                    return Err(StepFailure::NonFinite("r1".into(), penalty));
                }
                d_loss = d_loss + surrogate;
                values.insert("r1".to_string(), penalty);
            }
            let pass = backward(d_loss, "discriminator", ctx)?;
            pass.step(store, |g| g == ParamGroup::Discriminator, &mut [opt_d], step);
        }
        values.insert("discriminator".to_string(), d_loss_value);
        // The generator's pass holds no discriminator layer: all its statistics are the model's.
        for (id, v) in generator_buffers {
            store.set_values(id, v);
        }
        *taped_fakes(&mut generated) = fakes.into_iter().zip(tapes).map(|(f, tape)| f.put_tape(tape)).collect();
        Ok(Some(generated))
    }

    /// A split objective: the encoder's update, then the decoder's at the updated encoder (the
    /// authors' order; see `SplitObjective::step`).
    fn split_phase(
        &mut self,
        objective: SplitObjective,
        step: usize,
        x: &Codes<D>,
        noise: &Codes<D>,
        prior_z: &Codes<D>,
        values: &mut BTreeMap<String, f32>,
    ) -> Result<StepSummary, StepFailure> {
        let (seed, batch) = (self.spec.seed, self.spec.data.batch);
        let code_rows = self.model.latent.code_shape().len();
        let renoise = RENOISE_PURPOSES.map(|purpose| normal_noise(&self.dev, seed, purpose, step as u64, code_rows, batch));
        let data = StepData { x, noise, prior_z, renoise: &renoise };
        let opt_dec = self.opt_aux.as_mut().expect("a split objective has a decoder optimizer");
        let done = objective.step(&self.model, &mut self.store, &mut self.opt, opt_dec, &data, seed, step)?;
        values.extend(done.values);
        let loss = values["encoder"] + values["decoder"];
        Ok(StepSummary { loss, lr: done.lr, grad_norm: done.grad_norm, weights: vec![], stats: BTreeMap::new() })
    }

    /// One update of the whole model by the spec's weighted losses, plus a GAN's generator loss and
    /// feature reconstruction (a plain VAE's step, and a split objective's warm-up). `generated`:
    /// a GAN's forward pass from the discriminator's phase, on the tape.
    fn joint_phase(
        &mut self,
        step: usize,
        x: Codes<D>,
        noise: Codes<D>,
        generated: Option<Generated<D>>,
        values: &mut BTreeMap<String, f32>,
    ) -> Result<StepSummary, StepFailure> {
        let Session { spec, model, gan, split, store, opt, opt_aux, .. } = self;
        let ctx = Ctx::new(store, true, spec.seed, step as u64);
        let (terms, adversarial, feature) = match (gan.as_ref(), generated) {
            (Some(gan), Some(Generated::Fakes(fakes))) => (None, Some(gan.generator_loss(&ctx, fakes) * gan.weight), None),
            (Some(gan), Some(Generated::Terms(step_terms))) => {
                let feature = step_terms.recon.and_then(|recon| gan.feature_loss(&ctx, &x, recon));
                (Some(step_terms.terms), Some(gan.generator_loss(&ctx, step_terms.fakes) * gan.weight), feature)
            }
            (Some(_), None) => unreachable!("a GAN's discriminator phase hands over its generator pass"),
            (None, _) => (Some(model.terms(&ctx, x, noise)), None, None),
        };
        let weights = term_weights(&spec.losses, step);
        let stats: BTreeMap<String, f32> = terms.iter().flat_map(|t| &t.stats).map(|(k, v)| (k.to_string(), *v)).collect();
        let mut pending = match terms {
            Some(t) => [("rec", Some(t.rec)), (t.reg.0, Some(t.reg.1))],
            None => [("rec", None), ("none", None)],
        };
        let mut total_loss: Option<Tensor<(), f32, D, OT<D>>> = None;
        for (name, w) in &weights {
            let term = pending.iter_mut().find(|(n, _)| n == name).and_then(|(_, t)| t.take()).expect("each term once");
            let v = term.as_vec()[0];
            if !v.is_finite() {
                return Err(StepFailure::NonFinite(name.to_string(), v));
            }
            values.insert(name.to_string(), v);
            let weighted = term * *w;
            total_loss = Some(match total_loss {
                None => weighted,
                Some(acc) => acc + weighted,
            });
        }
        // The terms beside the spec's losses, logged unweighted: the generator loss (its weight
        // divided back out) and the reconstruction in discriminator features.
        let gan_weight = gan.as_ref().map_or(1.0, |g| g.weight.max(f32::MIN_POSITIVE));
        let extra = adversarial.map(|t| ("generator", t, gan_weight)).into_iter().chain(feature.map(|t| ("feature", t, 1.0)));
        for (name, term, weight) in extra {
            let v = term.as_vec()[0] / weight;
            if !v.is_finite() {
                return Err(StepFailure::NonFinite(name.to_string(), v));
            }
            values.insert(name.to_string(), v);
            total_loss = Some(match total_loss {
                None => term,
                Some(acc) => acc + term,
            });
        }
        // Validation guarantees a loss term or a discriminator (a generator from noise).
        let loss = total_loss.expect("validated: a loss term or an adversarial term");
        let pass = backward(loss, "loss", ctx)?;
        let loss = pass.value;
        // The discriminator saw only fakes in this phase: its statistics move in its own.
        let keep = |g| g != ParamGroup::Discriminator;
        let (lr, grad_norm) = match (split, opt_aux.as_mut()) {
            // A split objective's plain-VAE warm-up trains the decoder group too, from the same gradients.
            (Some(_), Some(opt_dec)) => pass.step(store, keep, &mut [opt, opt_dec], step),
            _ => pass.step(store, keep, &mut [opt], step),
        };
        Ok(StepSummary { loss, lr, grad_norm, weights, stats })
    }
}
