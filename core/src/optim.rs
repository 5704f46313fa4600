//! Optimizers over a [`ParamStore`]: Adam (with decoupled weight decay) and SGD with momentum,
//! learning-rate schedules and global-norm gradient clipping. State tensors are keyed by
//! parameter name so that checkpoints can save and restore them.

use crate::nn::{Flat, ParamStore, Role};
use crate::spec::{GradClip, Optimizer as OptSpec, Schedule};
use dfdx::prelude::*;
use std::collections::BTreeMap;

pub struct Optimizer<D: Device<f32>> {
    spec: OptSpec,
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
    pub fn new(spec: OptSpec, schedule: Schedule, clip: GradClip, total_steps: usize) -> Self {
        Optimizer { spec, schedule, total_steps, clip, first: BTreeMap::new(), second: BTreeMap::new(), updates: 0 }
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

    /// Applies one update from `grads` (gradients of the loss w.r.t. the store's tensors).
    /// Returns the global gradient norm before clipping.
    pub fn step(&mut self, store: &mut ParamStore<D>, grads: &mut Gradients<f32, D>, step: usize) -> f32 {
        let lr = self.lr(step);
        let ids: Vec<_> = (0..store.len()).map(crate::nn::ParamId).filter(|&id| store.get(id).role == Role::Trainable).collect();
        let mut gs: Vec<Flat<D>> = ids
            .iter()
            .map(|&id| {
                let t = &store.get(id).tensor;
                grads.try_alloc_for(t).expect("gradient allocation");
                grads.get(t)
            })
            .collect();
        let norm = gs.iter().map(|g| g.clone().square().sum::<(), _>().as_vec()[0] as f64).sum::<f64>().sqrt() as f32;
        if let GradClip::Norm(max) = self.clip {
            if norm > max {
                let scale = max / (norm + 1e-6);
                gs = gs.into_iter().map(|g| g * scale).collect();
            }
        }
        self.updates += 1;
        let t = self.updates as i32;
        for (&id, g) in ids.iter().zip(gs) {
            let name = store.get(id).name.clone();
            let p = store.get(id).tensor.clone();
            let dev = p.device().clone();
            let n = p.shape().0;
            let zeros = || dev.zeros_like(&(n,));
            let new_p = match self.spec {
                OptSpec::Adam { beta1, beta2, eps, weight_decay, .. } => {
                    // Kingma & Ba 2015, Algorithm 1; decoupled weight decay from Loshchilov & Hutter 2019.
                    let m = self.first.remove(&name).unwrap_or_else(zeros) * beta1 + g.clone() * (1.0 - beta1);
                    let v = self.second.remove(&name).unwrap_or_else(zeros) * beta2 + g.square() * (1.0 - beta2);
                    let m_hat = m.clone() / (1.0 - beta1.powi(t));
                    let v_hat = v.clone() / (1.0 - beta2.powi(t));
                    let update = m_hat / (v_hat.sqrt() + eps);
                    self.first.insert(name.clone(), m);
                    self.second.insert(name.clone(), v);
                    let decayed = if weight_decay > 0.0 { p.clone() * (1.0 - lr * weight_decay) } else { p };
                    decayed - update * lr
                }
                OptSpec::Sgd { momentum, .. } => {
                    let velocity = if momentum > 0.0 {
                        let v = self.first.remove(&name).unwrap_or_else(zeros) * momentum + g;
                        self.first.insert(name.clone(), v.clone());
                        v
                    } else {
                        g
                    };
                    p - velocity * lr
                }
            };
            store.set(id, new_p);
        }
        norm
    }
}
