//! Disentanglement metrics inside `vaelab eval`, for datasets with ground-truth factors.
//!
//! * `mig`, `sap`, `dci` score the posterior means of the evaluated images against their factors.
//!   Factors with at most 64 distinct values are used as classes (their rank); others are cut into 20
//!   equal-width bins, as disentanglement_lib discretizes codes. SAP and DCI fit their predictors on
//!   the first two thirds of the images and score them on the last third.
//! * `factor_vae` and `beta_vae` need images rendered from chosen factor values, which the shapes
//!   dataset provides; they use fewer votes than disentanglement_lib's defaults (see [`VOTES`]), to
//!   keep an evaluation within minutes on a CPU.

use super::domain_fd::FeatureEncoder;
use super::MetricEntry;
use crate::progress::progress_bar;
use dfdx::prelude::Cpu;
use rayon::prelude::*;
use std::collections::BTreeMap;
use vaelab_datasets::shapes::{ShapeFactors, FACTOR_SIZES};
use vaelab_datasets::{ImageBatch, StreamRng};
use vaelab_metrics::disentangle::{self, BetaVaeSettings, FactorVaeSettings};
use vaelab_models::model::Model;
use vaelab_nn::{Backend, ParamStore};
use vaelab_spec::Experiment;

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

/// What the factor metrics read: the codes (as f64), their factors' class indices, and for SAP and
/// DCI a seeded split into 2/3 to fit and 1/3 to score.
struct FactorData<'a> {
    codes: Vec<Vec<f64>>,
    classes: Vec<Vec<usize>>,
    /// Codes and classes in a seeded random order (empty unless SAP or DCI is asked for: they are
    /// copies), so that both parts hold the same mix of factor values in whatever order the images came.
    shuffled: (Vec<Vec<f64>>, Vec<Vec<usize>>),
    split: usize,
    factor_names: &'a [String],
}

type Entries = Vec<(String, MetricEntry)>;

impl<'a> FactorData<'a> {
    fn new(wanted: &[&str], seed: u64, codes: &[Vec<f32>], real: &ImageBatch, factor_names: &'a [String]) -> Self {
        let codes: Vec<Vec<f64>> = codes.iter().map(|c| c.iter().map(|v| *v as f64).collect()).collect();
        let classes = factor_classes(&real.factors);
        let n = codes.len();
        let shuffled = if wanted.iter().any(|w| matches!(*w, "sap" | "dci" | "dci_linear")) {
            let order = vaelab_datasets::stratified_order(&vec![None; n], seed, "factor-split");
            order.iter().map(|&i| (codes[i].clone(), classes[i].clone())).unzip()
        } else {
            (vec![], vec![])
        };
        FactorData { codes, classes, shuffled, split: n * 2 / 3, factor_names }
    }

    fn n(&self) -> usize {
        self.codes.len()
    }

    /// (fit, held-out) parts of the shuffled codes and classes.
    #[allow(clippy::type_complexity)]
    fn parts(&self) -> ((&[Vec<f64>], &[Vec<usize>]), (&[Vec<f64>], &[Vec<usize>])) {
        let (codes, classes) = &self.shuffled;
        ((&codes[..self.split], &classes[..self.split]), (&codes[self.split..], &classes[self.split..]))
    }

    fn mig(&self) -> Result<Entries, String> {
        let m = disentangle::mig(&self.codes, &self.classes)?;
        let def = format!(
            "Mutual Information Gap (Chen et al. 2018) over {} images, codes in 20 bins; factors {}",
            self.n(),
            self.factor_names.join(", ")
        );
        Ok(vec![("mig".into(), entry(m.score, def))])
    }

    fn sap(&self) -> Entries {
        let (fit, held_out) = self.parts();
        let s = disentangle::sap(fit, held_out);
        let def = format!(
            "SAP (Kumar et al. 2018), LinearSVC(C=0.01, balanced) per code and factor, fitted on {} images, scored on {}",
            self.split,
            self.n() - self.split
        );
        vec![("sap".into(), entry(s.score, def))]
    }

    /// `dci` (gradient-boosted trees, as disentanglement_lib) or `dci_linear` (least squares).
    fn dci(&self, name: &str) -> Entries {
        let (fit, held_out) = self.parts();
        let (d, how, informativeness) = if name == "dci" {
            (disentangle::dci(fit, held_out), "gradient-boosted-tree importances (disentanglement_lib)", "mean held-out accuracy")
        } else {
            (disentangle::dci_linear(fit, held_out), "least-squares importances", "mean held-out R²")
        };
        let def = |part: &str| {
            format!(
                "DCI {part} (Eastwood & Williams 2018), {how}, {} fit / {} held-out images",
                self.split,
                self.n() - self.split
            )
        };
        vec![
            (format!("{name}.disentanglement"), entry(d.disentanglement, def("disentanglement"))),
            (format!("{name}.completeness"), entry(d.completeness, def("completeness"))),
            (format!("{name}.informativeness"), entry(d.informativeness, def(&format!("informativeness ({informativeness})")))),
        ]
    }
}

/// The codes of shapes images rendered from `factors` (one batch), counted on `bar`.
fn encode_rendered<D: Backend>(
    encoder: &FeatureEncoder<D>,
    factors: &[Vec<usize>],
    size: usize,
    batch: usize,
    bar: &indicatif::ProgressBar,
) -> Vec<Vec<f64>> {
    let mut pixels = vec![0f32; factors.len() * size * size];
    for (f, img) in factors.iter().zip(pixels.chunks_mut(size * size)) {
        ShapeFactors { shape: f[0], scale: f[1], rotation: f[2], x: f[3], y: f[4] }.render_into(size, img);
    }
    let images = ImageBatch { n: factors.len(), c: 1, h: size, w: size, pixels, factors: vec![], bit_depth: 8 };
    let codes = encoder.features(&images, batch);
    bar.inc(factors.len() as u64);
    codes
}

/// The FactorVAE or BetaVAE score: both encode images rendered from chosen factor values.
fn rendered_score<D: Backend>(name: &str, spec: &Experiment, model: &Model, store: &ParamStore<D>) -> Result<Entries, String> {
    if !matches!(spec.data.dataset, vaelab_spec::Dataset::Shapes) {
        return Err(format!("`{name}` renders images from chosen factor values, which only the Shapes dataset does"));
    }
    let size = spec.data.size;
    // The scores pass tens of thousands of factor vectors at once. On the CPU each batch is rendered and
    // encoded on its own thread, so the single-threaded parts (rendering, copies, activations) run in
    // parallel too; other devices (CUDA's handles are not `Sync`) take the batches in order. A batch
    // holds the same images as when the scores encoded one batch per call, so the codes are the same.
    let batch = spec.data.batch.max(1);
    let factor_vae = FactorVaeSettings { train_votes: VOTES.0, eval_votes: VOTES.1, ..Default::default() };
    let beta_vae = BetaVaeSettings { train_points: VOTES.0, eval_points: VOTES.1, ..Default::default() };
    // Tens of thousands of images, most of a minute on two cores: a bar counts them (hidden when
    // stderr is not a terminal).
    let (images, what) = if name == "factor_vae" {
        (factor_vae.images(), "FactorVAE score: encoding")
    } else {
        (beta_vae.images(), "BetaVAE score: encoding")
    };
    let bar = progress_bar(true, images, what);
    let mut represent = |factors: &[Vec<usize>]| -> Vec<Vec<f64>> {
        let per_batch: Vec<Vec<Vec<f64>>> = match (store as &dyn std::any::Any).downcast_ref::<ParamStore<Cpu>>() {
            Some(cpu) => {
                let encoder = FeatureEncoder::new(model, cpu, spec.seed);
                factors.par_chunks(batch).map(|chunk| encode_rendered(&encoder, chunk, size, batch, &bar)).collect()
            }
            None => {
                let encoder = FeatureEncoder::new(model, store, spec.seed);
                factors.chunks(batch).map(|chunk| encode_rendered(&encoder, chunk, size, batch, &bar)).collect()
            }
        };
        per_batch.into_iter().flatten().collect()
    };
    let mut rng = StreamRng::new(spec.seed, &[vaelab_datasets::tag(name)]);
    let entries = if name == "factor_vae" {
        let s = disentangle::factor_vae_score(&FACTOR_SIZES, &mut represent, &mut rng, factor_vae);
        vec![("factor_vae".into(), entry(s.eval_accuracy, format!("FactorVAE score (Kim & Mnih 2018): majority-vote accuracy on {} evaluation votes ({} training votes, batches of 64, pruning std < 0.05; {} active dimensions)", VOTES.1, VOTES.0, s.active_dims)))]
    } else {
        let s = disentangle::beta_vae_score(&FACTOR_SIZES, &mut represent, &mut rng, beta_vae);
        vec![("beta_vae".into(), entry(s.eval_accuracy, format!("BetaVAE score (Higgins et al. 2017): logistic-regression accuracy on {} evaluation points ({} training points, batches of 64)", VOTES.1, VOTES.0)))]
    };
    bar.finish_and_clear();
    Ok(entries)
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
    let data = has_factors.then(|| FactorData::new(wanted, spec.seed, codes, real, factor_names));
    for &name in wanted {
        let result = match (name, &data) {
            ("factor_vae" | "beta_vae", _) => rendered_score(name, spec, model, store),
            (_, None) => Err(format!("`{name}` needs ground-truth factors; this dataset has none")),
            ("mig", Some(d)) => d.mig(),
            ("sap" | "dci" | "dci_linear", Some(d)) if d.n() < 6 => {
                Err(format!("`{name}` needs at least 6 evaluation images, got {}", d.n()))
            }
            ("sap", Some(d)) => Ok(d.sap()),
            ("dci" | "dci_linear", Some(d)) => Ok(d.dci(name)),
            _ => continue,
        };
        match result {
            Ok(entries) => metrics.extend(entries),
            Err(why) => {
                failed.insert(name.into(), why);
            }
        }
    }
}
