//! FID (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to the Inception-v3 pool
//! features ([`super::inception`]) of two image sets, as pytorch-fid computes it.
//!
//! The weights are pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, converted once to
//! safetensors with `xtask/scripts/fid_weights_to_safetensors.py` (names unchanged). vaelab finds
//! the file through `eval.fid_weights` in a spec, `--fid-weights`, or `VAELAB_FID_WEIGHTS`.

use super::frechet::{frechet_distance, Gaussian};
use super::inception::{self, Inception, FEATURES, INPUT_SIDE};
use safetensors::tensor::Dtype;
use std::path::{Path, PathBuf};
use vaelab_datasets::ImageBatch;

/// The environment variable naming the converted weight file.
pub const WEIGHTS_VAR: &str = "VAELAB_FID_WEIGHTS";

/// Images per network batch: a 299 px batch of 16 keeps the largest activation near 90 MB.
pub const BATCH: usize = 16;

pub const DEFINITION: &str = "FID: Fréchet distance between Gaussians fitted to pytorch-fid Inception-v3 pool features (2048-d; bilinear resize to 299, grey replicated to RGB)";

/// What to say when FID is asked for but no weight file is known.
pub fn missing_weights_help() -> String {
    format!(
        "FID needs pytorch-fid's Inception weights as safetensors: download pt_inception-2015-12-05-6726825d.pth \
         (the URL is FID_WEIGHTS_URL in pytorch-fid's inception.py), convert it with \
         `python xtask/scripts/fid_weights_to_safetensors.py pt_inception-2015-12-05-6726825d.pth inception-fid.safetensors`, \
         then pass `--fid-weights inception-fid.safetensors`, set `eval.fid_weights` in the spec, or set {WEIGHTS_VAR}"
    )
}

/// The weight file to use: an explicit path first, then `VAELAB_FID_WEIGHTS`.
pub fn weights_path(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit.map(Path::to_path_buf).or_else(|| std::env::var_os(WEIGHTS_VAR).map(PathBuf::from))
}

/// Loads the network from a safetensors file with pytorch-fid's parameter names.
pub fn load(path: &Path) -> Result<Inception, String> {
    let context = |m: String| format!("FID weights {}: {m}", path.display());
    let bytes = std::fs::read(path).map_err(|e| context(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| context(format!("not a safetensors file: {e}")))?;
    let mut bad = None;
    let net = Inception::from_tensors(|name| {
        let t = st.tensor(name).ok()?;
        let values = match t.dtype() {
            Dtype::F32 => t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F64 => t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
            other => {
                bad.get_or_insert(format!("tensor `{name}` is {other:?}; expected F32 or F64"));
                return None;
            }
        };
        Some((t.shape().to_vec(), values))
    });
    match (net, bad) {
        (_, Some(m)) => Err(context(m)),
        (Ok(net), None) => Ok(net),
        (Err(m), None) => Err(context(format!("{m} (is this pytorch-fid's FID Inception, converted unchanged?)"))),
    }
}

/// Pool features of every image, in batches of [`BATCH`], with a progress bar on stderr when
/// `label` is given.
pub fn features(net: &Inception, images: &ImageBatch, label: Option<&str>) -> Vec<Vec<f64>> {
    let bar = match label {
        Some(l) => indicatif::ProgressBar::new(images.n as u64).with_message(l.to_string()).with_style(
            indicatif::ProgressStyle::with_template("{msg:>24} {bar:30} {pos}/{len} images, {eta} left").expect("valid template"),
        ),
        None => indicatif::ProgressBar::hidden(),
    };
    let side = INPUT_SIDE * INPUT_SIDE * 3;
    let mut out = Vec::with_capacity(images.n);
    for start in (0..images.n).step_by(BATCH) {
        let end = (start + BATCH).min(images.n);
        let b = end - start;
        // Batch-last input: element e of image j at e·b + j.
        let mut input = vec![0.0f32; side * b];
        for j in 0..b {
            let x = inception::prepare(images.image(start + j), images.c, images.h, images.w);
            for (e, v) in x.into_iter().enumerate() {
                input[e * b + j] = v;
            }
        }
        out.extend(net.forward(input, b).into_iter().map(|f| f.into_iter().map(f64::from).collect::<Vec<f64>>()));
        bar.inc(b as u64);
    }
    bar.finish_and_clear();
    debug_assert!(out.iter().all(|f| f.len() == FEATURES));
    out
}

/// FID between two feature sets.
pub fn distance(real: &[Vec<f64>], fake: &[Vec<f64>]) -> Result<f64, String> {
    if real.len() < 2 || fake.len() < 2 {
        return Err(format!("FID needs at least 2 images per set (got {} and {})", real.len(), fake.len()));
    }
    let fit = |rows: &[Vec<f64>]| Gaussian::fit(rows, FEATURES).map_err(|m| format!("FID: {m}"));
    Ok(frechet_distance(&fit(real)?, &fit(fake)?))
}

/// A note for the report: FID from fewer images than features is biased upwards and not comparable
/// with published values (which use 10,000 or 50,000 images).
pub fn sample_note(n_real: usize, n_fake: usize) -> Option<String> {
    (n_real.min(n_fake) < FEATURES).then(|| {
        format!("{n_real} real and {n_fake} generated images; FID is biased upwards below 2048 images and published values use 10k–50k")
    })
}

/// Writes [`inception::synthetic_parameters`] as a weight file in pytorch-fid's naming: the stand-in
/// that tests and benchmarks load through the same path as real weights.
pub fn write_synthetic_weights(path: &Path) -> Result<(), String> {
    let params = inception::synthetic_parameters();
    let bytes: Vec<Vec<u8>> = params.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = params
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            (name.clone(), safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b).expect("sizes match"))
        })
        .collect();
    let data = safetensors::serialize(views, &None).map_err(|e| e.to_string())?;
    std::fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
