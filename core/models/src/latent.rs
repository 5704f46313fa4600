//! Latent variables. Each kind maps encoder features to a code, a sample and a regulariser,
//! and knows its prior: none (a plain autoencoder), a flat Gaussian, a spatial C×h×w Gaussian.
//! A quantized kind adds a variant here without touching the trainer.

use dfdx::prelude::*;
use vaelab_nn::BuildError;
use vaelab_nn::{Act, Backend, Ctx, FeatShape, Init, NoBlocks, ParamId, ParamStore, Role, Sequential, Tensor2, OT};
use vaelab_spec::{Latent, Layer};

/// Which prior codes to draw: `count` codes from the random stream (seed, purpose, `index`).
/// Evaluation and the explorer draw index 0; training draws a fresh index per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PriorDraw<'a> {
    pub seed: u64,
    pub purpose: &'a str,
    pub index: u64,
    pub count: usize,
}

impl<'a> PriorDraw<'a> {
    /// `count` codes from the stream's index 0.
    pub fn new(seed: u64, purpose: &'a str, count: usize) -> PriorDraw<'a> {
        PriorDraw { seed, purpose, index: 0, count }
    }

    /// The same draw from stream index `index`.
    pub fn at(self, index: u64) -> PriorDraw<'a> {
        PriorDraw { index, ..self }
    }
}

pub enum LatentModel {
    /// The encoder's output is the code.
    Identity(FeatShape),
    Gaussian(GaussianLatent),
    Spatial(SpatialLatent),
    Quantized(QuantizedLatent),
}

/// Vector quantization (van den Oord et al. 2017) of a (dim, h, w) code against `codes` vectors.
pub struct QuantizedLatent {
    pub shape: FeatShape,
    pub codes: usize,
    pub dim: usize,
    beta: f32,
    pre: Sequential,
    codebook: ParamId,
    /// Exponential moving average of how often each code is chosen: the empirical prior.
    frequency: ParamId,
    /// The EMA codebook's statistics, when the spec asks for EMA updates.
    ema: Option<Ema>,
}

/// Moving averages behind an EMA codebook: N_k (assignments) and m_k (sums of assigned z_e).
struct Ema {
    cluster_size: ParamId,
    sums: ParamId,
}

/// The EMA codebook's decay γ and Laplace smoothing ε (van den Oord et al. 2017, appendix A.1).
const EMA_DECAY: f32 = 0.99;
const EMA_EPSILON: f32 = 1e-5;

/// Decay of the code-frequency average.
const FREQUENCY_DECAY: f32 = 0.99;
/// A code whose frequency average falls below this fraction of the uniform 1/K is dead: it is
/// re-initialised from one of the batch's encoder outputs. Averages start at 1, so a code that is
/// never chosen dies after about ln(100·K)/0.01 steps (about 870 for K = 64), and one that falls
/// out of use after about 460.
const DEAD_FRACTION: f32 = 0.01;

/// A per-element Gaussian over a C×h×w code: 1×1 convolutions give mean and log-variance.
pub struct SpatialLatent {
    pub shape: FeatShape,
    mu: Sequential,
    logvar: Sequential,
}

/// q(z|x) = N(μ(h), diag exp(logvar(h))), p(z) = N(0, I) (Kingma & Welling 2014).
pub struct GaussianLatent {
    pub dim: usize,
    mu: Sequential,
    logvar: Sequential,
}

/// What the encoder side of a step produced.
pub struct Encoded<D: Device<f32>> {
    pub z: Tensor2<D>,
    /// The posterior mean, off the tape (for decoding reconstructions and reading codes).
    pub mu: Tensor<(usize, usize), f32, D, OT<D>>,
    pub logvar: Tensor<(usize, usize), f32, D>,
    /// The latent's own loss term, averaged over the batch: KL(q(z|x) ‖ p(z)) summed over latent
    /// elements for the Gaussian kinds, the codebook + commitment loss for the quantized kind, 0 for none.
    pub reg: Tensor<(), f32, D, OT<D>>,
    /// Diagnostics for the log (the quantized kind's perplexity and codes in use).
    pub stats: Vec<(&'static str, f32)>,
}

impl<D: Device<f32>> Encoded<D> {
    /// The regulariser alone, carrying the whole encoder's tape. The encoder's operations are
    /// recorded on `z`'s tape (μ → z); `reg` holds only the latent head's, so a loss that uses the
    /// regulariser without `z` (IntroVAE scoring images by their KL) must take it from here for
    /// gradients to reach the encoder and whatever produced its input.
    pub fn into_reg(self) -> Tensor<(), f32, D, OT<D>> {
        let (_, z_tape) = self.z.split_tape();
        let (reg, reg_tape) = self.reg.split_tape();
        reg.put_tape(reg_tape.merge(z_tape))
    }
}

impl LatentModel {
    pub fn build<D: Device<f32>>(
        spec: &Latent,
        features: FeatShape,
        store: &mut ParamStore<D>,
    ) -> Result<LatentModel, BuildError> {
        match *spec {
            Latent::None => Ok(LatentModel::Identity(features)),
            Latent::Quantized { codes, dim, beta, ema } => {
                let FeatShape::Image(_, h, w) = features else {
                    return Err(BuildError::new(
                        "model.encoder".into(),
                        format!("the Quantized latent needs an image-shaped encoder output (C, H, W), got {features}; drop the Flatten"),
                    ));
                };
                let head = [Layer::Conv { out: dim, k: 1, s: 1, p: 0 }];
                let pre = Sequential::build(&head, features, "latent.pre", "model.latent", store, &NoBlocks)?;
                // Codebook initialised U(−1/K, 1/K), as the reference implementations do.
                // With EMA updates the codebook is a buffer: no gradient, no optimizer.
                let role = if ema { Role::Buffer } else { Role::Trainable };
                let codebook =
                    store.add("latent.codebook".into(), vec![codes, dim], Init::Uniform { a: 1.0 / codes as f32 }, role);
                // Every code starts alive (1, far above the dead level) and the prior starts uniform.
                let frequency = store.add("latent.code_frequency".into(), vec![codes], Init::Ones, Role::Buffer);
                let ema = ema.then(|| Ema {
                    cluster_size: store.add("latent.ema_cluster_size".into(), vec![codes], Init::Zeros, Role::Buffer),
                    sums: store.add("latent.ema_sums".into(), vec![codes, dim], Init::Zeros, Role::Buffer),
                });
                let shape = FeatShape::Image(dim, h, w);
                Ok(LatentModel::Quantized(QuantizedLatent { shape, codes, dim, beta, pre, codebook, frequency, ema }))
            }
            Latent::Spatial { channels } => {
                let FeatShape::Image(_, h, w) = features else {
                    return Err(BuildError::new(
                        "model.encoder".into(),
                        format!(
                            "the Spatial latent needs an image-shaped encoder output (C, H, W), got {features}; drop the Flatten"
                        ),
                    ));
                };
                let head = [Layer::Conv { out: channels, k: 1, s: 1, p: 0 }];
                let mu = Sequential::build(&head, features, "latent.mu", "model.latent", store, &NoBlocks)?;
                let logvar = Sequential::build(&head, features, "latent.logvar", "model.latent", store, &NoBlocks)?;
                Ok(LatentModel::Spatial(SpatialLatent { shape: FeatShape::Image(channels, h, w), mu, logvar }))
            }
            Latent::Gaussian { dim } => {
                if let FeatShape::Image(..) = features {
                    return Err(BuildError::new(
                        "model.encoder".into(),
                        format!(
                            "the Gaussian latent needs a flat encoder output (N), got {features}; end the encoder with Flatten"
                        ),
                    ));
                }
                let head = [Layer::Dense { out: dim }];
                let mu = Sequential::build(&head, features, "latent.mu", "model.latent", store, &NoBlocks)?;
                let logvar = Sequential::build(&head, features, "latent.logvar", "model.latent", store, &NoBlocks)?;
                Ok(LatentModel::Gaussian(GaussianLatent { dim, mu, logvar }))
            }
        }
    }

    /// The shape of a code, which is the decoder's input.
    pub fn code_shape(&self) -> FeatShape {
        match self {
            LatentModel::Identity(shape) => *shape,
            LatentModel::Gaussian(g) => FeatShape::Flat(g.dim),
            LatentModel::Spatial(s) => s.shape,
            LatentModel::Quantized(q) => q.shape,
        }
    }

    /// `count` codes drawn from the prior, batch-last (code shape × count), from the random stream
    /// (seed, purpose, `index`): evaluation and the explorer use index 0, training a fresh index per
    /// step. Each latent kind owns its prior: N(0, I) over the code's shape for the Gaussian kinds.
    /// An autoencoder has no prior; N(0, I) is drawn all the same, so its samples show what the
    /// decoder makes of codes it was never trained on.
    pub fn sample_prior<D: Device<f32>>(&self, store: &ParamStore<D>, draw: PriorDraw) -> Tensor<(usize, usize), f32, D> {
        let PriorDraw { seed, purpose, index, count } = draw;
        let dev = &store.dev;
        let LatentModel::Quantized(q) = self else {
            return vaelab_nn::batch::normal_noise(dev, seed, purpose, index, self.code_shape().len(), count);
        };
        // Each position's code drawn from the training code frequencies (uniform before any training).
        let freq = store.get(q.frequency).tensor.as_vec();
        let total: f32 = freq.iter().sum();
        let weights: Vec<f32> = if total > 0.0 { freq } else { vec![1.0; q.codes] };
        let total: f32 = weights.iter().sum();
        let book = store.get(q.codebook).tensor.as_vec();
        let positions = q.shape.len() / q.dim;
        // Index 0 keeps the stream that evaluation and the explorer have always used.
        let mut rng = if index == 0 {
            vaelab_datasets::StreamRng::new(seed, &[vaelab_datasets::tag(purpose)])
        } else {
            vaelab_datasets::StreamRng::new(seed, &[vaelab_datasets::tag(purpose), index])
        };
        let mut z = vec![0.0f32; q.shape.len() * count];
        for b in 0..count {
            for p in 0..positions {
                let k = categorical(&weights, total, rng.uniform());
                for d in 0..q.dim {
                    z[(d * positions + p) * count + b] = book[k * q.dim + d];
                }
            }
        }
        dev.tensor_from_vec(z, (q.shape.len(), count))
    }

    /// The Gaussian posterior's mean and log-variance for features `h`, both on the tape; `None` for
    /// the kinds without one. The encoder's operations ride on `mu`'s tape, the log-variance head's on
    /// `logvar`'s: a loss must use both (or take them through [`Posterior`]'s methods) for gradients
    /// to reach everything that produced them.
    pub fn posterior<D: Backend>(&self, ctx: &Ctx<D>, h: Act<D>) -> Option<Posterior<D>> {
        let (mu_head, logvar_head) = match self {
            LatentModel::Gaussian(g) => (&g.mu, &g.logvar),
            LatentModel::Spatial(s) => (&s.mu, &s.logvar),
            LatentModel::Identity(_) | LatentModel::Quantized(_) => return None,
        };
        let h2 = Act { t: h.t.with_empty_tape(), shape: h.shape, needs_grad: h.needs_grad };
        let mu = mu_head.forward(ctx, h).t;
        let logvar = logvar_head.forward(ctx, h2).t;
        Some(Posterior { mu, logvar })
    }

    /// Encodes features `h`; `noise` (standard normal, the code's shape × batch) drives the
    /// reparameterised sample z = μ + σ·ε, so every random draw comes from the caller's stream.
    pub fn encode<D: Backend>(&self, ctx: &Ctx<D>, h: Act<D>, noise: Tensor<(usize, usize), f32, D>) -> Encoded<D> {
        match self {
            LatentModel::Quantized(q) => return q.encode(ctx, h),
            LatentModel::Identity(_) => {
                // z = h; no posterior, so no KL (a zero that keeps the loss's shape and tape type).
                let (rows, batch) = *h.t.shape();
                let mu = h.t.with_empty_tape();
                let kl = h.t.with_empty_tape().sum::<(), _>() * 0.0;
                let logvar = ctx.store.dev.zeros_like(&(rows, batch));
                return Encoded { z: h.t, mu, logvar, reg: kl, stats: vec![] };
            }
            LatentModel::Gaussian(_) | LatentModel::Spatial(_) => {}
        }
        let batch = h.batch();
        let post = self.posterior(ctx, h).expect("a Gaussian kind");
        let (mu_values, logvar_values) = (post.mu.with_empty_tape(), post.logvar.with_empty_tape().split_tape().0);
        // As `sample_and_kl`, with the KL summed over the whole batch at once.
        let std = (post.logvar.with_empty_tape() * 0.5).exp();
        let kl = kl_elements(post.mu.with_empty_tape(), post.logvar).sum::<(), _>() * (-0.5 / batch as f32);
        let z = post.mu + std * noise;
        Encoded { z, mu: mu_values, logvar: logvar_values, reg: kl, stats: vec![] }
    }
}

/// The category a uniform number `u` in [0, 1) falls in, for unnormalised `weights` summing to
/// `total` (inverse-CDF sampling); rounding past the end gives the last category.
pub fn categorical(weights: &[f32], total: f32, u: f64) -> usize {
    let mut u = u as f32 * total;
    weights
        .iter()
        .position(|w| {
            u -= w;
            u < 0.0
        })
        .unwrap_or(weights.len() - 1)
}

/// q(z|x) = N(μ, diag exp(logvar)) for a batch (each `(code size, batch)`), on the tape.
pub struct Posterior<D: Device<f32>> {
    pub mu: Tensor2<D>,
    pub logvar: Tensor2<D>,
}

/// One value per example, on the tape.
pub type PerExample<D> = Tensor<(usize,), f32, D, OT<D>>;

impl<D: Backend> Posterior<D> {
    /// KL(q(z|x) ‖ N(0, I)) per example, summed over the code: −½ Σ (1 + log σ² − μ² − σ²)
    /// (Kingma & Welling 2014, appendix B). Carries the whole tape.
    pub fn kl(self) -> PerExample<D> {
        kl_elements(self.mu, self.logvar).sum::<(usize,), Axis<0>>() * -0.5
    }

    /// The reparameterised sample z = μ + σ·ε (Kingma & Welling 2014, §2.4), carrying the whole tape.
    pub fn sample(self, noise: Tensor<(usize, usize), f32, D>) -> Tensor2<D> {
        let std = (self.logvar * 0.5).exp();
        self.mu + std * noise
    }

    /// z's values alone, a constant: sg(z).
    pub fn sample_values(&self, noise: Tensor<(usize, usize), f32, D>) -> Tensor2<D> {
        let (mu, logvar) = (self.mu.with_empty_tape().split_tape().0, self.logvar.with_empty_tape().split_tape().0);
        (mu + (logvar * 0.5).exp() * noise).retaped()
    }

    /// Both the sample and the per-example KL. The tapes are split between them (μ's on z,
    /// log σ²'s on the KL): both must reach the loss.
    pub fn sample_and_kl(self, noise: Tensor<(usize, usize), f32, D>) -> (Tensor2<D>, PerExample<D>) {
        // dfdx records each op on exactly one tape: every tensor is consumed once with its tape
        // (mu → z, logvar → kl) and read elsewhere through empty-tape copies.
        let std = (self.logvar.with_empty_tape() * 0.5).exp();
        let kl = kl_elements(self.mu.with_empty_tape(), self.logvar).sum::<(usize,), Axis<0>>() * -0.5;
        (self.mu + std * noise, kl)
    }
}

/// 1 + log σ² − μ² − σ², elementwise.
pub(crate) fn kl_elements<D: Backend>(mu: Tensor2<D>, logvar: Tensor2<D>) -> Tensor2<D> {
    (logvar.with_empty_tape() + 1.0) - mu.square() - logvar.exp()
}

impl QuantizedLatent {
    /// The codebook: `codes` vectors of `dim` values.
    pub fn codebook_vectors<D: Device<f32>>(&self, store: &ParamStore<D>) -> Vec<Vec<f32>> {
        store.get(self.codebook).tensor.as_vec().chunks(self.dim).map(<[f32]>::to_vec).collect()
    }

    /// Codes `z` (dim·h·w, count) for grids of code indices (per example, raster order).
    pub fn codes_to_z<D: Device<f32>>(&self, store: &ParamStore<D>, grids: &[Vec<usize>]) -> Tensor<(usize, usize), f32, D> {
        let book = store.get(self.codebook).tensor.as_vec();
        let (count, positions) = (grids.len(), self.shape.len() / self.dim);
        let mut z = vec![0f32; self.shape.len() * count];
        for (b, grid) in grids.iter().enumerate() {
            for (p, &k) in grid.iter().enumerate() {
                for d in 0..self.dim {
                    z[(d * positions + p) * count + b] = book[k * self.dim + d];
                }
            }
        }
        store.dev.tensor_from_vec(z, (self.shape.len(), count))
    }

    /// z_e `(dim·h·w, batch)` for encoder features `h`: the values the codebook lookup starts from.
    pub fn pre_quantized<D: Backend>(&self, ctx: &Ctx<D>, h: Act<D>) -> Vec<f32> {
        self.pre.forward(ctx, h).t.as_vec()
    }

    /// The nearest code of every position of encoder outputs z_e `(dim·h·w, batch)`: per example,
    /// in raster order.
    pub fn nearest_codes<D: Device<f32>>(&self, store: &ParamStore<D>, ze: &[f32], batch: usize) -> Vec<Vec<usize>> {
        let book = store.get(self.codebook).tensor.as_vec();
        let positions = self.shape.len() / self.dim;
        let chosen = nearest(ze, &book, self.codes, self.dim, positions, batch);
        (0..batch).map(|b| (0..positions).map(|p| chosen[p * batch + b]).collect()).collect()
    }

    /// The moving average of how often each code was chosen in training.
    pub fn code_frequencies<D: Device<f32>>(&self, store: &ParamStore<D>) -> Vec<f32> {
        store.get(self.frequency).tensor.as_vec()
    }

    /// Nearest-code lookup at every position, the straight-through code and the `vq` loss.
    fn encode<D: Backend>(&self, ctx: &Ctx<D>, h: Act<D>) -> Encoded<D> {
        let dev = ctx.store.dev.clone();
        let ze = self.pre.forward(ctx, h).t; // (dim·h·w, batch)
        let (rows, batch) = *ze.shape();
        let (dim, positions) = (self.dim, rows / self.dim);
        let ze_v = ze.as_vec();
        let book = ctx.store.get(self.codebook).tensor.as_vec();
        let chosen = nearest(&ze_v, &book, self.codes, dim, positions, batch);
        // z_q gathered from the codebook parameter, so the codebook term reaches it.
        let index: Vec<usize> = (0..rows * batch)
            .map(|i| {
                let (r, b) = (i / batch, i % batch);
                chosen[(r % positions) * batch + b] * dim + r / positions
            })
            .collect();
        let zq = ctx.param(self.codebook).gather(dev.tensor_from_vec(index, (rows * batch,))).reshape_like(&(rows, batch));
        let zq_v = zq.as_vec();
        // sg(·): a fresh tensor (new id, no tape) from host values.
        let constant = |v: Vec<f32>| dev.tensor_from_vec(v, (rows, batch));
        let per_example = 1.0 / batch as f32;
        // With an EMA codebook only the commitment term remains (the codebook gets no gradient).
        let codebook_term = if self.ema.is_some() {
            zq.with_empty_tape().sum::<(), _>() * 0.0
        } else {
            (zq - constant(ze_v.clone())).square().sum::<(), _>() * per_example
        };
        let commitment = (ze.with_empty_tape() - constant(zq_v.clone())).square().sum::<(), _>() * (self.beta * per_example);
        // Straight-through: z_q = z_e + sg(z_q − z_e).
        let shift: Vec<f32> = zq_v.iter().zip(&ze_v).map(|(q, e)| q - e).collect();
        let z = ze + constant(shift);
        // Batch code usage: perplexity exp(H) and codes in use; the frequency average for the prior.
        let mut counts = vec![0f32; self.codes];
        for k in &chosen {
            counts[*k] += 1.0;
        }
        let n = chosen.len() as f32;
        let entropy: f32 = counts.iter().filter(|c| **c > 0.0).map(|c| -(c / n) * (c / n).ln()).sum();
        let used = counts.iter().filter(|c| **c > 0.0).count() as f32;
        let mut restarted = 0;
        if ctx.train {
            let mut updates = Vec::new();
            // The codebook after this step's non-gradient updates (EMA, restarts); `None`: unchanged.
            let mut new_book: Option<Vec<f32>> = None;
            let mut ema_state = self.ema.as_ref().map(|ema| {
                // N_k ← γN_k + (1−γ)n_k, m_k ← γm_k + (1−γ)Σ z_e; Laplace-smoothed N_k; e_k = m_k / N_k.
                let n_old = ctx.store.get(ema.cluster_size).tensor.as_vec();
                let m_old = ctx.store.get(ema.sums).tensor.as_vec();
                let mut sums = vec![0f32; self.codes * dim];
                for (i, &k) in chosen.iter().enumerate() {
                    let (p, b) = (i / batch, i % batch);
                    for d in 0..dim {
                        sums[k * dim + d] += ze_v[(d * positions + p) * batch + b];
                    }
                }
                let n_new: Vec<f32> = n_old.iter().zip(&counts).map(|(o, c)| EMA_DECAY * o + (1.0 - EMA_DECAY) * c).collect();
                let m_new: Vec<f32> = m_old.iter().zip(&sums).map(|(o, s)| EMA_DECAY * o + (1.0 - EMA_DECAY) * s).collect();
                let total: f32 = n_new.iter().sum();
                let mut book_ema = book.clone();
                for c in 0..self.codes {
                    let smoothed = (n_new[c] + EMA_EPSILON) / (total + self.codes as f32 * EMA_EPSILON) * total;
                    // A code never assigned yet keeps its initial vector (its averages are still 0).
                    if n_new[c] > 0.0 && smoothed > 0.0 {
                        for d in 0..dim {
                            book_ema[c * dim + d] = m_new[c * dim + d] / smoothed;
                        }
                    }
                }
                new_book = Some(book_ema);
                (n_new, m_new)
            });
            let old = ctx.store.get(self.frequency).tensor.as_vec();
            let mut freq: Vec<f32> =
                old.iter().zip(&counts).map(|(o, c)| FREQUENCY_DECAY * o + (1.0 - FREQUENCY_DECAY) * c / n).collect();
            let uniform = 1.0 / self.codes as f32;
            let dead: Vec<usize> = (0..self.codes).filter(|&k| freq[k] < DEAD_FRACTION * uniform).collect();
            if !dead.is_empty() {
                let mut rng = vaelab_datasets::StreamRng::new(ctx.seed, &[vaelab_datasets::tag("vq-restart"), ctx.step]);
                let book_now = new_book.get_or_insert_with(|| book.clone());
                for &k in &dead {
                    let (p, b) = (rng.below(positions), rng.below(batch));
                    for d in 0..dim {
                        book_now[k * dim + d] = ze_v[(d * positions + p) * batch + b];
                    }
                    freq[k] = uniform;
                    // An EMA code restarts as one assignment of that vector.
                    if let Some((n_new, m_new)) = ema_state.as_mut() {
                        n_new[k] = 1.0;
                        m_new[k * dim..(k + 1) * dim].copy_from_slice(&book_now[k * dim..(k + 1) * dim]);
                    }
                }
                restarted = dead.len();
            }
            if let (Some(ema), Some((n_new, m_new))) = (&self.ema, ema_state) {
                updates.extend([(ema.cluster_size, n_new), (ema.sums, m_new)]);
            }
            if let Some(b) = new_book {
                updates.push((self.codebook, b));
            }
            updates.push((self.frequency, freq));
            ctx.record_buffers(updates);
        }
        let logvar = dev.zeros_like(&(rows, batch));
        Encoded {
            z,
            mu: constant(zq_v).retaped(),
            logvar,
            reg: codebook_term + commitment,
            stats: vec![("perplexity", entropy.exp()), ("codes_used", used), ("codes_restarted", restarted as f32)],
        }
    }
}

/// The nearest of `codes` codebook vectors to each (position, example) of z_e `(dim·positions, batch)`,
/// by squared Euclidean distance; indexed `p·batch + b`.
fn nearest(ze: &[f32], book: &[f32], codes: usize, dim: usize, positions: usize, batch: usize) -> Vec<usize> {
    let mut chosen = vec![0usize; positions * batch];
    for p in 0..positions {
        for b in 0..batch {
            let mut best = (f32::INFINITY, 0);
            for k in 0..codes {
                let dist: f32 = (0..dim).map(|d| (ze[(d * positions + p) * batch + b] - book[k * dim + d]).powi(2)).sum();
                if dist < best.0 {
                    best = (dist, k);
                }
            }
            chosen[p * batch + b] = best.1;
        }
    }
    chosen
}
