//! The whole model's loss (encoder → Gaussian latent → decoder → likelihood) checked by finite
//! differences, for each likelihood. Layer tests alone cannot see a branch that falls off dfdx's
//! tape; this one can.

use dfdx::prelude::*;
use std::path::Path;
use vaelab::data::{build_dataset, data_shape, train_batch};
use vaelab::model::Model;
use vaelab::nn::batch::{normal_noise, to_tensor};
use vaelab::nn::{Ctx, ParamId, ParamStore, Role};
use vaelab::spec::{load_spec, Latent, Likelihood, Sigma};

fn check(likelihood: Likelihood) {
    check_with(likelihood, Latent::Gaussian { dim: 4 });
}

fn check_with(likelihood: Likelihood, latent: Latent) {
    use vaelab::spec::Layer::*;
    let mut spec = load_spec(Path::new("specs/tiny.ron")).unwrap().experiment;
    spec.data.size = 8;
    let flat_decoder = vec![Dense { out: 48 }, Reshape { c: 3, h: 4, w: 4 }, Tanh, ConvT { out: 1, k: 4, s: 2, p: 1 }];
    (spec.model.encoder, spec.model.decoder) = match latent {
        Latent::Gaussian { .. } => (vec![Conv { out: 3, k: 4, s: 2, p: 1 }, Tanh, Flatten], flat_decoder),
        Latent::None => (vec![Conv { out: 3, k: 4, s: 2, p: 1 }, Tanh, Flatten, Dense { out: 5 }], flat_decoder),
        Latent::Spatial { .. } | Latent::Quantized { .. } => (
            vec![Conv { out: 3, k: 4, s: 2, p: 1 }, Tanh],
            vec![Conv { out: 3, k: 3, s: 1, p: 1 }, Tanh, ConvT { out: 1, k: 4, s: 2, p: 1 }],
        ),
    };
    spec.model.latent = latent;
    spec.model.likelihood = likelihood;
    let dev = Cpu::default();
    let ds = build_dataset(&spec).unwrap();
    let mut store = ParamStore::new(dev.clone(), 11);
    let model = Model::build(&spec.model, data_shape(ds.as_ref()), &mut store, &vaelab::nn::NoBlocks).unwrap();
    let images = train_batch(ds.as_ref(), 1, 0, 3, &Default::default());
    let code = model.latent.code_shape().len();
    let loss = |store: &ParamStore<Cpu>| {
        let ctx = Ctx::new(store, true, 1, 0);
        let t = model.terms(&ctx, to_tensor(&dev, &images), normal_noise(&dev, 1, "noise", 0, code, 3));
        t.rec + t.reg.1 * 0.7
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
    spec.model.encoder = vec![vaelab::spec::Layer::Conv { out: 3, k: 4, s: 2, p: 1 }];
    spec.model.latent = Latent::Spatial { channels: 2 };
    spec.model.decoder = vec![vaelab::spec::Layer::ConvT { out: 1, k: 4, s: 2, p: 1 }];
    let dev = Cpu::default();
    let ds = build_dataset(&spec).unwrap();
    let mut store = ParamStore::new(dev.clone(), 2);
    let model = Model::build(&spec.model, data_shape(ds.as_ref()), &mut store, &vaelab::nn::NoBlocks).unwrap();
    assert_eq!(model.latent.code_shape(), vaelab::nn::FeatShape::Image(2, 16, 16));
    let x = to_tensor(&dev, &train_batch(ds.as_ref(), 1, 0, 3, &Default::default()));
    let ctx = Ctx::new(&store, false, 1, 0);
    let enc = model.encode(&ctx, x.clone(), normal_noise(&dev, 1, "noise", 0, 2 * 16 * 16, 3));
    let (mu, lv) = (enc.mu.as_vec(), enc.logvar.as_vec());
    let by_hand: f64 =
        mu.iter().zip(&lv).map(|(m, l)| 0.5 * ((*m as f64).powi(2) + (*l as f64).exp() - 1.0 - *l as f64)).sum::<f64>() / 3.0;
    assert!((enc.reg.as_vec()[0] as f64 - by_hand).abs() < 1e-3 * by_hand.max(1.0), "{} vs {by_hand}", enc.reg.as_vec()[0]);

    spec.model.latent = Latent::None;
    let mut store = ParamStore::new(dev.clone(), 2);
    let model = Model::build(&spec.model, data_shape(ds.as_ref()), &mut store, &vaelab::nn::NoBlocks).unwrap();
    let ctx = Ctx::new(&store, false, 1, 0);
    let enc = model.encode(&ctx, x, normal_noise(&dev, 1, "noise", 0, 3 * 16 * 16, 3));
    assert_eq!(enc.reg.as_vec()[0], 0.0);
    assert_eq!(enc.z.as_vec(), enc.mu.as_vec(), "z is the encoder output");
}

/// vaelab's Gaussian KL (`Posterior::kl`, the term every Gaussian objective uses) against the closed
/// form KL(N(μ, σ²) ‖ N(0, 1)) = ½ Σ (μ² + σ² − 1 − log σ²) (Kingma & Welling 2014, appendix B),
/// per example, in f64; and its gradients against the closed-form derivatives ∂/∂μ = μ and
/// ∂/∂log σ² = ½ (σ² − 1).
#[test]
fn gaussian_kl_matches_the_closed_form() {
    let dev = Cpu::default();
    // Three code elements × two examples, batch-last: element d of example j at d·2 + j.
    let mu = [0.8f32, -1.5, 0.0, 0.3, -0.2, 2.0];
    let logvar = [-0.6f32, 0.4, 0.0, -2.0, 1.1, 0.05];
    let closed = |j: usize| -> f64 {
        (0..3).map(|d| (mu[d * 2 + j] as f64, logvar[d * 2 + j] as f64)).map(|(m, l)| 0.5 * (m * m + l.exp() - 1.0 - l)).sum()
    };
    // By hand for example 0: ½(0.64 + e^−0.6 − 1 + 0.6) + 0 + ½(0.04 + e^1.1 − 1 − 1.1) = 0.394406 + 0.472083.
    assert!((closed(0) - 0.866489).abs() < 1e-6, "{}", closed(0));
    let mu_leaf = dev.tensor_from_vec(mu.to_vec(), (3, 2));
    let lv_leaf = dev.tensor_from_vec(logvar.to_vec(), (3, 2));
    let posterior = vaelab::latent::Posterior { mu: mu_leaf.leaky_trace(), logvar: lv_leaf.leaky_trace() };
    let kl = posterior.kl();
    let values = kl.as_vec();
    for (j, v) in values.iter().enumerate() {
        assert!((*v as f64 - closed(j)).abs() < 1e-6 * closed(j).max(1.0), "example {j}: {v} vs {}", closed(j));
    }
    let grads = kl.sum::<(), _>().backward();
    let (g_mu, g_lv) = (grads.get(&mu_leaf).as_vec(), grads.get(&lv_leaf).as_vec());
    for i in 0..6 {
        assert!((g_mu[i] - mu[i]).abs() < 1e-6, "∂/∂μ[{i}]: {}", g_mu[i]);
        let want = 0.5 * ((logvar[i] as f64).exp() - 1.0);
        assert!((g_lv[i] as f64 - want).abs() < 1e-6, "∂/∂log σ²[{i}]: {} vs {want}", g_lv[i]);
    }
}

/// A quantized model (codes × 2 codebook) whose encoder is the identity on 8×8 shapes, with its
/// codebook set to `book` and its 1×1 head to z_e = [`HEAD_W`]·x + [`HEAD_B`], and a batch of images.
struct VqFixture {
    dev: Cpu,
    model: Model,
    store: ParamStore<Cpu>,
    book_id: ParamId,
    w: ParamId,
    b: ParamId,
    x: Tensor<(usize, usize), f32, Cpu>,
}

const HEAD_W: [f32; 2] = [0.9, -0.7];
const HEAD_B: [f32; 2] = [-0.3, 0.2];

/// z_e of dimension `d` at batch-last position `i` of the image values `xv`, by hand.
fn ze(xv: &[f32], d: usize, i: usize) -> f32 {
    HEAD_W[d] * xv[i] + HEAD_B[d]
}

fn vq_fixture(codes: usize, ema: bool, book: &[f32], batch: usize) -> VqFixture {
    let mut spec = load_spec(Path::new("specs/tiny.ron")).unwrap().experiment;
    spec.data.size = 8;
    spec.model.encoder = vec![];
    spec.model.latent = Latent::Quantized { codes, dim: 2, beta: 0.25, ema };
    spec.model.decoder = vec![vaelab::spec::Layer::Conv { out: 1, k: 1, s: 1, p: 0 }];
    let dev = Cpu::default();
    let ds = build_dataset(&spec).unwrap();
    let mut store = ParamStore::new(dev.clone(), 4);
    let model = Model::build(&spec.model, data_shape(ds.as_ref()), &mut store, &vaelab::nn::NoBlocks).unwrap();
    let book_id = store.find("latent.codebook").unwrap();
    store.set_values(book_id, book.to_vec());
    let (w, b) = (store.find("latent.pre.0.weight").unwrap(), store.find("latent.pre.0.bias").unwrap());
    store.set_values(w, HEAD_W.to_vec());
    store.set_values(b, HEAD_B.to_vec());
    let x = to_tensor(&dev, &train_batch(ds.as_ref(), 1, 0, batch, &Default::default()));
    VqFixture { dev, model, store, book_id, w, b, x }
}

/// The quantized latent on a model whose encoder is the identity, so z_e = W·x + b (the 1×1 head)
/// can be computed by hand: the forward code is the nearest codebook row at every position, the
/// straight-through gradient reaches the head as if z were z_e, and the `vq` term's codebook gradient
/// is 2(e_k − z_e)/B summed over the positions that chose code k.
#[test]
fn quantized_latent_nearest_codes_straight_through_and_codebook_gradient() {
    let (codes, dim, batch) = (5, 2, 3);
    // A spread-out codebook, so that positions choose different codes.
    let book: Vec<f32> = (0..codes * dim).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.04).collect();
    let VqFixture { dev, model, store, w, b, x, .. } = vq_fixture(codes, false, &book, batch);
    let xv = x.as_vec(); // (64, batch): position p, example b at p·batch + b
    let positions = 64;
    let ze = |d: usize, i: usize| ze(&xv, d, i);
    let nearest = |i: usize| {
        (0..codes)
            .min_by(|&k, &l| {
                let dist = |k: usize| (0..dim).map(|d| (ze(d, i) - book[k * dim + d]).powi(2)).sum::<f32>();
                dist(k).total_cmp(&dist(l))
            })
            .unwrap()
    };

    let ctx = Ctx::new(&store, false, 1, 0);
    let enc = model.encode(&ctx, x.clone(), normal_noise(&dev, 1, "noise", 0, 1, batch));
    let (z, zq) = (enc.z.as_vec(), enc.mu.as_vec());
    // z = z_e + (z_q − z_e) in f32: z_q up to rounding.
    assert!(z.iter().zip(&zq).all(|(a, b)| (a - b).abs() < 1e-6), "the straight-through code's values are z_q");
    let mut used = std::collections::BTreeSet::new();
    for i in 0..positions * batch {
        let k = nearest(i);
        used.insert(k);
        for d in 0..dim {
            assert_eq!(zq[d * positions * batch + i], book[k * dim + d], "position {i}, dimension {d}");
        }
    }
    assert!(used.len() >= 2, "the test must exercise several codes: {used:?}");

    // Straight-through: loss = Σ r ⊙ z differentiates into the head as if z = z_e.
    let probe: Vec<f32> = (0..dim * positions * batch).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.1).collect();
    let loss = (enc.z * dev.tensor_from_vec(probe.clone(), (dim * positions, batch))).sum::<(), _>();
    let grads = loss.backward();
    let (gw, gb) = (grads.get(&store.get(w).tensor).as_vec(), grads.get(&store.get(b).tensor).as_vec());
    for d in 0..dim {
        let want_w: f32 = (0..positions * batch).map(|i| probe[d * positions * batch + i] * xv[i]).sum();
        let want_b: f32 = (0..positions * batch).map(|i| probe[d * positions * batch + i]).sum();
        assert!((gw[d] - want_w).abs() < 1e-3 && (gb[d] - want_b).abs() < 1e-3, "d={d}: {gw:?} {gb:?} vs {want_w} {want_b}");
    }

    // The vq term's codebook gradient.
    let enc = model.encode(&ctx, x, normal_noise(&dev, 1, "noise", 0, 1, batch));
    let grads = enc.reg.backward();
    let gbook = grads.get(&store.get(store.find("latent.codebook").unwrap()).tensor).as_vec();
    let mut want = vec![0.0f32; codes * dim];
    for i in 0..positions * batch {
        let k = nearest(i);
        for d in 0..dim {
            want[k * dim + d] += 2.0 * (book[k * dim + d] - ze(d, i)) / batch as f32;
        }
    }
    for (g, w) in gbook.iter().zip(&want) {
        assert!((g - w).abs() < 1e-3 * (1.0 + w.abs()), "{gbook:?} vs {want:?}");
    }
}

/// The EMA codebook after one training step, against the update worked by hand: N_k = (1−γ)n_k,
/// m_k = (1−γ)Σ z_e, e_k = m_k / smoothed(N_k) with Laplace smoothing; and the codebook takes no
/// gradient (it is a buffer), leaving the commitment term alone in `vq`.
#[test]
fn ema_codebook_update_matches_the_hand_computed_averages() {
    let (codes, dim, batch) = (4, 2, 2);
    let book: Vec<f32> = vec![-0.4, 0.3, 0.0, 0.0, 0.4, -0.3, 0.8, 0.5];
    let VqFixture { dev, model, store, book_id, x, .. } = vq_fixture(codes, true, &book, batch);
    assert_eq!(store.get(book_id).role, Role::Buffer);
    let xv = x.as_vec();
    let ze = |d: usize, i: usize| ze(&xv, d, i);
    let mut n = vec![0f32; codes];
    let mut m = vec![0f32; codes * dim];
    for i in 0..64 * batch {
        let dist = |k: usize| (0..dim).map(|d| (ze(d, i) - book[k * dim + d]).powi(2)).sum::<f32>();
        let k = (0..codes).min_by(|&a, &c| dist(a).total_cmp(&dist(c))).unwrap();
        n[k] += 0.01;
        for d in 0..dim {
            m[k * dim + d] += 0.01 * ze(d, i);
        }
    }
    let total: f32 = n.iter().sum();
    let want: Vec<f32> = (0..codes * dim)
        .map(|j| {
            let k = j / dim;
            let smoothed = (n[k] + 1e-5) / (total + codes as f32 * 1e-5) * total;
            if n[k] > 0.0 {
                m[j] / smoothed
            } else {
                0.0
            }
        })
        .collect();
    let ctx = Ctx::new(&store, true, 1, 0);
    let enc = model.encode(&ctx, x, normal_noise(&dev, 1, "noise", 0, 1, batch));
    let updates = ctx.buffer_updates.borrow();
    let new_book = &updates.iter().find(|(id, _)| *id == book_id).expect("the codebook is updated").1;
    for (j, (got, want)) in new_book.iter().zip(&want).enumerate() {
        if n[j / dim] > 0.0 {
            assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "entry {j}: {got} vs {want}");
        } else {
            assert_eq!(*got, book[j], "an unused code keeps its vector");
        }
    }
    // The `vq` term is the commitment term alone: β Σ (z_e − z_q)² / B.
    let zq = enc.mu.as_vec();
    let commitment: f32 = (0..64 * batch)
        .flat_map(|i| (0..dim).map(move |d| (d, i)))
        .map(|(d, i)| (ze(d, i) - zq[d * 64 * batch + i]).powi(2))
        .sum::<f32>()
        * 0.25
        / batch as f32;
    let reg = enc.reg.as_vec()[0];
    assert!((reg - commitment).abs() < 1e-4 * (1.0 + commitment), "{reg} vs {commitment}");
}

/// Dead-code restart: a code whose usage average falls below 1 % of uniform is re-initialised from one
/// of the batch's encoder outputs z_e, and its average reset to uniform; a code just above the level,
/// and every code in use, keeps its vector. The frequency average follows f ← 0.99 f + 0.01 n_k / n.
#[test]
fn dead_codes_restart_from_encoder_outputs() {
    let (codes, dim, batch) = (4, 2, 2);
    // Code 3 sits far from every z_e, so it is never chosen this step.
    let book: Vec<f32> = vec![-0.4, 0.3, 0.0, 0.0, 0.4, -0.3, 50.0, 50.0];
    let VqFixture { dev, model, mut store, book_id, x, .. } = vq_fixture(codes, false, &book, batch);
    let freq_id = store.find("latent.code_frequency").unwrap();
    let uniform = 1.0 / codes as f32;
    let xv = x.as_vec();
    let outputs: Vec<[f32; 2]> = (0..64 * batch).map(|i| [ze(&xv, 0, i), ze(&xv, 1, i)]).collect();
    let chosen = |i: usize| {
        let dist = |k: usize| (0..dim).map(|d| (outputs[i][d] - book[k * dim + d]).powi(2)).sum::<f32>();
        (0..codes).min_by(|&a, &c| dist(a).total_cmp(&dist(c))).unwrap()
    };
    let mut counts = [0f32; 4];
    for i in 0..64 * batch {
        counts[chosen(i)] += 1.0;
    }
    assert_eq!(counts[3], 0.0, "code 3 is unused");
    // Code 3's average after this step: just below the dead level (restart), or just above (kept).
    for (before, dead) in [(0.0101 * uniform, true), (0.0102 * uniform / 0.99, false)] {
        let mut freq = vec![uniform; codes];
        freq[3] = before;
        store.set_values(freq_id, freq.clone());
        let ctx = Ctx::new(&store, true, 1, 0);
        let _ = model.encode(&ctx, x.clone(), normal_noise(&dev, 1, "noise", 0, 1, batch));
        let updates = ctx.buffer_updates.borrow();
        let get = |id| updates.iter().find(|(p, _)| *p == id).map(|(_, v)| v.clone());
        let new_freq = get(freq_id).expect("the frequency average is updated");
        for k in 0..3 {
            let want = 0.99 * freq[k] + 0.01 * counts[k] / (64 * batch) as f32;
            assert!((new_freq[k] - want).abs() < 1e-6, "code {k}: {} vs {want}", new_freq[k]);
        }
        let new_book = get(book_id);
        if dead {
            assert_eq!(new_freq[3], uniform, "a restarted code's average starts at uniform");
            let book_now = new_book.expect("the codebook is updated");
            assert_eq!(book_now[..6], book[..6], "codes in use keep their vectors");
            let restarted = [book_now[6], book_now[7]];
            assert!(outputs.contains(&restarted), "code 3 restarts at an encoder output, not {restarted:?}");
        } else {
            assert!((new_freq[3] - 0.99 * before).abs() < 1e-9, "{}", new_freq[3]);
            assert!(new_book.is_none_or(|b| b == book), "no code restarts above the dead level");
        }
    }
}
