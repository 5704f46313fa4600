//! A learned prior over the code grids of a quantized latent: a small PixelCNN (van den Oord et al.
//! 2016, "Pixel Recurrent Neural Networks", §3.5; the prior of the VQ-VAE paper, van den Oord et al.
//! 2017, §3.2, in small). Trained after the model by `vaelab train-prior` ([`train`]), it replaces
//! the code-frequency prior wherever a run draws prior samples.
//!
//! Every position holds one categorical variable (its code), so a mask needs no channel groups:
//! mask A hides the centre and everything after it in raster order, mask B hides only what follows
//! the centre. One mask-A convolution, then mask-B convolutions, see exactly the positions before
//! each output position.

use dfdx::prelude::*;
use vaelab_nn::{Backend, ConvGeom, Ctx, Flat, Init, ParamId, ParamStore, Role, Tensor2, OT};
use vaelab_spec::Prior;

/// The parameter-name prefix (`prior.0.weight`, …); the parameters' group is `ParamGroup::Prior`,
/// set by `Model::build`.
pub const PREFIX: &str = "prior";

/// One masked convolution.
struct MaskedConv {
    w: ParamId,
    b: ParamId,
    geom: ConvGeom,
    cout: usize,
    /// 1 where the weight may be non-zero, per weight element (cout, cin, k, k).
    mask: Vec<f32>,
}

/// A built PixelCNN over a `codes`-way categorical grid of `h`×`w` positions.
pub struct PixelCnn {
    pub codes: usize,
    pub h: usize,
    pub w: usize,
    layers: Vec<MaskedConv>,
}

impl PixelCnn {
    /// Builds the prior's parameters into `store` (an empty store of its own). `None` for the
    /// frequency prior.
    pub fn build<D: Device<f32>>(spec: &Prior, codes: usize, h: usize, w: usize, store: &mut ParamStore<D>) -> Option<PixelCnn> {
        let Prior::PixelCnn { channels, layers, kernel, .. } = *spec else { return None };
        let mut convs = Vec::new();
        let mut cin = codes;
        let mut add = |index: usize, cin: usize, cout: usize, k: usize, centre_visible: bool| {
            let fan_in = Init::FanInUniform { fan_in: cin * k * k };
            let w_id = store.add(format!("{PREFIX}.{index}.weight"), vec![cout, cin, k, k], fan_in, Role::Trainable);
            let b_id = store.add(format!("{PREFIX}.{index}.bias"), vec![cout], fan_in, Role::Trainable);
            let geom = ConvGeom::conv(cin, h, w, k, 1, k / 2).expect("odd kernels keep the grid's size");
            MaskedConv { w: w_id, b: b_id, geom, cout, mask: mask(cin, cout, k, centre_visible) }
        };
        convs.push(add(0, cin, channels, kernel, false));
        cin = channels;
        for i in 0..layers {
            convs.push(add(i + 1, cin, channels, 3, true));
        }
        convs.push(add(layers + 1, cin, codes, 1, true));
        Some(PixelCnn { codes, h, w, layers: convs })
    }

    /// Logits `(codes·h·w, batch)` for one-hot code grids `(codes·h·w, batch)`.
    pub fn logits<D: Backend>(&self, ctx: &Ctx<D>, one_hot: Tensor<(usize, usize), f32, D>) -> Tensor2<D> {
        let mut x = one_hot.retaped();
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            let w = ctx.param(l.w);
            let mask: Flat<D> = ctx.store.dev.tensor_from_vec(l.mask.clone(), (l.mask.len(),));
            // Every layer but the last is followed by ReLU, fused into the convolution.
            x = D::conv2d(x, ctx.grad_needs(i > 0), w * mask, ctx.param(l.b), l.geom, l.cout, (i < last).then_some(0.0), None).0;
        }
        x
    }

    /// The mean negative log-likelihood per position (nats) of code grids `indices` (per example,
    /// raster order), on the tape.
    pub fn loss<D: Backend>(&self, ctx: &Ctx<D>, indices: &[Vec<usize>]) -> Tensor<(), f32, D, OT<D>> {
        let batch = indices.len();
        let positions = self.h * self.w;
        let dev = ctx.store.dev.clone();
        let one_hot = self.one_hot(&dev, indices);
        let logits = self.logits(ctx, one_hot.clone());
        // (codes, positions·batch): log-softmax over the codes of each position.
        let log_p = logits.reshape_like(&(self.codes, positions * batch)).log_softmax::<Axis<0>>();
        let target = one_hot.reshape_like(&(self.codes, positions * batch));
        (log_p * target).sum::<(), _>() * (-1.0 / (positions * batch) as f32)
    }

    /// One-hot `(codes·h·w, batch)` of code grids.
    pub fn one_hot<D: Device<f32>>(&self, dev: &D, indices: &[Vec<usize>]) -> Tensor<(usize, usize), f32, D> {
        let (batch, positions) = (indices.len(), self.h * self.w);
        let mut v = vec![0f32; self.codes * positions * batch];
        for (b, grid) in indices.iter().enumerate() {
            for (p, &k) in grid.iter().enumerate() {
                v[(k * positions + p) * batch + b] = 1.0;
            }
        }
        dev.tensor_from_vec(v, (self.codes * positions, batch))
    }

    /// `count` code grids drawn position by position in raster order from the stream
    /// (seed, purpose, index); each position's code from the softmax of its logits.
    pub fn sample<D: Backend>(&self, store: &ParamStore<D>, draw: crate::latent::PriorDraw) -> Vec<Vec<usize>> {
        let crate::latent::PriorDraw { seed, purpose, index, count } = draw;
        let mut rng = vaelab_datasets::StreamRng::new(seed, &[vaelab_datasets::tag(purpose), index]);
        // One stream for the whole batch: grid b's draws interleave with the others'.
        self.draw(store, count, 1.0, |_| rng.uniform())
    }

    /// One code grid per entry of `indices`, grid `i` from its own stream (seed, purpose,
    /// indices[i]), with the logits divided by `temperature`: grid `i` does not depend on the other
    /// grids drawn beside it (`vaelab sample` with any batch size).
    pub fn sample_each<D: Backend>(
        &self,
        store: &ParamStore<D>,
        seed: u64,
        purpose: &str,
        indices: &[u64],
        temperature: f32,
    ) -> Vec<Vec<usize>> {
        let mut rngs: Vec<_> =
            indices.iter().map(|&i| vaelab_datasets::StreamRng::new(seed, &[vaelab_datasets::tag(purpose), i])).collect();
        self.draw(store, indices.len(), temperature, |b| rngs[b].uniform())
    }

    /// Draws `count` grids position by position; `uniform(b)` gives grid b's next uniform number.
    /// Each layer is computed at the new position only, from its cached earlier outputs
    /// ([`crate::prior_sampler`]): the h·w positions cost one forward pass in all.
    fn draw<D: Backend>(
        &self,
        store: &ParamStore<D>,
        count: usize,
        temperature: f32,
        uniform: impl FnMut(usize) -> f64,
    ) -> Vec<Vec<usize>> {
        let mut net = self.unrolled(store, count);
        self.draw_with(count, temperature, uniform, |p, grids| net.step(p, grids))
    }

    /// Draws `count` grids in raster order: `logits(p, grids)` gives position p's logits
    /// `(codes, count)` once the codes before p are in `grids`; `uniform(b)` grid b's next number.
    fn draw_with(
        &self,
        count: usize,
        temperature: f32,
        mut uniform: impl FnMut(usize) -> f64,
        mut logits: impl FnMut(usize, &[Vec<usize>]) -> Vec<f32>,
    ) -> Vec<Vec<usize>> {
        let mut grids = vec![vec![0usize; self.h * self.w]; count];
        for p in 0..self.h * self.w {
            let at_p = logits(p, &grids);
            for (b, grid) in grids.iter_mut().enumerate() {
                let l: Vec<f32> = (0..self.codes).map(|k| at_p[k * count + b] / temperature).collect();
                grid[p] = draw_code(&l, uniform(b));
            }
        }
        grids
    }

    /// The network unrolled over `batch` grids for drawing position by position.
    fn unrolled<D: Backend>(&self, store: &ParamStore<D>, batch: usize) -> crate::prior_sampler::Unrolled {
        let values = |id| store.get(id).tensor.as_vec();
        let layers = self
            .layers
            .iter()
            .map(|l| crate::prior_sampler::LayerValues {
                cin: l.geom.c,
                cout: l.cout,
                k: l.geom.k.0,
                weight: values(l.w),
                mask: &l.mask,
                bias: values(l.b),
            })
            .collect();
        crate::prior_sampler::Unrolled::new(self.h, self.w, batch, layers)
    }

    /// The plain sampler: the whole network over the whole grid for every position (h·w forward
    /// passes). The reference the cached sampler is tested against.
    #[cfg(test)]
    fn draw_uncached<D: Backend>(
        &self,
        ctx: &Ctx<D>,
        count: usize,
        temperature: f32,
        uniform: impl FnMut(usize) -> f64,
    ) -> Vec<Vec<usize>> {
        let positions = self.h * self.w;
        self.draw_with(count, temperature, uniform, |p, grids| {
            let all = self.logits(ctx, self.one_hot(&ctx.store.dev, grids)).split_tape().0.as_vec();
            // (codes·positions, count) → position p's (codes, count).
            (0..self.codes).flat_map(|k| all[(k * positions + p) * count..][..count].iter().copied()).collect()
        })
    }
}

/// A code drawn from the softmax of `logits` with the uniform number `u`.
fn draw_code(logits: &[f32], u: f64) -> usize {
    let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f32> = logits.iter().map(|x| (x - top).exp()).collect();
    crate::latent::categorical(&weights, weights.iter().sum::<f32>(), u)
}

/// Mask (cout, cin, k, k): kernel position (y, x) is visible if it comes before the centre in raster
/// order, or is the centre and `centre_visible` (mask B; mask A hides it).
fn mask(cin: usize, cout: usize, k: usize, centre_visible: bool) -> Vec<f32> {
    let c = k / 2;
    let visible = |y: usize, x: usize| y < c || (y == c && (x < c || (x == c && centre_visible)));
    let plane: Vec<f32> = (0..k * k).map(|i| if visible(i / k, i % k) { 1.0 } else { 0.0 }).collect();
    plane.iter().copied().cycle().take(cout * cin * k * k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_hide_the_centre_and_what_follows() {
        let a = mask(1, 1, 3, false);
        assert_eq!(a, [1., 1., 1., 1., 0., 0., 0., 0., 0.]);
        let b = mask(1, 1, 3, true);
        assert_eq!(b, [1., 1., 1., 1., 1., 0., 0., 0., 0.]);
        assert_eq!(mask(2, 3, 1, true), vec![1.0; 6]);
    }

    /// A small prior on a non-square grid, its weights scaled up so that the logits spread widely.
    fn small_prior() -> (PixelCnn, ParamStore<Cpu>) {
        let spec = Prior::PixelCnn { channels: 6, layers: 2, kernel: 5, steps: 1, lr: 1e-3, batch: 1 };
        let mut store = ParamStore::new(Cpu::default(), 7);
        let net = PixelCnn::build(&spec, 5, 4, 6, &mut store).expect("a PixelCNN spec");
        for id in 0..store.len() {
            let v: Vec<f32> = store.get(ParamId(id)).tensor.as_vec().iter().map(|v| v * 4.0).collect();
            store.set_values(ParamId(id), v);
        }
        (net, store)
    }

    #[test]
    fn the_cached_step_gives_the_full_passs_logits_at_every_position() {
        let (net, store) = small_prior();
        let (positions, batch) = (net.h * net.w, 3);
        let mut rng = vaelab_datasets::StreamRng::new(1, &[2]);
        let grids: Vec<Vec<usize>> = (0..batch).map(|_| (0..positions).map(|_| rng.below(net.codes)).collect()).collect();
        let ctx = Ctx::new(&store, false, 0, 0);
        let full = net.logits(&ctx, net.one_hot(&store.dev, &grids)).split_tape().0.as_vec();
        let mut unrolled = net.unrolled(&store, batch);
        let mut spread = 0f32;
        for p in 0..positions {
            let step = unrolled.step(p, &grids);
            for k in 0..net.codes {
                for b in 0..batch {
                    let (cached, plain) = (step[k * batch + b], full[(k * positions + p) * batch + b]);
                    assert!(
                        (cached - plain).abs() <= 1e-5 * (1.0 + plain.abs()),
                        "position {p}, code {k}, grid {b}: {cached} vs {plain}"
                    );
                    spread = spread.max(plain.abs());
                }
            }
        }
        // The comparison means something only if the logits are far from zero.
        assert!(spread > 1.0, "logits too small to compare: {spread}");
    }

    #[test]
    fn the_cached_sampler_draws_the_plain_samplers_codes() {
        let (net, store) = small_prior();
        let ctx = Ctx::new(&store, false, 0, 0);
        let draw = |cached: bool| {
            let mut rng = vaelab_datasets::StreamRng::new(3, &[4]);
            if cached {
                net.draw(&store, 9, 0.8, |_| rng.uniform())
            } else {
                net.draw_uncached(&ctx, 9, 0.8, |_| rng.uniform())
            }
        };
        let (cached, plain) = (draw(true), draw(false));
        assert_eq!(cached, plain);
        // Not a degenerate draw: several codes occur.
        let mut seen: Vec<usize> = cached.iter().flatten().copied().collect();
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() >= 3, "codes drawn: {seen:?}");
    }
}
