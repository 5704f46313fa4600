//! `vaelab device-check`: the same fixed computations on the CPU and on a CUDA device, compared.
//!
//! Three parts, each with a stated tolerance:
//! * **layers**: every layer kind on fixed inputs and parameters: its output, the gradient of
//!   Σ y ⊙ r (a fixed random r) with respect to the input and to each parameter;
//! * **objectives**: a few training steps of one spec per latent kind and adversarial objective,
//!   comparing each step's loss terms and gradient norm (all randomness in vaelab is drawn on the
//!   host from keyed streams, so both devices see the same noise and batches);
//! * **trace**: the default spec for `trace_steps` steps, comparing the logged losses.
//!
//! `--dry-run` computes the CPU side of every part and stops before the first CUDA call, so the
//! fixtures and the report are exercised on machines without a GPU.

use crate::TrainOptions;
use dfdx::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{atomic::AtomicBool, Arc};
use vaelab_nn::{Act, Backend, Ctx, FeatShape, NoBlocks, ParamId, ParamStore, Role, Sequential};
use vaelab_runs::LogLine;
use vaelab_spec::{Device, Layer};

pub struct CheckOptions {
    /// Where the report (`device-check.json`, `device-check.md`) and the runs go.
    pub out: PathBuf,
    pub ordinal: usize,
    pub dry_run: bool,
    /// The folder holding `shapes/*.ron` (the objective specs and the default spec).
    pub specs: PathBuf,
    pub objective_steps: usize,
    pub trace_steps: usize,
}

/// One compared quantity: the largest difference relative to the CPU value's scale.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    pub part: &'static str,
    pub name: String,
    /// Σ|v| of the CPU values: shows the CPU side ran (and what it computed) in a dry run.
    pub cpu_abs_sum: f64,
    /// max |cpu − cuda| / (max |cpu| + 1e-6); absent in a dry run.
    pub max_rel: Option<f64>,
    pub tolerance: f64,
    /// Why the CUDA side has no value (an error or a panic in the computation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Comparison {
    pub fn pass(&self) -> Option<bool> {
        if self.error.is_some() {
            return Some(false);
        }
        self.max_rel.map(|d| d <= self.tolerance)
    }
}

/// Runs `f`, turning a panic into an error, so that one failing kernel leaves the rest of the report.
fn contained<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
        )),
    }
}

/// Float32 sums in another order (cuBLAS, parallel reductions) differ by a few ulps per term:
/// 1e-4 of the largest value leaves two orders of magnitude over what 20-term sums produce.
const LAYER_TOLERANCE: f64 = 1e-4;
/// A few optimizer steps compound those differences a little.
const OBJECTIVE_TOLERANCE: f64 = 1e-3;
/// Hundreds of steps of Adam amplify them further; the losses must still agree to 2%.
const TRACE_TOLERANCE: f64 = 2e-2;

struct LayerFixture {
    name: &'static str,
    layers: Vec<Layer>,
    shape: FeatShape,
    batch: usize,
}

fn layer_fixtures() -> Vec<LayerFixture> {
    let img = FeatShape::Image(3, 16, 16);
    let conv = |out, k, s, p| Layer::Conv { out, k, s, p };
    let f = |name, layers, shape, batch| LayerFixture { name, layers, shape, batch };
    vec![
        f("Dense", vec![Layer::Dense { out: 16 }], FeatShape::Flat(33), 8),
        f("Conv k4 s2 p1", vec![conv(8, 4, 2, 1)], img, 4),
        f("Conv k3 s1 p1", vec![conv(8, 3, 1, 1)], img, 4),
        f("ConvT k4 s2 p1", vec![Layer::ConvT { out: 4, k: 4, s: 2, p: 1 }], img, 4),
        f("ConvT k3 s1 p0", vec![Layer::ConvT { out: 4, k: 3, s: 1, p: 0 }], img, 4),
        f("BatchNorm (images)", vec![Layer::BatchNorm { momentum: 0.1, eps: 1e-5 }], img, 4),
        f("BatchNorm (features)", vec![Layer::BatchNorm { momentum: 0.1, eps: 1e-5 }], FeatShape::Flat(12), 8),
        f("GroupNorm", vec![Layer::GroupNorm { groups: 3, eps: 1e-5 }], FeatShape::Image(6, 8, 8), 4),
        f("ReLU", vec![Layer::Dense { out: 24 }, Layer::Relu], FeatShape::Flat(12), 8),
        f("LeakyReLU", vec![Layer::Dense { out: 24 }, Layer::LeakyRelu { slope: 0.2 }], FeatShape::Flat(12), 8),
        f("SiLU", vec![Layer::Silu], FeatShape::Flat(40), 8),
        f("Tanh", vec![Layer::Tanh], FeatShape::Flat(40), 8),
        f("Sigmoid", vec![Layer::Sigmoid], FeatShape::Flat(40), 8),
        f("Residual", vec![Layer::Residual(vec![conv(3, 3, 1, 1), Layer::Relu, conv(3, 3, 1, 1)])], img, 4),
        f(
            "Upsample, Flatten, Reshape",
            vec![Layer::Upsample { factor: 2 }, Layer::Flatten, Layer::Reshape { c: 6, h: 16, w: 16 }],
            FeatShape::Image(3, 8, 16),
            4,
        ),
        f("AvgPool", vec![Layer::AvgPool { k: 2 }], FeatShape::Image(3, 8, 16), 4),
        f("Dropout", vec![Layer::Dropout { p: 0.3 }], FeatShape::Flat(40), 8),
        f("SpectralNorm(Conv)", vec![Layer::SpectralNorm(Box::new(conv(8, 4, 2, 1)))], img, 4),
        f("SpectralNorm(ConvT)", vec![Layer::SpectralNorm(Box::new(Layer::ConvT { out: 4, k: 4, s: 2, p: 1 }))], img, 4),
    ]
}

fn fixed_values(seed: u64, n: usize, scale: f64) -> Vec<f32> {
    let mut r = vaelab_datasets::StreamRng::new(seed, &[vaelab_datasets::tag("device-check"), n as u64]);
    (0..n).map(|_| ((r.uniform() * 2.0 - 1.0) * scale) as f32).collect()
}

/// The output of `fixture` and the gradients of Σ y ⊙ r, by name, computed on `dev`.
fn layer_values<D: Backend>(dev: D, fixture: &LayerFixture) -> Result<Vec<(String, Vec<f32>)>, String> {
    let mut store = ParamStore::new(dev.clone(), 5);
    let block = Sequential::build(&fixture.layers, fixture.shape, "block", "layers", &mut store, &NoBlocks)
        .map_err(|e| format!("{}: {e}", fixture.name))?;
    for i in 0..store.len() {
        let n = store.get(ParamId(i)).tensor.shape().0;
        store.set_values(ParamId(i), fixed_values(100 + i as u64, n, 0.5));
    }
    let (shape, batch) = (fixture.shape, fixture.batch);
    let x = dev.tensor_from_vec(fixed_values(1, shape.len() * batch, 1.0), (shape.len(), batch));
    let ctx = Ctx::new(&store, true, 1, 0);
    let y = block.forward(&ctx, Act { t: x.retaped(), shape, needs_grad: true });
    let output = y.t.as_vec();
    let r = dev.tensor_from_vec(fixed_values(2, output.len(), 1.0), *y.t.shape());
    let grads = (y.t * r).sum::<(), _>().backward();
    drop(ctx);
    let mut values = vec![("output".to_string(), output), ("d input".to_string(), grads.get(&x).as_vec())];
    for p in store.iter().filter(|p| p.role == Role::Trainable) {
        values.push((format!("d {}", p.name), grads.get(&p.tensor).as_vec()));
    }
    Ok(values)
}

fn max_rel(cpu: &[f32], other: &[f32]) -> f64 {
    if cpu.len() != other.len() {
        return f64::INFINITY;
    }
    let scale = cpu.iter().fold(0f64, |m, v| m.max(v.abs() as f64)) + 1e-6;
    let diff = cpu.iter().zip(other).fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
    diff / scale
}

fn abs_sum(v: &[f32]) -> f64 {
    v.iter().map(|x| x.abs() as f64).sum()
}

/// A training run of `spec` for `steps` steps on `device`, logging every step; its log lines.
fn train_log(spec: &vaelab_spec::Experiment, device: Device, steps: usize, dir: &Path) -> Result<Vec<LogLine>, String> {
    let mut spec = spec.clone();
    spec.device = device;
    spec.train.steps = steps;
    spec.train.log_every = 1;
    spec.train.checkpoint_every = steps.max(1);
    let _ = std::fs::remove_dir_all(dir);
    let opts = TrainOptions {
        run_dir: dir.to_path_buf(),
        resume: false,
        progress: false,
        stop: Arc::new(AtomicBool::new(false)),
        stop_at: None,
        threads: vaelab_nn::kernels::threads(),
    };
    crate::train(&spec, &opts).map_err(|e| format!("{}: {e}", spec.name))?;
    let text = std::fs::read_to_string(vaelab_runs::paths::log_file(dir)).map_err(|e| format!("{}: {e}", dir.display()))?;
    text.lines().map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}", dir.display()))).collect()
}

/// The numbers of a log compared across devices: every loss term, the total and the gradient norm.
fn log_values(log: &[LogLine]) -> Vec<(String, Vec<f32>)> {
    let mut values = vec![
        ("loss".to_string(), log.iter().map(|l| l.loss).collect()),
        ("grad_norm".to_string(), log.iter().map(|l| l.grad_norm).collect()),
    ];
    if let Some(first) = log.first() {
        for term in first.terms.keys() {
            values.push((format!("term {term}"), log.iter().map(|l| l.terms.get(term).copied().unwrap_or(f32::NAN)).collect()));
        }
    }
    values
}

/// One spec per latent kind and adversarial objective.
pub const OBJECTIVE_SPECS: [&str; 9] = [
    "vae.ron",           // Gaussian latent
    "svae.ron",          // spatial latent
    "vqvae-ema.ron",     // quantized latent, EMA codebook
    "gan.ron",           // GAN (non-saturating)
    "vae-gan.ron",       // VAE-GAN
    "introvae.ron",      // IntroVAE
    "soft-introvae.ron", // Soft-IntroVAE
    "vpga.ron",          // VPGA
    "vqvae-gan.ron",     // VQ-GAN
];

/// The CPU and (unless dry) CUDA values of every part, compared.
pub fn run(opts: &CheckOptions) -> Result<Vec<Comparison>, String> {
    std::fs::create_dir_all(&opts.out).map_err(|e| format!("{}: {e}", opts.out.display()))?;
    #[cfg(feature = "cuda")]
    let cuda = if opts.dry_run { None } else { Some(vaelab_nn::device::open_cuda(opts.ordinal, 0).map_err(|e| e.to_string())?) };
    #[cfg(not(feature = "cuda"))]
    if !opts.dry_run {
        return Err(vaelab_nn::device::DeviceError::NotBuilt.to_string());
    }
    let mut out = Vec::new();
    type Values = Vec<(String, Vec<f32>)>;
    let compare = |part, name: &str, cpu: Values, other: Option<Result<Values, String>>, tol| {
        cpu.iter()
            .enumerate()
            .map(|(i, (what, v))| Comparison {
                part,
                name: format!("{name}: {what}"),
                cpu_abs_sum: abs_sum(v),
                max_rel: match &other {
                    Some(Ok(o)) => Some(o.get(i).map_or(f64::INFINITY, |(_, w)| max_rel(v, w))),
                    _ => None,
                },
                tolerance: tol,
                error: match &other {
                    Some(Err(e)) => Some(e.clone()),
                    _ => None,
                },
            })
            .collect::<Vec<_>>()
    };

    for f in layer_fixtures() {
        let cpu = layer_values(Cpu::seed_from_u64(0), &f)?;
        #[cfg(feature = "cuda")]
        let other = cuda.as_ref().map(|d| contained(|| layer_values(d.clone(), &f)));
        #[cfg(not(feature = "cuda"))]
        let other = None;
        out.extend(compare("layers", f.name, cpu, other, LAYER_TOLERANCE));
    }

    let load = |file: &str| {
        vaelab_spec::load_spec(&opts.specs.join("shapes").join(file)).map(|l| l.experiment).map_err(|e| e.to_string())
    };
    let runs = opts.out.join("runs");
    let mut parts: Vec<(&'static str, &str, usize, f64)> =
        OBJECTIVE_SPECS.iter().map(|s| ("objectives", *s, opts.objective_steps, OBJECTIVE_TOLERANCE)).collect();
    parts.push(("trace", "beta-vae.ron", opts.trace_steps, TRACE_TOLERANCE));
    for (part, file, steps, tol) in parts {
        let spec = load(file)?;
        let cpu = log_values(&train_log(&spec, Device::Cpu, steps, &runs.join(format!("{part}-{file}-cpu")))?);
        let other = if opts.dry_run {
            None
        } else {
            let dir = runs.join(format!("{part}-{file}-cuda"));
            Some(contained(|| Ok(log_values(&train_log(&spec, Device::Cuda(opts.ordinal), steps, &dir)?))))
        };
        out.extend(compare(part, &format!("{file} ({steps} steps)"), cpu, other, tol));
    }
    Ok(out)
}

/// The report as Markdown: one table row per comparison, failures first in the summary line.
pub fn markdown(results: &[Comparison], dry_run: bool) -> String {
    let failed: Vec<_> = results.iter().filter(|c| c.pass() == Some(false)).collect();
    let mut s = String::new();
    if dry_run {
        s += &format!("Dry run: the CPU side of {} comparisons; nothing ran on CUDA.\n\n", results.len());
    } else {
        s += &format!("{} of {} comparisons within tolerance.\n\n", results.len() - failed.len(), results.len());
        for c in &failed {
            match &c.error {
                Some(e) => s += &format!("- FAILED {} / {}: {e}\n", c.part, c.name),
                None => {
                    s += &format!(
                        "- FAILED {} / {}: {:.3e} > {:.0e}\n",
                        c.part,
                        c.name,
                        c.max_rel.unwrap_or(f64::NAN),
                        c.tolerance
                    )
                }
            }
        }
        if !failed.is_empty() {
            s += "\n";
        }
    }
    s += "| part | quantity | CPU Σ abs | max rel. difference | tolerance |\n|---|---|---|---|---|\n";
    for c in results {
        let d = c.max_rel.map_or("–".to_string(), |d| format!("{d:.2e}"));
        s += &format!("| {} | {} | {:.6e} | {d} | {:.0e} |\n", c.part, c.name, c.cpu_abs_sum, c.tolerance);
    }
    s
}
