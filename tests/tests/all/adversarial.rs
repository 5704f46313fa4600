//! GAN training: each parameter group moves only under its own optimizer, the run is
//! deterministic and resumable, and the losses follow their formulas.

use crate::training::{checkpoint_tensors, deterministic_trace, options, scratch, tiny, within, TRACE};
use vaelab::spec::{Adversarial, Experiment, GanLoss};
use vaelab::train::{train, TrainOutcome};

/// The tiny VAE with a small convolutional discriminator.
fn tiny_gan(weight: f32, d_steps: usize) -> Experiment {
    let mut spec = tiny();
    spec.adversarial = Adversarial::Gan {
        discriminator: ron::from_str("[Conv(out: 8, k: 4, s: 2, p: 1), LeakyRelu(slope: 0.2), Flatten, Dense(out: 1)]").unwrap(),
        loss: GanLoss::NonSaturating,
        weight,
        d_steps,
        optimizer: Some(ron::from_str("Adam(lr: 2e-4, beta1: 0.5)").unwrap()),
        r1_gamma: 0.0,
        gan_trains_encoder: true,
        feature_layer: None,
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
    within(TRACE, || insta::assert_snapshot!(trace));
    for l in &lines {
        assert!(l.terms.contains_key("discriminator") && l.terms.contains_key("generator"));
    }
    assert!(lines[19].terms["rec"] < lines[0].terms["rec"] * 0.9);
}

pub(crate) mod intro {
    use dfdx::prelude::*;
    use vaelab::adversarial::IntroVae;
    use vaelab::model::Model;
    use vaelab::nn::{Ctx, FeatShape, NoBlocks, ParamStore};

    const B: usize = 3;

    fn param(store: &ParamStore<Cpu>, name: &str) -> Vec<f64> {
        store.get(store.find(name).unwrap()).tensor.as_vec().iter().map(|v| *v as f64).collect()
    }

    /// y = W x + b for a row-major (out × in) W.
    pub(crate) fn dense(w: &[f64], b: &[f64], x: &[f64]) -> Vec<f64> {
        b.iter()
            .enumerate()
            .map(|(o, bo)| bo + x.iter().enumerate().map(|(i, xi)| w[o * x.len() + i] * xi).sum::<f64>())
            .collect()
    }

    struct Reference<'a>(&'a ParamStore<Cpu>);

    impl Reference<'_> {
        /// (μ, log σ²) of one image.
        fn encode(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
            let h: Vec<f64> =
                dense(&param(self.0, "encoder.1.weight"), &param(self.0, "encoder.1.bias"), x).iter().map(|v| v.tanh()).collect();
            let mu = dense(&param(self.0, "latent.mu.0.weight"), &param(self.0, "latent.mu.0.bias"), &h);
            let lv = dense(&param(self.0, "latent.logvar.0.weight"), &param(self.0, "latent.logvar.0.bias"), &h);
            (mu, lv)
        }
        fn kl(&self, images: &[Vec<f64>]) -> f64 {
            images
                .iter()
                .map(|x| {
                    let (mu, lv) = self.encode(x);
                    -0.5 * mu.iter().zip(&lv).map(|(m, l)| 1.0 + l - m * m - l.exp()).sum::<f64>()
                })
                .sum::<f64>()
                / images.len() as f64
        }
        /// D(μ + σ·ε) of each image, with ε from the batch-last noise.
        fn reconstruct(&self, images: &[Vec<f64>], eps: &[f32]) -> Vec<Vec<f64>> {
            images
                .iter()
                .enumerate()
                .map(|(j, img)| {
                    let (mu, lv) = self.encode(img);
                    self.decode(&(0..2).map(|d| mu[d] + (0.5 * lv[d]).exp() * eps[d * B + j] as f64).collect::<Vec<_>>())
                })
                .collect()
        }
        fn decode(&self, z: &[f64]) -> Vec<f64> {
            dense(&param(self.0, "decoder.0.weight"), &param(self.0, "decoder.0.bias"), z)
                .iter()
                .map(|v| 1.0 / (1.0 + (-v).exp()))
                .collect()
        }
    }

    /// Σ (x_r − x)² per image, averaged over the batch (the official code: no ½).
    fn sse_mean(images: &[Vec<f64>], recs: &[Vec<f64>]) -> f64 {
        images.iter().zip(recs).map(|(x, y)| x.iter().zip(y).map(|(a, b)| (a - b).powi(2)).sum::<f64>()).sum::<f64>()
            / images.len() as f64
    }

    /// Image j of a batch-last (rows × B) matrix.
    fn column(m: &[f32], rows: usize, j: usize) -> Vec<f64> {
        (0..rows).map(|r| m[r * B + j] as f64).collect()
    }

    const TINY: &str = "(encoder: [Flatten, Dense(out: 3), Tanh], latent: Gaussian(dim: 2), decoder: [Dense(out: 4), Reshape(c: 1, h: 2, w: 2)], likelihood: Bernoulli)";

    /// The device, parameter store and model of a tiny spec on 1×2×2 images.
    fn tiny_model(spec: &str) -> (Cpu, ParamStore<Cpu>, Model) {
        let spec: vaelab::spec::ModelSpec = ron::from_str(spec).unwrap();
        let dev = Cpu::default();
        let mut store = ParamStore::new(dev.clone(), 11);
        let model = Model::build(&spec, FeatShape::Image(1, 2, 2), &mut store, &NoBlocks).unwrap();
        (dev, store, model)
    }

    /// Plain SGD for the encoder and the decoder groups.
    fn sgd_pair(lr: f32, steps: usize) -> (vaelab::optim::Optimizer<Cpu>, vaelab::optim::Optimizer<Cpu>) {
        use vaelab::optim::{Group, Optimizer};
        use vaelab::spec::{GradClip, OptimizerSpec, Schedule};
        let sgd = |group| {
            Optimizer::for_group(group, OptimizerSpec::Sgd { lr, momentum: 0.0 }, Schedule::Constant, GradClip::Off, steps)
        };
        (sgd(Group::Encoder), sgd(Group::Decoder))
    }

    fn renoise(dev: &Cpu) -> [Tensor<(usize, usize), f32, Cpu>; 4] {
        std::array::from_fn(|_| dev.zeros_like(&(2, B)))
    }

    /// IntroVAE's encoder and decoder losses on a tiny network and batch, against the official code's
    /// formulas evaluated in f64 from the parameters (L_rec without ½; weight_kl on the encoder's whole
    /// adversarial term and on the decoder's KLs; weight_rec·L_rec in both); the margin sits between
    /// KL(x_r) and KL(x_p), so one hinge is active and one is not. The decoder's loss reaches the
    /// decoder through the encoder's scoring of its images (finite differences on a decoder bias).
    #[test]
    fn intro_vae_losses_match_the_formulas() {
        let (dev, mut store, model) = tiny_model(TINY);
        let xs: Vec<f32> = (0..4 * B).map(|i| ((i * 7 % 11) as f32) / 10.0).collect(); // batch-last
        let eps: Vec<f32> = (0..2 * B).map(|i| ((i * 5 % 7) as f32 - 3.0) / 3.0).collect();
        let zp: Vec<f32> = (0..2 * B).map(|i| ((i * 3 % 5) as f32 - 2.0) / 1.5).collect();
        let (x, noise, prior) = (
            dev.tensor_from_vec(xs.clone(), (4, B)),
            dev.tensor_from_vec(eps.clone(), (2, B)),
            dev.tensor_from_vec(zp.clone(), (2, B)),
        );
        let renoise = renoise(&dev);

        let r = Reference(&store);
        let images: Vec<Vec<f64>> = (0..B).map(|j| column(&xs, 4, j)).collect();
        let recs = r.reconstruct(&images, &eps);
        let fakes: Vec<Vec<f64>> = (0..B).map(|j| r.decode(&column(&zp, 2, j))).collect();
        let rec = sse_mean(&images, &recs);
        let (kl_x, kl_r, kl_p) = (r.kl(&images), r.kl(&recs), r.kl(&fakes));
        let (w_rec, w_kl, w_neg) = (0.05, 0.8, 0.5);
        let margin = (kl_r + kl_p) / 2.0;
        let want_e = w_rec * rec + w_kl * (kl_x + 0.5 * w_neg * ((margin - kl_r).max(0.0) + (margin - kl_p).max(0.0)));
        let want_g = w_rec * rec + 0.5 * w_kl * (kl_r + kl_p);

        let iv = IntroVae {
            margin: margin as f32,
            weight_rec: w_rec as f32,
            weight_kl: w_kl as f32,
            weight_neg: w_neg as f32,
            warmup: 0,
        };
        let ctx = Ctx::new(&store, true, 0, 0);
        let data = vaelab::adversarial::StepData { x: &x, noise: &noise, prior_z: &prior, renoise: &renoise };
        let (e, z, _) = iv.encoder_loss(&model, &ctx, &data);
        let got_e = e.loss.as_vec()[0] as f64;
        assert!((got_e - want_e).abs() < 1e-5 * want_e.abs().max(1.0), "L_E {got_e} vs {want_e}");
        let terms: std::collections::BTreeMap<_, _> = e.terms.into_iter().collect();
        assert!((terms["kl_rec"] as f64 - kl_r).abs() < 1e-5 && (terms["kl_fake"] as f64 - kl_p).abs() < 1e-5);
        assert!((terms["sse"] as f64 - rec).abs() < 1e-5 * rec.max(1.0));
        let d = iv.decoder_loss(&model, &ctx, &data, &z, None);
        let got_g = d.loss.as_vec()[0] as f64;
        assert!((got_g - want_g).abs() < 1e-5 * want_g.abs().max(1.0), "L_G {got_g} vs {want_g}");

        // d L_G / d decoder.0.bias[0] by the tape and by central differences of the f64 formula,
        // z held at the encoder pass's values.
        let mut grads = d.loss.backward();
        let bias_id = store.find("decoder.0.bias").unwrap();
        grads.try_alloc_for(&store.get(bias_id).tensor).unwrap();
        let analytic = grads.get(&store.get(bias_id).tensor).as_vec()[0] as f64;
        drop(ctx);
        let h = 1e-3f32;
        let mut at = |delta: f32| {
            let mut b = store.get(bias_id).tensor.as_vec();
            b[0] += delta;
            store.set_values(bias_id, b);
            let r = Reference(&store);
            let recs = r.reconstruct(&images, &eps);
            let fakes: Vec<Vec<f64>> = (0..B).map(|j| r.decode(&column(&zp, 2, j))).collect();
            let v = w_rec * sse_mean(&images, &recs) + 0.5 * w_kl * (r.kl(&recs) + r.kl(&fakes));
            let mut b = store.get(bias_id).tensor.as_vec();
            b[0] -= delta;
            store.set_values(bias_id, b);
            v
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h as f64);
        assert!((analytic - numeric).abs() < 2e-3 * numeric.abs().max(1e-2), "dL_G/db {analytic} vs {numeric}");

        // d L_E / d encoder.1.bias[0] with ng(x_r), ng(x_p) held at their current values: the
        // hinge's gradient must not come back through the decoder.
        let ctx = Ctx::new(&store, true, 0, 0);
        let mut grads = iv.encoder_loss(&model, &ctx, &data).0.loss.backward();
        let enc_bias = store.find("encoder.1.bias").unwrap();
        grads.try_alloc_for(&store.get(enc_bias).tensor).unwrap();
        let analytic = grads.get(&store.get(enc_bias).tensor).as_vec()[0] as f64;
        drop(ctx);
        let (recs0, fakes0) = (recs.clone(), fakes.clone());
        let mut at = |delta: f32| {
            let mut b = store.get(enc_bias).tensor.as_vec();
            b[0] += delta;
            store.set_values(enc_bias, b);
            let r = Reference(&store);
            let recs = r.reconstruct(&images, &eps);
            let hinge = (margin - r.kl(&recs0)).max(0.0) + (margin - r.kl(&fakes0)).max(0.0);
            let v = w_rec * sse_mean(&images, &recs) + w_kl * (r.kl(&images) + 0.5 * w_neg * hinge);
            let mut b = store.get(enc_bias).tensor.as_vec();
            b[0] -= delta;
            store.set_values(enc_bias, b);
            v
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h as f64);
        assert!((analytic - numeric).abs() < 2e-3 * numeric.abs().max(1e-2), "dL_E/db {analytic} vs {numeric}");
    }

    /// BatchNorm running statistics come from the real-data pass: IntroVAE's encoder sees x, then
    /// sg x_r and sg x_p in one step, and the statistics after the step are those of x alone (before,
    /// the last pass, of the prior samples' images, won).
    #[test]
    fn batch_norm_statistics_come_from_the_real_data_pass() {
        use vaelab::adversarial::{SplitObjective, StepData};
        let (dev, mut store, model) = tiny_model(
            "(encoder: [Flatten, Dense(out: 3), BatchNorm(momentum: 0.5, eps: 1e-5), Tanh], latent: Gaussian(dim: 2), decoder: [Dense(out: 4), Reshape(c: 1, h: 2, w: 2)], likelihood: Bernoulli)",
        );
        let x = dev.tensor_from_vec((0..4 * B).map(|i| ((i * 7 % 11) as f32) / 10.0).collect(), (4, B));
        let noise = dev.tensor_from_vec((0..2 * B).map(|i| ((i * 5 % 7) as f32 - 3.0) / 3.0).collect(), (2, B));
        let prior = dev.tensor_from_vec((0..2 * B).map(|i| ((i * 3 % 5) as f32 - 2.0) / 1.5).collect(), (2, B));
        // What one encoder pass over the real batch records.
        let ctx = Ctx::new(&store, true, 0, 0);
        let _ = model.encode(&ctx, x.clone(), noise.clone());
        let expected = ctx.buffer_updates.take();
        drop(ctx);
        assert_eq!(expected.len(), 2, "running mean and variance");

        let (mut opt_e, mut opt_d) = sgd_pair(0.1, 1);
        let iv = IntroVae { margin: 5.0, weight_rec: 0.5, weight_kl: 1.0, weight_neg: 0.5, warmup: 0 };
        let renoise = renoise(&dev);
        let data = StepData { x: &x, noise: &noise, prior_z: &prior, renoise: &renoise };
        SplitObjective::Intro(iv).step(&model, &mut store, &mut opt_e, &mut opt_d, &data, 0, 0).unwrap();
        for (id, want) in expected {
            let got = store.get(id).tensor.as_vec();
            assert_eq!(got, want, "{}: the real-data pass's statistics", store.get(id).name);
        }
    }

    /// Two training steps of IntroVAE in the official order (hhb072/IntroVAE `train()`): the encoder
    /// is updated by L_E, then the decoder by L_G with KL(x_r), KL(x_p) taken by the *updated*
    /// encoder of the images made from the encoder pass's z. Plain SGD, so the reference is exact:
    /// both steps recomputed in f64 with gradients by central differences. The same reference with
    /// both gradients at the same parameters (vaelab's order before) is shown to differ by far more
    /// than the tolerance, so the test tells the two orders apart.
    #[test]
    fn intro_vae_two_steps_follow_the_official_order() {
        use crate::split_objectives::{mean, sse, Net};
        use vaelab::adversarial::{SplitObjective, StepData};

        let (dev, mut store, model) = tiny_model(TINY);
        let lr = 0.3;
        let (mut opt_e, mut opt_d) = sgd_pair(lr, 2);
        let (w_rec, w_kl, w_neg, margin) = (0.3, 1.0, 0.5, 6.0);
        let iv = IntroVae {
            margin: margin as f32,
            weight_rec: w_rec as f32,
            weight_kl: w_kl as f32,
            weight_neg: w_neg as f32,
            warmup: 0,
        };

        let xs: Vec<f32> = (0..4 * B).map(|i| ((i * 7 % 11) as f32) / 10.0).collect();
        let images: Vec<Vec<f64>> = (0..B).map(|j| column(&xs, 4, j)).collect();
        let draws: Vec<(Vec<f32>, Vec<f32>)> = (0..2)
            .map(|t| {
                let eps = (0..2 * B).map(|i| (((i + 3 * t) * 5 % 7) as f32 - 3.0) / 3.0).collect();
                let zp = (0..2 * B).map(|i| (((i + t) * 3 % 5) as f32 - 2.0) / 1.5).collect();
                (eps, zp)
            })
            .collect();

        // The f64 reference: `official` updates the encoder first; otherwise both gradients are taken
        // at the step's starting parameters.
        let reference = |official: bool| {
            let mut net = Net::of(&store);
            let is_encoder = |name: &str| name.starts_with("encoder.") || name.starts_with("latent.");
            let grad = |net: &Net, name: &str, i: usize, f: &dyn Fn(&Net) -> f64| {
                let h = 1e-6;
                let (mut a, mut b) = (net.clone(), net.clone());
                a.0.get_mut(name).unwrap()[i] += h;
                b.0.get_mut(name).unwrap()[i] -= h;
                (f(&a) - f(&b)) / (2.0 * h)
            };
            for (eps, zp) in &draws {
                let eps: Vec<Vec<f64>> = (0..B).map(|j| column(eps, 2, j)).collect();
                let zp: Vec<Vec<f64>> = (0..B).map(|j| column(zp, 2, j)).collect();
                let z: Vec<Vec<f64>> = (0..B).map(|j| net.sample(&images[j], &eps[j])).collect();
                let (recs, fakes): (Vec<Vec<f64>>, Vec<Vec<f64>>) =
                    (z.iter().map(|z| net.decode(z)).collect(), zp.iter().map(|z| net.decode(z)).collect());
                let l_e = |n: &Net| {
                    let rec = mean((0..B).map(|j| sse(&n.decode(&n.sample(&images[j], &eps[j])), &images[j])));
                    let kl = |imgs: &[Vec<f64>]| mean(imgs.iter().map(|x| n.kl(x)));
                    let hinge = (margin - kl(&recs)).max(0.0) + (margin - kl(&fakes)).max(0.0);
                    w_rec * rec + w_kl * (kl(&images) + 0.5 * w_neg * hinge)
                };
                let l_g = |n: &Net| {
                    let recs: Vec<Vec<f64>> = z.iter().map(|z| n.decode(z)).collect();
                    let fakes: Vec<Vec<f64>> = zp.iter().map(|z| n.decode(z)).collect();
                    let rec = mean((0..B).map(|j| sse(&recs[j], &images[j])));
                    w_rec * rec + 0.5 * w_kl * (mean(recs.iter().map(|x| n.kl(x))) + mean(fakes.iter().map(|x| n.kl(x))))
                };
                let start = net.clone();
                let mut after_e = net.clone();
                for (name, values) in start.0.iter().filter(|(n, _)| is_encoder(n)) {
                    for i in 0..values.len() {
                        after_e.0.get_mut(name).unwrap()[i] -= lr as f64 * grad(&start, name, i, &l_e);
                    }
                }
                let scorer = if official { after_e.clone() } else { start.clone() };
                net = after_e;
                for (name, values) in start.0.iter().filter(|(n, _)| !is_encoder(n)) {
                    for i in 0..values.len() {
                        net.0.get_mut(name).unwrap()[i] -= lr as f64 * grad(&scorer, name, i, &l_g);
                    }
                }
            }
            net
        };
        let (official, simultaneous) = (reference(true), reference(false));

        for (t, (eps, zp)) in draws.iter().enumerate() {
            let (noise, prior) = (dev.tensor_from_vec(eps.clone(), (2, B)), dev.tensor_from_vec(zp.clone(), (2, B)));
            let x = dev.tensor_from_vec(xs.clone(), (4, B));
            let renoise = renoise(&dev);
            let data = StepData { x: &x, noise: &noise, prior_z: &prior, renoise: &renoise };
            SplitObjective::Intro(iv).step(&model, &mut store, &mut opt_e, &mut opt_d, &data, 0, t).unwrap();
        }
        let got = Net::of(&store);
        let distance = |a: &Net, b: &Net| {
            a.0.iter().flat_map(|(name, v)| v.iter().zip(&b.0[name]).map(|(x, y)| (x - y).abs())).fold(0.0, f64::max)
        };
        let tolerance = 2e-5;
        assert!(distance(&got, &official) < tolerance, "vaelab vs the official order: {:e}", distance(&got, &official));
        assert!(
            distance(&official, &simultaneous) > 50.0 * tolerance,
            "the two orders differ by only {:e}: the test cannot tell them apart",
            distance(&official, &simultaneous)
        );
    }
}

/// The 20-step trace of a tiny IntroVAE: 5 plain-VAE warm-up steps, then the encoder's and the
/// decoder's losses with every term under its own name; deterministic, and resumable across the
/// switch.
#[test]
fn intro_vae_trace_and_resume() {
    let mut spec = tiny();
    spec.adversarial = Adversarial::IntroVae { margin: 10.0, weight_rec: 2.0, weight_kl: 1.0, weight_neg: 0.5, warmup: 5 };
    let (lines, trace) = deterministic_trace(&spec, "introvae");
    within(TRACE, || insta::assert_snapshot!(trace));
    assert!(lines[4].terms.contains_key("rec") && !lines[4].terms.contains_key("encoder"));
    for key in ["encoder", "decoder", "kl", "kl_rec", "kl_fake", "sse"] {
        assert!(lines[19].terms.contains_key(key), "{key} missing");
    }
    let (straight, resumed) = (scratch("intro-straight"), scratch("intro-resumed"));
    train(&spec, &options(&straight)).unwrap();
    let mut first = options(&resumed);
    first.stop_at = Some(4);
    train(&spec, &first).unwrap();
    let mut second = options(&resumed);
    second.resume = true;
    train(&spec, &second).unwrap();
    assert_eq!(checkpoint_tensors(&straight), checkpoint_tensors(&resumed));
}

/// A generator from noise (no encoder, `noise_dim`): 20 deterministic steps of discriminator and
/// generator losses alone; its evaluation draws samples and noise traversals, and refuses the
/// metrics that need reconstructions.
#[test]
fn plain_gan_trains_from_noise_and_evaluates_its_samples() {
    let mut spec = tiny_gan(1.0, 1);
    spec.model.encoder = vec![];
    spec.model.latent = vaelab::spec::Latent::None;
    spec.model.noise_dim = Some(4);
    spec.losses = vec![];
    spec.train.steps = 20;
    assert!(vaelab::spec::validate::validate_values(&spec).is_empty(), "{:?}", vaelab::spec::validate::validate_values(&spec));
    let (lines, trace) = deterministic_trace(&spec, "plain-gan");
    within(TRACE, || insta::assert_snapshot!(trace));
    for l in &lines {
        assert_eq!(l.terms.keys().collect::<Vec<_>>(), ["discriminator", "generator"]);
    }

    let dir = scratch("plain-gan-eval");
    train(&spec, &options(&dir)).unwrap();
    let refused = vaelab::eval::evaluate(
        &dir,
        &vaelab::eval::EvalOptions { metrics: Some(vec!["mse".into(), "fid".into()]), ..Default::default() },
    )
    .unwrap_err()
    .to_string();
    assert!(refused.contains("mse") && refused.contains("no encoder") && !refused.contains("fid,"), "{refused}");
    let report =
        vaelab::eval::evaluate(&dir, &vaelab::eval::EvalOptions { metrics: Some(vec![]), ..Default::default() }).unwrap();
    assert!(report.metrics.is_empty());
    let eval_dir = dir.join("eval");
    assert!(eval_dir.join("samples.png").exists() && eval_dir.join("traversal.png").exists());
    assert!(!eval_dir.join("reconstructions.png").exists());
    let analysis = vaelab::runs::LoadedRun::open(&dir, None).err().expect("no encoder to analyse").to_string();
    assert!(analysis.contains("generator from noise"), "{analysis}");
}

/// Two compositions no paper of the study tried, each deterministic over 20 steps: a VQ latent
/// with a GAN discriminator (its fakes decoded from code grids drawn from the code frequencies, so
/// every fake is made of codebook vectors), and a spatial latent with IntroVAE's critic.
#[test]
fn cross_family_compositions_train() {
    use vaelab::spec::{Latent, Layer::*, Loss};
    let mut vq_gan = tiny_gan(0.1, 1);
    vq_gan.model.encoder = vec![Conv { out: 8, k: 4, s: 2, p: 1 }, Relu, Conv { out: 16, k: 4, s: 2, p: 1 }, Relu];
    vq_gan.model.latent = Latent::Quantized { codes: 8, dim: 4, beta: 0.25, ema: false };
    vq_gan.model.decoder = vec![ConvT { out: 8, k: 4, s: 2, p: 1 }, Relu, ConvT { out: 1, k: 4, s: 2, p: 1 }];
    vq_gan.losses = vec![Loss::Reconstruction { weight: 1.0 }, Loss::Vq { weight: 1.0 }];
    vq_gan.train.steps = 20;
    let mut svae_intro = vq_gan.clone();
    svae_intro.model.latent = Latent::Spatial { channels: 2 };
    svae_intro.losses = vec![Loss::Reconstruction { weight: 1.0 }, Loss::Kl { weight: 1.0, warmup: 0 }];
    svae_intro.adversarial = Adversarial::IntroVae { margin: 10.0, weight_rec: 2.0, weight_kl: 1.0, weight_neg: 0.5, warmup: 5 };
    for (spec, name) in [(vq_gan, "vq_gan"), (svae_intro, "spatial_introvae")] {
        assert!(vaelab::spec::validate::validate_values(&spec).is_empty(), "{name}");
        let (lines, trace) = deterministic_trace(&spec, name);
        within(TRACE, || insta::assert_snapshot!(name, trace));
        let last = &lines[19].terms;
        let expected: &[&str] =
            if name == "vq_gan" { &["discriminator", "generator", "rec", "vq"] } else { &["encoder", "decoder", "kl_fake"] };
        for key in expected {
            assert!(last.contains_key(*key), "{name}: {key} missing");
        }
    }
}

/// How the discriminator's and the generator's losses are assembled, for both loss kinds, against
/// f64 formulas on a one-layer discriminator l(x) = w·x + b with known weights, one real batch and
/// two fake sets (each fake set's term weighs ½):
/// * non-saturating (Goodfellow et al. 2014, §3): L_D = mean softplus(−l(real)) + ½ Σ_k mean
///   softplus(l(fake_k)), L_G = ½ Σ_k mean softplus(−l(fake_k)), softplus(t) = log(1 + eᵗ);
/// * hinge (Lim & Ye 2017; Miyato et al. 2018, eq. 16–17): L_D = mean relu(1 − l(real)) + ½ Σ_k
///   mean relu(1 + l(fake_k)), L_G = −½ Σ_k mean l(fake_k).
///
/// The generator loss's gradient with respect to each fake pixel is checked against its derivative.
#[test]
fn discriminator_and_generator_losses_match_the_formulas() {
    use dfdx::prelude::*;
    use vaelab::adversarial::Gan;
    use vaelab::nn::{Ctx, FeatShape, NoBlocks, ParamStore};
    use vaelab::spec::Layer;
    let dev = Cpu::default();
    let (w, b) = ([0.7f32, -1.2, 0.4], 0.3f32);
    let logit = |x: &[f32]| -> f64 { w.iter().zip(x).map(|(w, x)| *w as f64 * *x as f64).sum::<f64>() + b as f64 };
    let softplus = |t: f64| t.exp().ln_1p();
    let sigmoid = |t: f64| 1.0 / (1.0 + (-t).exp());
    // Four images of three values each, batch-last: value i of image j at i·4 + j.
    let real = [0.1f32, 0.9, 0.5, 0.0, 0.3, 0.2, 0.8, 1.0, 0.6, 0.4, 0.7, 0.2];
    let fakes = [[0.9f32, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.0], [0.5f32; 12]];
    let image = |v: &[f32], j: usize| -> Vec<f32> { (0..3).map(|i| v[i * 4 + j]).collect() };
    let logits = |v: &[f32]| -> Vec<f64> { (0..4).map(|j| logit(&image(v, j))).collect() };
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    for loss in [GanLoss::NonSaturating, GanLoss::Hinge] {
        let spec = Adversarial::Gan {
            discriminator: vec![Layer::Dense { out: 1 }],
            loss,
            weight: 1.0,
            d_steps: 1,
            optimizer: None,
            r1_gamma: 0.0,
            gan_trains_encoder: true,
            feature_layer: None,
        };
        let mut store = ParamStore::new(dev.clone(), 1);
        let gan = Gan::build(&spec, FeatShape::Flat(3), &mut store, &NoBlocks).unwrap().unwrap();
        let names: Vec<String> = store.iter().map(|p| p.name.clone()).collect();
        let (w_id, b_id) = (store.find(&names[0]).unwrap(), store.find(&names[1]).unwrap());
        store.set_values(w_id, w.to_vec());
        store.set_values(b_id, vec![b]);
        let ctx = Ctx::new(&store, false, 1, 0);
        let tensor = |v: &[f32]| dev.tensor_from_vec(v.to_vec(), (3, 4));
        let d = gan.discriminator_loss(&ctx, tensor(&real), &[tensor(&fakes[0]), tensor(&fakes[1])]).as_vec()[0] as f64;
        let (want_d, want_g, dg_dlogit): (f64, f64, Box<dyn Fn(f64) -> f64>) = match loss {
            GanLoss::NonSaturating => (
                mean(logits(&real).into_iter().map(|l| softplus(-l)).collect())
                    + 0.5 * fakes.iter().map(|f| mean(logits(f).into_iter().map(softplus).collect())).sum::<f64>(),
                0.5 * fakes.iter().map(|f| mean(logits(f).into_iter().map(|l| softplus(-l)).collect())).sum::<f64>(),
                Box::new(move |l: f64| -sigmoid(-l)),
            ),
            GanLoss::Hinge => (
                mean(logits(&real).into_iter().map(|l| (1.0 - l).max(0.0)).collect())
                    + 0.5 * fakes.iter().map(|f| mean(logits(f).into_iter().map(|l| (1.0 + l).max(0.0)).collect())).sum::<f64>(),
                -0.5 * fakes.iter().map(|f| mean(logits(f))).sum::<f64>(),
                Box::new(|_: f64| -1.0),
            ),
        };
        assert!((d - want_d).abs() < 1e-5, "{loss:?} discriminator: {d} vs {want_d}");
        let leaves = [tensor(&fakes[0]), tensor(&fakes[1])];
        let g = gan.generator_loss(&ctx, leaves.iter().map(|t| t.leaky_trace()).collect());
        assert!((g.as_vec()[0] as f64 - want_g).abs() < 1e-5, "{loss:?} generator: {} vs {want_g}", g.as_vec()[0]);
        let grads = g.backward();
        for (k, leaf) in leaves.iter().enumerate() {
            let got = grads.get(leaf).as_vec();
            for j in 0..4 {
                let l = logit(&image(&fakes[k], j));
                for i in 0..3 {
                    // ∂L_G/∂x_ij = ½ · (1/4) · ∂ℓ/∂l · w_i
                    let want = 0.5 * 0.25 * dg_dlogit(l) * w[i] as f64;
                    assert!(
                        (got[i * 4 + j] as f64 - want).abs() < 1e-6,
                        "{loss:?} ∂/∂fake{k}[{i},{j}]: {} vs {want}",
                        got[i * 4 + j]
                    );
                }
            }
        }
    }
}

/// The R1 penalty (Mescheder et al. 2018): its value is γ/2·mean‖∇ₓD(x)‖², and the gradient of its
/// surrogate (a central difference along c = ∇ₓD(x)) is the penalty's own gradient in the
/// discriminator's parameters, checked against central differences of the penalty itself on a tiny
/// smooth discriminator. A surrogate without the directional derivative (or with the wrong scale)
/// fails here.
#[test]
fn r1_penalty_value_and_gradient() {
    use dfdx::prelude::*;
    use vaelab::adversarial::Gan;
    use vaelab::nn::{FeatShape, NoBlocks, ParamStore};
    let dev = Cpu::default();
    let gamma = 3.0f32;
    let spec = Adversarial::Gan {
        discriminator: ron::from_str("[Dense(out: 4), Tanh, Dense(out: 1)]").unwrap(),
        loss: GanLoss::NonSaturating,
        weight: 1.0,
        d_steps: 1,
        optimizer: None,
        r1_gamma: gamma,
        gan_trains_encoder: true,
        feature_layer: None,
    };
    let mut store = ParamStore::new(dev.clone(), 3);
    let gan = Gan::build(&spec, FeatShape::Flat(3), &mut store, &NoBlocks).unwrap().unwrap();
    let real = dev.tensor_from_vec(vec![0.1f32, 0.9, 0.5, 0.0, 0.3, 0.2, 0.8, 1.0, 0.6, 0.4, 0.7, 0.2], (3, 4));
    // P(θ) = γ/2·mean_i ‖∇ₓ D(x_i)‖², the input gradient by vaelab's own (first-order) backward pass.
    let penalty = |store: &ParamStore<Cpu>| {
        let ctx = vaelab::nn::Ctx::new(store, true, 0, 0);
        let (_, p) = gan.r1(&ctx, &real).unwrap();
        p as f64
    };
    let c = {
        let ctx = vaelab::nn::Ctx::new(&store, true, 0, 0);
        let logits = gan
            .discriminator
            .forward(&ctx, vaelab::nn::Act { t: real.clone().retaped(), shape: FeatShape::Flat(3), needs_grad: true })
            .t;
        logits.sum::<(), _>().backward().get(&real).as_vec()
    };
    let want = 0.5 * gamma as f64 * c.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 4.0;
    assert!((penalty(&store) - want).abs() < 1e-6 * want.max(1e-3), "P {} vs {want}", penalty(&store));
    assert!(want > 1e-3, "the fixture's penalty is not negligible: {want}");

    let ctx = vaelab::nn::Ctx::new(&store, true, 0, 0);
    let (surrogate, _) = gan.r1(&ctx, &real).unwrap();
    let mut grads = surrogate.backward();
    drop(ctx);
    for name in ["discriminator.0.weight", "discriminator.0.bias", "discriminator.2.weight"] {
        let id = store.find(name).unwrap();
        grads.try_alloc_for(&store.get(id).tensor).unwrap();
        let analytic = grads.get(&store.get(id).tensor).as_vec();
        let base = store.get(id).tensor.as_vec();
        for k in [0, base.len() / 2, base.len() - 1] {
            let h = 1e-2f32;
            let mut at = |d: f32| {
                let mut v = base.clone();
                v[k] += d;
                store.set_values(id, v);
                let p = penalty(&store);
                store.set_values(id, base.clone());
                p
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h as f64);
            let got = analytic[k] as f64;
            assert!((got - numeric).abs() < 2e-2 * numeric.abs().max(1e-2), "dP/d{name}[{k}]: surrogate {got} vs {numeric}");
        }
    }
}

/// A tiny VAE-GAN built on the CPU with a fixed batch of four 32×32 images and posterior noise.
struct GanFixture {
    store: vaelab::nn::ParamStore<dfdx::prelude::Cpu>,
    model: vaelab::model::Model,
    gan: vaelab::adversarial::Gan,
    x: dfdx::prelude::Tensor<(usize, usize), f32, dfdx::prelude::Cpu>,
    noise: dfdx::prelude::Tensor<(usize, usize), f32, dfdx::prelude::Cpu>,
}

impl GanFixture {
    fn new(spec: &Experiment) -> GanFixture {
        use dfdx::prelude::*;
        use vaelab::nn::{NoBlocks, ParamStore};
        let dev = Cpu::default();
        let mut store = ParamStore::new(dev.clone(), 3);
        let shape = vaelab::nn::FeatShape::Image(1, 32, 32);
        let model = vaelab::model::Model::build(&spec.model, shape, &mut store, &NoBlocks).unwrap();
        let gan = vaelab::adversarial::Gan::build(&spec.adversarial, shape, &mut store, &NoBlocks).unwrap().unwrap();
        let x = dev.tensor_from_vec((0..1024 * 4).map(|i| ((i * 7) % 11) as f32 / 10.0).collect(), (1024, 4));
        let code = model.latent.code_shape().len();
        let noise = dev.tensor_from_vec((0..code * 4).map(|i| ((i * 5) % 7) as f32 / 3.0 - 1.0).collect(), (code, 4));
        GanFixture { store, model, gan, x, noise }
    }
}

/// Σ g² over the trainable parameters whose names start with `prefix` (0 for those without a gradient).
fn grad_norm(
    store: &vaelab::nn::ParamStore<dfdx::prelude::Cpu>,
    prefix: &str,
    grads: &mut dfdx::prelude::Gradients<f32, dfdx::prelude::Cpu>,
) -> f64 {
    store
        .iter()
        .filter(|p| p.role == vaelab::nn::Role::Trainable && p.name.starts_with(prefix))
        .map(|p| {
            grads.try_alloc_for(&p.tensor).unwrap();
            grads.get(&p.tensor).as_vec().iter().map(|g| (*g as f64).powi(2)).sum::<f64>()
        })
        .sum()
}

/// VAE-GAN after Larsen et al. (2016, Algorithm 1): with `gan_trains_encoder: false` the generator
/// loss on the step's fakes gives the encoder no gradient and the decoder some; with `true` (VQGAN's
/// way) the encoder gets it too.
#[test]
fn the_gan_loss_reaches_the_encoder_only_when_asked() {
    use dfdx::prelude::*;
    use vaelab::nn::Ctx;
    let GanFixture { store, model, gan, x, noise } = GanFixture::new(&tiny_gan(0.1, 1));
    for reach in [false, true] {
        let ctx = Ctx::new(&store, true, 0, 0);
        let step = model.terms_and_fakes(&ctx, x.clone(), noise.clone(), noise.clone(), reach, false);
        let (terms, fakes) = (step.terms, step.fakes);
        // The ELBO terms join with weight 0, as in a step their tape carries the shared forward ops.
        let loss = gan.generator_loss(&ctx, fakes) + (terms.rec + terms.reg.1) * 0.0;
        let mut grads = loss.backward();
        drop(ctx);
        let (encoder, decoder) = (grad_norm(&store, "encoder.", &mut grads), grad_norm(&store, "decoder.", &mut grads));
        assert!(decoder > 0.0, "the decoder always learns from the GAN loss");
        assert_eq!(encoder > 0.0, reach, "gan_trains_encoder: {reach}, encoder gradient {encoder}");
    }
}

/// Reconstruction in discriminator features (Larsen et al. 2016, eq. 6–7): with a linear first
/// layer D_0(x) = W·x + b the term is ½·Σ (W(x̃ − x))² / B, and its gradient in x̃ is
/// Wᵀ·W·(x̃ − x) / B; both checked in f64 from the stored W. Layer 1 (after a ReLU) must give a
/// different value, so the term reads the layer it is given.
#[test]
fn feature_reconstruction_matches_the_formula() {
    use dfdx::prelude::*;
    use vaelab::adversarial::Gan;
    use vaelab::nn::{FeatShape, NoBlocks, ParamStore};
    let dev = Cpu::default();
    let build = |layer: usize, store: &mut ParamStore<Cpu>| {
        let spec = Adversarial::Gan {
            discriminator: ron::from_str("[Dense(out: 4), Relu, Dense(out: 1)]").unwrap(),
            loss: GanLoss::NonSaturating,
            weight: 1.0,
            d_steps: 1,
            optimizer: None,
            r1_gamma: 0.0,
            gan_trains_encoder: false,
            feature_layer: Some(layer),
        };
        Gan::build(&spec, FeatShape::Flat(3), store, &NoBlocks).unwrap().unwrap()
    };
    let mut store = ParamStore::new(dev.clone(), 5);
    let gan = build(0, &mut store);
    let (xs, rs) = (vec![0.1f32, 0.9, 0.5, 0.0, 0.3, 0.2], vec![0.4f32, 0.7, 0.1, 0.3, 0.2, 0.9]);
    let real = dev.tensor_from_vec(xs.clone(), (3, 2));
    let recon = dev.tensor_from_vec(rs.clone(), (3, 2));
    let ctx = vaelab::nn::Ctx::new(&store, true, 0, 0);
    let loss = gan.feature_loss(&ctx, &real, recon.retaped()).unwrap();
    let value = loss.as_vec()[0] as f64;
    let grad = loss.backward().get(&recon).as_vec();
    drop(ctx);
    let w = store.get(store.find("discriminator.0.weight").unwrap()).tensor.as_vec();
    // Batch-last: column b of (3, 2) is image b; W is (4, 3).
    let d = |i: usize, b: usize| rs[i * 2 + b] as f64 - xs[i * 2 + b] as f64;
    let wd = |o: usize, b: usize| (0..3).map(|i| w[o * 3 + i] as f64 * d(i, b)).sum::<f64>();
    let want = (0..2).map(|b| (0..4).map(|o| wd(o, b).powi(2)).sum::<f64>()).sum::<f64>() * 0.5 / 2.0;
    assert!((value - want).abs() < 1e-6 * want.max(1e-6), "feature term {value} vs {want}");
    assert!(want > 1e-3, "the fixture's term is not negligible: {want}");
    for i in 0..3 {
        for b in 0..2 {
            let g = (0..4).map(|o| w[o * 3 + i] as f64 * wd(o, b)).sum::<f64>() / 2.0;
            assert!((grad[i * 2 + b] as f64 - g).abs() < 1e-6, "d/dx̃[{i},{b}]: {} vs {g}", grad[i * 2 + b]);
        }
    }
    let mut store1 = ParamStore::new(dev.clone(), 5);
    let gan1 = build(1, &mut store1);
    let ctx = vaelab::nn::Ctx::new(&store1, true, 0, 0);
    let after_relu = gan1.feature_loss(&ctx, &real, recon.retaped()).unwrap().as_vec()[0] as f64;
    assert!((after_relu - value).abs() > 1e-6, "layer 1 reads the ReLU's output: {after_relu} vs {value}");
}

/// With `feature_layer`, the generator side of a VAE-GAN step learns from the features: the
/// feature term reaches the encoder even where the GAN loss does not (`gan_trains_encoder: false`),
/// a run logs it as `feature`, and a layer outside the discriminator is refused where it is written.
#[test]
fn feature_reconstruction_trains_the_encoder_and_is_logged() {
    let mut spec = tiny_gan(0.1, 1);
    if let Adversarial::Gan { gan_trains_encoder, feature_layer, .. } = &mut spec.adversarial {
        *gan_trains_encoder = false;
        *feature_layer = Some(1);
    }
    let dir = scratch("gan-feature");
    assert!(matches!(train(&spec, &options(&dir)).unwrap(), TrainOutcome::Finished { steps: 6, .. }));
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    let feature = last["terms"]["feature"].as_f64().expect("the feature term is logged");
    assert!(feature.is_finite() && feature > 0.0, "feature term {feature}");

    use dfdx::prelude::*;
    use vaelab::nn::Ctx;
    let GanFixture { store, model, gan, x, noise } = GanFixture::new(&spec);
    let ctx = Ctx::new(&store, true, 0, 0);
    let step = model.terms_and_fakes(&ctx, x.clone(), noise.clone(), noise, false, true);
    let feature = gan.feature_loss(&ctx, &x, step.recon.expect("asked for")).unwrap();
    let loss = feature + (step.terms.rec + step.terms.reg.1) * 0.0;
    let mut grads = loss.backward();
    drop(ctx);
    for prefix in ["encoder.", "decoder."] {
        assert!(grad_norm(&store, prefix, &mut grads) > 0.0, "the feature term reaches {prefix}*");
    }

    let base = std::fs::canonicalize("../specs/shapes/vae-gan.ron").unwrap();
    let text = format!(
        "Experiment(name: \"f\", extends: {:?}, adversarial: Gan(discriminator: [Flatten, Dense(out: 1)], feature_layer: Some(1)))",
        base.display().to_string()
    );
    let dir = vaelab_tests::scratch::Scratch::created("test", "gan-feature-spec");
    let file = dir.join("spec.ron");
    std::fs::write(&file, text).unwrap();
    let Err(err) = vaelab::spec::load_spec(&file) else { panic!("layer 1 is the logit: the spec must be refused") };
    let err = err.to_string();
    assert!(err.contains("adversarial.feature_layer") && err.contains("before the last"), "{err}");
}
