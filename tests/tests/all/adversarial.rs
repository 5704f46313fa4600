//! GAN training: each parameter group moves only under its own optimizer, the run is
//! deterministic and resumable, and the losses follow their formulas.

use crate::training::{checkpoint_tensors, deterministic_trace, options, scratch, tiny};
use vaelab_core::spec::{Adversarial, Experiment, GanLoss};
use vaelab_core::train::{train, TrainOutcome};

/// The tiny VAE with a small convolutional discriminator.
fn tiny_gan(weight: f32, d_steps: usize) -> Experiment {
    let mut spec = tiny();
    spec.adversarial = Adversarial::Gan {
        discriminator: ron::from_str("[Conv(out: 8, k: 4, s: 2, p: 1), LeakyRelu(slope: 0.2), Flatten, Dense(out: 1)]").unwrap(),
        loss: GanLoss::NonSaturating,
        weight,
        d_steps,
        optimizer: Some(ron::from_str("Adam(lr: 2e-4, beta1: 0.5)").unwrap()),
    };
    spec.train.steps = 6;
    spec
}

fn split(tensors: &std::collections::BTreeMap<String, Vec<u8>>, prefix: &str) -> Vec<(String, Vec<u8>)> {
    tensors.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(n, v)| (n.clone(), v.clone())).collect()
}

/// With the generator weight at 0, the encoder and decoder end bit-identical to the same VAE
/// trained without a discriminator: the discriminator's phase changes none of their parameters or
/// optimizer state, and their optimizer never touches the discriminator's.
#[test]
fn each_parameter_group_moves_only_under_its_own_optimizer() {
    let (plain, gan, gan2) = (scratch("gan-plain"), scratch("gan-zero"), scratch("gan-two-d-steps"));
    let mut vae = tiny();
    vae.train.steps = 6;
    train(&vae, &options(&plain)).unwrap();
    train(&tiny_gan(0.0, 1), &options(&gan)).unwrap();
    let (a, b) = (checkpoint_tensors(&plain), checkpoint_tensors(&gan));
    let model_part = |t: &std::collections::BTreeMap<String, Vec<u8>>| {
        t.iter()
            .filter(|(n, _)| !n.contains("discriminator") && !n.starts_with("__"))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(model_part(&a), model_part(&b));
    // The discriminator has parameters and Adam state of its own.
    assert!(!split(&b, "discriminator.").is_empty());
    assert!(!split(&b, "optim.first.discriminator.").is_empty());
    // Two discriminator steps per generator step move the discriminator further, not the model.
    train(&tiny_gan(0.0, 2), &options(&gan2)).unwrap();
    let c = checkpoint_tensors(&gan2);
    assert_eq!(model_part(&b), model_part(&c));
    assert_ne!(split(&b, "discriminator."), split(&c, "discriminator."));
    // A positive weight does reach the model.
    let gan_on = scratch("gan-on");
    train(&tiny_gan(1.0, 1), &options(&gan_on)).unwrap();
    assert_ne!(model_part(&b), model_part(&checkpoint_tensors(&gan_on)));
}

#[test]
fn gan_runs_are_deterministic_and_resume_exactly() {
    let spec = tiny_gan(0.5, 2);
    let (straight, resumed) = (scratch("gan-straight"), scratch("gan-resumed"));
    train(&spec, &options(&straight)).unwrap();
    let mut first = options(&resumed);
    first.stop_at = Some(3);
    assert!(matches!(train(&spec, &first).unwrap(), TrainOutcome::Interrupted { step: 3, .. }));
    let mut second = options(&resumed);
    second.resume = true;
    train(&spec, &second).unwrap();
    assert_eq!(checkpoint_tensors(&straight), checkpoint_tensors(&resumed));
}

/// The 20-step trace of the tiny VAE-GAN: every term logged under its own name.
#[test]
fn vae_gan_trace() {
    let mut spec = tiny_gan(0.1, 1);
    spec.train.steps = 20;
    let (lines, trace) = deterministic_trace(&spec, "vae-gan");
    insta::assert_snapshot!(trace);
    for l in &lines {
        assert!(l.terms.contains_key("discriminator") && l.terms.contains_key("generator"));
    }
    assert!(lines[19].terms["rec"] < lines[0].terms["rec"] * 0.9);
}
