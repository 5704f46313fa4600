//! The metric interface. Built-in metrics implement [`Metric`]; plugin metrics (loaded at run
//! time, `vaelab_plugin_host::metric`) implement the same trait, so the evaluator cannot tell them apart.

use vaelab_datasets::ImageBatch;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricError {
    #[error("metric `{metric}`: {message}")]
    Failed { metric: String, message: String },
    #[error("unknown metric `{name}`; available: {available}")]
    Unknown { name: String, available: String },
}

/// One value a metric reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// The key in `metrics.json`: the metric's name, or `name.output` for multi-output metrics.
    pub key: String,
    pub value: f64,
    pub note: Option<String>,
}

/// An image metric over two equally sized batches (`real` = references, `fake` = model output).
pub trait Metric: Send + Sync {
    fn name(&self) -> &str;
    /// One line saying exactly what is computed, written into `metrics.json`.
    fn definition(&self) -> &str;
    fn higher_is_better(&self) -> bool;
    fn compute(&self, real: &ImageBatch, fake: &ImageBatch) -> Result<f64, MetricError>;
    /// Anything a reader must know to compare the value (e.g. MS-SSIM's scale count on small images).
    fn note(&self, _real: &ImageBatch) -> Option<String> {
        None
    }
    /// Every value the metric reports; single-valued metrics report `compute` under their name.
    fn evaluate(&self, real: &ImageBatch, fake: &ImageBatch) -> Result<Vec<Scored>, MetricError> {
        Ok(vec![Scored { key: self.name().into(), value: self.compute(real, fake)?, note: self.note(real) }])
    }
}

/// Pairwise metrics need two non-empty batches of the same geometry.
pub fn check_pair(name: &str, real: &ImageBatch, fake: &ImageBatch) -> Result<(), MetricError> {
    if (real.n, real.c, real.h, real.w) != (fake.n, fake.c, fake.h, fake.w) {
        return Err(MetricError::Failed {
            metric: name.into(),
            message: format!(
                "batches differ: {}×{}×{}×{} vs {}×{}×{}×{}",
                real.n, real.c, real.h, real.w, fake.n, fake.c, fake.h, fake.w
            ),
        });
    }
    if real.n == 0 {
        return Err(MetricError::Failed { metric: name.into(), message: "no images".into() });
    }
    Ok(())
}

/// Mean squared error of each image pair, f64 accumulation.
fn per_image_mse(real: &ImageBatch, fake: &ImageBatch) -> Vec<f64> {
    (0..real.n)
        .map(|i| {
            let (a, b) = (real.image(i), fake.image(i));
            a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>() / a.len() as f64
        })
        .collect()
}

pub struct Mse;

impl Metric for Mse {
    fn name(&self) -> &str {
        "mse"
    }
    fn definition(&self) -> &str {
        "mean over images of the per-image mean squared error, data range [0, 1]"
    }
    fn higher_is_better(&self) -> bool {
        false
    }
    fn compute(&self, real: &ImageBatch, fake: &ImageBatch) -> Result<f64, MetricError> {
        check_pair(self.name(), real, fake)?;
        let v = per_image_mse(real, fake);
        Ok(v.iter().sum::<f64>() / v.len() as f64)
    }
}

pub struct Psnr;

/// PSNR is capped where an image is reproduced exactly (MSE = 0 would give +∞).
pub const PSNR_CAP_DB: f64 = 100.0;

impl Metric for Psnr {
    fn name(&self) -> &str {
        "psnr"
    }
    fn definition(&self) -> &str {
        "mean over images of 10·log10(1 / MSE) in dB, data range [0, 1], capped at 100 dB"
    }
    fn higher_is_better(&self) -> bool {
        true
    }
    fn compute(&self, real: &ImageBatch, fake: &ImageBatch) -> Result<f64, MetricError> {
        check_pair(self.name(), real, fake)?;
        let v = per_image_mse(real, fake);
        Ok(v.iter().map(|m| if *m == 0.0 { PSNR_CAP_DB } else { (10.0 * (1.0 / m).log10()).min(PSNR_CAP_DB) }).sum::<f64>()
            / v.len() as f64)
    }
}
