//! Optimizers: the fused CPU update against the generic one built from dfdx ops, and Adam against
//! a hand-computed first step.

use dfdx::prelude::*;
use vaelab_core::nn::update::{update_generic, Rule, State};
use vaelab_core::nn::Backend;
use vaelab_datasets::StreamRng;

fn random(dev: &Cpu, seed: u64, n: usize) -> Tensor<(usize,), f32, Cpu> {
    let mut r = StreamRng::new(seed, &[]);
    dev.tensor_from_vec((0..n).map(|_| r.normal() as f32).collect(), (n,))
}

#[test]
fn fused_cpu_update_matches_the_generic_update_over_several_steps() {
    let dev = Cpu::default();
    let n = 257;
    for rule_at in [
        |t| Rule::Adam { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, t },
        |t| Rule::Adam { lr: 3e-3, beta1: 0.5, beta2: 0.99, eps: 1e-6, weight_decay: 0.1, t },
        |_| Rule::Sgd { lr: 1e-2, momentum: 0.9 },
        |_| Rule::Sgd { lr: 1e-2, momentum: 0.0 },
    ] {
        let (mut p_fused, mut p_generic) = (random(&dev, 1, n), random(&dev, 1, n));
        let (mut s_fused, mut s_generic) = (State { first: None, second: None }, State { first: None, second: None });
        for t in 1..=5 {
            let rule = rule_at(t);
            let g = random(&dev, 10 + t as u64, n);
            // Route the gradient through a Gradients map the way backward() leaves it.
            let traced = p_fused.retaped::<OwnedTape<f32, Cpu>>();
            let mut grads = (traced * g.clone()).sum::<(), _>().backward();
            let (p, s) = Cpu::update(&p_fused, &mut grads, 0.5, s_fused, rule);
            (p_fused, s_fused) = (p, s);
            let (p, s) = update_generic(&p_generic, g * 0.5, s_generic, rule);
            (p_generic, s_generic) = (p, s);
        }
        for (a, b) in p_fused.as_vec().iter().zip(p_generic.as_vec()) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}

/// Adam's first step moves every weight by lr·sign(g) (up to ε): m̂ = g and v̂ = g².
#[test]
fn adam_first_step_is_lr_times_the_gradient_sign() {
    let dev = Cpu::default();
    let p = dev.tensor_from_vec(vec![1.0f32, -2.0, 0.5], (3,));
    let g = dev.tensor_from_vec(vec![0.3f32, -4.0, 1e-3], (3,));
    let rule = Rule::Adam { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, t: 1 };
    let (p1, _) = update_generic(&p, g, State { first: None, second: None }, rule);
    let expected = [0.9f32, -1.9, 0.4];
    for (a, b) in p1.as_vec().iter().zip(expected) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}
