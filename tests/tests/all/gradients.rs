//! Finite-difference checks of every layer's gradients (parameters and input), and of the fused
//! CPU convolutions against the gather-based path that dfdx computes on any device.

use dfdx::prelude::*;
use vaelab::nn::{gather, Act, BlockSource, ConvGeom, Ctx, FeatShape, NoBlocks, ParamStore, Sequential};
use vaelab::spec::Layer;
use vaelab_datasets::StreamRng;

fn values(seed: u64, n: usize, scale: f64) -> Vec<f32> {
    let mut r = StreamRng::new(seed, &[n as u64]);
    (0..n).map(|_| ((r.uniform() * 2.0 - 1.0) * scale) as f32).collect()
}

/// The input tensor of a checked forward pass, so its gradient can be looked up.
type Input = Tensor<(usize, usize), f32, Cpu>;

/// loss(x, params) = Σ y ⊙ r for a fixed random r, so every output element carries gradient.
fn loss(
    block: &Sequential,
    store: &ParamStore<Cpu>,
    shape: FeatShape,
    x: &[f32],
    batch: usize,
    probe: &[f32],
) -> (f32, Gradients<f32, Cpu>, Input) {
    let dev = store.dev.clone();
    let xt = dev.tensor_from_vec(x.to_vec(), (shape.len(), batch));
    let ctx = Ctx::new(store, true, 1, 0);
    let y = block.forward(&ctx, Act { t: xt.retaped(), shape, needs_grad: true });
    let r = dev.tensor_from_vec(probe.to_vec(), *y.t.shape());
    let l = (y.t * r).sum::<(), _>();
    let value = l.array();
    (value, l.backward(), xt)
}

/// Compares analytic and central-difference gradients at up to 12 coordinates per tensor.
fn check_layers(layers: Vec<Layer>, shape: FeatShape, batch: usize) {
    check_layers_with(layers, shape, batch, &NoBlocks)
}

/// [`check_layers`] for layer lists that use plugin blocks from `blocks`.
pub(crate) fn check_layers_with(layers: Vec<Layer>, shape: FeatShape, batch: usize, blocks: &dyn BlockSource) {
    let dev = Cpu::default();
    let mut store = ParamStore::new(dev.clone(), 5);
    let block = Sequential::build(&layers, shape, "block", "layers", &mut store, blocks).expect("layers build");
    // Make biases and norm affines non-trivial so their gradients are exercised.
    for i in 0..store.len() {
        let id = vaelab::nn::ParamId(i);
        let n = store.get(id).tensor.shape().0;
        let v = values(100 + i as u64, n, 0.5);
        store.set_values(id, v);
    }
    let x = values(1, shape.len() * batch, 1.0);
    let probe = values(2, block.output.len() * batch, 1.0);
    let (_, grads, xt) = loss(&block, &store, shape, &x, batch, &probe);
    let eps = 1e-2f32;

    let check = |name: &str, analytic: Vec<f32>, perturb: &mut dyn FnMut(usize, f32) -> f32| {
        let n = analytic.len();
        let stride = (n / 12).max(1);
        for i in (0..n).step_by(stride) {
            let numeric = (perturb(i, eps) - perturb(i, -eps)) / (2.0 * eps);
            let tol = 2e-2 * (1.0 + numeric.abs().max(analytic[i].abs()));
            assert!(
                (numeric - analytic[i]).abs() <= tol,
                "{name}[{i}]: analytic {} vs numeric {numeric} ({layers:?})",
                analytic[i]
            );
        }
    };

    let gx = grads.get(&xt).as_vec();
    check("input", gx, &mut |i, d| {
        let mut xp = x.clone();
        xp[i] += d;
        loss(&block, &store, shape, &xp, batch, &probe).0
    });
    for pi in 0..store.len() {
        let id = vaelab::nn::ParamId(pi);
        if store.get(id).role != vaelab::nn::Role::Trainable {
            continue;
        }
        let name = store.get(id).name.clone();
        let base = store.get(id).tensor.as_vec();
        let analytic = grads.get(&store.get(id).tensor).as_vec();
        let mut s2 = ParamStore::new(dev.clone(), 5);
        let block2 = Sequential::build(&layers, shape, "block", "layers", &mut s2, blocks).unwrap();
        for j in 0..store.len() {
            s2.set_values(vaelab::nn::ParamId(j), store.get(vaelab::nn::ParamId(j)).tensor.as_vec());
        }
        check(&name, analytic, &mut |i, d| {
            let mut v = base.clone();
            v[i] += d;
            s2.set_values(id, v);
            let out = loss(&block2, &s2, shape, &x, batch, &probe).0;
            s2.set_values(id, base.clone());
            out
        });
    }
}

const IMG: FeatShape = FeatShape::Image(2, 5, 6);

#[test]
fn dense() {
    check_layers(vec![Layer::Dense { out: 4 }], FeatShape::Flat(7), 3);
}

#[test]
fn conv_strided_padded() {
    check_layers(vec![Layer::Conv { out: 3, k: 3, s: 2, p: 1 }], IMG, 2);
}

#[test]
fn conv_transposed_strided_padded() {
    check_layers(vec![Layer::ConvT { out: 3, k: 4, s: 2, p: 1 }], IMG, 2);
}

#[test]
fn conv_transposed_stride_one() {
    check_layers(vec![Layer::ConvT { out: 2, k: 3, s: 1, p: 0 }], IMG, 2);
}

#[test]
fn upsample_flatten_reshape() {
    check_layers(vec![Layer::Upsample { factor: 2 }, Layer::Flatten, Layer::Reshape { c: 4, h: 5, w: 12 }], IMG, 2);
}

#[test]
fn avg_pool() {
    check_layers(vec![Layer::AvgPool { k: 2 }], FeatShape::Image(2, 4, 6), 3);
}

#[test]
fn avg_pool_outputs_block_means() {
    // One image, batch-last: pixel (c, y, x) holds 100c + 10y + x; a 2×2 block's mean is its
    // top-left value + 5.5 (the mean of 0, 1, 10, 11).
    let (shape, batch) = (FeatShape::Image(2, 4, 6), 1);
    let x: Vec<f32> = (0..48).map(|i| (100 * (i / 24) + 10 * (i / 6 % 4) + i % 6) as f32).collect();
    let mut store = ParamStore::new(Cpu::default(), 0);
    let block = Sequential::build(&[Layer::AvgPool { k: 2 }], shape, "block", "layers", &mut store, &NoBlocks).unwrap();
    assert_eq!(block.output, FeatShape::Image(2, 2, 3));
    let ctx = Ctx::new(&store, false, 0, 0);
    let xt = store.dev.tensor_from_vec(x, (shape.len(), batch));
    let y = block.forward(&ctx, Act { t: xt.retaped(), shape, needs_grad: true }).t.as_vec();
    let want: Vec<f32> = (0..12).map(|i| (100 * (i / 6) + 20 * (i / 3 % 2) + 2 * (i % 3)) as f32 + 5.5).collect();
    assert_eq!(y, want);
}

#[test]
fn activations() {
    // Smooth activations only: finite differences are unreliable at a ReLU kink, so ReLU and
    // LeakyReLU are checked away from 0 by shifting inputs with a Dense layer's bias.
    for act in [Layer::Silu, Layer::Tanh, Layer::Sigmoid] {
        check_layers(vec![act], FeatShape::Flat(6), 3);
    }
    for act in [Layer::Relu, Layer::LeakyRelu { slope: 0.1 }] {
        check_layers(vec![Layer::Dense { out: 5 }, act], FeatShape::Flat(4), 3);
    }
}

#[test]
fn batch_norm_on_images_and_features() {
    check_layers(vec![Layer::BatchNorm { momentum: 0.1, eps: 1e-5 }], IMG, 3);
    check_layers(vec![Layer::BatchNorm { momentum: 0.1, eps: 1e-5 }], FeatShape::Flat(4), 5);
}

#[test]
fn group_norm() {
    check_layers(vec![Layer::GroupNorm { groups: 2, eps: 1e-5 }], FeatShape::Image(4, 3, 3), 2);
}

#[test]
fn residual_block() {
    check_layers(vec![Layer::Residual(vec![Layer::Conv { out: 2, k: 3, s: 1, p: 1 }, Layer::Tanh])], IMG, 2);
}

#[test]
fn dropout_is_a_fixed_mask_per_step() {
    check_layers(vec![Layer::Dropout { p: 0.3 }], FeatShape::Flat(10), 4);
}

/// Same inputs, same weights: the fused kernels and the gather path must agree, forward and backward,
/// with no activation and with a fused ReLU or LeakyReLU (against the gather path's output through
/// the standalone activation). Asked to skip the input's or the parameters' gradient (`GradNeeds`),
/// the fused kernels leave exactly that one uncomputed and the others unchanged.
#[test]
fn fused_convolutions_match_the_gather_path() {
    use vaelab::nn::{activate, Backend, GradNeeds};
    let dev = Cpu::default();
    for (transposed, (c, h, w), out, k, s, p) in [
        (false, (3, 7, 6), 4, 3, 2, 1),
        (false, (2, 8, 8), 3, 4, 2, 1),
        (true, (3, 4, 5), 2, 4, 2, 1),
        (true, (2, 3, 3), 3, 3, 1, 0),
        // Stride 2 with an odd kernel (output pixels reached by two taps and by one); a 1×1 kernel at
        // stride 2 (every other output pixel holds the bias alone); kernel 5 with padding 2.
        (true, (2, 4, 3), 3, 3, 2, 1),
        (true, (3, 3, 4), 2, 1, 2, 0),
        (true, (2, 5, 4), 2, 5, 2, 2),
        // Large enough for several tiles and bands.
        (true, (16, 24, 24), 16, 4, 2, 1),
        // One image channel (a grey image into the first Conv, out of the last ConvT), with a padded
        // border, an odd kernel and a stride of 1.
        (false, (1, 8, 8), 5, 4, 2, 1),
        (false, (1, 7, 9), 3, 3, 1, 1),
        (true, (4, 4, 4), 1, 4, 2, 1),
        (true, (3, 5, 3), 1, 3, 2, 1),
    ] {
        let batch = if c == 16 { 8 } else { 3 };
        let g =
            if transposed { ConvGeom::conv_t(out, h, w, k, s, p).unwrap() } else { ConvGeom::conv(c, h, w, k, s, p).unwrap() };
        let wlen = c * out * k * k;
        let x = dev.tensor_from_vec(values(7, c * h * w * batch, 1.0), (c * h * w, batch));
        let wt = dev.tensor_from_vec(values(8, wlen, 0.5), (wlen,));
        let bt = dev.tensor_from_vec(values(9, out, 0.5), (out,));
        // The last case is an inference pass: no backward op, and a `Conv` activates tile by tile.
        let needs_cases = [
            GradNeeds::ALL,
            GradNeeds { input: false, params: true },
            GradNeeds { input: true, params: false },
            GradNeeds { input: false, params: false },
        ];
        for (act, needs) in [None, Some(0.0), Some(0.2)].into_iter().flat_map(|a| needs_cases.map(|n| (a, n))) {
            // `needs` applies to the fused kernel; a gradient it skips reads as zeros here.
            let run = |fused: bool| {
                let (xr, wr, br) = (x.retaped(), wt.retaped(), bt.retaped());
                let y = match (transposed, fused) {
                    (false, true) => Cpu::conv2d(xr, needs, wr, br, g, out, act, None).0,
                    (false, false) => activate(gather::conv2d(xr, wr, br, g, out), act),
                    (true, true) => Cpu::conv_t2d(xr, needs, wr, br, g, c, act, None),
                    (true, false) => activate(gather::conv_t2d(xr, wr, br, g, c), act),
                };
                let probe = dev.tensor_from_vec(values(10, y.shape().0 * batch, 1.0), *y.shape());
                let yv = y.with_empty_tape().as_vec();
                let mut grads = (y * probe).sum::<(), _>().backward();
                let mut grad = |t: &Tensor<(usize,), f32, Cpu>| grads.get_or_alloc_mut(t).unwrap().to_vec();
                let (gw, gb) = (grad(&wt), grad(&bt));
                (yv, grads.get_or_alloc_mut(&x).unwrap().to_vec(), gw, gb)
            };
            let (a, mut b) = (run(true), run(false));
            let zero = |v: &mut Vec<f32>| v.iter_mut().for_each(|v| *v = 0.0);
            if !needs.input {
                zero(&mut b.1);
            }
            if !needs.params {
                zero(&mut b.2);
                zero(&mut b.3);
            }
            if act.is_some() {
                assert!(
                    a.0.iter().any(|v| *v < 0.0) || a.0.iter().filter(|v| **v == 0.0).count() > 0,
                    "the case should clip values"
                );
            }
            for (name, u, v) in [("y", &a.0, &b.0), ("dx", &a.1, &b.1), ("dw", &a.2, &b.2), ("db", &a.3, &b.3)] {
                assert_eq!(u.len(), v.len(), "{name}");
                for (i, (p, q)) in u.iter().zip(v).enumerate() {
                    assert!(
                        (p - q).abs() < 1e-4 * (1.0 + q.abs()),
                        "{name}[{i}] transposed={transposed} act={act:?} {needs:?}: fused {p} vs gather {q}"
                    );
                }
            }
        }
    }
}

/// A convolution that keeps the `Rebuild` its producer offered, instead of a copy of its input,
/// computes the same output and gradients to the bit; the rebuilt values are the producer's output;
/// only a convolution with a small inner dimension offers one.
#[test]
fn convolutions_that_keep_a_rebuild_match_those_that_keep_values() {
    use vaelab::nn::{Backend, GradNeeds};
    let dev = Cpu::default();
    let batch = 3;
    let g1 = ConvGeom::conv(1, 9, 9, 4, 2, 1).unwrap(); // 1 → 4 channels, 4×4: inner dimension 16
    let g2 = ConvGeom::conv(4, g1.oh, g1.ow, 3, 1, 1).unwrap(); // 4 → 5 channels, 3×3
    let x = dev.tensor_from_vec(values(31, 81 * batch, 1.0), (81, batch));
    let p = |seed, n| dev.tensor_from_vec(values(seed, n, 0.5), (n,));
    let (w1, b1, w2, b2) = (p(32, 4 * 16), p(33, 4), p(34, 5 * 4 * 9), p(35, 5));
    let run = |keep_rebuild: bool| {
        let (y1, rebuild) = Cpu::conv2d(x.retaped(), GradNeeds::ALL, w1.retaped(), b1.retaped(), g1, 4, Some(0.0), None);
        let rebuild = rebuild.expect("a 16-wide inner dimension offers a Rebuild");
        let y1v = y1.with_empty_tape().as_vec();
        let rebuilt = rebuild.values();
        assert_eq!(bits(&rebuilt), bits(&y1v), "rebuilt values");
        let input = keep_rebuild.then_some(rebuild);
        let (y2, _) = Cpu::conv2d(y1, GradNeeds::ALL, w2.retaped(), b2.retaped(), g2, 5, Some(0.2), input);
        let probe = dev.tensor_from_vec(values(36, y2.shape().0 * batch, 1.0), *y2.shape());
        let y2v = y2.with_empty_tape().as_vec();
        let grads = (y2 * probe).sum::<(), _>().backward();
        let parts = [grads.get(&x).as_vec(), grads.get(&w1).as_vec(), grads.get(&w2).as_vec(), grads.get(&b2).as_vec()];
        (y2v, parts)
    };
    let (kept, copied) = (run(true), run(false));
    assert_eq!(bits(&kept.0), bits(&copied.0), "output");
    for (name, a, b) in [("dx", 0), ("dw1", 1), ("dw2", 2), ("db2", 3)].map(|(n, i)| (n, &kept.1[i], &copied.1[i])) {
        assert!(a.iter().any(|v| *v != 0.0), "{name} should carry gradient");
        assert_eq!(bits(a), bits(b), "{name}");
    }
    // 16 channels at 3×3 (an inner dimension of 144) costs too much to compute twice.
    let g3 = ConvGeom::conv(16, 5, 5, 3, 1, 1).unwrap();
    let x3 = dev.tensor_from_vec(values(37, 16 * 25 * batch, 1.0), (16 * 25, batch));
    let (_, none) = Cpu::conv2d(x3.retaped(), GradNeeds::ALL, p(38, 2 * 144).retaped(), p(39, 2).retaped(), g3, 2, None, None);
    assert!(none.is_none());
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The fused CPU Bernoulli loss against dfdx's `bce_with_logits(…).sum()`: the sum and the logits'
/// gradient to the bit, for logits up to ±60 (where a naive form overflows) and targets in [0, 1].
#[test]
fn fused_bce_sum_is_dfdx_to_the_bit() {
    use vaelab::nn::Backend;
    let dev = Cpu::default();
    let (rows, batch) = (37, 300); // 11,100 values: more than one parallel chunk, and a remainder
    let mut lv = values(21, rows * batch, 8.0);
    lv[..4].copy_from_slice(&[60.0, -60.0, 0.0, -0.0]);
    let pv: Vec<f32> = values(22, rows * batch, 1.0).iter().map(|v| v.abs().min(1.0)).collect();
    let (l, p) = (dev.tensor_from_vec(lv, (rows, batch)), dev.tensor_from_vec(pv, (rows, batch)));
    let run = |fused: bool| {
        let y = if fused {
            Cpu::bce_with_logits_sum(l.retaped(), p.clone())
        } else {
            l.retaped::<OwnedTape<f32, Cpu>>().bce_with_logits(p.clone()).sum()
        };
        // Scaled on the tape, so the gradient reaching the op is not 1.
        let value = y.with_empty_tape().as_vec()[0];
        let grads = (y * 0.37).backward();
        (value, grads.get(&l).as_vec())
    };
    let ((va, ga), (vb, gb)) = (run(true), run(false));
    assert_eq!(va.to_bits(), vb.to_bits(), "sum: fused {va} vs dfdx {vb}");
    for (i, (a, b)) in ga.iter().zip(&gb).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "gradient {i}: fused {a} vs dfdx {b}");
    }
}

/// The fused CPU BatchNorm (training) against dfdx's composition: outputs, batch statistics and every
/// gradient, with no activation and with a fused ReLU or LeakyReLU, for image and flat inputs.
#[test]
fn fused_batch_norm_matches_the_generic_path() {
    use vaelab::nn::{batch_norm_train_generic, Backend};
    let dev = Cpu::default();
    for (c, hw, batch) in [(3, 5, 4), (4, 1, 6)] {
        let rows = c * hw;
        // An offset and spread per channel, so the normalisation has work to do.
        let xv: Vec<f32> =
            values(11, rows * batch, 1.0).iter().enumerate().map(|(i, v)| v * 3.0 + (i / (hw * batch)) as f32).collect();
        let x = dev.tensor_from_vec(xv, (rows, batch));
        let wt = dev.tensor_from_vec(values(12, c, 1.0), (c,));
        let bt = dev.tensor_from_vec(values(13, c, 0.5), (c,));
        for act in [None, Some(0.0), Some(0.2)] {
            let run = |fused: bool| {
                let (xr, wr, br) = (x.retaped(), wt.retaped(), bt.retaped());
                let (y, stats) = if fused {
                    Cpu::batch_norm_train(xr, wr, br, c, 1e-5, act)
                } else {
                    batch_norm_train_generic(xr, wr, br, c, 1e-5, act)
                };
                let probe = dev.tensor_from_vec(values(14, rows * batch, 1.0), (rows, batch));
                let yv = y.with_empty_tape().as_vec();
                let grads = (y * probe).sum::<(), _>().backward();
                let (m, v) = (stats.mean, stats.var);
                (yv, m, v, grads.get(&x).as_vec(), grads.get(&wt).as_vec(), grads.get(&bt).as_vec())
            };
            let (a, b) = (run(true), run(false));
            for (name, u, v) in [
                ("y", &a.0, &b.0),
                ("mean", &a.1, &b.1),
                ("var", &a.2, &b.2),
                ("dx", &a.3, &b.3),
                ("dw", &a.4, &b.4),
                ("db", &a.5, &b.5),
            ] {
                assert_eq!(u.len(), v.len(), "{name}");
                for (i, (p, q)) in u.iter().zip(v).enumerate() {
                    assert!((p - q).abs() < 1e-4 * (1.0 + q.abs()), "{name}[{i}] c={c} act={act:?}: fused {p} vs generic {q}");
                }
            }
        }
    }
}

/// sg(x) blocks exactly its own branch: d/dx Σ(sg(x)·x) = x, not 2x, and a stopped branch whose
/// values came from a tensor that also feeds the loss hands nothing back to it.
#[test]
fn stop_gradient_blocks_only_its_branch() {
    use dfdx::prelude::*;
    use vaelab::nn::{stop_gradient, OT};
    let dev = Cpu::default();
    let x = dev.tensor_from_vec(vec![1.0f32, -2.0, 3.0], (3usize, 1usize)).retaped::<OT<Cpu>>();
    let y = x.with_empty_tape() * 2.0; // y on x's tape
    let sg = stop_gradient(&y);
    let loss = (sg * y.with_empty_tape()).sum::<(), _>() + (y * 3.0).sum::<(), _>();
    let g = loss.backward().get(&x).as_vec();
    // d/dx [Σ sg(2x)·2x + Σ 6x] = 2·sg(2x) + 6 = 4x + 6.
    assert_eq!(g, vec![10.0, -2.0, 18.0]);
}

/// A frozen layer passes the gradient to its input unchanged and gives none to its parameters.
#[test]
fn frozen_layers_pass_gradients_through_but_keep_their_parameters() {
    use dfdx::prelude::*;
    use vaelab::nn::{Act, Ctx, FeatShape, NoBlocks, ParamStore, Sequential, OT};
    use vaelab::spec::Layer;
    let dev = Cpu::default();
    let mut store = ParamStore::new(dev.clone(), 5);
    let net =
        Sequential::build(&[Layer::Dense { out: 2 }, Layer::Tanh], FeatShape::Flat(3), "f", "f", &mut store, &NoBlocks).unwrap();
    let grads_of = |frozen: bool| {
        let ctx = Ctx::new(&store, true, 0, 0);
        let x = dev.tensor_from_vec(vec![0.5f32, -1.0, 2.0], (3usize, 1usize)).retaped::<OT<Cpu>>();
        let run = || net.forward(&ctx, Act { t: x.with_empty_tape(), shape: FeatShape::Flat(3), needs_grad: true }).t;
        let out = if frozen { ctx.frozen(run) } else { run() };
        let mut g = out.sum::<(), _>().backward();
        let w = &store.get(store.find("f.0.weight").unwrap()).tensor;
        g.try_alloc_for(w).unwrap();
        (g.get(&x).as_vec(), g.get(w).as_vec())
    };
    let (gx, gw) = grads_of(false);
    let (gx_frozen, gw_frozen) = grads_of(true);
    assert_eq!(gx, gx_frozen, "the input gradient is the same");
    assert!(gw.iter().any(|v| *v != 0.0));
    assert!(gw_frozen.iter().all(|v| *v == 0.0), "{gw_frozen:?}");
}

/// An untaped pass inside a training step (VPGA's decoded prior codes) computes what the step's
/// taped passes compute, in training mode (BatchNorm on the batch's statistics, the step's dropout
/// masks), and asks no layer for a gradient. Fails if it ran in evaluation mode (running statistics)
/// or left the layers computing gradients.
#[test]
fn an_untaped_pass_keeps_the_training_mode_and_asks_for_no_gradient() {
    use dfdx::prelude::*;
    use vaelab::nn::{Act, Ctx, FeatShape, NoBlocks, ParamStore, Sequential};
    use vaelab::spec::Layer;
    let dev = Cpu::default();
    let mut store = ParamStore::new(dev.clone(), 5);
    let layers = [
        Layer::Dense { out: 4 },
        Layer::BatchNorm { momentum: 0.1, eps: 1e-5 },
        Layer::Dropout { p: 0.5 },
        Layer::Relu,
        Layer::Dense { out: 2 },
    ];
    let net = Sequential::build(&layers, FeatShape::Flat(3), "f", "f", &mut store, &NoBlocks).unwrap();
    let values: Vec<f32> = (0..3 * 8).map(|i| ((i * 7) % 11) as f32 * 0.3 - 1.2).collect();
    let out = |ctx: &Ctx<Cpu>| {
        let x = dev.tensor_from_vec(values.clone(), (3usize, 8usize)).retaped();
        net.forward(ctx, Act { t: x, shape: FeatShape::Flat(3), needs_grad: true }).t.as_vec()
    };
    let ctx = Ctx::new(&store, true, 3, 7);
    let taped = out(&ctx);
    assert_eq!(ctx.untaped(|| out(&ctx)), taped, "the same values as the step's taped passes");
    assert!(ctx.untaped(|| ctx.grad_needs(true)).none(), "no layer computes a gradient");
    assert!(!ctx.grad_needs(true).none(), "and the context is taped again afterwards");
    let evaluation = out(&Ctx::new(&store, false, 3, 7));
    assert_ne!(evaluation, taped, "evaluation mode differs here, so the first check can tell");
}

/// Spectral normalisation's σ: power iterations from a random u converge to the largest singular value
/// of the weight read as PyTorch's `spectral_norm` reads it ((out × in·k·k); a ConvT's weight by its
/// output channels), checked against nalgebra's SVD of that matrix.
#[test]
fn spectral_norm_power_iteration_finds_the_largest_singular_value() {
    use vaelab::nn::{SpectralNorm, WeightLayout};
    let (cin, cout, kk) = (3, 4, 4);
    for (layout, rows, cols) in [
        (WeightLayout::RowMajor(5, 7), 5, 7),
        (WeightLayout::RowMajor(cout, cin * kk), cout, cin * kk),
        (WeightLayout::InputMajor { cin, cout, kk }, cout, cin * kk),
    ] {
        let w = values(31, rows * cols, 1.0);
        // The matrix as PyTorch sees it: for ConvT (in, out, k, k), output channel o's row gathers w[i][o][·].
        let m = nalgebra::DMatrix::from_fn(rows, cols, |r, c| match layout {
            WeightLayout::RowMajor(..) => w[r * cols + c] as f64,
            WeightLayout::InputMajor { .. } => w[((c / kk) * cout + r) * kk + c % kk] as f64,
        });
        let want = m.singular_values().max();
        let sn = SpectralNorm::new(vaelab::nn::ParamId(0), layout);
        let mut u: Vec<f32> = values(32, rows, 1.0);
        let mut sigma = 0.0;
        for _ in 0..200 {
            let (un, v) = sn.vectors(&w, &u, true);
            sigma = sn.outer(&un, &v).iter().zip(&w).map(|(a, b)| (*a as f64) * (*b as f64)).sum::<f64>();
            u = un.iter().map(|x| *x as f32).collect();
        }
        assert!((sigma - want).abs() < 1e-4 * want, "{layout:?}: σ {sigma} vs SVD {want}");
    }
}

/// Gradients through a spectrally normalised Dense layer against central differences of
/// Σ r ⊙ ((W / uᵀWv) x + b) in f64, u and v held at the values the forward pass used (as the paper
/// and PyTorch differentiate it); and the layer's u moves by one power iteration per training pass.
#[test]
fn spectral_norm_gradients_hold_u_and_v_constant() {
    use vaelab::nn::{SpectralNorm, WeightLayout};
    let (n_in, n_out, batch) = (4, 3, 2);
    let dev = Cpu::default();
    let mut store = ParamStore::new(dev.clone(), 5);
    let layers: Vec<Layer> = ron::from_str("[SpectralNorm(Dense(out: 3))]").unwrap();
    let block = Sequential::build(&layers, FeatShape::Flat(n_in), "block", "layers", &mut store, &NoBlocks).unwrap();
    let id = |name: &str| store.find(name).unwrap();
    let (w_id, b_id, u_id) = (id("block.0.weight"), id("block.0.bias"), id("block.0.sn_u"));
    store.set_values(b_id, values(40, n_out, 0.5));
    let (w, u0) = (store.get(w_id).tensor.as_vec(), store.get(u_id).tensor.as_vec());
    let x = values(41, n_in * batch, 1.0);
    let r = values(42, n_out * batch, 1.0);
    let (xt, rt) = (dev.tensor_from_vec(x.clone(), (n_in, batch)), dev.tensor_from_vec(r.clone(), (n_out, batch)));
    let ctx = Ctx::new(&store, true, 1, 0);
    let y = block.forward(&ctx, Act { t: xt.retaped(), shape: FeatShape::Flat(n_in), needs_grad: true });
    let grads = (y.t * rt).sum::<(), _>().backward();
    let analytic = grads.get(&store.get(w_id).tensor).as_vec();
    let recorded = ctx.buffer_updates.take();
    drop(ctx);

    let sn = SpectralNorm::new(u_id, WeightLayout::RowMajor(n_out, n_in));
    let (u, v) = sn.vectors(&w, &u0, true);
    assert_eq!(recorded.len(), 1, "u is recorded for the step");
    for (a, b) in recorded[0].1.iter().zip(&u) {
        assert!((*a as f64 - b).abs() < 1e-6, "recorded u {a} vs one power iteration {b}");
    }
    let bias: Vec<f64> = store.get(b_id).tensor.as_vec().iter().map(|v| *v as f64).collect();
    let loss = |w: &[f64]| {
        let sigma: f64 = (0..n_out).map(|o| (0..n_in).map(|i| u[o] * w[o * n_in + i] * v[i]).sum::<f64>()).sum();
        (0..n_out)
            .flat_map(|o| (0..batch).map(move |j| (o, j)))
            .map(|(o, j)| {
                let y = (0..n_in).map(|i| w[o * n_in + i] / sigma * x[i * batch + j] as f64).sum::<f64>() + bias[o];
                y * r[o * batch + j] as f64
            })
            .sum::<f64>()
    };
    let w64: Vec<f64> = w.iter().map(|v| *v as f64).collect();
    for k in 0..w.len() {
        let h = 1e-6;
        let (mut a, mut b) = (w64.clone(), w64.clone());
        a[k] += h;
        b[k] -= h;
        let numeric = (loss(&a) - loss(&b)) / (2.0 * h);
        assert!((analytic[k] as f64 - numeric).abs() < 1e-3 * (1.0 + numeric.abs()), "dL/dW[{k}]: {} vs {numeric}", analytic[k]);
    }
}
