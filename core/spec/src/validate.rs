//! Value checks on a resolved experiment: every impossible setting, reported with its field path.

use super::types::*;

/// (field path, message) for each problem; empty when the values are all usable.
pub fn validate_values(e: &Experiment) -> Vec<(String, String)> {
    let mut v = Problems(Vec::new());
    if e.name.is_empty() || e.name.contains(['/', '\\']) || e.name.starts_with('.') {
        v.push("name", format!("`{}` is not usable as a run directory name", e.name));
    }
    let d = &e.data;
    v.positive("data.size", d.size);
    v.positive("data.batch", d.batch);
    v.positive("data.train_size", d.train_size);
    v.positive("data.test_size", d.test_size);
    for (field, message) in d.augment.problems() {
        v.push(&format!("data.augment.{field}"), message);
    }
    layers(&mut v, "model.encoder", &e.model.encoder);
    layers(&mut v, "model.decoder", &e.model.decoder);
    match e.model.latent {
        Latent::Gaussian { dim } => v.positive("model.latent.dim", dim),
        Latent::Spatial { channels } => v.positive("model.latent.channels", channels),
        Latent::Quantized { codes, dim, beta, .. } => {
            v.check(codes >= 2, "model.latent.codes", format!("a codebook needs at least 2 codes, got {codes}"));
            v.positive("model.latent.dim", dim);
            v.check(beta >= 0.0 && beta.is_finite(), "model.latent.beta", format!("must be ≥ 0, got {beta}"));
        }
        Latent::None => {}
    }
    // Each latent's own term fits only that latent.
    for (i, loss) in e.losses.iter().enumerate() {
        let term = loss.name();
        if term != "rec" && e.model.latent.regulariser() != Some(term) {
            let message = match e.model.latent.regulariser() {
                Some(own) => format!("`{term}` does not apply to a {} latent; its term is `{own}`", e.model.latent.kind()),
                None => format!("`{term}` needs a latent with a posterior or a codebook; `latent: None` has neither"),
            };
            v.push(&format!("losses[{i}]"), message);
        }
    }
    if let Some(noise) = e.model.noise_dim {
        // A generator alone: nothing encodes, so nothing reconstructs; only a discriminator trains it.
        v.positive("model.noise_dim", noise);
        v.check(
            e.model.encoder.is_empty(),
            "model.noise_dim",
            "a generator from noise has no encoder: write `encoder: []`, or drop `noise_dim` for an autoencoder".into(),
        );
        v.check(
            e.model.latent == Latent::None,
            "model.latent",
            format!("a generator from noise takes `latent: None` (its code is the noise), not {}", e.model.latent.kind()),
        );
        v.check(
            matches!(e.adversarial, Adversarial::Gan { .. }),
            // Reported where `noise_dim` is written: `adversarial` may be absent from every file.
            "model.noise_dim",
            "a generator from noise trains only against a discriminator: add `adversarial: Gan(…)`".into(),
        );
        v.check(e.losses.is_empty(), "losses", "a generator from noise cannot reconstruct: write `losses: []`".into());
    } else if e.model.encoder.is_empty() && e.model.latent == Latent::None {
        v.push("model.encoder", "no encoder and no latent: add encoder layers, or `noise_dim` for a GAN generator".into());
    }
    if let Prior::PixelCnn { channels, kernel, steps, lr, batch, .. } = e.model.prior {
        v.check(
            matches!(e.model.latent, Latent::Quantized { .. }),
            "model.prior",
            format!("a PixelCnn prior models code grids: it needs a Quantized latent, not {}", e.model.latent.kind()),
        );
        v.positive("model.prior.channels", channels);
        v.positive("model.prior.steps", steps);
        v.positive("model.prior.batch", batch);
        v.check(kernel % 2 == 1, "model.prior.kernel", format!("a masked convolution needs an odd kernel, got {kernel}"));
        v.check(lr > 0.0 && lr.is_finite(), "model.prior.lr", format!("learning rate must be > 0, got {lr}"));
    }
    if let Likelihood::Gaussian { sigma: Sigma::Fixed(s) } = e.model.likelihood {
        v.check(s > 0.0 && s.is_finite(), "model.likelihood.sigma", format!("σ must be > 0, got {s}"));
    }
    if let Adversarial::Gan { discriminator, weight, d_steps, r1_gamma, feature_layer, .. } = &e.adversarial {
        v.check(*r1_gamma >= 0.0 && r1_gamma.is_finite(), "adversarial.r1_gamma", format!("must be ≥ 0, got {r1_gamma}"));
        if let Some(n) = *feature_layer {
            v.check(
                n + 1 < discriminator.len(),
                "adversarial.feature_layer",
                format!(
                    "the features of layer {n} are not inside the discriminator, whose {} layers count from 0; \
                     pick one before the last (the logit)",
                    discriminator.len()
                ),
            );
            v.check(
                e.model.noise_dim.is_none(),
                "adversarial.feature_layer",
                "a generator from noise has no reconstruction to judge in features".into(),
            );
        }
        layers(&mut v, "adversarial.discriminator", discriminator);
        v.check(!discriminator.is_empty(), "adversarial.discriminator", "a GAN needs discriminator layers".into());
        v.check(*weight >= 0.0 && weight.is_finite(), "adversarial.weight", format!("must be ≥ 0, got {weight}"));
        v.positive("adversarial.d_steps", *d_steps);
    }
    if let Adversarial::IntroVae { margin, weight_rec, weight_kl, weight_neg, .. } = e.adversarial {
        needs_posterior(&mut v, e, "IntroVae", "its critic is the KL");
        for (field, x) in [("margin", margin), ("weight_rec", weight_rec), ("weight_kl", weight_kl), ("weight_neg", weight_neg)] {
            v.check(x >= 0.0 && x.is_finite(), &format!("adversarial.{field}"), format!("must be ≥ 0, got {x}"));
        }
    }
    if let Adversarial::SoftIntroVae { beta_rec, beta_kl, beta_neg, gamma_r, .. } = e.adversarial {
        needs_posterior(&mut v, e, "SoftIntroVae", "its ELBO needs a posterior");
        for (field, x) in [("beta_rec", beta_rec), ("beta_kl", beta_kl), ("beta_neg", beta_neg), ("gamma_r", gamma_r)] {
            v.check(x >= 0.0 && x.is_finite(), &format!("adversarial.{field}"), format!("must be ≥ 0, got {x}"));
        }
    }
    if let Adversarial::Vpga { a_n, a_h, a_v, a_kl } = e.adversarial {
        needs_posterior(&mut v, e, "Vpga", "its terms need μ and σ");
        for (field, x) in [("a_n", a_n), ("a_h", a_h), ("a_v", a_v), ("a_kl", a_kl)] {
            v.check(x >= 0.0 && x.is_finite(), &format!("adversarial.{field}"), format!("must be ≥ 0, got {x}"));
        }
        // VPGA's objective is complete in itself; terms listed beside it would be silently unused.
        v.check(
            e.losses.is_empty(),
            "losses",
            "VPGA trains by its own terms (img, z_n, z_h, vrec, kl); write `losses: []`".into(),
        );
    } else if e.losses.is_empty() && e.model.noise_dim.is_none() {
        v.push("losses", "no loss terms: add at least `Reconstruction()`".into());
    }
    for (i, loss) in e.losses.iter().enumerate() {
        let weight = match loss {
            Loss::Reconstruction { weight } | Loss::Kl { weight, .. } | Loss::Vq { weight } => *weight,
        };
        let path = format!("losses[{i}].weight");
        v.check(weight >= 0.0 && weight.is_finite(), &path, format!("weights must be ≥ 0, got {weight}"));
        if e.losses[..i].iter().any(|l| l.name() == loss.name()) {
            v.push(&format!("losses[{i}]"), format!("`{}` appears twice; merge the weights into one term", loss.name()));
        }
    }
    let t = &e.train;
    v.positive("train.steps", t.steps);
    v.positive("train.log_every", t.log_every);
    v.positive("train.checkpoint_every", t.checkpoint_every);
    let lr = t.optimizer.lr();
    v.check(lr > 0.0 && lr.is_finite(), "train.optimizer.lr", format!("learning rate must be > 0, got {lr}"));
    match t.optimizer {
        OptimizerSpec::Adam { beta1, beta2, eps, weight_decay, .. } => {
            v.unit_interval("train.optimizer.beta1", beta1);
            v.unit_interval("train.optimizer.beta2", beta2);
            v.check(eps > 0.0, "train.optimizer.eps", format!("eps must be > 0, got {eps}"));
            v.check(weight_decay >= 0.0, "train.optimizer.weight_decay", format!("must be ≥ 0, got {weight_decay}"));
        }
        OptimizerSpec::Sgd { momentum, .. } => v.unit_interval("train.optimizer.momentum", momentum),
    }
    match t.schedule {
        Schedule::Constant => {}
        Schedule::Warmup { steps } => v.positive("train.schedule.steps", steps),
        Schedule::Cosine { min_factor } => v.check(
            (0.0..=1.0).contains(&min_factor),
            "train.schedule.min_factor",
            format!("must be in [0, 1], got {min_factor}"),
        ),
        Schedule::Step { every, gamma } => {
            v.positive("train.schedule.every", every);
            v.check(gamma > 0.0, "train.schedule.gamma", format!("must be > 0, got {gamma}"));
        }
    }
    if let GradClip::Norm(n) = t.grad_clip {
        v.check(n > 0.0 && n.is_finite(), "train.grad_clip", format!("clip norm must be > 0, got {n}"));
    }
    let ev = &e.eval;
    // A generator alone may list none: its evaluation then draws its sample and traversal grids.
    v.check(!ev.metrics.is_empty() || e.model.noise_dim.is_some(), "eval.metrics", "no metrics listed".into());
    v.positive("eval.test_images", ev.test_images);
    v.positive("eval.grid_images", ev.grid_images);
    v.check(ev.traversal_steps >= 2, "eval.traversal_steps", format!("must be ≥ 2, got {}", ev.traversal_steps));
    v.0
}

fn layers(v: &mut Problems, prefix: &str, list: &[Layer]) {
    for (i, layer) in list.iter().enumerate() {
        let p = format!("{prefix}[{i}]");
        match layer {
            Layer::Dense { out } => v.positive(&format!("{p}.out"), *out),
            Layer::Conv { out, k, s, .. } | Layer::ConvT { out, k, s, .. } => {
                v.positive(&format!("{p}.out"), *out);
                v.positive(&format!("{p}.k"), *k);
                if *s == 0 {
                    v.push(&format!("{p}.s"), format!("{}: stride must be ≥ 1, got 0", layer.kind()));
                }
            }
            Layer::Upsample { factor } => v.positive(&format!("{p}.factor"), *factor),
            Layer::AvgPool { k } => v.positive(&format!("{p}.k"), *k),
            Layer::Reshape { c, h, w } => {
                for (name, x) in [("c", c), ("h", h), ("w", w)] {
                    v.positive(&format!("{p}.{name}"), *x);
                }
            }
            Layer::LeakyRelu { slope } => v.check(slope.is_finite(), &format!("{p}.slope"), "must be finite".into()),
            Layer::BatchNorm { momentum, eps } => {
                v.check(
                    *momentum > 0.0 && *momentum <= 1.0,
                    &format!("{p}.momentum"),
                    format!("must be in (0, 1], got {momentum}"),
                );
                v.check(*eps > 0.0, &format!("{p}.eps"), format!("must be > 0, got {eps}"));
            }
            Layer::GroupNorm { groups, eps } => {
                v.positive(&format!("{p}.groups"), *groups);
                v.check(*eps > 0.0, &format!("{p}.eps"), format!("must be > 0, got {eps}"));
            }
            Layer::Dropout { p: prob } => v.check(
                (0.0..1.0).contains(prob),
                &format!("{p}.p"),
                format!("dropout probability must be in [0, 1), got {prob}"),
            ),
            Layer::Residual(inner) => layers(v, &format!("{p}[0]"), inner),
            Layer::SpectralNorm(inner) => match **inner {
                Layer::Dense { .. } | Layer::Conv { .. } | Layer::ConvT { .. } => {
                    // The wrapped layer is field 0 of the variant, as a Residual's list is.
                    layers(v, &p, std::slice::from_ref(&**inner))
                }
                ref other => v.push(&p, format!("SpectralNorm wraps a Dense, Conv or ConvT layer, not {}", other.kind())),
            },
            Layer::Plugin(name, config) => {
                v.check(!name.is_empty(), &p, "Plugin needs a block name".into());
                if let Err(m) = config_pairs(config) {
                    v.push(&p, m);
                }
            }
            Layer::Flatten | Layer::Relu | Layer::Silu | Layer::Tanh | Layer::Sigmoid => {}
        }
    }
}

struct Problems(Vec<(String, String)>);

impl Problems {
    fn push(&mut self, path: &str, message: String) {
        self.0.push((path.to_string(), message));
    }
    fn check(&mut self, ok: bool, path: &str, message: String) {
        if !ok {
            self.push(path, message);
        }
    }
    fn positive(&mut self, path: &str, x: usize) {
        self.check(x > 0, path, "must be ≥ 1, got 0".into());
    }
    fn unit_interval(&mut self, path: &str, x: f32) {
        self.check((0.0..1.0).contains(&x), path, format!("must be in [0, 1), got {x}"));
    }
}

/// The objectives built on a Gaussian posterior refuse the other latents.
fn needs_posterior(v: &mut Problems, e: &Experiment, objective: &str, why: &str) {
    v.check(
        e.model.latent.is_probabilistic(),
        "adversarial",
        format!("{objective} needs a Gaussian or Spatial latent ({why}), not {}", e.model.latent.kind()),
    );
}
