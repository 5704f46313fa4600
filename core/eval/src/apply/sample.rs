//! `vaelab sample RUN_DIR --n N --out DIR`: N images from the latent's prior.
//!
//! Sample `i` is a function of (run, seed, i, temperature) alone: its code comes from the random
//! stream (seed, "sample", i), and a PixelCNN prior draws each grid from its own stream. The
//! network itself is evaluated at one width, the run's batch size, whatever `--batch` is: gemm's
//! kernels sum in an order that depends on the matrix width (measured: decoding in batches of 1–8
//! and of 9 or more differ in the last bit), so a short batch is padded with dummy codes and the
//! same seed gives the same images with any `--batch`. Images are decoded and written a batch at a
//! time: memory does not grow with N.

use super::output::{write_png, ImageFormat, Output};
use super::{ApplyError, Trained};
use crate::progress::progress_bar;
use npyz::WriterBuilder;
use rayon::prelude::*;
use std::path::PathBuf;
use vaelab_datasets::{tag, StreamRng};
use vaelab_models::latent::LatentModel;

pub struct SampleOptions {
    pub n: usize,
    pub out: PathBuf,
    /// [default: the run's seed]
    pub seed: Option<u64>,
    pub format: ImageFormat,
    /// Scales the prior's spread: z = T·ε for Gaussian codes; logits / T for a PixelCNN; code
    /// frequencies to the power 1/T for the frequency prior. 1 is the prior itself.
    pub temperature: f32,
    /// Images decoded at once [default: the run's batch size].
    pub batch: Option<usize>,
    pub force: bool,
    pub progress: bool,
}

/// The random-stream purpose of `vaelab sample`'s codes.
const PURPOSE: &str = "sample";

/// What `sample` wrote.
#[derive(Debug)]
pub struct SampleSummary {
    pub n: usize,
    pub seed: u64,
    pub prior: &'static str,
    /// The files written: the first and last PNG, or the NPY file.
    pub files: Vec<PathBuf>,
}

impl SampleSummary {
    pub fn text(&self) -> String {
        let files = match &self.files[..] {
            [one] => one.display().to_string(),
            [first, last] => format!("{} … {}", first.display(), last.display()),
            _ => String::new(),
        };
        format!("drew {} samples from {} (seed {}): {files}\n", self.n, self.prior, self.seed)
    }
}

/// The codes of samples `first .. first + count`, each from its own stream.
pub fn prior_codes(run: &Trained, seed: u64, first: usize, count: usize, temperature: f32) -> Vec<Vec<f32>> {
    let indices: Vec<u64> = (first..first + count).map(|i| i as u64).collect();
    let stream = |i: u64| StreamRng::new(seed, &[tag(PURPOSE), i]);
    let latent = &run.model.latent;
    let LatentModel::Quantized(q) = latent else {
        let len = latent.code_shape().len();
        return indices
            .iter()
            .map(|&i| {
                let mut rng = stream(i);
                (0..len).map(|_| rng.normal() as f32 * temperature).collect()
            })
            .collect();
    };
    let grids: Vec<Vec<usize>> = match learned_prior(run) {
        Some(net) => {
            // Padded to the network's fixed width with dummy streams, as decoding is (module docs).
            let width = run.spec.data.batch.max(count);
            let padded: Vec<u64> = indices.iter().copied().chain((0..(width - count) as u64).map(|k| u64::MAX - k)).collect();
            let mut grids = net.sample_each(&run.store, seed, PURPOSE, &padded, temperature);
            grids.truncate(count);
            grids
        }
        None => {
            // Each position's code from the training code frequencies (uniform before training), as
            // in evaluation; a temperature sharpens (< 1) or flattens (> 1) them.
            let freq = q.code_frequencies(&run.store);
            let total: f32 = freq.iter().sum();
            let weights: Vec<f32> =
                if total > 0.0 { freq.iter().map(|f| f.powf(1.0 / temperature)).collect() } else { vec![1.0; q.codes] };
            let total: f32 = weights.iter().sum();
            let positions = q.shape.len() / q.dim;
            indices
                .iter()
                .map(|&i| {
                    let mut rng = stream(i);
                    (0..positions).map(|_| vaelab_models::latent::categorical(&weights, total, rng.uniform())).collect()
                })
                .collect()
        }
    };
    run.codes_to_z(&grids)
}

fn learned_prior(run: &Trained) -> Option<&vaelab_models::prior::PixelCnn> {
    run.model.fitted_prior(&run.store)
}

fn prior_name(run: &Trained) -> &'static str {
    match &run.model.latent {
        LatentModel::Quantized(_) if learned_prior(run).is_some() => "the fitted PixelCNN prior",
        LatentModel::Quantized(_) => "the training code frequencies",
        LatentModel::Identity(_) => "N(0, I) (an autoencoder has no prior of its own)",
        _ => "N(0, I)",
    }
}

pub fn sample(run: &Trained, opts: &SampleOptions) -> Result<SampleSummary, ApplyError> {
    if opts.n == 0 {
        return Err(ApplyError::Input("--n must be at least 1".into()));
    }
    if !(opts.temperature.is_finite() && opts.temperature > 0.0) {
        return Err(ApplyError::Input(format!("--temperature must be a positive number, got {}", opts.temperature)));
    }
    let batch = opts.batch.unwrap_or(run.spec.data.batch).max(1);
    let seed = opts.seed.unwrap_or(run.spec.seed);
    let out_dir = Output::folder(&opts.out, opts.force)?;
    let shape = run.image_shape();
    let npy_path = opts.out.join("samples.npy");
    let mut npy = match opts.format {
        ImageFormat::Npy => {
            let file = std::fs::File::create(&npy_path).map_err(ApplyError::write(&npy_path))?;
            let w = npyz::WriteOptions::<f32>::new()
                .default_dtype()
                .shape(&[opts.n as u64, shape.0 as u64, shape.1 as u64, shape.2 as u64])
                .writer(std::io::BufWriter::new(file))
                .begin_nd()
                .map_err(ApplyError::write(&npy_path))?;
            Some(w)
        }
        _ => None,
    };
    let name = |i: usize| opts.out.join(format!("sample-{i:06}.png"));
    let bar = progress_bar(opts.progress, opts.n, "sampling");
    for first in (0..opts.n).step_by(batch) {
        let count = batch.min(opts.n - first);
        let mut images = Vec::with_capacity(count);
        // At most the run's batch size per network call, each padded to exactly that width.
        let width = run.spec.data.batch.max(1);
        for start in (first..first + count).step_by(width) {
            let k = width.min(first + count - start);
            let mut z = prior_codes(run, seed, start, k, opts.temperature);
            z.resize(width, vec![0.0; z[0].len()]);
            images.extend(run.decode(&z)?.into_iter().take(k));
        }
        match &mut npy {
            Some(w) => {
                for img in &images {
                    w.extend(img.iter().copied()).map_err(ApplyError::write(&npy_path))?;
                }
            }
            None => {
                let sixteen = opts.format == ImageFormat::Png16;
                images.par_iter().enumerate().try_for_each(|(j, img)| write_png(&name(first + j), img, shape, sixteen))?;
            }
        }
        bar.inc(count as u64);
    }
    bar.finish_and_clear();
    let files = match npy {
        Some(w) => {
            w.finish().map_err(ApplyError::write(&npy_path))?;
            vec![npy_path]
        }
        None if opts.n == 1 => vec![name(0)],
        None => vec![name(0), name(opts.n - 1)],
    };
    out_dir.keep();
    Ok(SampleSummary { n: opts.n, seed, prior: prior_name(run), files })
}
