//! Optimizers over a [`ParamStore`]: Adam (with decoupled weight decay) and SGD with momentum,
//! learning-rate schedules and global-norm gradient clipping. State tensors are keyed by
//! parameter name so that checkpoints can save and restore them.

use crate::update::{Rule, State};
use crate::{Backend, Flat, ParamGroup, ParamStore, Role};
use dfdx::prelude::*;
use std::collections::BTreeMap;
use vaelab_spec::{GradClip, OptimizerSpec, Schedule};

/// The parameters an optimizer updates. Losses routed to one group (IntroVAE's encoder and decoder
/// losses, a GAN's discriminator loss) get one optimizer each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// The encoder and the decoder groups together: everything but a discriminator and a learned prior.
    Model,
    /// [`ParamGroup::Encoder`]: the encoder and the latent's parameters.
    Encoder,
    /// [`ParamGroup::Decoder`]: the decoder and the likelihood's parameters.
    Decoder,
    /// [`ParamGroup::Discriminator`].
    Discriminator,
    /// [`ParamGroup::Prior`]: a learned prior over codes, fitted after the model by `vaelab train-prior`.
    Prior,
}

impl Group {
    /// Whether parameters of `group` are this optimizer's.
    pub fn contains(self, group: ParamGroup) -> bool {
        match self {
            Group::Model => matches!(group, ParamGroup::Encoder | ParamGroup::Decoder),
            Group::Encoder => group == ParamGroup::Encoder,
            Group::Decoder => group == ParamGroup::Decoder,
            Group::Discriminator => group == ParamGroup::Discriminator,
            Group::Prior => group == ParamGroup::Prior,
        }
    }

    /// The checkpoint metadata key of this group's update count (the first optimizer's is `updates`).
    pub fn updates_key(self) -> &'static str {
        match self {
            Group::Model => "updates.model",
            Group::Encoder => "updates.encoder",
            Group::Decoder => "updates.decoder",
            Group::Discriminator => "updates.discriminator",
            Group::Prior => "updates.prior",
        }
    }
}

pub struct Optimizer<D: Device<f32>> {
    /// The parameters this optimizer updates.
    pub group: Group,
    spec: OptimizerSpec,
    schedule: Schedule,
    total_steps: usize,
    clip: GradClip,
    /// Per-parameter state: Adam's first and second moments, or SGD's velocity (in `first`).
    pub first: BTreeMap<String, Flat<D>>,
    pub second: BTreeMap<String, Flat<D>>,
    /// Number of updates applied so far (Adam's bias correction uses it).
    pub updates: u64,
}

impl<D: Device<f32>> Optimizer<D> {
    pub fn new(spec: OptimizerSpec, schedule: Schedule, clip: GradClip, total_steps: usize) -> Self {
        Optimizer {
            group: Group::Model,
            spec,
            schedule,
            total_steps,
            clip,
            first: BTreeMap::new(),
            second: BTreeMap::new(),
            updates: 0,
        }
    }

    /// An optimizer for one parameter group only.
    pub fn for_group(group: Group, spec: OptimizerSpec, schedule: Schedule, clip: GradClip, total_steps: usize) -> Self {
        Optimizer { group, ..Self::new(spec, schedule, clip, total_steps) }
    }

    /// Whether this optimizer updates parameters of `group`.
    pub fn owns(&self, group: ParamGroup) -> bool {
        self.group.contains(group)
    }

    /// The learning rate at `step` (0-based), after the schedule.
    pub fn lr(&self, step: usize) -> f32 {
        let base = self.spec.lr();
        let factor = match self.schedule {
            Schedule::Constant => 1.0,
            Schedule::Warmup { steps } => ((step + 1) as f32 / steps as f32).min(1.0),
            Schedule::Cosine { min_factor } => {
                let t = step as f32 / self.total_steps.max(1) as f32;
                min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f32::consts::PI * t).cos())
            }
            Schedule::Step { every, gamma } => gamma.powi((step / every) as i32),
        };
        base * factor
    }
}

impl<D: Backend> Optimizer<D> {
    /// Applies one update from `grads` (gradients of the loss w.r.t. the store's tensors).
    /// Returns the global gradient norm before clipping.
    pub fn step(&mut self, store: &mut ParamStore<D>, grads: &mut Gradients<f32, D>, step: usize) -> f32 {
        let lr = self.lr(step);
        let ids: Vec<_> = (0..store.len())
            .map(crate::ParamId)
            .filter(|&id| store.get(id).role == Role::Trainable && self.owns(store.get(id).group))
            .collect();
        let norm = ids.iter().map(|&id| D::grad_sq_sum(grads, &store.get(id).tensor)).sum::<f64>().sqrt() as f32;
        let scale = match self.clip {
            GradClip::Norm(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        self.updates += 1;
        let rule = match self.spec {
            OptimizerSpec::Adam { beta1, beta2, eps, weight_decay, .. } => {
                Rule::Adam { lr, beta1, beta2, eps, weight_decay, t: self.updates.min(i32::MAX as u64) as i32 }
            }
            OptimizerSpec::Sgd { momentum, .. } => Rule::Sgd { lr, momentum },
        };
        for id in ids {
            let name = store.get(id).name.clone();
            let state = State { first: self.first.remove(&name), second: self.second.remove(&name) };
            let (p, state) = D::update(&store.get(id).tensor, grads, scale, state, rule);
            if let Some(m) = state.first {
                self.first.insert(name.clone(), m);
            }
            if let Some(v) = state.second {
                self.second.insert(name, v);
            }
            store.set(id, p);
        }
        norm
    }
}

/// Why a step stopped before changing a parameter group.
#[derive(Debug)]
pub enum StepFailure {
    /// A loss term is NaN or infinite.
    NonFinite(String, f32),
    /// A plugin block failed; its message.
    Plugin(String),
}

/// A loss taken backward: its value, its gradients and the running statistics (BatchNorm, a VQ
/// codebook's EMA) its forward pass computed, not yet written.
pub struct BackwardPass<D: Backend> {
    pub value: f32,
    pub grads: Gradients<f32, D>,
    buffers: Vec<(crate::ParamId, Vec<f32>)>,
}

/// Takes `loss` backward, or says why the step stops: its value is not finite (named `name`), or a
/// plugin block failed in the pass. Consumes `ctx`, whose borrow of the store ends here so that
/// [`BackwardPass::step`] can change it.
pub fn backward<D: Backend>(
    loss: Tensor<(), f32, D, crate::OT<D>>,
    name: &str,
    ctx: crate::Ctx<D>,
) -> Result<BackwardPass<D>, StepFailure> {
    let value = loss.as_vec()[0];
    if !value.is_finite() {
        return Err(StepFailure::NonFinite(name.into(), value));
    }
    let grads = loss.backward();
    if let Some(failure) = ctx.failures.take() {
        return Err(StepFailure::Plugin(failure));
    }
    let buffers = ctx.buffer_updates.take();
    Ok(BackwardPass { value, grads, buffers })
}

impl<D: Backend> BackwardPass<D> {
    /// Writes the running statistics of the groups `keep` accepts, then steps each optimizer on
    /// these gradients in turn. Returns the first optimizer's learning rate and gradient norm.
    pub fn step(
        mut self,
        store: &mut ParamStore<D>,
        keep: impl Fn(ParamGroup) -> bool,
        optimizers: &mut [&mut Optimizer<D>],
        step: usize,
    ) -> (f32, f32) {
        for (id, v) in std::mem::take(&mut self.buffers) {
            if keep(store.get(id).group) {
                store.set_values(id, v);
            }
        }
        let mut first = None;
        for opt in optimizers.iter_mut() {
            let lr = opt.lr(step);
            let norm = opt.step(store, &mut self.grads, step);
            first.get_or_insert((lr, norm));
        }
        first.unwrap_or((0.0, 0.0))
    }
}
