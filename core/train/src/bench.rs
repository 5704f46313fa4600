//! Step timing for `cargo xtask bench`: full training steps (forward, backward, optimizer) on
//! one fixed batch, the same protocol as the PyTorch reference script in `shared/bench/`.

use crate::term_weights;
use dfdx::prelude::*;
use std::time::Instant;
use vaelab_models::model::Model;
use vaelab_nn::batch::{normal_noise, to_tensor};
use vaelab_nn::optim::Optimizer;
use vaelab_nn::{Backend, Ctx, ParamStore};
use vaelab_runs::data::{build_dataset, data_shape, train_batch};
use vaelab_spec::Experiment;

pub struct BenchResult {
    pub median_step_s: f64,
    /// Medians of the forward pass (data, encoder, latent, decoder, loss), the backward pass and
    /// the optimizer update, in seconds.
    pub median_parts_s: [f64; 3],
    pub img_per_s: f64,
    pub peak_rss_mib: f64,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot open the dataset: {0}")]
    Data(#[from] vaelab_datasets::DataError),
    #[error(transparent)]
    Device(#[from] vaelab_nn::device::DeviceError),
    #[error(transparent)]
    Build(#[from] vaelab_nn::BuildError),
    #[error(transparent)]
    Metric(#[from] vaelab_metrics::metric::MetricError),
    #[error("{0}")]
    Plugin(String),
    #[error(transparent)]
    Session(#[from] crate::TrainError),
    #[error("step {0}: {1}")]
    Step(usize, String),
}

/// Times `steps` training steps on the spec's device; the first two are warm-up and not counted.
pub fn time_steps(spec: &Experiment, steps: usize) -> Result<BenchResult, BenchError> {
    // On a pool thread, as `train` runs its steps (see `vaelab_nn::pool`).
    vaelab_nn::pool::on_pool_thread(|| vaelab_nn::on_device!(spec.device, spec.seed, |dev| time_steps_on(dev, spec, steps)))
}

fn time_steps_on<D: Backend>(dev: D, spec: &Experiment, steps: usize) -> Result<BenchResult, BenchError> {
    if spec.adversarial != vaelab_spec::Adversarial::None {
        return time_session_steps(dev, spec, steps);
    }
    let ds = build_dataset(spec)?;
    let mut store = ParamStore::new(dev.clone(), spec.seed);
    let plugins = vaelab_plugin_host::PluginSet::load(&spec.plugins).map_err(|(_, e)| BenchError::Plugin(e.to_string()))?;
    let model = Model::build(&spec.model, data_shape(ds.as_ref()), &mut store, &plugins)?;
    let mut opt = Optimizer::new(spec.train.optimizer.clone(), spec.train.schedule.clone(), spec.train.grad_clip.clone(), steps);
    let batch = spec.data.batch;
    let images = train_batch(ds.as_ref(), spec.seed, 0, batch, &spec.data.augment);
    let code = model.latent.code_shape().len();
    let mut times = Vec::new();
    let mut parts: [Vec<f64>; 3] = Default::default();
    for step in 0..steps.max(3) {
        let t0 = Instant::now();
        let x = to_tensor(&dev, &images);
        let noise = normal_noise(&dev, spec.seed, "noise", step as u64, code, batch);
        let ctx = Ctx::new(&store, true, spec.seed, step as u64);
        let terms = model.terms(&ctx, x, noise);
        let w = term_weights(&spec.losses, step);
        let weight = |n: &str| w.iter().find(|(m, _)| *m == n).map(|(_, v)| *v).unwrap_or(0.0);
        let loss = terms.rec * weight("rec") + terms.reg.1 * weight(terms.reg.0);
        // A GPU runs asynchronously: each part ends when the device has finished it (a no-op on the CPU).
        dev.synchronize();
        let t1 = Instant::now();
        let mut grads = loss.backward();
        drop(ctx);
        dev.synchronize();
        let t2 = Instant::now();
        opt.step(&mut store, &mut grads, step);
        dev.synchronize();
        let t3 = Instant::now();
        if step >= 2 {
            times.push((t3 - t0).as_secs_f64());
            for (v, d) in parts.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2]) {
                v.push(d.as_secs_f64());
            }
        }
    }
    let median_parts_s = [median(&mut parts[0]), median(&mut parts[1]), median(&mut parts[2])];
    let median = median(&mut times);
    Ok(BenchResult { median_step_s: median, median_parts_s, img_per_s: batch as f64 / median, peak_rss_mib: peak_rss_mib() })
}

/// Adversarial objectives: whole training steps as `vaelab train` takes them (every phase and
/// update, `Session::step`), on one fixed batch. Their phases interleave forward, backward and
/// updates, so no split into parts is given (zeros).
fn time_session_steps<D: Backend>(dev: D, spec: &Experiment, steps: usize) -> Result<BenchResult, BenchError> {
    let ds = build_dataset(spec)?;
    let plugins = vaelab_plugin_host::PluginSet::load(&spec.plugins).map_err(|(_, e)| BenchError::Plugin(e.to_string()))?;
    let mut session = crate::session::Session::build(dev.clone(), spec, data_shape(ds.as_ref()), &plugins)?;
    let images = train_batch(ds.as_ref(), spec.seed, 0, spec.data.batch, &spec.data.augment);
    let mut values = std::collections::BTreeMap::new();
    let mut times = Vec::new();
    for step in 0..steps.max(3) {
        let t0 = Instant::now();
        session.step(step, &images, &mut values).map_err(|e| BenchError::Step(step, format!("{e:?}")))?;
        dev.synchronize();
        if step >= 2 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let median = median(&mut times);
    Ok(BenchResult {
        median_step_s: median,
        median_parts_s: [0.0; 3],
        img_per_s: spec.data.batch as f64 / median,
        peak_rss_mib: peak_rss_mib(),
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident memory of this process (Linux `VmHWM`), 0 where unavailable.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub struct LoaderResult {
    pub images: usize,
    /// Opening the folder: listing, decoding and resizing every file (in parallel).
    pub open_s: f64,
    pub total_s: f64,
    pub img_per_s: f64,
    pub peak_rss_mib: f64,
}

/// One pass over an image folder's training split as a run sees it: open (decode and resize every
/// file, in parallel) and assemble every batch.
pub fn time_loader(root: &std::path::Path, size: usize, batch: usize) -> Result<LoaderResult, BenchError> {
    use vaelab_datasets::{Dataset, FolderConfig, FolderDataset, Split};
    let t0 = Instant::now();
    let ds = FolderDataset::open(FolderConfig {
        root: root.to_path_buf(),
        size,
        channels: vaelab_datasets::Channels::Grey,
        fit: vaelab_datasets::Fit::Resize,
        on_bad_file: vaelab_datasets::OnBadFile::Error,
        limits: vaelab_datasets::SplitSizes::unlimited(),
        seed: 0,
        cache_mib: 4096,
    })?;
    let open_s = t0.elapsed().as_secs_f64();
    let n = ds.len(Split::Train);
    let indices: Vec<usize> = (0..n).collect();
    let mut checksum = 0.0f64;
    for chunk in indices.chunks(batch) {
        let b = ds.batch(Split::Train, chunk);
        checksum += b.pixels[0] as f64;
    }
    let total_s = t0.elapsed().as_secs_f64();
    std::hint::black_box(checksum);
    Ok(LoaderResult { images: n, open_s, total_s, img_per_s: n as f64 / total_s, peak_rss_mib: peak_rss_mib() })
}

/// The image pairs of the MS-SSIM benchmark: a closed-form pattern (`xtask/bench/torch_msssim.py`
/// computes the same one), so both sides score identical inputs.
pub fn ms_ssim_pairs(pairs: usize, size: usize) -> (vaelab_datasets::ImageBatch, vaelab_datasets::ImageBatch) {
    let mut a = Vec::with_capacity(pairs * size * size);
    let mut b = Vec::with_capacity(pairs * size * size);
    for i in 0..pairs {
        let i = i as f64;
        for y in 0..size {
            for x in 0..size {
                let (y, x) = (y as f64, x as f64);
                let va = 0.5 + 0.35 * (0.05 * (i + 1.0) * x + 0.07 * y).sin() * (0.03 * y + 0.1 * i).cos();
                let vb = (va + 0.08 * (0.9 * x * y + i).sin()).clamp(0.0, 1.0);
                a.push(va as f32);
                b.push(vb as f32);
            }
        }
    }
    let batch = |pixels| vaelab_datasets::ImageBatch { n: pairs, c: 1, h: size, w: size, pixels, factors: vec![], bit_depth: 8 };
    (batch(a), batch(b))
}

/// Seconds to score `pairs` MS-SSIM pairs of `size`² grey images, and the mean value.
pub fn time_ms_ssim(pairs: usize, size: usize) -> Result<(f64, f64), BenchError> {
    use vaelab_metrics::metric::Metric;
    let (a, b) = ms_ssim_pairs(pairs, size);
    let t0 = Instant::now();
    let mean = vaelab_metrics::ssim::MsSsim.compute(&a, &b)?;
    Ok((t0.elapsed().as_secs_f64(), mean))
}

/// What [`time_prior_sampling`] measured.
pub struct PriorTiming {
    /// Seconds to draw every grid with the cached sampler.
    pub cached_s: f64,
    /// Seconds of one full forward pass over every grid: the plain sampler makes h·w of them.
    pub full_pass_s: f64,
}

/// Times drawing `samples` code grids of `grid`×`grid` positions and `codes` codes from a PixelCNN of
/// the given shape (freshly initialised: the cost does not depend on the weights' values).
pub fn time_prior_sampling(samples: usize, grid: usize, codes: usize, shape: vaelab_spec::Prior) -> PriorTiming {
    use vaelab_models::prior::PixelCnn;
    let mut store = ParamStore::new(Cpu::default(), 0);
    let net = PixelCnn::build(&shape, codes, grid, grid, &mut store).expect("a PixelCnn prior shape");
    let t0 = Instant::now();
    let grids = net.sample(&store, vaelab_models::latent::PriorDraw::new(0, "bench-prior", samples));
    let cached_s = t0.elapsed().as_secs_f64();
    let ctx = Ctx::new(&store, false, 0, 0);
    let t1 = Instant::now();
    let _ = net.logits(&ctx, net.one_hot(&store.dev, &grids)).as_vec();
    PriorTiming { cached_s, full_pass_s: t1.elapsed().as_secs_f64() }
}
