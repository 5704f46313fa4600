//! `vaelab latent RUN_DIR embed`: the test codes projected onto their first two principal
//! components (PCA of the code covariance), drawn as a scatter plot coloured by a label or factor
//! (`latent/embed-<factor>.png`), with the explained variance in `latent/embed.json`. t-SNE and
//! UMAP are left out: no well-kept Rust crate provides them.

use super::{AnalysisError, Codes};
use image::{Rgb, RgbImage};
use nalgebra::{DMatrix, SymmetricEigen};
use serde::Serialize;
use vaelab_eval::report::plot::text;
use vaelab_runs::LoadedRun;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EmbedSummary {
    pub run: String,
    pub checkpoint_step: usize,
    pub images: usize,
    /// Fraction of the codes' total variance along PC1 and PC2.
    pub explained_variance: [f64; 2],
    /// The factor colouring each plot, with its file.
    pub plots: Vec<(String, String)>,
}

/// The codes' coordinates on their first two principal components, and the explained variance.
pub fn pca2(rows: &[Vec<f32>]) -> (Vec<[f64; 2]>, [f64; 2]) {
    let (n, d) = (rows.len(), rows.first().map_or(0, Vec::len));
    let mean: Vec<f64> = (0..d).map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / n.max(1) as f64).collect();
    let centred = DMatrix::from_fn(n, d, |i, j| rows[i][j] as f64 - mean[j]);
    let cov = centred.transpose() * &centred / (n.max(2) - 1) as f64;
    let eig = SymmetricEigen::new(cov);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|a, b| eig.eigenvalues[*b].total_cmp(&eig.eigenvalues[*a]));
    let total: f64 = eig.eigenvalues.iter().map(|v| v.max(0.0)).sum();
    let pick = |k: usize| order.get(k).copied();
    let project = |k: Option<usize>| -> Vec<f64> {
        match k {
            Some(k) => (&centred * eig.eigenvectors.column(k)).iter().copied().collect(),
            None => vec![0.0; n],
        }
    };
    let (p1, p2) = (project(pick(0)), project(pick(1)));
    let ev = |k: Option<usize>| k.map_or(0.0, |k| if total > 0.0 { eig.eigenvalues[k].max(0.0) / total } else { 0.0 });
    ((0..n).map(|i| [p1[i], p2[i]]).collect(), [ev(pick(0)), ev(pick(1))])
}

/// Ten distinguishable colours for classes (Tableau 10).
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// A blue → yellow ramp for continuous values in [0, 1].
fn ramp(t: f64) -> Rgb<u8> {
    let t = t.clamp(0.0, 1.0);
    Rgb([(40.0 + 210.0 * t) as u8, (60.0 + 150.0 * t) as u8, (160.0 - 130.0 * t) as u8])
}

/// A scatter plot of `points`, coloured by `values` (classes when there are at most 10 distinct).
pub fn scatter(points: &[[f64; 2]], values: &[f64], title: &str) -> RgbImage {
    const SIZE: u32 = 560;
    const PAD: u32 = 40;
    const LEGEND: u32 = 150;
    let mut img = RgbImage::from_pixel(SIZE + LEGEND, SIZE, Rgb([255, 255, 255]));
    let bounds = |k: usize| {
        let (lo, hi) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p[k]), b.max(p[k])));
        (lo, (hi - lo).max(1e-12))
    };
    let ((x0, xs), (y0, ys)) = (bounds(0), bounds(1));
    let mut distinct: Vec<f64> = values.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    let discrete = distinct.len() <= PALETTE.len();
    let (vmin, vmax) = (distinct.first().copied().unwrap_or(0.0), distinct.last().copied().unwrap_or(1.0));
    let colour = |v: f64| -> Rgb<u8> {
        if discrete {
            Rgb(PALETTE[distinct.iter().position(|d| *d == v).unwrap_or(0) % PALETTE.len()])
        } else {
            ramp((v - vmin) / (vmax - vmin).max(1e-12))
        }
    };
    let inner = SIZE - 2 * PAD;
    for (p, v) in points.iter().zip(values) {
        let cx = PAD as i64 + ((p[0] - x0) / xs * inner as f64) as i64;
        let cy = (SIZE - PAD) as i64 - ((p[1] - y0) / ys * inner as f64) as i64;
        let c = colour(*v);
        for dy in -2..=2i64 {
            for dx in -2..=2i64 {
                let (x, y) = (cx + dx, cy + dy);
                if dx * dx + dy * dy <= 5 && x >= 0 && y >= 0 && (x as u32) < SIZE && (y as u32) < SIZE {
                    img.put_pixel(x as u32, y as u32, c);
                }
            }
        }
    }
    let ink = Rgb([40, 40, 40]);
    text(&mut img, PAD, 12, title, ink);
    text(&mut img, SIZE / 2 - 12, SIZE - 20, "PC1", ink);
    text(&mut img, 6, SIZE / 2, "PC2", ink);
    if discrete {
        for (k, d) in distinct.iter().enumerate() {
            let y = PAD + 18 * k as u32;
            for dy in 0..10 {
                for dx in 0..10 {
                    img.put_pixel(SIZE + 10 + dx, y + dy, Rgb(PALETTE[k % PALETTE.len()]));
                }
            }
            text(&mut img, SIZE + 26, y + 1, &format!("{d}"), ink);
        }
    } else {
        for k in 0..100u32 {
            let c = ramp(1.0 - k as f64 / 99.0);
            for dx in 0..14 {
                img.put_pixel(SIZE + 10 + dx, PAD + 2 * k, c);
                img.put_pixel(SIZE + 10 + dx, PAD + 2 * k + 1, c);
            }
        }
        text(&mut img, SIZE + 30, PAD, &format!("{vmax:.3}"), ink);
        text(&mut img, SIZE + 30, PAD + 192, &format!("{vmin:.3}"), ink);
    }
    img
}

/// Writes one scatter plot per factor (or only `only`) and `latent/embed.json`.
pub fn run(run: &LoadedRun, codes: &Codes, only: Option<&str>) -> Result<EmbedSummary, AnalysisError> {
    let (points, explained) = pca2(&codes.mu);
    let names = run.dataset.factor_names();
    let dir = run.out_dir()?;
    let mut plots = Vec::new();
    let chosen: Vec<(usize, String)> = match only {
        Some(o) => {
            let j = names.iter().position(|n| n == o).ok_or_else(|| {
                AnalysisError::Input(format!(
                    "no factor `{o}`; this dataset has {}",
                    if names.is_empty() { "none".into() } else { names.join(", ") }
                ))
            })?;
            vec![(j, o.to_string())]
        }
        None => names.iter().cloned().enumerate().collect(),
    };
    for (j, name) in &chosen {
        let values: Vec<f64> = codes.images.factors.iter().map(|f| f[*j] as f64).collect();
        let title = format!("{}: test codes coloured by {name}", run.spec.name);
        let file = format!("embed-{name}.png");
        vaelab_eval::grid::save_png(&scatter(&points, &values, &title), &dir.join(&file))
            .map_err(|e| AnalysisError::Write(dir.join(&file), e))?;
        plots.push((name.clone(), file));
    }
    if chosen.is_empty() {
        let file = "embed.png".to_string();
        let title = format!("{}: test codes", run.spec.name);
        vaelab_eval::grid::save_png(&scatter(&points, &vec![0.0; points.len()], &title), &dir.join(&file))
            .map_err(|e| AnalysisError::Write(dir.join(&file), e))?;
        plots.push(("none".into(), file));
    }
    let summary = EmbedSummary {
        run: run.spec.name.clone(),
        checkpoint_step: run.step,
        images: points.len(),
        explained_variance: explained,
        plots,
    };
    super::write_summary(&dir, "embed.json", &summary)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_direction_of_largest_spread() {
        // Points along (1, 1, 0) with small noise across: PC1 explains nearly all the variance.
        let rows: Vec<Vec<f32>> = (0..50)
            .map(|i| {
                let t = i as f32 - 25.0;
                vec![t, t + 0.01 * (i % 3) as f32, 0.02 * (i % 5) as f32]
            })
            .collect();
        let (points, ev) = pca2(&rows);
        assert!(ev[0] > 0.99 && ev[1] < 0.01, "{ev:?}");
        // PC1 coordinates are ±√2·t: ordered like t.
        assert!((points[49][0] - points[0][0]).abs() > 60.0);
    }
}
