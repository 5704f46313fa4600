//! One parameter's optimizer update, as data (the rule and the state) and as generic dfdx ops. The
//! optimizers (`optim`) choose the rule per step; the backends apply it (`Backend::update`, fused on
//! the CPU in `fused_optim`). It sits below both so that neither depends on the other.

use super::params::Flat;
use dfdx::prelude::*;

/// One parameter's update rule at one step, with every hyper-parameter resolved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// Adam (Kingma & Ba 2015, Algorithm 1) at update count `t` (1-based), with decoupled weight
    /// decay (Loshchilov & Hutter 2019).
    Adam { lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, t: i32 },
    /// SGD; with momentum, v ← μ·v + g and p ← p − lr·v.
    Sgd { lr: f32, momentum: f32 },
}

/// A parameter's optimizer state: Adam's moments, or SGD's velocity in `first`.
pub struct State<D: Device<f32>> {
    pub first: Option<Flat<D>>,
    pub second: Option<Flat<D>>,
}

/// The update from dfdx's own tensor ops, for any device. `g` is the (already clipped) gradient.
pub fn update_generic<D: Device<f32>>(p: &Flat<D>, g: Flat<D>, state: State<D>, rule: Rule) -> (Flat<D>, State<D>) {
    let n = p.shape().0;
    let zeros = || p.device().zeros_like(&(n,));
    match rule {
        Rule::Adam { lr, beta1, beta2, eps, weight_decay, t } => {
            let m = state.first.unwrap_or_else(zeros) * beta1 + g.clone() * (1.0 - beta1);
            let v = state.second.unwrap_or_else(zeros) * beta2 + g.square() * (1.0 - beta2);
            let m_hat = m.clone() / (1.0 - beta1.powi(t));
            let v_hat = v.clone() / (1.0 - beta2.powi(t));
            let update = m_hat / (v_hat.sqrt() + eps);
            let decayed = if weight_decay > 0.0 { p.clone() * (1.0 - lr * weight_decay) } else { p.clone() };
            (decayed - update * lr, State { first: Some(m), second: Some(v) })
        }
        Rule::Sgd { lr, momentum } => {
            if momentum > 0.0 {
                let v = state.first.unwrap_or_else(zeros) * momentum + g;
                (p.clone() - v.clone() * lr, State { first: Some(v), second: None })
            } else {
                (p.clone() - g * lr, State { first: None, second: None })
            }
        }
    }
}
