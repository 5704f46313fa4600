//! Training: a deterministic trace, exact resume, and the ways a run can stop early.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use vaelab::runs::LogLine;
use vaelab::spec::{load_spec, Experiment};
use vaelab::train::{train, TrainError, TrainOptions, TrainOutcome};

pub fn tiny() -> Experiment {
    load_spec(Path::new("specs/tiny.ron")).unwrap().experiment
}

pub use crate::tolerance::{within, Tolerance};
pub use vaelab_tests::scratch::Scratch;

/// How far a 20-step trace may move between CPU kinds (see `tolerance.rs`). Measured between gemm's
/// AVX-512 and AVX2 kernels: at most 1.2e-5 relative (the VPGA trace; most traces under 1e-6). The
/// tolerance is 80 times that, for other cache sizes (gemm blocks its sums by them) and longer chains.
pub const TRACE: Tolerance = Tolerance { rel: 1e-3, abs: 1e-6 };

/// An empty (not yet created) run directory for one test, removed when it goes out of scope.
pub fn scratch(name: &str) -> Scratch {
    Scratch::new("test", name)
}

pub fn options(run_dir: &Path) -> TrainOptions {
    TrainOptions {
        run_dir: run_dir.to_path_buf(),
        resume: false,
        progress: false,
        stop: Arc::new(AtomicBool::new(false)),
        stop_at: None,
        threads: rayon_threads(),
    }
}

fn rayon_threads() -> usize {
    vaelab::nn::kernels::threads()
}

fn log(run_dir: &Path) -> Vec<LogLine> {
    std::fs::read_to_string(run_dir.join("log.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Every tensor (parameters and optimizer state) and the metadata of the latest checkpoint.
pub fn checkpoint_tensors(run_dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let path = vaelab::runs::checkpoint::latest(&run_dir.join("checkpoints")).unwrap();
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(name, view)| (name, view.data().to_vec())).collect()
}

fn assert_same_checkpoint(a: &Path, b: &Path) {
    let (x, y) = (checkpoint_tensors(a), checkpoint_tensors(b));
    assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
    let differing: Vec<&String> = x.keys().filter(|k| x[*k] != y[*k]).collect();
    assert!(differing.is_empty(), "tensors differ: {differing:?}");
}

/// Seven significant digits: the recorded values are precise, so that [`TRACE`] alone says how far
/// a value may move.
fn sig7(x: f32) -> String {
    format!("{:.6e}", x)
}

/// Trains `spec` twice, checks the runs are bit-identical, and returns the log and a readable trace.
pub fn deterministic_trace(spec: &Experiment, name: &str) -> (Vec<LogLine>, String) {
    let (a, b) = (scratch(&format!("{name}-a")), scratch(&format!("{name}-b")));
    let steps = spec.train.steps;
    assert!(matches!(train(spec, &options(&a)).unwrap(), TrainOutcome::Finished { steps: s, .. } if s == steps));
    train(spec, &options(&b)).unwrap();
    let (la, lb) = (log(&a), log(&b));
    assert_eq!(la.len(), steps);
    // Same spec, seed and thread count: bit-identical losses and parameters.
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!((x.loss.to_bits(), x.grad_norm.to_bits()), (y.loss.to_bits(), y.grad_norm.to_bits()));
    }
    assert_same_checkpoint(&a, &b);
    let trace: String = la
        .iter()
        .map(|l| {
            let terms: Vec<String> = l.terms.iter().map(|(k, v)| format!("{k}={}", sig7(*v))).collect();
            let kl = l.weights.get("kl").map(|w| format!("  kl_weight={w:.2}")).unwrap_or_default();
            format!("step {:>2}  loss={}  {}{kl}\n", l.step, sig7(l.loss), terms.join("  "))
        })
        .collect();
    (la, trace)
}

#[test]
fn twenty_step_trace_is_deterministic() {
    let (la, trace) = deterministic_trace(&tiny(), "trace");
    within(TRACE, || insta::assert_snapshot!(trace));
    // It learns: the reconstruction term falls over the 20 steps.
    assert!(la[19].terms["rec"] < la[0].terms["rec"] * 0.9, "{} → {}", la[0].terms["rec"], la[19].terms["rec"]);
}

/// The autoencoder, spatial-VAE and VQ-VAE kinds on the tiny architecture: deterministic 20-step traces.
#[test]
fn autoencoder_and_spatial_vae_traces() {
    use vaelab::spec::{Latent, Layer::*, Loss};
    let mut ae = tiny();
    ae.model.encoder.push(Dense { out: 4 });
    ae.model.latent = Latent::None;
    ae.losses = vec![Loss::Reconstruction { weight: 1.0 }];
    let mut svae = tiny();
    svae.model.encoder = vec![Conv { out: 8, k: 4, s: 2, p: 1 }, Relu, Conv { out: 16, k: 4, s: 2, p: 1 }, Relu];
    svae.model.latent = Latent::Spatial { channels: 2 };
    svae.model.decoder = vec![ConvT { out: 8, k: 4, s: 2, p: 1 }, Relu, ConvT { out: 1, k: 4, s: 2, p: 1 }];
    let mut vq = svae.clone();
    vq.model.latent = Latent::Quantized { codes: 8, dim: 4, beta: 0.25, ema: false };
    vq.losses = vec![Loss::Reconstruction { weight: 1.0 }, Loss::Vq { weight: 1.0 }];
    let mut vq_ema = vq.clone();
    vq_ema.model.latent = Latent::Quantized { codes: 8, dim: 4, beta: 0.25, ema: true };
    for (spec, name) in [(ae, "autoencoder"), (svae, "spatial_vae"), (vq, "vq_vae"), (vq_ema, "vq_vae_ema")] {
        let (la, trace) = deterministic_trace(&spec, name);
        within(TRACE, || insta::assert_snapshot!(name, trace));
        if name == "vq_vae_ema" {
            // The codebook moves by averages only: the `vq` term is the commitment alone.
            assert!(la.iter().all(|l| l.terms.contains_key("vq") && l.stats.contains_key("perplexity")));
        }
        // It learns (the VQ-VAE more slowly at first: its codebook starts untrained).
        let factor = if name.starts_with("vq_vae") { 0.99 } else { 0.9 };
        assert!(la[19].terms["rec"] < la[0].terms["rec"] * factor, "{name}: {} → {}", la[0].terms["rec"], la[19].terms["rec"]);
    }
}

#[test]
fn resuming_continues_the_same_run() {
    let (straight, split) = (scratch("resume-straight"), scratch("resume-split"));
    let spec = tiny();
    train(&spec, &options(&straight)).unwrap();

    let mut first = options(&split);
    first.stop_at = Some(7);
    assert!(matches!(train(&spec, &first).unwrap(), TrainOutcome::Interrupted { step: 7, .. }));
    let mut second = options(&split);
    second.resume = true;
    assert!(matches!(train(&spec, &second).unwrap(), TrainOutcome::Finished { steps: 20, .. }));

    assert_same_checkpoint(&straight, &split);
    let (a, b) = (log(&straight), log(&split));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.step, x.loss.to_bits()), (y.step, y.loss.to_bits()));
    }
}

#[test]
fn interrupt_writes_a_checkpoint_and_stops() {
    let dir = scratch("interrupt");
    let opts = options(&dir);
    opts.stop.store(true, std::sync::atomic::Ordering::SeqCst); // as if Ctrl-C came during step 1
    match train(&tiny(), &opts).unwrap() {
        TrainOutcome::Interrupted { step, checkpoint } => {
            assert_eq!(step, 1);
            assert!(checkpoint.exists());
        }
        other => panic!("{other:?}"),
    }
    // A second plain `train` into the same directory refuses rather than overwriting the run.
    let err = train(&tiny(), &options(&dir)).unwrap_err();
    assert!(matches!(err, TrainError::RunExists(_)), "{err}");
    assert!(err.to_string().contains("--resume"));
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = scratch("nan");
    let mut spec = tiny();
    // A huge SGD step makes the weights explode within a few steps.
    spec.train.optimizer = vaelab::spec::OptimizerSpec::Sgd { lr: 1e12, momentum: 0.0 };
    spec.train.checkpoint_every = 1;
    let err = train(&spec, &options(&dir)).unwrap_err();
    let TrainError::NonFinite { step, ref term, .. } = err else { panic!("{err}") };
    let message = err.to_string();
    assert!(message.contains(&format!("step {step}: loss term `{term}`")), "{message}");
    assert!(step > 1, "step 1 starts from finite initial weights");
    let latest = vaelab::runs::checkpoint::latest(&dir.join("checkpoints")).unwrap();
    assert!(message.contains(&latest.display().to_string()), "{message}");
    assert!(latest.to_string_lossy().contains(&format!("step-{:07}", step - 1)), "{}", latest.display());
    let no_temporaries =
        std::fs::read_dir(dir.join("checkpoints")).unwrap().all(|e| !e.unwrap().path().to_string_lossy().ends_with(".tmp"));
    assert!(no_temporaries);
}

#[test]
fn an_unwritable_run_directory_is_a_clear_error() {
    let file = scratch("not-a-dir");
    std::fs::write(&file, b"a file").unwrap();
    let err = train(&tiny(), &options(&file.join("run"))).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("cannot create the run directory") && message.contains("not-a-dir"), "{message}");
}

/// A full disk (simulated with /dev/full, which fails every write with ENOSPC) is a clear error
/// naming the checkpoint, and leaves no half-written file and no `latest` pointing at one.
#[test]
fn a_full_disk_is_a_clear_error_and_leaves_no_broken_checkpoint() {
    if !Path::new("/dev/full").exists() {
        return; // not Linux: nothing to simulate with
    }
    let dir = scratch("disk-full");
    let ckpt = dir.join("checkpoints");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::os::unix::fs::symlink("/dev/full", ckpt.join("step-0000001.safetensors.tmp")).unwrap();
    let mut spec = tiny();
    spec.train.steps = 1;
    let message = train(&spec, &options(&dir)).unwrap_err().to_string();
    assert!(message.contains("cannot write checkpoint") && message.contains("step-0000001.safetensors"), "{message}");
    assert!(message.contains("No space left on device"), "{message}");
    assert!(!ckpt.join("latest").exists());
    assert!(!ckpt.join("step-0000001.safetensors").exists());
}
