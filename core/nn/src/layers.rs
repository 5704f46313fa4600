//! Built layers: a layer list from the spec, with its parameters in a [`ParamStore`], and the
//! forward pass over batch-last activations `(features, batch)`.

use super::build_error::BuildError;
use super::external::{external_op, BlockSource, ExternalBlock, Failures};
use super::geom::ConvGeom;
use super::infer::layer_shape;
use super::params::{ParamId, ParamStore};
use super::shape::FeatShape;
use super::{Backend, Flat, GradNeeds, Rebuild, Tensor2, OT};
use dfdx::prelude::*;
use std::cell::RefCell;
use std::sync::Arc;
use vaelab_datasets::{tag, StreamRng};
use vaelab_spec::Layer;

/// What a forward pass needs besides its input: parameters, mode and the step's random streams.
pub struct Ctx<'a, D: Device<f32>> {
    pub store: &'a ParamStore<D>,
    pub train: bool,
    pub seed: u64,
    pub step: u64,
    /// New values for buffers (BatchNorm running statistics, a VQ codebook's EMA), applied after the
    /// step; see [`Ctx::record_buffers`].
    pub buffer_updates: RefCell<Vec<(ParamId, Vec<f32>)>>,
    /// Errors from plugin blocks in this pass (checked before any parameter changes).
    pub failures: Failures,
    /// While set, layers read their parameters as constants: gradients pass through to their
    /// inputs but none reaches the parameters (see [`Ctx::frozen`]).
    frozen: std::cell::Cell<bool>,
    /// Set by [`Ctx::inference`] (for a whole pass) or [`Ctx::untaped`] (for part of one): no
    /// backward pass will follow, so layers need not keep what one would read.
    inference: std::cell::Cell<bool>,
}

impl<'a, D: Device<f32>> Ctx<'a, D> {
    pub fn new(store: &'a ParamStore<D>, train: bool, seed: u64, step: u64) -> Self {
        Ctx {
            store,
            train,
            seed,
            step,
            buffer_updates: RefCell::new(Vec::new()),
            failures: Failures::default(),
            frozen: std::cell::Cell::new(false),
            inference: std::cell::Cell::new(false),
        }
    }

    /// A context for a pass whose tape is never run backward (encoding for metrics, drawing
    /// samples): layers whose op would keep a copy of its input for the backward pass (dfdx's ReLU
    /// on a taped tensor clones it) compute in place instead. Values are the same as
    /// `Ctx::new(store, false, seed, step)`'s; a gradient taken through it would be wrong.
    pub fn inference(store: &'a ParamStore<D>, seed: u64, step: u64) -> Self {
        Ctx { inference: std::cell::Cell::new(true), ..Ctx::new(store, false, seed, step) }
    }

    /// Records new buffer values from a training pass. Only a buffer's first update of the step is
    /// kept: a step's first pass through a layer is its real-data pass in every objective (the encoder
    /// sees x before x_r and x_p; the decoder decodes q(z|x) before prior codes; the discriminator
    /// scores the real batch first), and running statistics must describe real data, not whichever
    /// generated batch passed last.
    pub fn record_buffers(&self, updates: impl IntoIterator<Item = (ParamId, Vec<f32>)>) {
        let mut recorded = self.buffer_updates.borrow_mut();
        for (id, values) in updates {
            if !recorded.iter().any(|(r, _)| *r == id) {
                recorded.push((id, values));
            }
        }
    }

    /// A parameter on a fresh tape; its gradient is found later by the stored tensor's id. Frozen,
    /// it is a copy with its own id, so its gradient is computed but reaches no stored parameter.
    pub fn param(&self, id: ParamId) -> Flat<D, OT<D>> {
        let p = &self.store.get(id).tensor;
        if self.frozen.get() {
            let n = p.shape().0;
            p.device().tensor_from_vec(p.as_vec(), (n,)).retaped()
        } else {
            p.retaped()
        }
    }

    /// The gradients a layer's backward pass must produce, for an input that needs one or not:
    /// none in inference, and no parameter's while frozen (its gradient would reach a copy that
    /// nothing reads).
    pub fn grad_needs(&self, input: bool) -> GradNeeds {
        let inference = self.inference.get();
        GradNeeds { input: input && !inference, params: !self.frozen.get() && !inference }
    }

    /// Runs `f` as an inference pass inside this context, in its mode (a training step's batch
    /// statistics and dropout masks, the same as every other pass of the step): for values the loss
    /// uses only as constants, such as VPGA's decoded prior codes, which the encoder learns to map
    /// back while neither the decoder nor the codes may move. The backward pass through them would
    /// compute gradients that reach nothing; this skips it. What `f` returns must leave the tape
    /// (see [`crate::constant`]): a gradient taken through it would be wrong.
    pub fn untaped<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = self.inference.replace(true);
        let r = f();
        self.inference.set(before);
        r
    }

    /// Runs `f` with every parameter frozen: the network is a fixed function whose gradient passes
    /// through to its input (VPGA's f̃, a critic scoring images for a decoder's loss).
    pub fn frozen<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = self.frozen.replace(true);
        let r = f();
        self.frozen.set(before);
        r
    }
}

/// A batch of activations: values `(shape.len(), batch)` plus the per-example shape.
pub struct Act<D: Device<f32>> {
    pub t: Tensor2<D>,
    pub shape: FeatShape,
    /// False for data fed to the first layer: its gradient is never needed, so ops skip it.
    pub needs_grad: bool,
}

impl<D: Device<f32>> Act<D> {
    pub fn batch(&self) -> usize {
        self.t.shape().1
    }
}

enum Op {
    Dense {
        w: ParamId,
        b: ParamId,
        out: usize,
        sn: Option<SpectralNorm>,
    },
    Conv {
        w: ParamId,
        b: ParamId,
        g: ConvGeom,
        cout: usize,
        sn: Option<SpectralNorm>,
    },
    ConvT {
        w: ParamId,
        b: ParamId,
        g: ConvGeom,
        cin: usize,
        sn: Option<SpectralNorm>,
    },
    Upsample {
        rows: Vec<usize>,
    },
    /// Each output row's k² input rows, output by output; the mean of each group is the output.
    AvgPool {
        rows: Vec<usize>,
        group: usize,
    },
    Reshape,
    Relu,
    LeakyRelu(f32),
    Silu,
    Tanh,
    Sigmoid,
    BatchNorm {
        w: ParamId,
        b: ParamId,
        mean: ParamId,
        var: ParamId,
        momentum: f32,
        eps: f32,
    },
    GroupNorm {
        w: ParamId,
        b: ParamId,
        groups: usize,
        eps: f32,
    },
    Dropout {
        p: f32,
        key: u64,
    },
    Residual(Sequential),
    Plugin {
        block: Arc<dyn ExternalBlock>,
        params: Vec<ParamId>,
    },
}

/// A convolution keeps the [`Rebuild`] its producer offered for its input, instead of the input's
/// values, only when the input holds at least this many values (64 MiB). Below it the memory saved
/// is small beside a step's peak, while the time is not: at 64 px (batch 64, 32 channels of 32×32,
/// 8 MiB) the rebuild took about 3 ms per backward pass, two of them in each update of a GAN's
/// discriminator. At 256 px a first layer's output is 128 MiB, and rebuilt. Either way the values
/// and gradients are the same to the bit (`gradients::convolutions_that_keep_a_rebuild_…`).
const REBUILD_MIN_VALUES: usize = 16 << 20;

/// A built layer list.
pub struct Sequential {
    ops: Vec<(Op, FeatShape)>,
    pub input: FeatShape,
    pub output: FeatShape,
}

impl Sequential {
    /// Creates the layers' parameters under `name` (`encoder` → `encoder.0.weight`, …).
    /// Errors carry the spec path of the offending layer under `spec_path`.
    pub fn build<D: Device<f32>>(
        layers: &[Layer],
        input: FeatShape,
        name: &str,
        spec_path: &str,
        store: &mut ParamStore<D>,
        blocks: &dyn BlockSource,
    ) -> Result<Sequential, BuildError> {
        let mut ops = Vec::new();
        let mut shape = input;
        for (i, layer) in layers.iter().enumerate() {
            let (lname, lpath) = (format!("{name}.{i}"), format!("{spec_path}[{i}]"));
            if let Layer::Residual(inner) = layer {
                let block = Sequential::build(inner, shape, &lname, &format!("{lpath}[0]"), store, blocks)?;
                if block.output != shape {
                    return Err(BuildError::new(
                        lpath,
                        format!("Residual block must keep its input shape {shape}, but its layers output {}", block.output),
                    ));
                }
                ops.push((Op::Residual(block), shape));
                continue;
            }
            if let Layer::Plugin(block_name, config) = layer {
                let block = blocks.instantiate(block_name, config, shape).map_err(|m| BuildError::new(lpath.clone(), m))?;
                let params = block
                    .params()
                    .iter()
                    .map(|d| store.add(format!("{lname}.{}", d.suffix), d.shape.clone(), d.init, d.role))
                    .collect();
                let out = block.output();
                ops.push((Op::Plugin { block, params }, out));
                shape = out;
                continue;
            }
            let (out, decls) = layer_shape(layer, shape, blocks).map_err(|m| BuildError::new(lpath, m))?;
            let ids: Vec<ParamId> =
                decls.into_iter().map(|d| store.add(format!("{lname}.{}", d.suffix), d.shape, d.init, d.role)).collect();
            // A spectrally normalised layer is its inner layer with the power-iteration vector u (its
            // third parameter) and the weight's matrix layout.
            let (layer, sn_u) = match layer {
                Layer::SpectralNorm(inner) => (&**inner, Some(ids[2])),
                other => (other, None),
            };
            let op = match *layer {
                Layer::Dense { out } => {
                    let n = shape.len();
                    Op::Dense {
                        w: ids[0],
                        b: ids[1],
                        out,
                        sn: sn_u.map(|u| SpectralNorm::new(u, WeightLayout::RowMajor(out, n))),
                    }
                }
                Layer::Conv { out, k, s, p } => {
                    let FeatShape::Image(c, h, w) = shape else { unreachable!("checked by layer_shape") };
                    let sn = sn_u.map(|u| SpectralNorm::new(u, WeightLayout::RowMajor(out, c * k * k)));
                    Op::Conv { w: ids[0], b: ids[1], g: ConvGeom::conv(c, h, w, k, s, p).expect("checked"), cout: out, sn }
                }
                Layer::ConvT { out, k, s, p } => {
                    let FeatShape::Image(c, h, w) = shape else { unreachable!("checked by layer_shape") };
                    let sn = sn_u.map(|u| SpectralNorm::new(u, WeightLayout::InputMajor { cin: c, cout: out, kk: k * k }));
                    Op::ConvT { w: ids[0], b: ids[1], g: ConvGeom::conv_t(out, h, w, k, s, p).expect("checked"), cin: c, sn }
                }
                Layer::Upsample { factor } => {
                    let FeatShape::Image(c, h, w) = shape else { unreachable!("checked by layer_shape") };
                    let (oh, ow) = (h * factor, w * factor);
                    let rows = (0..c * oh * ow)
                        .map(|r| {
                            let (ch, y, x) = (r / (oh * ow), r / ow % oh, r % ow);
                            (ch * h + y / factor) * w + x / factor
                        })
                        .collect();
                    Op::Upsample { rows }
                }
                Layer::AvgPool { k } => {
                    let FeatShape::Image(c, h, w) = shape else { unreachable!("checked by layer_shape") };
                    let (oh, ow) = (h / k, w / k);
                    let rows = (0..c * oh * ow)
                        .flat_map(|r| {
                            let (ch, y, x) = (r / (oh * ow), r / ow % oh, r % ow);
                            (0..k * k).map(move |i| (ch * h + y * k + i / k) * w + x * k + i % k)
                        })
                        .collect();
                    Op::AvgPool { rows, group: k * k }
                }
                Layer::Flatten | Layer::Reshape { .. } => Op::Reshape,
                Layer::Relu => Op::Relu,
                Layer::LeakyRelu { slope } => Op::LeakyRelu(slope),
                Layer::Silu => Op::Silu,
                Layer::Tanh => Op::Tanh,
                Layer::Sigmoid => Op::Sigmoid,
                Layer::BatchNorm { momentum, eps } => {
                    Op::BatchNorm { w: ids[0], b: ids[1], mean: ids[2], var: ids[3], momentum, eps }
                }
                Layer::GroupNorm { groups, eps } => Op::GroupNorm { w: ids[0], b: ids[1], groups, eps },
                Layer::Dropout { p } => Op::Dropout { p, key: vaelab_datasets::tag(&lname) },
                Layer::Residual(_) | Layer::Plugin(..) => unreachable!("built above"),
                Layer::SpectralNorm(_) => unreachable!("unwrapped above; validation allows one level"),
            };
            ops.push((op, out));
            shape = out;
        }
        Ok(Sequential { ops, input, output: shape })
    }

    pub fn forward<D: Backend>(&self, ctx: &Ctx<D>, x: Act<D>) -> Act<D> {
        self.forward_ops(ctx, x, self.ops.len())
    }

    /// The output of layer `last` (0-based; one op per spec layer), e.g. a discriminator's features.
    pub fn forward_through<D: Backend>(&self, ctx: &Ctx<D>, x: Act<D>, last: usize) -> Act<D> {
        self.forward_ops(ctx, x, (last + 1).min(self.ops.len()))
    }

    fn forward_ops<D: Backend>(&self, ctx: &Ctx<D>, mut x: Act<D>, count: usize) -> Act<D> {
        let mut i = 0;
        // The `Rebuild` a fused convolution offered for `x`, for the convolution right after it.
        let mut rebuild = None;
        while i < count {
            let op = &self.ops[i].0;
            // A convolution (or, in training, a BatchNorm) followed by ReLU or LeakyReLU runs as one
            // fused op (the activation's input is never stored); the pair still counts as two layers
            // for `forward_through`.
            let act = match self.ops[..count].get(i + 1) {
                Some((Op::Relu, _)) => Some(0.0),
                Some((Op::LeakyRelu(slope), _)) => Some(*slope),
                _ => None,
            };
            // A fused pair ends at the activation; only a convolution offers a `Rebuild`.
            let fused;
            (x, rebuild, fused) = match (op, act) {
                (Op::Conv { .. } | Op::ConvT { .. }, _) => {
                    // A small input is kept as values: see `REBUILD_MIN_VALUES`.
                    let input = rebuild.take().filter(|_| x.t.shape().0 * x.batch() >= REBUILD_MIN_VALUES);
                    let (y, r) = forward_conv(op, ctx, x, act, input);
                    (y, r, act.is_some())
                }
                (Op::BatchNorm { .. }, Some(_)) if ctx.train => (forward_batch_norm(op, ctx, x, act), None, true),
                _ => (forward_op(op, ctx, x), None, false),
            };
            let last = if fused { i + 1 } else { i };
            x.shape = self.ops[last].1;
            i = last + 1;
        }
        x
    }
}

/// How a stored weight is read as the (out × in) matrix whose largest singular value spectral
/// normalisation divides by (PyTorch's `spectral_norm` reshapes the same way).
#[derive(Clone, Copy, Debug)]
pub enum WeightLayout {
    /// Dense (out, in) and Conv (out, in, k, k): row r is output r.
    RowMajor(usize, usize),
    /// ConvT (in, out, k, k): PyTorch normalises its dim 1, so row r gathers output channel r.
    InputMajor { cin: usize, cout: usize, kk: usize },
}

impl WeightLayout {
    fn rows(&self) -> usize {
        match *self {
            WeightLayout::RowMajor(r, _) => r,
            WeightLayout::InputMajor { cout, .. } => cout,
        }
    }
    fn cols(&self) -> usize {
        match *self {
            WeightLayout::RowMajor(_, c) => c,
            WeightLayout::InputMajor { cin, kk, .. } => cin * kk,
        }
    }
    /// The storage index of matrix element (r, c).
    fn index(&self, r: usize, c: usize) -> usize {
        match *self {
            WeightLayout::RowMajor(_, cols) => r * cols + c,
            WeightLayout::InputMajor { cout, kk, .. } => ((c / kk) * cout + r) * kk + c % kk,
        }
    }
}

/// A layer's spectral normalisation: the buffer holding u and the weight's layout.
#[derive(Clone, Copy, Debug)]
pub struct SpectralNorm {
    u: ParamId,
    layout: WeightLayout,
}

impl SpectralNorm {
    pub fn new(u: ParamId, layout: WeightLayout) -> Self {
        SpectralNorm { u, layout }
    }

    /// (u, v) for the weight values `w`: in training one power iteration from the stored u
    /// (Miyato et al. 2018, Algorithm 1: v ← Wᵀu/‖Wᵀu‖, u ← Wv/‖Wv‖); in evaluation the stored u and
    /// v ← Wᵀu/‖Wᵀu‖.
    pub fn vectors(&self, w: &[f32], stored_u: &[f32], train: bool) -> (Vec<f64>, Vec<f64>) {
        let l = self.layout;
        let normalise = |v: Vec<f64>| {
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            v.into_iter().map(|x| x / n).collect::<Vec<f64>>()
        };
        let u0 = normalise(stored_u.iter().map(|x| *x as f64).collect());
        let wt_u =
            |u: &[f64]| normalise((0..l.cols()).map(|c| (0..l.rows()).map(|r| w[l.index(r, c)] as f64 * u[r]).sum()).collect());
        let v = wt_u(&u0);
        if !train {
            return (u0, v);
        }
        let u = normalise((0..l.rows()).map(|r| (0..l.cols()).map(|c| w[l.index(r, c)] as f64 * v[c]).sum()).collect());
        (u, v)
    }

    /// uvᵀ laid out as the weight, so that σ = uᵀWv = Σ W ⊙ (uvᵀ).
    pub fn outer(&self, u: &[f64], v: &[f64]) -> Vec<f32> {
        let l = self.layout;
        let mut out = vec![0.0; l.rows() * l.cols()];
        for (r, ur) in u.iter().enumerate() {
            for (c, vc) in v.iter().enumerate() {
                out[l.index(r, c)] = (ur * vc) as f32;
            }
        }
        out
    }
}

/// A layer's weight on the tape: the parameter itself, or W / σ(W) under spectral normalisation,
/// σ = uᵀWv with u, v held constant (their new u is recorded for the step).
fn weight<D: Backend>(ctx: &Ctx<D>, w: ParamId, sn: &Option<SpectralNorm>) -> Flat<D, OT<D>> {
    let Some(sn) = sn else { return ctx.param(w) };
    let values = ctx.store.get(w).tensor.as_vec();
    let (u, v) = sn.vectors(&values, &ctx.store.get(sn.u).tensor.as_vec(), ctx.train);
    if ctx.train {
        ctx.record_buffers([(sn.u, u.iter().map(|x| *x as f32).collect())]);
    }
    let n = values.len();
    let uv = ctx.store.dev.tensor_from_vec(sn.outer(&u, &v), (n,));
    let wt = ctx.param(w);
    let sigma = (wt.with_empty_tape() * uv).sum::<(), _>();
    wt / sigma.broadcast_like(&(n,))
}

/// A `Conv` or `ConvT` layer, with the activation `act` fused in, given the `Rebuild` of its input
/// if the layer before offered one; returns the output and its own `Rebuild` (see `Backend::conv2d`).
fn forward_conv<D: Backend>(
    op: &Op,
    ctx: &Ctx<D>,
    x: Act<D>,
    act: Option<f32>,
    input: Option<Rebuild>,
) -> (Act<D>, Option<Rebuild>) {
    let needs = ctx.grad_needs(x.needs_grad);
    let (t, rebuild) = match op {
        Op::Conv { w, b, g, cout, sn } => D::conv2d(x.t, needs, weight(ctx, *w, sn), ctx.param(*b), *g, *cout, act, input),
        Op::ConvT { w, b, g, cin, sn } => {
            (D::conv_t2d(x.t, needs, weight(ctx, *w, sn), ctx.param(*b), *g, *cin, act, input), None)
        }
        _ => unreachable!("forward_conv is only called for convolutions"),
    };
    (Act { t, shape: x.shape, needs_grad: true }, rebuild)
}

/// `BatchNorm`, with the activation `act` fused in when training (see `Backend::batch_norm_train`).
/// In evaluation it normalises with the running statistics and `act` must be None.
fn forward_batch_norm<D: Backend>(op: &Op, ctx: &Ctx<D>, x: Act<D>, act: Option<f32>) -> Act<D> {
    let Op::BatchNorm { w, b, mean, var, momentum, eps } = op else {
        unreachable!("forward_batch_norm is only called for BatchNorm")
    };
    let batch = x.batch();
    let (c, hw) = x.shape.channels();
    let n = hw * batch;
    if ctx.train {
        let (t, stats) = D::batch_norm_train(x.t, ctx.param(*w), ctx.param(*b), c, *eps, act);
        // Running statistics follow PyTorch: unbiased batch variance, exponential average.
        let unbias = n as f32 / (n.max(2) - 1) as f32;
        let old_m = ctx.store.get(*mean).tensor.as_vec();
        let old_v = ctx.store.get(*var).tensor.as_vec();
        let m = *momentum;
        let new_m = old_m.iter().zip(&stats.mean).map(|(o, b)| (1.0 - m) * o + m * b).collect();
        let new_v = old_v.iter().zip(&stats.var).map(|(o, b)| (1.0 - m) * o + m * b * unbias).collect();
        ctx.record_buffers([(*mean, new_m), (*var, new_v)]);
        return Act { t, shape: x.shape, needs_grad: true };
    }
    debug_assert!(act.is_none(), "activations are fused into BatchNorm only in training");
    let (mean, var) = (&ctx.store.get(*mean).tensor, &ctx.store.get(*var).tensor);
    let t = D::batch_norm_eval(x.t, ctx.grad_needs(x.needs_grad), ctx.param(*w), ctx.param(*b), mean, var, c, *eps);
    Act { t, shape: x.shape, needs_grad: true }
}

fn forward_op<D: Backend>(op: &Op, ctx: &Ctx<D>, x: Act<D>) -> Act<D> {
    let batch = x.batch();
    let dev = ctx.store.dev.clone();
    match op {
        Op::Dense { w, b, out, sn } => {
            let n = x.shape.len();
            let y = weight(ctx, *w, sn).reshape_like(&(*out, n)).matmul(x.t);
            let y = y + ctx.param(*b).broadcast_like::<_, Axis<1>>(&(*out, batch));
            Act { t: y, shape: x.shape, needs_grad: true }
        }
        Op::Conv { .. } | Op::ConvT { .. } => unreachable!("forward_ops runs convolutions through forward_conv"),
        Op::Upsample { rows } => Act { t: D::gather_rows(x.t, rows), shape: x.shape, needs_grad: true },
        Op::AvgPool { rows, group } => Act { t: D::avg_pool_rows(x.t, rows, *group), shape: x.shape, needs_grad: true },
        Op::Reshape => x,
        Op::Relu => {
            let shape = x.shape;
            let t = if ctx.inference.get() {
                // Off the tape, dfdx's ReLU works in place on a tensor nobody else holds.
                let (t, tape) = x.t.split_tape();
                t.relu().put_tape(tape)
            } else {
                x.t.relu()
            };
            Act { t, shape, needs_grad: true }
        }
        Op::LeakyRelu(slope) => {
            let shape = x.shape;
            Act { t: D::leaky_relu(x.t, *slope), shape, needs_grad: true }
        }
        Op::Silu => {
            let s = x.t.with_empty_tape().sigmoid();
            let t = x.t * s;
            Act { t, shape: x.shape, needs_grad: true }
        }
        Op::Tanh => {
            let shape = x.shape;
            Act { t: x.t.tanh(), shape, needs_grad: true }
        }
        Op::Sigmoid => {
            let shape = x.shape;
            Act { t: x.t.sigmoid(), shape, needs_grad: true }
        }
        Op::BatchNorm { .. } => forward_batch_norm(op, ctx, x, None),
        Op::GroupNorm { w, b, groups, eps } => {
            let (c, hw) = x.shape.channels();
            let g = *groups;
            let m = c / g * hw;
            let xr = x.t.reshape_like(&(g, m, batch));
            let mu = xr.with_empty_tape().mean::<(usize, usize), Axis<1>>();
            let centred = xr - mu.broadcast_like::<_, Axis<1>>(&(g, m, batch));
            let v = centred.with_empty_tape().square().mean::<(usize, usize), Axis<1>>();
            let normed = centred / (v + *eps).sqrt().broadcast_like::<_, Axis<1>>(&(g, m, batch));
            let n = hw * batch;
            let y = normed.reshape_like(&(c, n)) * ctx.param(*w).broadcast_like::<_, Axis<1>>(&(c, n))
                + ctx.param(*b).broadcast_like::<_, Axis<1>>(&(c, n));
            let t = y.reshape_like(&(c * hw, batch));
            Act { t, shape: x.shape, needs_grad: true }
        }
        Op::Dropout { p, key } => {
            if !ctx.train || *p == 0.0 {
                return x;
            }
            let len = x.shape.len() * batch;
            let mut rng = StreamRng::new(ctx.seed, &[tag("dropout"), *key, ctx.step]);
            let keep = 1.0 / (1.0 - *p);
            let mask: Vec<f32> = (0..len).map(|_| if rng.uniform() < *p as f64 { 0.0 } else { keep }).collect();
            let mask = dev.tensor_from_vec(mask, (x.shape.len(), batch));
            let t = x.t * mask;
            Act { t, shape: x.shape, needs_grad: true }
        }
        Op::Plugin { block, params } => {
            let params = params.iter().map(|id| ctx.param(*id)).collect();
            let out_len = block.output().len();
            let t = external_op(block, x.t, params, out_len, &ctx.failures, ctx.train);
            Act { t, shape: x.shape, needs_grad: true }
        }
        Op::Residual(block) => {
            let skip = x.t.with_empty_tape();
            let shape = x.shape;
            let y = block.forward(ctx, x);
            Act { t: y.t + skip, shape, needs_grad: true }
        }
    }
}
