//! Soft-IntroVAE and VPGA: loss values on a fixed tiny network and batch against the formulas in
//! f64, gradients reaching each group against finite differences, and deterministic traces.

use crate::adversarial::intro::dense;
use crate::training::{deterministic_trace, tiny, within, TRACE};
use dfdx::prelude::*;
use std::collections::BTreeMap;
use vaelab::adversarial::{SoftIntroVae, StepData, Vpga};
use vaelab::model::Model;
use vaelab::nn::{Ctx, FeatShape, NoBlocks, ParamStore};
use vaelab::spec::Adversarial;

const B: usize = 3;
const PIXELS: usize = 4;
const CODE: usize = 2;

/// The tiny network's parameters in f64: Flatten → Dense(3) → Tanh → Gaussian(2) → Dense(4) → σ.
#[derive(Clone)]
pub(crate) struct Net(pub(crate) BTreeMap<String, Vec<f64>>);

impl Net {
    pub(crate) fn of(store: &ParamStore<Cpu>) -> Net {
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
    pub(crate) fn encode(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let h: Vec<f64> = dense(self.p("encoder.1.weight"), self.p("encoder.1.bias"), x).iter().map(|v| v.tanh()).collect();
        (
            dense(self.p("latent.mu.0.weight"), self.p("latent.mu.0.bias"), &h),
            dense(self.p("latent.logvar.0.weight"), self.p("latent.logvar.0.bias"), &h),
        )
    }
    pub(crate) fn decode(&self, z: &[f64]) -> Vec<f64> {
        dense(self.p("decoder.0.weight"), self.p("decoder.0.bias"), z).iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect()
    }
    pub(crate) fn kl(&self, x: &[f64]) -> f64 {
        let (mu, lv) = self.encode(x);
        -0.5 * mu.iter().zip(&lv).map(|(m, l)| 1.0 + l - m * m - l.exp()).sum::<f64>()
    }
    pub(crate) fn sample(&self, x: &[f64], eps: &[f64]) -> Vec<f64> {
        let (mu, lv) = self.encode(x);
        (0..CODE).map(|d| mu[d] + (0.5 * lv[d]).exp() * eps[d]).collect()
    }
}

pub(crate) fn sse(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}
pub(crate) fn mean(v: impl Iterator<Item = f64>) -> f64 {
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
    /// The fresh noises of the further reparameterisations (`StepData::renoise`).
    renoise: [Tensor<(usize, usize), f32, Cpu>; 4],
    /// Per image: x, ε, z_p in f64, and each renoise.
    images: Vec<Vec<f64>>,
    eps: Vec<Vec<f64>>,
    zp: Vec<Vec<f64>>,
    reps: [Vec<Vec<f64>>; 4],
}

impl Fixture {
    fn dev(&self) -> Cpu {
        self.store.dev.clone()
    }
    fn data(&self) -> StepData<'_, Cpu> {
        StepData { x: &self.x, noise: &self.noise, prior_z: &self.prior, renoise: &self.renoise }
    }
}

fn fixture() -> Fixture {
    let spec: vaelab::spec::ModelSpec = ron::from_str(
        "(encoder: [Flatten, Dense(out: 3), Tanh], latent: Gaussian(dim: 2), decoder: [Dense(out: 4), Reshape(c: 1, h: 2, w: 2)], likelihood: Bernoulli)",
    )
    .unwrap();
    let dev = Cpu::default();
    let mut store = ParamStore::new(dev.clone(), 11);
    let model = Model::build(&spec, FeatShape::Image(1, 2, 2), &mut store, &NoBlocks).unwrap();
    let xs: Vec<f32> = (0..PIXELS * B).map(|i| ((i * 7 % 11) as f32) / 10.0).collect();
    let eps: Vec<f32> = (0..CODE * B).map(|i| ((i * 5 % 7) as f32 - 3.0) / 3.0).collect();
    let zp: Vec<f32> = (0..CODE * B).map(|i| ((i * 3 % 5) as f32 - 2.0) / 1.5).collect();
    // Four more noises, each unlike ε and the others.
    let reps: [Vec<f32>; 4] =
        std::array::from_fn(|k| (0..CODE * B).map(|i| (((i + 2 * k + 1) * 3 % 7) as f32 - 3.0) / (2.0 + k as f32)).collect());
    Fixture {
        renoise: std::array::from_fn(|k| dev.tensor_from_vec(reps[k].clone(), (CODE, B))),
        reps: std::array::from_fn(|k| (0..B).map(|j| column(&reps[k], CODE, j)).collect()),
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

/// Soft-IntroVAE: both losses equal the formulas of Daniel & Tamar (2021) in f64, as the authors'
/// code computes them: every re-encoding draws its own noise, and the encoder's L_rec(x_r, x_rr)
/// keeps x_r on the tape (`attach_rec_target`, default) or not. Gradients by finite differences of
/// the formulas: the encoder's treats the re-encoded images as constants (sg x_r, sg x_p) and, when
/// attached, moves the target x_r = D(z(x)); the decoder's treats z and the re-encoded z_r, z_p as
/// constants. Fails on a shared ε (the formulas use the fresh noises) and on a detached target
/// under the default.
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
    // The decoder pass's re-encodings (constants in its gradient), each with its own noise.
    let z_rr: Vec<Vec<f64>> = (0..B).map(|j| net0.sample(&recs[j], &f.reps[2][j])).collect();
    let z_pr: Vec<Vec<f64>> = (0..B).map(|j| net0.sample(&fakes[j], &f.reps[3][j])).collect();

    let encoder_formula = |net: &Net, attached: bool| {
        let recs_now: Vec<Vec<f64>> = (0..B).map(|j| net.decode(&net.sample(&f.images[j], &f.eps[j]))).collect();
        let rec = mean((0..B).map(|j| sse(&f.images[j], &recs_now[j])));
        let kl = mean(f.images.iter().map(|x| net.kl(x)));
        // gen: the re-encoded images (constants); targets: what their reconstructions are compared with.
        let exp_term = |gen: &[Vec<f64>], targets: &[Vec<f64>], noise: &[Vec<f64>]| {
            mean((0..B).map(|j| {
                let elbo = beta_rec * sse(&targets[j], &net.decode(&net.sample(&gen[j], &noise[j]))) + beta_neg * net.kl(&gen[j]);
                (-2.0 * s * elbo).exp()
            }))
        };
        let rec_targets = if attached { &recs_now } else { &recs };
        s * (beta_rec * rec + beta_kl * kl)
            + 0.25 * (exp_term(&recs, rec_targets, &f.reps[0]) + exp_term(&fakes, &fakes, &f.reps[1]))
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
    // z batch-last: element (d, j) at d·B + j.
    let codes = f.dev().tensor_from_vec((0..CODE * B).map(|i| z[i % B][i / B] as f32).collect(), (CODE, B));

    let data = f.data();
    for attached in [true, false] {
        let objective =
            SoftIntroVae { beta_rec: 1.0, beta_kl: 0.7, beta_neg: 2.0, gamma_r: 0.5, attach_rec_target: attached, warmup: 0 };
        let ctx = Ctx::new(&f.store, true, 0, 0);
        let (e, z_drawn, _) = objective.encoder_loss(&f.model, &ctx, &data);
        assert_close("L_E", e.loss.as_vec()[0] as f64, encoder_formula(&net0, attached), 1e-5);
        for (got, want) in z_drawn.as_vec().iter().zip(codes.as_vec()) {
            assert!((got - want).abs() < 1e-5, "the encoder pass hands on z = μ + σ·ε: {got} vs {want}");
        }
        let terms: BTreeMap<_, _> = e.terms.iter().copied().collect();
        assert_close("kl_rec", terms["kl_rec"] as f64, mean(recs.iter().map(|x| net0.kl(x))), 1e-5);
        let d = objective.decoder_loss(&f.model, &ctx, &data, &codes, None);
        assert_close("L_D", d.loss.as_vec()[0] as f64, decoder_formula(&net0), 1e-5);

        for name in ["encoder.1.bias", "latent.logvar.0.bias", "latent.mu.0.bias"] {
            let ctx = Ctx::new(&f.store, true, 0, 0);
            let analytic = tape_gradient(&f.store, objective.encoder_loss(&f.model, &ctx, &data).0.loss, name);
            let numeric = numeric_gradient(&net0, name, |n| encoder_formula(n, attached));
            assert_close(&format!("dL_E/d{name} (attached: {attached})"), analytic, numeric, 2e-3);
        }
        for name in ["decoder.0.bias", "decoder.0.weight"] {
            let ctx = Ctx::new(&f.store, true, 0, 0);
            let analytic = tape_gradient(&f.store, objective.decoder_loss(&f.model, &ctx, &data, &codes, None).loss, name);
            assert_close(&format!("dL_D/d{name}"), analytic, numeric_gradient(&net0, name, decoder_formula), 2e-3);
        }
    }
    // The two readings differ where the test looks (else it could not tell them apart).
    let name = "latent.mu.0.bias";
    let (a, b) = (
        numeric_gradient(&net0, name, |n| encoder_formula(n, true)),
        numeric_gradient(&net0, name, |n| encoder_formula(n, false)),
    );
    assert!((a - b).abs() > 1e-2 * a.abs().max(1e-3), "attached {a} vs detached {b}");
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
    let data = f.data();
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
    spec.adversarial = Adversarial::SoftIntroVae {
        beta_rec: 1.0,
        beta_kl: 1.0,
        beta_neg: 256.0,
        gamma_r: 1e-8,
        attach_rec_target: true,
        warmup: 5,
    };
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

/// VPGA's default weights are the authors' for images in [−1, 1] (zj10/PGA), rescaled for vaelab's
/// [0, 1]: the authors' objective on x' = 2x − 1, with a network that computes the same function in
/// that range (encoder'(x') = encoder((x' + 1)/2), D' = 2D − 1), is exactly 4 × the default objective on
/// x: L_img is 4×, the latent terms are equal. (With the authors' weights as defaults, the encoder's loss
/// would not scale by 4, and this fails.)
#[test]
fn vpga_defaults_are_the_authors_weights_rescaled_to_unit_range_images() {
    let spec: vaelab::spec::ModelSpec = ron::from_str(
        "(encoder: [Flatten, Dense(out: 3), Tanh], latent: Gaussian(dim: 2), decoder: [Dense(out: 4), Reshape(c: 1, h: 2, w: 2)], likelihood: Gaussian(sigma: Fixed(1.0)))",
    )
    .unwrap();
    let dev = Cpu::default();
    let (mut unit, mut signed) = (ParamStore::new(dev.clone(), 11), ParamStore::new(dev.clone(), 11));
    let model = Model::build(&spec, FeatShape::Image(1, 2, 2), &mut unit, &NoBlocks).unwrap();
    Model::build(&spec, FeatShape::Image(1, 2, 2), &mut signed, &NoBlocks).unwrap();
    let get = |s: &ParamStore<Cpu>, n: &str| s.get(s.find(n).unwrap()).tensor.as_vec();
    let set = |s: &mut ParamStore<Cpu>, n: &str, v: Vec<f32>| s.set_values(s.find(n).unwrap(), v);
    // encoder.1: W((x' + 1)/2) + b = (W/2)x' + (b + ½ Σ_i W_oi); decoder.0: 2(Wz + b) − 1.
    let (w, b) = (get(&unit, "encoder.1.weight"), get(&unit, "encoder.1.bias"));
    set(&mut signed, "encoder.1.weight", w.iter().map(|v| v / 2.0).collect());
    set(
        &mut signed,
        "encoder.1.bias",
        b.iter().enumerate().map(|(o, bo)| bo + 0.5 * w[o * PIXELS..(o + 1) * PIXELS].iter().sum::<f32>()).collect(),
    );
    set(&mut signed, "decoder.0.weight", get(&unit, "decoder.0.weight").iter().map(|v| 2.0 * v).collect());
    set(&mut signed, "decoder.0.bias", get(&unit, "decoder.0.bias").iter().map(|v| 2.0 * v - 1.0).collect());

    let f = fixture();
    let x_signed = dev.tensor_from_vec(f.x.as_vec().iter().map(|v| 2.0 * v - 1.0).collect(), (PIXELS, B));
    let defaults = Vpga::from_spec(&ron::from_str::<Adversarial>("Vpga()").unwrap()).unwrap();
    let authors = Vpga { a_n: 3e-2, a_h: 1e-2, a_v: 1e-2, a_kl: 2e-3 };
    let terms = |objective: Vpga, store: &ParamStore<Cpu>, x: &Tensor<(usize, usize), f32, Cpu>| {
        let data = StepData { x, noise: &f.noise, prior_z: &f.prior, renoise: &f.renoise };
        let ctx = Ctx::new(store, true, 0, 0);
        objective.loss(&model, &ctx, &data).terms.into_iter().map(|(k, v)| (k, v as f64)).collect::<BTreeMap<_, _>>()
    };
    let (ours, theirs) = (terms(defaults, &unit, &f.x), terms(authors, &signed, &x_signed));
    assert_close("L_img", theirs["img"], 4.0 * ours["img"], 1e-4);
    for key in ["z_n", "z_h", "vrec", "kl"] {
        assert_close(key, theirs[key], ours[key], 1e-4);
    }
    assert_close("encoder", theirs["encoder"], 4.0 * ours["encoder"], 1e-4);
    assert_close("decoder", theirs["decoder"], 4.0 * ours["decoder"], 1e-4);
}
