//! Disentanglement metrics inside `vaelab eval`, for datasets with ground-truth factors.
//!
//! * `mig`, `sap`, `dci` score the posterior means of the evaluated images against their factors.
//!   Factors with at most 64 distinct values are used as classes (their rank); others are cut into 20
//!   equal-width bins, as disentanglement_lib discretizes codes. SAP and DCI fit their predictors on
//!   the first two thirds of the images and score them on the last third.
//! * `factor_vae` and `beta_vae` need images rendered from chosen factor values, which the shapes
//!   dataset provides; they use fewer votes than disentanglement_lib's defaults (see [`VOTES`]), to
//!   keep an evaluation within minutes on a CPU.

use super::disentangle::{self, BetaVaeSettings, FactorVaeSettings};
use super::domain_fd::FeatureEncoder;
use super::MetricEntry;
use crate::model::Model;
use crate::nn::{Backend, ParamStore};
use crate::spec::Experiment;
use std::collections::BTreeMap;
use vaelab_datasets::shapes::{ShapeFactors, FACTOR_SIZES};
use vaelab_datasets::{ImageBatch, StreamRng};

/// The metric names this module computes.
pub const NAMES: [&str; 6] = ["mig", "sap", "dci", "dci_linear", "factor_vae", "beta_vae"];

/// (training votes, evaluation votes) of the FactorVAE and BetaVAE scores in `vaelab eval`.
pub const VOTES: (usize, usize) = (800, 400);

/// Class indices of each factor column.
fn factor_classes(factors: &[Vec<f32>]) -> Vec<Vec<usize>> {
    let k = factors.first().map_or(0, Vec::len);
    let mut columns: Vec<Vec<usize>> = Vec::new();
    for j in 0..k {
        let col: Vec<f32> = factors.iter().map(|f| f[j]).collect();
        let mut distinct = col.clone();
        distinct.sort_by(f32::total_cmp);
        distinct.dedup();
        columns.push(if distinct.len() <= 64 {
            col.iter().map(|v| distinct.partition_point(|d| d < v)).collect()
        } else {
            let as_f64: Vec<f64> = col.iter().map(|v| *v as f64).collect();
            disentangle::discretize(&as_f64, 20).into_iter().map(|b| b - 1).collect()
        });
    }
    (0..factors.len()).map(|i| columns.iter().map(|c| c[i]).collect()).collect()
}

fn entry(value: f64, definition: String) -> MetricEntry {
    MetricEntry { value, higher_is_better: true, definition, note: None }
}

/// Computes the requested factor metrics; a metric that cannot be computed for this dataset is
/// returned as a failure with the reason.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<D: Backend>(
    wanted: &[&str],
    spec: &Experiment,
    model: &Model,
    store: &ParamStore<D>,
    codes: &[Vec<f32>],
    real: &ImageBatch,
    factor_names: &[String],
    metrics: &mut BTreeMap<String, MetricEntry>,
    failed: &mut BTreeMap<String, String>,
) {
    let has_factors = !factor_names.is_empty() && real.factors.first().is_some_and(|f| !f.is_empty());
    let needs_factors = |name: &str, failed: &mut BTreeMap<String, String>| {
        failed.insert(name.into(), format!("`{name}` needs ground-truth factors; this dataset has none"));
    };
    let codes64: Vec<Vec<f64>> = codes.iter().map(|c| c.iter().map(|v| *v as f64).collect()).collect();
    let classes = if has_factors { factor_classes(&real.factors) } else { vec![] };
    let split = codes64.len() * 2 / 3;
    let n = codes64.len();
    // SAP and DCI fit on 2/3 of the images and score the rest. In a seeded random order, so that both
    // parts hold the same mix of factor values in whatever order the images came.
    // (Only when one of them is asked for: the codes are copied.)
    let (codes_fit, classes_fit): (Vec<Vec<f64>>, Vec<_>) =
        if has_factors && wanted.iter().any(|w| matches!(*w, "sap" | "dci" | "dci_linear")) {
            let shuffled = vaelab_datasets::stratified_order(&vec![None; n], spec.seed, "factor-split");
            shuffled.iter().map(|&i| (codes64[i].clone(), classes[i].clone())).unzip()
        } else {
            (vec![], vec![])
        };
    for &name in wanted {
        if name != "factor_vae" && name != "beta_vae" && !has_factors {
            needs_factors(name, failed);
            continue;
        }
        match name {
            "mig" => match disentangle::mig(&codes64, &classes) {
                Ok(m) => {
                    metrics.insert(
                        "mig".into(),
                        entry(
                            m.score,
                            format!(
                                "Mutual Information Gap (Chen et al. 2018) over {n} images, codes in 20 bins; factors {}",
                                factor_names.join(", ")
                            ),
                        ),
                    );
                }
                Err(e) => {
                    failed.insert("mig".into(), e);
                }
            },
            "sap" if n >= 6 => {
                let s =
                    disentangle::sap((&codes_fit[..split], &classes_fit[..split]), (&codes_fit[split..], &classes_fit[split..]));
                metrics.insert("sap".into(), entry(s.score, format!("SAP (Kumar et al. 2018), LinearSVC(C=0.01, balanced) per code and factor, fitted on {split} images, scored on {}", n - split)));
            }
            "dci" | "dci_linear" if n >= 6 => {
                let (fit, held_out) =
                    ((&codes_fit[..split], &classes_fit[..split]), (&codes_fit[split..], &classes_fit[split..]));
                let (d, how, informativeness) = if name == "dci" {
                    (
                        disentangle::dci(fit, held_out),
                        "gradient-boosted-tree importances (disentanglement_lib)",
                        "mean held-out accuracy",
                    )
                } else {
                    (disentangle::dci_linear(fit, held_out), "least-squares importances", "mean held-out R²")
                };
                let def = |part: &str| {
                    format!("DCI {part} (Eastwood & Williams 2018), {how}, {split} fit / {} held-out images", n - split)
                };
                metrics.insert(format!("{name}.disentanglement"), entry(d.disentanglement, def("disentanglement")));
                metrics.insert(format!("{name}.completeness"), entry(d.completeness, def("completeness")));
                metrics.insert(
                    format!("{name}.informativeness"),
                    entry(d.informativeness, def(&format!("informativeness ({informativeness})"))),
                );
            }
            "sap" | "dci" | "dci_linear" => {
                failed.insert(name.into(), format!("`{name}` needs at least 6 evaluation images, got {n}"));
            }
            "factor_vae" | "beta_vae" => {
                if !matches!(spec.data.dataset, crate::spec::Dataset::Shapes) {
                    failed.insert(
                        name.into(),
                        format!("`{name}` renders images from chosen factor values, which only the Shapes dataset does"),
                    );
                    continue;
                }
                let size = spec.data.size;
                let encoder = FeatureEncoder::new(model, store, spec.seed);
                let mut represent = |factors: &[Vec<usize>]| -> Vec<Vec<f64>> {
                    let pixels: Vec<f32> = factors
                        .iter()
                        .flat_map(|f| ShapeFactors { shape: f[0], scale: f[1], rotation: f[2], x: f[3], y: f[4] }.render(size))
                        .collect();
                    let batch = ImageBatch { n: factors.len(), c: 1, h: size, w: size, pixels, factors: vec![], bit_depth: 8 };
                    encoder.features(&batch, spec.data.batch)
                };
                let mut rng = StreamRng::new(spec.seed, &[vaelab_datasets::tag(name)]);
                if name == "factor_vae" {
                    let settings = FactorVaeSettings { train_votes: VOTES.0, eval_votes: VOTES.1, ..Default::default() };
                    let s = disentangle::factor_vae_score(&FACTOR_SIZES, &mut represent, &mut rng, settings);
                    metrics.insert("factor_vae".into(), entry(s.eval_accuracy, format!("FactorVAE score (Kim & Mnih 2018): majority-vote accuracy on {} evaluation votes ({} training votes, batches of 64, pruning std < 0.05; {} active dimensions)", VOTES.1, VOTES.0, s.active_dims)));
                } else {
                    let settings = BetaVaeSettings { train_points: VOTES.0, eval_points: VOTES.1, ..Default::default() };
                    let s = disentangle::beta_vae_score(&FACTOR_SIZES, &mut represent, &mut rng, settings);
                    metrics.insert("beta_vae".into(), entry(s.eval_accuracy, format!("BetaVAE score (Higgins et al. 2017): logistic-regression accuracy on {} evaluation points ({} training points, batches of 64)", VOTES.1, VOTES.0)));
                }
            }
            _ => {}
        }
    }
}
