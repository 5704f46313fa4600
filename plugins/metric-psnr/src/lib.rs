//! A metric plugin written in Rust: PSNR, exported through `vaelab_plugin_abi::export_plugin!`.
//!
//! It computes exactly what the built-in `psnr` computes (mean over images of 10·log10(1/MSE), data
//! range [0, 1], capped at 100 dB), so tests can check the plugin path against the built-in metric.

use vaelab_plugin_abi::*;

pub struct PsnrRs;

const CAP_DB: f64 = 100.0;

impl MetricPlugin for PsnrRs {
    const NAME: &'static std::ffi::CStr = c"psnr_rs";
    const OUTPUTS: &'static [&'static std::ffi::CStr] = &[c"psnr"];
    const FLAGS: u32 = VAELAB_METRIC_HIGHER_IS_BETTER | VAELAB_METRIC_THREAD_SAFE | VAELAB_METRIC_NEEDS_REFERENCE;

    fn create(config: &Config) -> Result<Self, String> {
        config.only(&[])?;
        Ok(PsnrRs)
    }

    fn compute(&self, real: Option<&Images>, fake: &Images, out: &mut [f64]) -> Result<(), String> {
        let real = real.ok_or("psnr_rs needs reference images")?;
        if real.data.len() != fake.data.len() || real.n != fake.n {
            return Err(format!("batches differ: {} vs {} values", real.data.len(), fake.data.len()));
        }
        if fake.n == 0 {
            return Err("no images".into());
        }
        let mut total = 0.0;
        for i in 0..fake.n {
            let (a, b) = (real.image(i), fake.image(i));
            let mse = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>() / a.len() as f64;
            total += if mse == 0.0 { CAP_DB } else { (10.0 * (1.0 / mse).log10()).min(CAP_DB) };
        }
        out[0] = total / fake.n as f64;
        Ok(())
    }
}

export_plugin!(name: c"metric-psnr", metrics: [PsnrRs], blocks: []);
