//! The whole model's loss (encoder → Gaussian latent → decoder → likelihood) checked by finite
//! differences, for each likelihood. Layer tests alone cannot see a branch that falls off dfdx's
//! tape; this one can.

use dfdx::prelude::*;
use std::path::Path;
use vaelab_core::data::{build_dataset, data_shape, normal_noise, to_tensor, train_batch};
use vaelab_core::model::Model;
use vaelab_core::nn::{Ctx, ParamId, ParamStore, Role};
use vaelab_core::spec::{load_spec, Latent, Likelihood, Sigma};

fn check(likelihood: Likelihood) {
    check_with(likelihood, Latent::Gaussian { dim: 4 });
}

fn check_with(likelihood: Likelihood, latent: Latent) {
    use vaelab_core::spec::Layer::*;
    let mut spec = load_spec(Path::new("specs/tiny.ron")).unwrap().experiment;
    spec.data.size = 8;
    let flat_decoder = vec![Dense { out: 48 }, Reshape { c: 3, h: 4, w: 4 }, Tanh, ConvT { out: 1, k: 4, s: 2, p: 1 }];
    (spec.model.encoder, spec.model.decoder) = match latent {
        Latent::Gaussian { .. } => (vec![Conv { out: 3, k: 4, s: 2, p: 1 }, Tanh, Flatten], flat_decoder),
        Latent::None => (vec![Conv { out: 3, k: 4, s: 2, p: 1 }, Tanh, Flatten, Dense { out: 5 }], flat_decoder),
        Latent::Spatial { .. } => (
            vec![Conv { out: 3, k: 4, s: 2, p: 1 }, Tanh],
            vec![Conv { out: 3, k: 3, s: 1, p: 1 }, Tanh, ConvT { out: 1, k: 4, s: 2, p: 1 }],
        ),
    };
    spec.model.latent = latent;
    spec.model.likelihood = likelihood;
    let dev = Cpu::default();
    let ds = build_dataset(&spec).unwrap();
    let mut store = ParamStore::new(dev.clone(), 11);
    let model = Model::build(&spec.model, data_shape(ds.as_ref()), &mut store, &vaelab_core::nn::NoBlocks).unwrap();
    let images = train_batch(ds.as_ref(), 1, 0, 3, &Default::default());
    let code = model.latent.code_shape().len();
    let loss = |store: &ParamStore<Cpu>| {
        let ctx = Ctx::new(store, true, 1, 0);
        let t = model.terms(&ctx, to_tensor(&dev, &images), normal_noise(&dev, 1, "noise", 0, code, 3));
        t.rec + t.kl * 0.7
    };
    let grads = loss(&store).backward();
    let value = |s: &ParamStore<Cpu>| loss(s).as_vec()[0] as f64;
    let mut checked = 0;
    for i in 0..store.len() {
        let id = ParamId(i);
        if store.get(id).role != Role::Trainable {
            continue;
        }
        let analytic = grads.get(&store.get(id).tensor).as_vec();
        let base = store.get(id).tensor.as_vec();
        for j in (0..base.len()).step_by((base.len() / 6).max(1)) {
            let eps = 1e-2;
            let mut plus = base.clone();
            plus[j] += eps;
            store.set_values(id, plus);
            let lp = value(&store);
            let mut minus = base.clone();
            minus[j] -= eps;
            store.set_values(id, minus);
            let lm = value(&store);
            store.set_values(id, base.clone());
            let numeric = (lp - lm) / (2.0 * eps as f64);
            let a = analytic[j] as f64;
            assert!(
                (numeric - a).abs() <= 2e-2 * (1.0 + numeric.abs().max(a.abs())),
                "{}[{j}]: analytic {a} vs numeric {numeric}",
                store.get(id).name
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "checked {checked} coordinates");
}

#[test]
fn bernoulli_vae_loss_gradients() {
    check(Likelihood::Bernoulli);
}

#[test]
fn gaussian_vae_loss_gradients_fixed_sigma() {
    check(Likelihood::Gaussian { sigma: Sigma::Fixed(0.5) });
}

#[test]
fn gaussian_vae_loss_gradients_learned_sigma() {
    check(Likelihood::Gaussian { sigma: Sigma::Learned });
}

#[test]
fn spatial_vae_loss_gradients() {
    check_with(Likelihood::Bernoulli, Latent::Spatial { channels: 2 });
}

#[test]
fn autoencoder_loss_gradients() {
    check_with(Likelihood::Gaussian { sigma: Sigma::Fixed(0.5) }, Latent::None);
}

/// The spatial latent's KL is the closed form summed over every element of the C×h×w code and
/// averaged over the batch; the autoencoder's code is the encoder output itself, with no KL.
#[test]
fn spatial_kl_sums_over_elements_and_the_autoencoder_has_none() {
    let mut spec = load_spec(Path::new("specs/tiny.ron")).unwrap().experiment;
    spec.model.encoder = vec![vaelab_core::spec::Layer::Conv { out: 3, k: 4, s: 2, p: 1 }];
    spec.model.latent = Latent::Spatial { channels: 2 };
    spec.model.decoder = vec![vaelab_core::spec::Layer::ConvT { out: 1, k: 4, s: 2, p: 1 }];
    let dev = Cpu::default();
    let ds = build_dataset(&spec).unwrap();
    let mut store = ParamStore::new(dev.clone(), 2);
    let model = Model::build(&spec.model, data_shape(ds.as_ref()), &mut store, &vaelab_core::nn::NoBlocks).unwrap();
    assert_eq!(model.latent.code_shape(), vaelab_core::nn::FeatShape::Image(2, 16, 16));
    let x = to_tensor(&dev, &train_batch(ds.as_ref(), 1, 0, 3, &Default::default()));
    let ctx = Ctx::new(&store, false, 1, 0);
    let enc = model.encode(&ctx, x.clone(), normal_noise(&dev, 1, "noise", 0, 2 * 16 * 16, 3));
    let (mu, lv) = (enc.mu.as_vec(), enc.logvar.as_vec());
    let by_hand: f64 =
        mu.iter().zip(&lv).map(|(m, l)| 0.5 * ((*m as f64).powi(2) + (*l as f64).exp() - 1.0 - *l as f64)).sum::<f64>() / 3.0;
    assert!((enc.kl.as_vec()[0] as f64 - by_hand).abs() < 1e-3 * by_hand.max(1.0), "{} vs {by_hand}", enc.kl.as_vec()[0]);

    spec.model.latent = Latent::None;
    let mut store = ParamStore::new(dev.clone(), 2);
    let model = Model::build(&spec.model, data_shape(ds.as_ref()), &mut store, &vaelab_core::nn::NoBlocks).unwrap();
    let ctx = Ctx::new(&store, false, 1, 0);
    let enc = model.encode(&ctx, x, normal_noise(&dev, 1, "noise", 0, 3 * 16 * 16, 3));
    assert_eq!(enc.kl.as_vec()[0], 0.0);
    assert_eq!(enc.z.as_vec(), enc.mu.as_vec(), "z is the encoder output");
}

/// KL(N(μ, σ²) ‖ N(0, 1)) for one dimension against its closed form at a hand-picked point.
#[test]
fn gaussian_kl_matches_the_closed_form() {
    let (mu, logvar) = (0.8f64, -0.6f64);
    let closed = 0.5 * (mu * mu + logvar.exp() - 1.0 - logvar);
    // 0.5·(0.64 + e^−0.6 − 1 + 0.6) = 0.5·(0.64 + 0.548812 − 0.4) = 0.394406
    assert!((closed - 0.394406).abs() < 1e-6);
    let dev = Cpu::default();
    let mu_t = dev.tensor_from_vec(vec![mu as f32], (1, 1));
    let lv_t = dev.tensor_from_vec(vec![logvar as f32], (1, 1));
    let kl = ((lv_t.clone() + 1.0) - mu_t.square() - lv_t.exp()).sum::<(), _>() * -0.5;
    assert!((kl.as_vec()[0] as f64 - closed).abs() < 1e-6);
}
