//! Soft-IntroVAE and VPGA: loss values on a fixed tiny network and batch against the formulas in
//! f64, gradients reaching each group against finite differences, and deterministic traces.

use crate::adversarial::intro::dense;
use crate::training::{deterministic_trace, tiny, within, TRACE};
use dfdx::prelude::*;
use std::collections::BTreeMap;
use vaelab_core::adversarial::{SoftIntroVae, StepData, Vpga};
use vaelab_core::model::Model;
use vaelab_core::nn::{Ctx, FeatShape, NoBlocks, ParamStore};
use vaelab_core::spec::Adversarial;

const B: usize = 3;
const PIXELS: usize = 4;
const CODE: usize = 2;

/// The tiny network's parameters in f64: Flatten → Dense(3) → Tanh → Gaussian(2) → Dense(4) → σ.
#[derive(Clone)]
struct Net(BTreeMap<String, Vec<f64>>);

impl Net {
    fn of(store: &ParamStore<Cpu>) -> Net {
        Net(store.iter().map(|p| (p.name.clone(), p.tensor.as_vec().iter().map(|v| *v as f64).collect())).collect())
    }
    fn nudged(&self, name: &str, delta: f64) -> Net {
        let mut n = self.clone();
        n.0.get_mut(name).unwrap()[0] += delta;
        n
    }
    fn p(&self, name: &str) -> &[f64] {
        &self.0[name]
    }
    /// (μ, log σ²) of one image.
    fn encode(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let h: Vec<f64> = dense(self.p("encoder.1.weight"), self.p("encoder.1.bias"), x).iter().map(|v| v.tanh()).collect();
        (
            dense(self.p("latent.mu.0.weight"), self.p("latent.mu.0.bias"), &h),
            dense(self.p("latent.logvar.0.weight"), self.p("latent.logvar.0.bias"), &h),
        )
    }
    fn decode(&self, z: &[f64]) -> Vec<f64> {
        dense(self.p("decoder.0.weight"), self.p("decoder.0.bias"), z).iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect()
    }
    fn kl(&self, x: &[f64]) -> f64 {
        let (mu, lv) = self.encode(x);
        -0.5 * mu.iter().zip(&lv).map(|(m, l)| 1.0 + l - m * m - l.exp()).sum::<f64>()
    }
    fn sample(&self, x: &[f64], eps: &[f64]) -> Vec<f64> {
        let (mu, lv) = self.encode(x);
        (0..CODE).map(|d| mu[d] + (0.5 * lv[d]).exp() * eps[d]).collect()
    }
}

fn sse(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}
fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    v.iter().sum::<f64>() / v.len() as f64
}

/// Column j of a batch-last matrix.
fn column(m: &[f32], rows: usize, j: usize) -> Vec<f64> {
    (0..rows).map(|r| m[r * B + j] as f64).collect()
}

struct Fixture {
    store: ParamStore<Cpu>,
    model: Model,
    x: Tensor<(usize, usize), f32, Cpu>,
    noise: Tensor<(usize, usize), f32, Cpu>,
    prior: Tensor<(usize, usize), f32, Cpu>,
    /// Per image: x, ε, z_p in f64.
    images: Vec<Vec<f64>>,
    eps: Vec<Vec<f64>>,
    zp: Vec<Vec<f64>>,
}

fn fixture() -> Fixture {
    let spec: vaelab_core::spec::Model = ron::from_str(
        "(encoder: [Flatten, Dense(out: 3), Tanh], latent: Gaussian(dim: 2), decoder: [Dense(out: 4), Reshape(c: 1, h: 2, w: 2)], likelihood: Bernoulli)",
    )
    .unwrap();
    let dev = Cpu::default();
    let mut store = ParamStore::new(dev.clone(), 11);
    let model = Model::build(&spec, FeatShape::Image(1, 2, 2), &mut store, &NoBlocks).unwrap();
    let xs: Vec<f32> = (0..PIXELS * B).map(|i| ((i * 7 % 11) as f32) / 10.0).collect();
    let eps: Vec<f32> = (0..CODE * B).map(|i| ((i * 5 % 7) as f32 - 3.0) / 3.0).collect();
    let zp: Vec<f32> = (0..CODE * B).map(|i| ((i * 3 % 5) as f32 - 2.0) / 1.5).collect();
    Fixture {
        x: dev.tensor_from_vec(xs.clone(), (PIXELS, B)),
        noise: dev.tensor_from_vec(eps.clone(), (CODE, B)),
        prior: dev.tensor_from_vec(zp.clone(), (CODE, B)),
        images: (0..B).map(|j| column(&xs, PIXELS, j)).collect(),
        eps: (0..B).map(|j| column(&eps, CODE, j)).collect(),
        zp: (0..B).map(|j| column(&zp, CODE, j)).collect(),
        store,
        model,
    }
}

/// ∂loss/∂(first element of `name`) from the tape.
fn tape_gradient(store: &ParamStore<Cpu>, loss: Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>>, name: &str) -> f64 {
    let mut grads = loss.backward();
    let p = &store.get(store.find(name).unwrap()).tensor;
    grads.try_alloc_for(p).unwrap();
    grads.get(p).as_vec()[0] as f64
}

/// Central difference of `f` in the first element of `name`.
fn numeric_gradient(net: &Net, name: &str, f: impl Fn(&Net) -> f64) -> f64 {
    let h = 1e-4;
    (f(&net.nudged(name, h)) - f(&net.nudged(name, -h))) / (2.0 * h)
}

fn assert_close(what: &str, got: f64, want: f64, rel: f64) {
    assert!((got - want).abs() <= rel * want.abs().max(1e-2), "{what}: {got} vs {want}");
}

/// Soft-IntroVAE: both losses equal the formulas of Daniel & Tamar (2021) in f64; the encoder's
/// gradient treats generated images as constants (sg x_r, sg x_p) and the decoder's treats z and
/// the re-encoded z_r, z_p as constants, by finite differences of the formulas with those held.
#[test]
fn soft_intro_vae_losses_and_gradients_match_the_formulas() {
    let f = fixture();
    let net0 = Net::of(&f.store);
    // γ_r far above its default so that its term shows in the decoder's gradient.
    let (beta_rec, beta_kl, beta_neg, gamma_r) = (1.0, 0.7, 2.0, 0.5);
    let s = 1.0 / PIXELS as f64;
    let z: Vec<Vec<f64>> = (0..B).map(|j| net0.sample(&f.images[j], &f.eps[j])).collect();
    let recs: Vec<Vec<f64>> = z.iter().map(|z| net0.decode(z)).collect();
    let fakes: Vec<Vec<f64>> = f.zp.iter().map(|z| net0.decode(z)).collect();
    // The generated images' re-encodings (constants in both losses' gradients).
    let z_rr: Vec<Vec<f64>> = (0..B).map(|j| net0.sample(&recs[j], &f.eps[j])).collect();
    let z_pr: Vec<Vec<f64>> = (0..B).map(|j| net0.sample(&fakes[j], &f.eps[j])).collect();

    let encoder_formula = |net: &Net| {
        let rec = mean((0..B).map(|j| sse(&f.images[j], &net.decode(&net.sample(&f.images[j], &f.eps[j])))));
        let kl = mean(f.images.iter().map(|x| net.kl(x)));
        let exp_term = |gen: &[Vec<f64>]| {
            mean((0..B).map(|j| {
                let elbo = beta_rec * sse(&gen[j], &net.decode(&net.sample(&gen[j], &f.eps[j]))) + beta_neg * net.kl(&gen[j]);
                (-2.0 * s * elbo).exp()
            }))
        };
        s * (beta_rec * rec + beta_kl * kl) + 0.25 * (exp_term(&recs) + exp_term(&fakes))
    };
    let decoder_formula = |net: &Net| {
        let recs_now: Vec<Vec<f64>> = z.iter().map(|z| net.decode(z)).collect();
        let fakes_now: Vec<Vec<f64>> = f.zp.iter().map(|z| net.decode(z)).collect();
        let rec = mean((0..B).map(|j| sse(&f.images[j], &recs_now[j])));
        let kl_gen = mean(recs_now.iter().map(|x| net.kl(x))) + mean(fakes_now.iter().map(|x| net.kl(x)));
        // The targets sg x_r, sg x_p and the codes sg z_r, sg z_p stay at their start values.
        let rr = mean((0..B).map(|j| sse(&recs[j], &net.decode(&z_rr[j]))))
            + mean((0..B).map(|j| sse(&fakes[j], &net.decode(&z_pr[j]))));
        s * (beta_rec * rec + 0.5 * beta_kl * kl_gen + 0.5 * gamma_r * beta_rec * rr)
    };

    let objective = SoftIntroVae { beta_rec: 1.0, beta_kl: 0.7, beta_neg: 2.0, gamma_r: 0.5, warmup: 0 };
    let data = StepData { x: &f.x, noise: &f.noise, prior_z: &f.prior };
    let ctx = Ctx::new(&f.store, true, 0, 0);
    let e = objective.encoder_loss(&f.model, &ctx, &data);
    assert_close("L_E", e.loss.as_vec()[0] as f64, encoder_formula(&net0), 1e-5);
    let terms: BTreeMap<_, _> = e.terms.iter().copied().collect();
    assert_close("kl_rec", terms["kl_rec"] as f64, mean(recs.iter().map(|x| net0.kl(x))), 1e-5);
    let d = objective.decoder_loss(&f.model, &ctx, &data);
    assert_close("L_D", d.loss.as_vec()[0] as f64, decoder_formula(&net0), 1e-5);

    for name in ["encoder.1.bias", "latent.logvar.0.bias"] {
        let ctx = Ctx::new(&f.store, true, 0, 0);
        let analytic = tape_gradient(&f.store, objective.encoder_loss(&f.model, &ctx, &data).loss, name);
        assert_close(&format!("dL_E/d{name}"), analytic, numeric_gradient(&net0, name, encoder_formula), 2e-3);
    }
    for name in ["decoder.0.bias", "decoder.0.weight"] {
        let ctx = Ctx::new(&f.store, true, 0, 0);
        let analytic = tape_gradient(&f.store, objective.decoder_loss(&f.model, &ctx, &data).loss, name);
        assert_close(&format!("dL_D/d{name}"), analytic, numeric_gradient(&net0, name, decoder_formula), 2e-3);
    }
}

/// VPGA: every term equals its formula in f64, and the one summed loss hands each group exactly
/// its own loss's gradient: the encoder L_img + a_N·L_zN + a_H·L_zH + a_v·L_vrec + a_kl·L_kl (with
/// f̃ frozen, so a perturbed encoder moves σ but not f̃), the decoder L_img + a_v·L_vrec (so L_zN
/// and L_zH give the decoder nothing).
#[test]
fn vpga_terms_and_routed_gradients_match_the_formulas() {
    let f = fixture();
    let net0 = Net::of(&f.store);
    // Weights far above the defaults so that every term shows in the gradients.
    let (a_n, a_h, a_v, a_kl) = (0.3, 0.2, 0.5, 0.1);
    let mu0: Vec<Vec<f64>> = f.images.iter().map(|x| net0.encode(x).0).collect();
    let norm: Vec<f64> = (0..CODE).map(|d| mean(mu0.iter().map(|m| m[d] * m[d])).sqrt()).collect();
    let n_elems = (CODE * B) as f64;
    // (img, z_n, z_h, vrec, kl) with the encoder `enc` (μ, σ, and μ in L_zN, L_zH), the frozen f̃ at
    // `frozen`, and the decoder `dec`; sg μ and n_j at the start values.
    let terms = |enc: &Net, frozen: &Net, dec: &Net| {
        let post: Vec<(Vec<f64>, Vec<f64>)> = f.images.iter().map(|x| enc.encode(x)).collect();
        let img = mean((0..B).map(|j| sse(&f.images[j], &dec.decode(&post[j].0)))) / PIXELS as f64;
        let z_n = (0..B).map(|j| sse(&enc.encode(&dec.decode(&f.zp[j])).0, &f.zp[j])).sum::<f64>() / n_elems;
        let z_h = (0..B).map(|j| sse(&enc.encode(&dec.decode(&mu0[j])).0, &mu0[j])).sum::<f64>() / n_elems;
        let vrec = (0..B)
            .map(|j| {
                let z: Vec<f64> = (0..CODE).map(|d| mu0[j][d] + (0.5 * post[j].1[d]).exp() * f.eps[j][d]).collect();
                let (a, b) = (frozen.encode(&dec.decode(&z)).0, frozen.encode(&dec.decode(&mu0[j])).0);
                (0..CODE).map(|d| ((a[d] - b[d]) / norm[d]).powi(2)).sum::<f64>()
            })
            .sum::<f64>()
            / n_elems;
        let kl =
            post.iter().map(|(m, l)| (0..CODE).map(|d| -0.5 * (1.0 + l[d] - m[d] * m[d] - l[d].exp())).sum::<f64>()).sum::<f64>()
                / n_elems;
        [img, z_n, z_h, vrec, kl]
    };
    let encoder_loss = |t: [f64; 5]| t[0] + a_n * t[1] + a_h * t[2] + a_v * t[3] + a_kl * t[4];
    let decoder_loss = |t: [f64; 5]| t[0] + a_v * t[3];

    let objective = Vpga { a_n: 0.3, a_h: 0.2, a_v: 0.5, a_kl: 0.1 };
    let data = StepData { x: &f.x, noise: &f.noise, prior_z: &f.prior };
    let ctx = Ctx::new(&f.store, true, 0, 0);
    let routed = objective.loss(&f.model, &ctx, &data);
    let got: BTreeMap<_, _> = routed.terms.iter().map(|(k, v)| (*k, *v as f64)).collect();
    let want = terms(&net0, &net0, &net0);
    for (i, key) in ["img", "z_n", "z_h", "vrec", "kl"].iter().enumerate() {
        assert_close(key, got[key], want[i], 1e-5);
    }
    assert_close("encoder", got["encoder"], encoder_loss(want), 1e-5);
    assert_close("decoder", got["decoder"], decoder_loss(want), 1e-5);

    for name in ["encoder.1.bias", "latent.logvar.0.bias", "latent.mu.0.bias"] {
        let ctx = Ctx::new(&f.store, true, 0, 0);
        let analytic = tape_gradient(&f.store, objective.loss(&f.model, &ctx, &data).loss, name);
        let numeric = numeric_gradient(&net0, name, |enc| encoder_loss(terms(enc, &net0, &net0)));
        assert_close(&format!("dL_enc/d{name}"), analytic, numeric, 2e-3);
    }
    for name in ["decoder.0.bias", "decoder.0.weight"] {
        let ctx = Ctx::new(&f.store, true, 0, 0);
        let analytic = tape_gradient(&f.store, objective.loss(&f.model, &ctx, &data).loss, name);
        let numeric = numeric_gradient(&net0, name, |dec| decoder_loss(terms(&net0, &net0, dec)));
        assert_close(&format!("dL_dec/d{name}"), analytic, numeric, 2e-3);
    }
}

/// 20 deterministic steps of each, every term under its own name; 5 plain-VAE warm-up steps first
/// for Soft-IntroVAE.
#[test]
fn soft_intro_vae_and_vpga_traces() {
    let mut spec = tiny();
    spec.adversarial = Adversarial::SoftIntroVae { beta_rec: 1.0, beta_kl: 1.0, beta_neg: 256.0, gamma_r: 1e-8, warmup: 5 };
    let (lines, trace) = deterministic_trace(&spec, "soft-introvae");
    within(TRACE, || insta::assert_snapshot!("soft_introvae_trace", trace));
    assert!(lines[4].terms.contains_key("rec") && !lines[4].terms.contains_key("encoder"));
    for key in ["encoder", "decoder", "sse", "sse_rec", "sse_fake", "kl", "kl_rec", "kl_fake", "exp_elbo_rec", "exp_elbo_fake"] {
        assert!(lines[19].terms.contains_key(key), "{key} missing");
    }

    let mut spec = tiny();
    spec.adversarial = Adversarial::Vpga { a_n: 3e-2, a_h: 1e-2, a_v: 1e-2, a_kl: 2e-3 };
    spec.losses = vec![];
    let (lines, trace) = deterministic_trace(&spec, "vpga");
    within(TRACE, || insta::assert_snapshot!("vpga_trace", trace));
    for key in ["encoder", "decoder", "img", "z_n", "z_h", "vrec", "kl"] {
        assert!(lines[19].terms.contains_key(key), "{key} missing");
    }
    assert!(lines[19].terms["img"] < lines[0].terms["img"], "VPGA's reconstruction did not improve");
}
