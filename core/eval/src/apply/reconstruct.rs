//! `vaelab reconstruct RUN_DIR INPUT --out DIR`: each input image through the model, written under
//! its relative path, with per-image MSE, PSNR and SSIM in `DIR/reconstruct.csv`.

use super::inputs::{for_each_batch, InputTally};
use super::output::{png_path, rel_text, write_png, ImageFormat, Output};
use super::{ApplyError, Trained};
use crate::progress::progress_bar;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use vaelab_datasets::{list_inputs, Fit, ImageBatch};
use vaelab_metrics::registry::MetricRegistry;

pub struct ReconstructOptions {
    pub input: PathBuf,
    pub out: PathBuf,
    pub skip_bad: bool,
    pub force: bool,
    /// Overrides the run's `fit` (how other sizes are brought to the run's).
    pub fit: Option<Fit>,
    /// PNG depth [default: 16-bit for inputs of more than 8 bits, else 8-bit].
    pub format: Option<ImageFormat>,
    pub progress: bool,
}

/// What `reconstruct` did, for the summary it prints.
#[derive(Debug)]
pub struct ReconstructSummary {
    pub tally: InputTally,
    /// Mean over images of each image's MSE, PSNR and SSIM.
    pub mean_mse: f64,
    pub mean_psnr: f64,
    pub mean_ssim: f64,
    pub csv: PathBuf,
}

impl ReconstructSummary {
    pub fn text(&self, out: &Path) -> String {
        let skipped = match self.tally.skipped.len() {
            0 => String::new(),
            k => format!(" ({k} unreadable file(s) skipped)"),
        };
        format!(
            "reconstructed {} images from {} files{skipped} into {}\n  mean MSE {:.6}, PSNR {:.3} dB, SSIM {:.4}; per image in {}\n",
            self.tally.images,
            self.tally.files - self.tally.skipped.len(),
            out.display(),
            self.mean_mse,
            self.mean_psnr,
            self.mean_ssim,
            self.csv.display()
        )
    }
}

pub fn reconstruct(run: &Trained, opts: &ReconstructOptions) -> Result<ReconstructSummary, ApplyError> {
    run.require_encoder("reconstruct")?;
    if opts.format == Some(ImageFormat::Npy) {
        return Err(ApplyError::Input("reconstruct writes PNG files: --format png8 or png16".into()));
    }
    let files = list_inputs(&opts.input).map_err(|e| ApplyError::Input(e.to_string()))?;
    let out_dir = Output::folder(&opts.out, opts.force)?;
    let pre = run.preprocess(opts.fit);
    let shape = run.image_shape();
    let registry = MetricRegistry::builtin();
    let metric = |name: &str| registry.get(name).expect("a built-in metric");
    let (mse, psnr, ssim) = (metric("mse"), metric("psnr"), metric("ssim"));
    let csv_path = opts.out.join("reconstruct.csv");
    let mut csv = csv::Writer::from_path(&csv_path).map_err(|e| ApplyError::Write(csv_path.clone(), e.to_string()))?;
    let csv_err = |e: csv::Error| ApplyError::Write(csv_path.clone(), e.to_string());
    csv.write_record(["path", "output", "mse", "psnr", "ssim"]).map_err(csv_err)?;
    let bar = progress_bar(opts.progress, files.len(), "reconstructing");
    let mut sums = [0.0f64; 3];
    let tally = for_each_batch(&files, &pre, run.spec.data.batch, opts.skip_bad, &bar, |images| {
        let pixels: Vec<Vec<f32>> = images.iter().map(|i| i.pixels.clone()).collect();
        let codes = run.encode(&pixels)?;
        let recon = run.decode(&codes.z)?;
        // Per image: (input path, output path, [MSE, PSNR, SSIM]).
        type Row = (String, String, [f64; 3]);
        let rows: Vec<Result<Row, ApplyError>> = images
            .par_iter()
            .zip(&recon)
            .map(|(input, out)| {
                let one = |px: &[f32]| ImageBatch {
                    n: 1,
                    c: shape.0,
                    h: shape.1,
                    w: shape.2,
                    pixels: px.to_vec(),
                    factors: vec![vec![]],
                    bit_depth: input.bit_depth,
                };
                let (real, fake) = (one(&input.pixels), one(out));
                let score = |m: &dyn vaelab_metrics::metric::Metric| {
                    m.compute(&real, &fake).map_err(|e| ApplyError::Input(format!("{}: {e}", rel_text(&input.rel))))
                };
                let scores = [score(mse)?, score(psnr)?, score(ssim)?];
                let sixteen = match opts.format {
                    Some(f) => f == ImageFormat::Png16,
                    None => input.bit_depth > 8,
                };
                let file = png_path(&opts.out, &input.rel);
                write_png(&file, out, shape, sixteen)?;
                let written = rel_text(file.strip_prefix(&opts.out).unwrap_or(&file));
                Ok((rel_text(&input.rel), written, scores))
            })
            .collect();
        for row in rows {
            let (path, written, scores) = row?;
            for (s, v) in sums.iter_mut().zip(scores) {
                *s += v;
            }
            let cells = [path, written, format!("{}", scores[0]), format!("{}", scores[1]), format!("{}", scores[2])];
            csv.write_record(&cells).map_err(csv_err)?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    csv.flush().map_err(|e| ApplyError::Write(csv_path.clone(), e.to_string()))?;
    out_dir.keep();
    let n = tally.images as f64;
    Ok(ReconstructSummary { mean_mse: sums[0] / n, mean_psnr: sums[1] / n, mean_ssim: sums[2] / n, csv: csv_path, tally })
}
