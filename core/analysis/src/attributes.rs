//! `vaelab latent RUN_DIR attributes`: latent directions for labelled attributes, without training
//! on the labels. For each attribute (a dataset factor or a folder's class):
//! - discrete attributes (2–10 values: a KL grade, a shape) get the direction from the mean code of
//!   the lowest value to that of the highest (grade 0 → grade 4);
//! - continuous ones (position, scale) the direction from the mean code of the lowest third to that
//!   of the highest third.
//!
//! Adding the direction at strengths 0 … 1 to an image's code moves the image towards the other
//! end; `attributes-<name>.png` shows it for a few test images. The summary also says how well
//! each latent element predicts each attribute on its own: a one-dimensional linear probe fitted
//! on two thirds of the codes and scored on the rest (R² of a least-squares line for continuous
//! attributes; accuracy of the nearest class mean for discrete ones).

use super::{AnalysisError, Codes};
use serde::Serialize;
use vaelab_runs::LoadedRun;

/// At most this many distinct values make an attribute discrete.
const MAX_CLASSES: usize = 10;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attribute {
    pub name: String,
    pub discrete: bool,
    /// The two groups the direction runs between, e.g. `value 0` → `value 4`, `lowest third` → `highest third`.
    pub from: String,
    pub to: String,
    /// Mean code of `to` minus mean code of `from`.
    #[serde(skip)]
    pub direction: Vec<f32>,
    /// The encoded images in the `from` group, in order (default starting points for the grids).
    #[serde(skip)]
    pub from_images: Vec<usize>,
    pub direction_norm: f64,
    /// Probe score of each latent element alone (R² or accuracy), in element order.
    pub probe: Vec<f64>,
    /// The element that predicts the attribute best and its score.
    pub best_element: (usize, f64),
    /// What `probe` holds: `r2` or `accuracy` (chance is 1/classes).
    pub probe_kind: &'static str,
    /// The probe score of guessing: 1/classes for accuracy, 0 for R².
    pub chance: f64,
}

impl Attribute {
    /// Each element's probe score above chance, as a fraction of the way from chance to perfect
    /// (so an R² and a 6-class accuracy shade alike in the probe picture).
    pub fn probe_above_chance(&self) -> Vec<f64> {
        self.probe.iter().map(|s| ((s - self.chance) / (1.0 - self.chance)).clamp(0.0, 1.0)).collect()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttributesSummary {
    pub run: String,
    pub checkpoint_step: usize,
    pub images: usize,
    pub strengths: Vec<f32>,
    pub attributes: Vec<Attribute>,
}

/// Directions and probes for every attribute of the dataset (or only `only`).
pub fn directions(run: &LoadedRun, codes: &Codes, only: Option<&str>) -> Result<Vec<Attribute>, AnalysisError> {
    let names = run.dataset.factor_names();
    if names.is_empty() {
        return Err(AnalysisError::Input(format!(
            "the dataset of run `{}` has no labels or factors; attributes need a folder of class subfolders, IDX labels, shapes or the knee phantom",
            run.spec.name
        )));
    }
    if let Some(o) = only.filter(|o| !names.iter().any(|n| n == o)) {
        return Err(AnalysisError::Input(format!("no attribute `{o}`; this dataset has {}", names.join(", "))));
    }
    let factors = &codes.images.factors;
    let mut out = Vec::new();
    for (j, name) in names.iter().enumerate().filter(|(_, n)| only.is_none_or(|o| o == n.as_str())) {
        let values: Vec<f64> = factors.iter().map(|f| f[j] as f64).collect();
        let mut distinct: Vec<f64> = values.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        if distinct.len() < 2 {
            continue;
        }
        let discrete = distinct.len() <= MAX_CLASSES;
        let chance = if discrete { 1.0 / distinct.len() as f64 } else { 0.0 };
        let (from_set, to_set, from, to): (Vec<usize>, Vec<usize>, String, String) = if discrete {
            let (lo, hi) = (distinct[0], distinct[distinct.len() - 1]);
            (
                (0..values.len()).filter(|&i| values[i] == lo).collect(),
                (0..values.len()).filter(|&i| values[i] == hi).collect(),
                format!("value {lo}"),
                format!("value {hi}"),
            )
        } else {
            let mut order: Vec<usize> = (0..values.len()).collect();
            order.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
            let third = order.len() / 3;
            (order[..third].to_vec(), order[order.len() - third..].to_vec(), "lowest third".into(), "highest third".into())
        };
        let mean_of = |set: &[usize]| -> Vec<f64> {
            let len = codes.mu[0].len();
            (0..len).map(|d| set.iter().map(|&i| codes.mu[i][d] as f64).sum::<f64>() / set.len().max(1) as f64).collect()
        };
        let (a, b) = (mean_of(&from_set), mean_of(&to_set));
        let direction: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (y - x) as f32).collect();
        let direction_norm = direction.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let probe: Vec<f64> = (0..direction.len())
            .map(|d| {
                let x: Vec<f64> = codes.mu.iter().map(|c| c[d] as f64).collect();
                if discrete {
                    nearest_mean_accuracy(&x, &values)
                } else {
                    linear_r2(&x, &values)
                }
            })
            .collect();
        let best_element =
            probe.iter().copied().enumerate().fold((0, f64::NEG_INFINITY), |b, (i, s)| if s > b.1 { (i, s) } else { b });
        out.push(Attribute {
            name: name.clone(),
            discrete,
            from,
            to,
            from_images: from_set.clone(),
            direction,
            direction_norm,
            probe,
            best_element,
            probe_kind: if discrete { "accuracy" } else { "r2" },
            chance,
        });
    }
    Ok(out)
}

/// `code + s·direction` for each strength.
pub fn apply(code: &[f32], direction: &[f32], strengths: &[f32]) -> Vec<Vec<f32>> {
    strengths.iter().map(|s| code.iter().zip(direction).map(|(c, d)| c + s * d).collect()).collect()
}

/// Held-out R² of y ≈ a + b·x (fit on the first two thirds, scored on the last third).
pub fn linear_r2(x: &[f64], y: &[f64]) -> f64 {
    let split = x.len() * 2 / 3;
    let (xt, yt) = (&x[..split], &y[..split]);
    let n = xt.len().max(1) as f64;
    let (mx, my) = (xt.iter().sum::<f64>() / n, yt.iter().sum::<f64>() / n);
    let sxx: f64 = xt.iter().map(|v| (v - mx).powi(2)).sum();
    let sxy: f64 = xt.iter().zip(yt).map(|(a, b)| (a - mx) * (b - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let (xs, ys) = (&x[split..], &y[split..]);
    let m = ys.iter().sum::<f64>() / ys.len().max(1) as f64;
    let ss_tot: f64 = ys.iter().map(|v| (v - m).powi(2)).sum();
    let ss_res: f64 = xs.iter().zip(ys).map(|(a, b)| (b - (my + slope * (a - mx))).powi(2)).sum();
    if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else {
        0.0
    }
}

/// Held-out accuracy of assigning each x to the class whose training mean is nearest.
pub fn nearest_mean_accuracy(x: &[f64], labels: &[f64]) -> f64 {
    let split = x.len() * 2 / 3;
    let mut classes: Vec<(f64, f64, usize)> = Vec::new(); // (label, sum, count)
    for (v, l) in x[..split].iter().zip(&labels[..split]) {
        match classes.iter_mut().find(|c| c.0 == *l) {
            Some(c) => {
                c.1 += v;
                c.2 += 1;
            }
            None => classes.push((*l, *v, 1)),
        }
    }
    let means: Vec<(f64, f64)> = classes.iter().map(|c| (c.0, c.1 / c.2 as f64)).collect();
    let test = &x[split..];
    let right = test
        .iter()
        .zip(&labels[split..])
        .filter(|(v, l)| means.iter().min_by(|a, b| (a.1 - **v).abs().total_cmp(&(b.1 - **v).abs())).is_some_and(|m| m.0 == **l))
        .count();
    right as f64 / test.len().max(1) as f64
}

/// Test images per grid when none are named.
const DEFAULT_ROWS: usize = 4;

/// Writes `latent/attributes-<name>.png` (a row per test image, columns the strengths) and
/// `latent/attributes.json`. Without `images`, each grid starts from the first test images of the
/// attribute's `from` group (grade-0 knees for the grade direction).
pub fn run(
    run: &LoadedRun,
    codes: &Codes,
    only: Option<&str>,
    images: Option<&[usize]>,
    strengths: &[f32],
) -> Result<AttributesSummary, AnalysisError> {
    let attributes = directions(run, codes, only)?;
    if let Some(bad) = images.unwrap_or_default().iter().find(|&&i| i >= codes.mu.len()) {
        return Err(AnalysisError::Input(format!("test image {bad} does not exist ({} encoded)", codes.mu.len())));
    }
    let dir = run.out_dir()?;
    for a in &attributes {
        let rows: Vec<usize> = match images {
            Some(list) => list.to_vec(),
            None => a.from_images.iter().copied().take(DEFAULT_ROWS).collect(),
        };
        let z: Vec<Vec<f32>> = rows.iter().flat_map(|&i| apply(&codes.mu[i], &a.direction, strengths)).collect();
        let decoded = run.decode(&z);
        let png = dir.join(format!("attributes-{}.png", a.name));
        vaelab_eval::grid::save_png(&vaelab_eval::grid::grid(&decoded, run.image_shape(), strengths.len()), &png)
            .map_err(|e| AnalysisError::Write(png.clone(), e))?;
    }
    if !attributes.is_empty() {
        let png = dir.join("attributes-probe.png");
        probe_picture(&run.spec.name, &attributes).save(&png).map_err(|e| AnalysisError::Write(png.clone(), e.to_string()))?;
    }
    let summary = AttributesSummary {
        run: run.spec.name.clone(),
        checkpoint_step: run.step,
        images: codes.mu.len(),
        strengths: strengths.to_vec(),
        attributes,
    };
    super::write_summary(&dir, "attributes.json", &summary)?;
    Ok(summary)
}

/// Columns at most in the probe picture; larger latents show the elements that predict some
/// attribute best.
const PROBE_COLUMNS: usize = 24;

/// `attributes-probe.png`: a row per attribute, a column per latent element, each cell shaded by
/// the element's probe score above chance and printed with the raw score. Disentangled factors show
/// as one dark cell per row, in different columns.
pub fn probe_picture(run_name: &str, attributes: &[Attribute]) -> image::RgbImage {
    let above: Vec<Vec<f64>> = attributes.iter().map(Attribute::probe_above_chance).collect();
    let elements = above.first().map_or(0, Vec::len);
    let mut keep: Vec<usize> = (0..elements).collect();
    if elements > PROBE_COLUMNS {
        let best = |e: usize| above.iter().map(|row| row[e]).fold(0.0, f64::max);
        keep.sort_by(|a, b| best(*b).total_cmp(&best(*a)));
        keep.truncate(PROBE_COLUMNS);
        keep.sort_unstable();
    }
    let rows: Vec<String> =
        attributes.iter().map(|a| format!("{} ({})", a.name, if a.discrete { "acc" } else { "R2" })).collect();
    let cols: Vec<String> = keep.iter().map(|e| format!("z{e}")).collect();
    let shade: Vec<Vec<f64>> = above.iter().map(|row| keep.iter().map(|&e| row[e]).collect()).collect();
    let shown: Vec<Vec<String>> =
        attributes.iter().map(|a| keep.iter().map(|&e| format!("{:.2}", a.probe[e].max(-9.99))).collect()).collect();
    let title = format!("{run_name}: how well each latent element alone predicts each attribute");
    vaelab_eval::report::heatmap::heatmap(&title, &rows, &cols, &shade, &shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_score_informative_inputs_high_and_noise_low() {
        let x: Vec<f64> = (0..300).map(|i| (i % 10) as f64).collect();
        let y: Vec<f64> = x.iter().map(|v| 2.0 * v + 1.0).collect();
        assert!((linear_r2(&x, &y) - 1.0).abs() < 1e-12);
        let noise: Vec<f64> = (0..300).map(|i| ((i * 7919 % 101) as f64).sin()).collect();
        assert!(linear_r2(&noise, &y) < 0.1);
        let labels: Vec<f64> = x.iter().map(|v| if *v < 5.0 { 0.0 } else { 1.0 }).collect();
        assert_eq!(nearest_mean_accuracy(&x, &labels), 1.0);
        assert!(nearest_mean_accuracy(&noise, &labels) < 0.7);
    }
}
