//! The optimizer update as one pass over each parameter on the CPU: reads the gradient where
//! dfdx stores it and writes parameter and state once, instead of ~15 tensor ops that each
//! allocate and traverse the whole parameter. Same formulas as `update::update_generic`; a test
//! checks the two agree.

use super::params::Flat;
use super::update::{Rule, State};
use dfdx::prelude::*;

fn values(t: Option<Flat<Cpu>>, n: usize) -> Vec<f32> {
    match t {
        Some(t) => {
            let mut v = vec![0.0; n];
            t.copy_into(&mut v);
            v
        }
        None => vec![0.0; n],
    }
}

pub fn update(
    p: &Flat<Cpu>,
    grads: &mut Gradients<f32, Cpu>,
    scale: f32,
    state: State<Cpu>,
    rule: Rule,
) -> (Flat<Cpu>, State<Cpu>) {
    let n = p.shape().0;
    let dev = p.device().clone();
    let mut w = values(Some(p.clone()), n);
    let g: &[f32] = grads.get_or_alloc_mut(p).expect("CPU allocation");
    let tensor = |v: Vec<f32>| dev.tensor_from_vec(v, (n,));
    match rule {
        Rule::Adam { lr, beta1, beta2, eps, weight_decay, t } => {
            let (mut m, mut v) = (values(state.first, n), values(state.second, n));
            let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
            let decay = 1.0 - lr * weight_decay;
            for i in 0..n {
                let gi = g[i] * scale;
                m[i] = m[i] * beta1 + gi * (1.0 - beta1);
                v[i] = v[i] * beta2 + gi * gi * (1.0 - beta2);
                let update = (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
                let base = if weight_decay > 0.0 { w[i] * decay } else { w[i] };
                w[i] = base - update * lr;
            }
            (tensor(w), State { first: Some(tensor(m)), second: Some(tensor(v)) })
        }
        Rule::Sgd { lr, momentum } => {
            if momentum > 0.0 {
                let mut vel = values(state.first, n);
                for i in 0..n {
                    vel[i] = vel[i] * momentum + g[i] * scale;
                    w[i] -= vel[i] * lr;
                }
                (tensor(w), State { first: Some(tensor(vel)), second: None })
            } else {
                for i in 0..n {
                    w[i] -= g[i] * scale * lr;
                }
                (tensor(w), State { first: None, second: None })
            }
        }
    }
}
