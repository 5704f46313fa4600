//! Optimizers: the fused CPU update against the generic one built from dfdx ops, and Adam against
//! a hand-computed first step.

use dfdx::prelude::*;
use vaelab::nn::update::{update_generic, Rule, State};
use vaelab::nn::Backend;
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

/// Optimizer groups come from the builder that creates a parameter, never from its name: every
/// parameter of the VAE-GAN and of the VQ-VAE with its PixelCNN prior lands in its builder's group,
/// and a layer named `encoder` built inside the decoder's group belongs to the decoder's optimizer.
#[test]
fn parameter_groups_come_from_the_builder_not_the_name() {
    use std::path::Path;
    use vaelab::nn::{FeatShape, NoBlocks, ParamGroup, ParamStore, Sequential};
    use vaelab::optim::{Group, Optimizer};
    let expected = |name: &str| match name.split('.').next().unwrap() {
        "encoder" | "latent" => ParamGroup::Encoder,
        "decoder" | "likelihood" => ParamGroup::Decoder,
        "discriminator" => ParamGroup::Discriminator,
        "prior" => ParamGroup::Prior,
        other => panic!("unexpected component {other}"),
    };
    let shape = FeatShape::Image(1, 64, 64);
    let mut seen = std::collections::BTreeSet::new();
    for spec in ["../specs/shapes/vae-gan.ron", "../specs/shapes/vqvae.ron"] {
        let spec = vaelab::spec::load_spec(Path::new(spec)).unwrap().experiment;
        let mut store = ParamStore::new(Cpu::default(), 1);
        vaelab::model::Model::build(&spec.model, shape, &mut store, &NoBlocks).unwrap();
        vaelab::adversarial::Gan::build(&spec.adversarial, shape, &mut store, &NoBlocks).unwrap();
        for p in store.iter() {
            assert_eq!(p.group, expected(&p.name), "{}", p.name);
            seen.insert(format!("{:?}", p.group));
        }
    }
    assert_eq!(seen.len(), 4, "the fixtures cover every group: {seen:?}");

    let mut store = ParamStore::new(Cpu::default(), 1);
    let layers: Vec<vaelab::spec::Layer> = ron::from_str("[Dense(out: 3)]").unwrap();
    store
        .in_group(ParamGroup::Decoder, |s| Sequential::build(&layers, FeatShape::Flat(2), "encoder", "x", s, &NoBlocks))
        .unwrap();
    use vaelab::spec::{GradClip, OptimizerSpec, Schedule};
    let opt =
        |g| Optimizer::<Cpu>::for_group(g, OptimizerSpec::Sgd { lr: 0.1, momentum: 0.0 }, Schedule::Constant, GradClip::Off, 1);
    for p in store.iter() {
        assert_eq!(p.group, ParamGroup::Decoder, "{} was built in the decoder's group", p.name);
        assert!(opt(Group::Decoder).owns(p.group) && opt(Group::Model).owns(p.group) && !opt(Group::Encoder).owns(p.group));
    }
}
