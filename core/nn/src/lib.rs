//! Run-time-shaped layers on dfdx.
//!
//! Layout: activations are batch-last matrices `(C·H·W, B)` everywhere inside models; data enter
//! and leave in N×C×H×W through [`to_batch_last`] / [`from_batch_last`] only.

pub mod batch;
pub mod build_error;
mod cpu_values;
pub mod device;
pub mod external;
pub mod fused;
pub mod fused_act;
pub mod fused_loss;
pub mod fused_norm;
pub mod fused_optim;
pub mod fused_rows;
pub mod gather;
pub mod geom;
pub mod infer;
pub mod kernels;
pub mod layers;
pub mod optim;
pub mod params;
pub mod pool;
pub mod shape;
pub mod subnormal;
pub mod update;

pub use build_error::BuildError;
pub use external::{BlockSource, ExternalBlock, Failures, NoBlocks};
pub use geom::ConvGeom;
pub use infer::{infer, SummaryRow};
pub use layers::{Act, Ctx, Sequential, SpectralNorm, WeightLayout};
pub use params::{Flat, Init, Param, ParamGroup, ParamId, ParamStore, Role};
pub use shape::FeatShape;

use dfdx::prelude::*;
use update::{Rule, State};

pub type OT<D> = OwnedTape<f32, D>;
/// A batch-last activation matrix on a tape.
pub type Tensor2<D> = Tensor<(usize, usize), f32, D, OT<D>>;

/// sg(t): the values of `t` as a new tensor on a fresh tape. Gradients of whatever uses it stop
/// here. A copy, not `split_tape()`: dfdx keys gradients by tensor id, so a tensor sharing `t`'s id
/// would hand its gradient back to `t`'s producers whenever `t`'s own tape joins the same loss.
pub fn stop_gradient<D: Device<f32>>(t: &Tensor2<D>) -> Tensor2<D> {
    constant(t).retaped()
}

/// The values of `t` as a new constant: a fresh id and no tape, so not even the gradient that dfdx
/// computes for an untaped operand can reach `t` (use it for targets such as sg(x_r) in ‖x − sg x_r‖²).
pub fn constant<D: Device<f32>, T>(t: &Tensor<(usize, usize), f32, D, T>) -> Tensor<(usize, usize), f32, D> {
    let shape = *t.shape();
    t.device().tensor_from_vec(t.as_vec(), shape)
}

/// Which gradients an op's backward pass must produce. dfdx computes a gradient for every operand
/// of every op on the tape; a fused kernel can skip the ones nobody reads: the input's gradient for
/// data (the first layer), the parameters' for a network whose parameters this pass does not update
/// (a discriminator scoring the generator's fakes, IntroVAE's encoder judging the decoder's images:
/// see [`Ctx::frozen`]), and both in a pass no backward follows ([`Ctx::inference`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GradNeeds {
    pub input: bool,
    pub params: bool,
}

impl GradNeeds {
    /// Every gradient (what dfdx's own ops compute).
    pub const ALL: GradNeeds = GradNeeds { input: true, params: true };

    /// No backward pass will read anything.
    pub fn none(self) -> bool {
        !self.input && !self.params
    }
}

/// A fused convolution's output values, computed again on demand from what the op keeps anyway
/// (its input's and weights' values). A convolution whose output is cheap to compute but large (the
/// first layer on grey or RGB images: a few multiply-adds per value, and the largest activation of a
/// network at 256 px) hands one to the layer after it, which keeps it for its backward pass instead
/// of a copy of those values: the copy was 134 MB of a β-VAE's 256 px step, alive from the forward
/// pass to the end of the backward pass. The values rebuilt are the ones first computed, to the bit
/// (the same kernels, in the same fixed order).
#[derive(Clone)]
pub struct Rebuild(std::sync::Arc<dyn Fn() -> Vec<f32> + Send + Sync>);

impl Rebuild {
    pub fn new(f: impl Fn() -> Vec<f32> + Send + Sync + 'static) -> Self {
        Rebuild(std::sync::Arc::new(f))
    }

    /// The values, computed now.
    pub fn values(&self) -> Vec<f32> {
        (self.0)()
    }
}

/// A dfdx device plus vaelab's kernels for it. The provided methods compose dfdx's own ops and so
/// run on any device; the CPU overrides them with fused kernels (`fused`, `fused_optim`), which
/// tests check against these generic versions.
pub trait Backend: Device<f32> + dfdx::tensor::Synchronize {
    /// Adds host values into device storage, e.g. a gradient (plugin blocks compute on the host).
    fn add_host(dst: &mut <Self as Storage<f32>>::Vec, values: &[f32]) -> Result<(), Self::Err>;

    /// Σ g² of `p`'s gradient (0 when `p` got none).
    fn grad_sq_sum(grads: &mut Gradients<f32, Self>, p: &Flat<Self>) -> f64 {
        grads.try_alloc_for(p).expect("gradient allocation");
        grads.get(p).square().sum::<(), _>().as_vec()[0] as f64
    }

    /// One optimizer update of `p` with its gradient times `scale` (gradient clipping).
    fn update(
        p: &Flat<Self>,
        grads: &mut Gradients<f32, Self>,
        scale: f32,
        state: State<Self>,
        rule: Rule,
    ) -> (Flat<Self>, State<Self>) {
        grads.try_alloc_for(p).expect("gradient allocation");
        update::update_generic(p, grads.get(p) * scale, state, rule)
    }

    /// `Conv`: x (C·H·W, B) → (Cout·OH·OW, B), then the activation `act` (`Some(slope)`: LeakyReLU,
    /// ReLU for 0) where the layer list has one right after the convolution. `needs` lets a kernel
    /// skip gradients nobody reads (generic backends compute them all, as dfdx does).
    ///
    /// `input` is the [`Rebuild`] its producer returned for `x`, if any: a kernel may keep it instead
    /// of x's values for its backward pass. The second value returned is such a `Rebuild` for this
    /// op's output, where the kernel offers one (generic backends keep values and offer none).
    #[allow(clippy::too_many_arguments)]
    fn conv2d(
        x: Tensor2<Self>,
        _needs: GradNeeds,
        w: Flat<Self, OT<Self>>,
        b: Flat<Self, OT<Self>>,
        g: ConvGeom,
        cout: usize,
        act: Option<f32>,
        _input: Option<Rebuild>,
    ) -> (Tensor2<Self>, Option<Rebuild>) {
        (activate(gather::conv2d(x, w, b, g, cout), act), None)
    }

    /// LeakyReLU with `slope`, as dfdx's `prelu` computes it.
    fn leaky_relu(x: Tensor2<Self>, slope: f32) -> Tensor2<Self> {
        x.prelu(slope)
    }

    /// `Upsample`: output row i is row `rows[i]` of x (rows, batch).
    fn gather_rows(x: Tensor2<Self>, rows: &[usize]) -> Tensor2<Self> {
        gather_rows_generic(x, rows)
    }

    /// `AvgPool`: output row o is the mean of rows `rows[o·group..(o+1)·group]` of x (rows, batch).
    fn avg_pool_rows(x: Tensor2<Self>, rows: &[usize], group: usize) -> Tensor2<Self> {
        avg_pool_rows_generic(x, rows, group)
    }

    /// Σ over every element of BCE-with-logits(`logits`, `targets`) (dfdx's
    /// `bce_with_logits(…).sum()`), on the tape of `logits`.
    fn bce_with_logits_sum(logits: Tensor2<Self>, targets: Tensor<(usize, usize), f32, Self>) -> Tensor<(), f32, Self, OT<Self>> {
        logits.bce_with_logits(targets).sum()
    }

    /// BatchNorm in training (the batch's statistics) over `c` channels, then `act` as in `conv2d`;
    /// also returns the batch mean and biased variance per channel.
    fn batch_norm_train(
        x: Tensor2<Self>,
        w: Flat<Self, OT<Self>>,
        b: Flat<Self, OT<Self>>,
        c: usize,
        eps: f32,
        act: Option<f32>,
    ) -> (Tensor2<Self>, BatchStats) {
        batch_norm_train_generic(x, w, b, c, eps, act)
    }

    /// BatchNorm with its running statistics `mean` and `var` (evaluation mode) over `c` channels;
    /// `needs` as in `conv2d` (an inference pass needs no backward op).
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_eval(
        x: Tensor2<Self>,
        _needs: GradNeeds,
        w: Flat<Self, OT<Self>>,
        b: Flat<Self, OT<Self>>,
        mean: &Flat<Self>,
        var: &Flat<Self>,
        c: usize,
        eps: f32,
    ) -> Tensor2<Self> {
        batch_norm_eval_generic(x, w, b, mean, var, c, eps)
    }

    /// `ConvT`: x (Cin·IH·IW, B) → (Cout·H·W, B); `g` is the adjoint convolution's geometry; `act`,
    /// `needs` and `input` as in `conv2d` (no kernel offers a `Rebuild` of a `ConvT`'s output).
    #[allow(clippy::too_many_arguments)]
    fn conv_t2d(
        x: Tensor2<Self>,
        _needs: GradNeeds,
        w: Flat<Self, OT<Self>>,
        b: Flat<Self, OT<Self>>,
        g: ConvGeom,
        cin: usize,
        act: Option<f32>,
        _input: Option<Rebuild>,
    ) -> Tensor2<Self> {
        activate(gather::conv_t2d(x, w, b, g, cin), act)
    }
}

/// A training BatchNorm's batch statistics per channel: the mean and the biased variance (the
/// running statistics are the layer's business).
pub struct BatchStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

/// BatchNorm with the batch's statistics (training) over `c` channels, then `act`: dfdx's ops,
/// the definition the CPU's fused kernel (`fused_norm`) is checked against.
pub fn batch_norm_train_generic<D: Backend>(
    x: Tensor2<D>,
    w: Flat<D, OT<D>>,
    b: Flat<D, OT<D>>,
    c: usize,
    eps: f32,
    act: Option<f32>,
) -> (Tensor2<D>, BatchStats) {
    let (rows, batch) = *x.shape();
    let n = rows / c.max(1) * batch;
    let xr = x.reshape_like(&(c, n));
    let mu = xr.with_empty_tape().mean::<(usize,), Axis<1>>();
    let mean = mu.as_vec();
    let centred = xr - mu.broadcast_like::<_, Axis<1>>(&(c, n));
    let v = centred.with_empty_tape().square().mean::<(usize,), Axis<1>>();
    let var = v.as_vec();
    let std = (v + eps).sqrt().broadcast_like::<_, Axis<1>>(&(c, n));
    let y = centred / std * w.broadcast_like::<_, Axis<1>>(&(c, n)) + b.broadcast_like::<_, Axis<1>>(&(c, n));
    (activate(y.reshape_like(&(rows, batch)), act), BatchStats { mean, var })
}

/// BatchNorm with running statistics (evaluation mode) over `c` channels from dfdx's ops,
/// y = (x − mean)/√(var + ε)·w + b: the definition the CPU's inference kernel (`fused_norm`) is
/// checked against, and what records the gradients when a backward pass follows.
pub fn batch_norm_eval_generic<D: Backend>(
    x: Tensor2<D>,
    w: Flat<D, OT<D>>,
    b: Flat<D, OT<D>>,
    mean: &Flat<D>,
    var: &Flat<D>,
    c: usize,
    eps: f32,
) -> Tensor2<D> {
    let (rows, batch) = *x.shape();
    let n = rows / c.max(1) * batch;
    let xr = x.reshape_like(&(c, n));
    let mu = mean.clone().broadcast_like::<_, Axis<1>>(&(c, n));
    let sd = (var.clone() + eps).sqrt().broadcast_like::<_, Axis<1>>(&(c, n));
    let y = (xr - mu) / sd * w.broadcast_like::<_, Axis<1>>(&(c, n)) + b.broadcast_like::<_, Axis<1>>(&(c, n));
    y.reshape_like(&(rows, batch))
}

/// `Upsample` from dfdx's `gather`: the definition the CPU's fused kernel (`fused_rows`) is checked against.
pub fn gather_rows_generic<D: Backend>(x: Tensor2<D>, rows: &[usize]) -> Tensor2<D> {
    let idx = x.device().tensor_from_vec(rows.to_vec(), (rows.len(),));
    x.gather(idx)
}

/// `AvgPool` from dfdx's ops: each block's rows gathered next to each other, then averaged (the
/// gather's backward pass scatters the gradient back); checked against as `gather_rows_generic` is.
pub fn avg_pool_rows_generic<D: Backend>(x: Tensor2<D>, rows: &[usize], group: usize) -> Tensor2<D> {
    let (out, batch) = (rows.len() / group, x.shape().1);
    let idx = x.device().tensor_from_vec(rows.to_vec(), (rows.len(),));
    x.gather(idx).reshape_like(&(out, group, batch)).sum::<(usize, usize), Axis<1>>() * (1.0 / group as f32)
}

/// The activation a convolution's output goes through, as the standalone layers compute it: ReLU
/// is dfdx's `relu`, LeakyReLU the backend's.
pub fn activate<D: Backend>(t: Tensor2<D>, act: Option<f32>) -> Tensor2<D> {
    match act {
        None => t,
        Some(0.0) => t.relu(),
        Some(slope) => D::leaky_relu(t, slope),
    }
}

impl Backend for Cpu {
    fn add_host(dst: &mut <Self as Storage<f32>>::Vec, values: &[f32]) -> Result<(), Self::Err> {
        for (a, v) in dst.iter_mut().zip(values) {
            *a += *v;
        }
        Ok(())
    }
    fn grad_sq_sum(grads: &mut Gradients<f32, Self>, p: &Flat<Self>) -> f64 {
        let g = grads.get_or_alloc_mut(p).expect("CPU allocation");
        g.iter().map(|v| (*v as f64) * (*v as f64)).sum()
    }
    fn update(
        p: &Flat<Self>,
        grads: &mut Gradients<f32, Self>,
        scale: f32,
        state: State<Self>,
        rule: Rule,
    ) -> (Flat<Self>, State<Self>) {
        fused_optim::update(p, grads, scale, state, rule)
    }
    fn conv2d(
        x: Tensor2<Self>,
        needs: GradNeeds,
        w: Flat<Self, OT<Self>>,
        b: Flat<Self, OT<Self>>,
        g: ConvGeom,
        cout: usize,
        act: Option<f32>,
        input: Option<Rebuild>,
    ) -> (Tensor2<Self>, Option<Rebuild>) {
        fused::conv2d(x, needs, w, b, g, cout, act, input)
    }
    fn conv_t2d(
        x: Tensor2<Self>,
        needs: GradNeeds,
        w: Flat<Self, OT<Self>>,
        b: Flat<Self, OT<Self>>,
        g: ConvGeom,
        cin: usize,
        act: Option<f32>,
        input: Option<Rebuild>,
    ) -> Tensor2<Self> {
        fused::conv_t2d(x, needs, w, b, g, cin, act, input)
    }
    fn leaky_relu(x: Tensor2<Self>, slope: f32) -> Tensor2<Self> {
        fused_act::leaky_relu(x, slope)
    }
    fn gather_rows(x: Tensor2<Self>, rows: &[usize]) -> Tensor2<Self> {
        fused_rows::gather_rows(x, rows)
    }
    fn avg_pool_rows(x: Tensor2<Self>, rows: &[usize], group: usize) -> Tensor2<Self> {
        fused_rows::avg_pool_rows(x, rows, group)
    }
    fn bce_with_logits_sum(logits: Tensor2<Self>, targets: Tensor<(usize, usize), f32, Self>) -> Tensor<(), f32, Self, OT<Self>> {
        fused_loss::bce_with_logits_sum(logits, targets)
    }
    fn batch_norm_train(
        x: Tensor2<Self>,
        w: Flat<Self, OT<Self>>,
        b: Flat<Self, OT<Self>>,
        c: usize,
        eps: f32,
        act: Option<f32>,
    ) -> (Tensor2<Self>, BatchStats) {
        fused_norm::batch_norm_train(x, w, b, c, eps, act)
    }
    fn batch_norm_eval(
        x: Tensor2<Self>,
        needs: GradNeeds,
        w: Flat<Self, OT<Self>>,
        b: Flat<Self, OT<Self>>,
        mean: &Flat<Self>,
        var: &Flat<Self>,
        c: usize,
        eps: f32,
    ) -> Tensor2<Self> {
        fused_norm::batch_norm_eval(x, needs, w, b, mean, var, c, eps)
    }
}

/// CUDA runs the generic dfdx-op kernels (gather-based convolutions).
#[cfg(feature = "cuda")]
impl Backend for Cuda {
    fn add_host(dst: &mut <Self as Storage<f32>>::Vec, values: &[f32]) -> Result<(), Self::Err> {
        // Copy the device values down, add, copy them back (plugin blocks are host code).
        let dev = dst.device();
        let mut host: Vec<f32> = dev.dtoh_sync_copy(&**dst)?;
        for (a, v) in host.iter_mut().zip(values) {
            *a += *v;
        }
        dev.htod_sync_copy_into(&host, &mut **dst)?;
        Ok(())
    }
}

/// N×C×H×W values → a batch-last `(C·H·W, N)` matrix.
pub fn to_batch_last(nchw: &[f32], n: usize) -> Vec<f32> {
    let f = nchw.len() / n.max(1);
    let mut out = vec![0.0; nchw.len()];
    for (i, img) in nchw.chunks(f).enumerate() {
        for (j, v) in img.iter().enumerate() {
            out[j * n + i] = *v;
        }
    }
    out
}

/// A batch-last `(F, N)` matrix → N×F values.
pub fn from_batch_last(fb: &[f32], n: usize) -> Vec<f32> {
    let f = fb.len() / n.max(1);
    let mut out = vec![0.0; fb.len()];
    for (j, row) in fb.chunks(n).enumerate() {
        for (i, v) in row.iter().enumerate() {
            out[i * f + j] = *v;
        }
    }
    out
}
