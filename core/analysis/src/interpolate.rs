//! `vaelab latent RUN_DIR interpolate A B`: decoded codes on the way from test image A's code to
//! B's: a linear row, and for Gaussian latents a spherical row (slerp, Shoemake 1985), which keeps
//! the norm typical of prior samples (White 2016, "Sampling generative networks").

use super::{write_outputs, AnalysisError, Codes, GridStats};
use serde::Serialize;
use vaelab_models::latent::LatentModel;
use vaelab_runs::LoadedRun;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InterpolateSummary {
    pub run: String,
    pub checkpoint_step: usize,
    pub from: usize,
    pub to: usize,
    /// `linear`, then `spherical` for Gaussian latents: one grid row each.
    pub rows: Vec<&'static str>,
    pub stats: GridStats,
}

/// `a + t(b − a)`.
pub fn lerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + t * (y - x)).collect()
}

/// Spherical interpolation: `sin((1−t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b`, Ω the angle between a and b;
/// linear when they are (anti)parallel within round-off.
pub fn slerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 {
        return lerp(a, b, t);
    }
    let cos = (dot / (na * nb)).clamp(-1.0, 1.0);
    let omega = cos.acos();
    if omega.sin().abs() < 1e-6 {
        return lerp(a, b, t);
    }
    let (wa, wb) = (((1.0 - t as f64) * omega).sin() / omega.sin(), (t as f64 * omega).sin() / omega.sin());
    a.iter().zip(b).map(|(x, y)| (wa * *x as f64 + wb * *y as f64) as f32).collect()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

pub fn interpolate(
    run: &LoadedRun,
    codes: &Codes,
    from: usize,
    to: usize,
    steps: usize,
) -> Result<(Vec<Vec<f32>>, InterpolateSummary), AnalysisError> {
    let get = |i: usize| {
        codes.mu.get(i).ok_or_else(|| AnalysisError::Input(format!("test image {i} does not exist ({} encoded)", codes.mu.len())))
    };
    let (a, b) = (get(from)?, get(to)?);
    if steps < 2 {
        return Err(AnalysisError::Input("an interpolation needs at least 2 steps".into()));
    }
    let ts: Vec<f32> = (0..steps).map(|s| s as f32 / (steps - 1) as f32).collect();
    let mut rows = vec!["linear"];
    let mut z: Vec<Vec<f32>> = ts.iter().map(|t| lerp(a, b, *t)).collect();
    if matches!(run.model.latent, LatentModel::Gaussian(_) | LatentModel::Spatial(_)) {
        rows.push("spherical");
        z.extend(ts.iter().map(|t| slerp(a, b, *t)));
    }
    let images = run.decode(&z);
    let summary = InterpolateSummary {
        run: run.spec.name.clone(),
        checkpoint_step: run.step,
        from,
        to,
        rows,
        stats: GridStats::of(&images, steps, run.image_shape()),
    };
    Ok((images, summary))
}

/// Runs [`interpolate`] and writes `latent/interpolate.png` and `.json`.
pub fn run(run: &LoadedRun, codes: &Codes, from: usize, to: usize, steps: usize) -> Result<InterpolateSummary, AnalysisError> {
    let (images, summary) = interpolate(run, codes, from, to, steps)?;
    write_outputs(&run.out_dir()?, "interpolate", &images, run.image_shape(), steps, &summary)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slerp_keeps_the_norm_between_equal_norm_codes() {
        let (a, b) = ([1.0f32, 0.0], [0.0f32, 1.0]);
        let mid = slerp(&a, &b, 0.5);
        assert!((norm(&mid) - 1.0).abs() < 1e-6, "{mid:?}");
        assert!((norm(&lerp(&a, &b, 0.5)) - 0.5f64.sqrt()).abs() < 1e-6);
        assert_eq!(slerp(&a, &b, 0.0), a.to_vec());
        let end = slerp(&a, &b, 1.0);
        assert!((end[0]).abs() < 1e-6 && (end[1] - 1.0).abs() < 1e-6);
    }
}
