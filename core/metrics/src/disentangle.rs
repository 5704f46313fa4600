//! Disentanglement scores of a representation against ground-truth factors, following the definitions
//! and default settings of disentanglement_lib (Locatello et al. 2019).
//!
//! * [`mig`]: the Mutual Information Gap (Chen et al. 2018).
//! * [`factor_vae_score`]: the FactorVAE score (Kim & Mnih 2018).
//! * [`beta_vae_score`]: the BetaVAE score (Higgins et al. 2017).
//! * [`sap`]: the Separated Attribute Predictability score (Kumar et al. 2018).
//! * [`dci`]: disentanglement, completeness and informativeness (Eastwood & Williams 2018), with a
//!   linear (least-squares) importance estimator instead of gradient-boosted trees.

use rayon::prelude::*;

/// disentanglement_lib's histogram discretizer: each code dimension is cut into `bins` equal-width
/// bins between its minimum and maximum (`np.histogram` edges), and a value's bin is the number of
/// left edges at or below it (`np.digitize` against the edges without the last), 1…bins.
pub fn discretize(values: &[f64], bins: usize) -> Vec<usize> {
    let (mut lo, mut hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
    if lo == hi {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let step = (hi - lo) / bins as f64;
    let edges: Vec<f64> = (0..bins).map(|k| k as f64 * step + lo).collect();
    values.iter().map(|v| edges.iter().filter(|e| **e <= *v).count()).collect()
}

/// Mutual information of two discrete labelings in nats: Σ p(a,b) ln(p(a,b) / (p(a) p(b))).
pub fn mutual_information(a: &[usize], b: &[usize]) -> f64 {
    let n = a.len() as f64;
    let (na, nb) = (a.iter().max().map_or(0, |m| m + 1), b.iter().max().map_or(0, |m| m + 1));
    let mut joint = vec![0usize; na * nb];
    let (mut ca, mut cb) = (vec![0usize; na], vec![0usize; nb]);
    for (x, y) in a.iter().zip(b) {
        joint[x * nb + y] += 1;
        ca[*x] += 1;
        cb[*y] += 1;
    }
    let mut mi = 0.0;
    for x in 0..na {
        for y in 0..nb {
            let nxy = joint[x * nb + y];
            if nxy > 0 {
                mi += nxy as f64 / n * ((nxy as f64 * n) / (ca[x] as f64 * cb[y] as f64)).ln();
            }
        }
    }
    mi.max(0.0)
}

/// MIG and what it is made of.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Mig {
    pub score: f64,
    /// Mutual information (nats) of each code dimension (rows) with each factor (columns).
    pub mutual_information: Vec<Vec<f64>>,
    /// Entropy (nats) of each factor.
    pub factor_entropy: Vec<f64>,
}

/// MIG = mean over factors k of (I(z_a; v_k) − I(z_b; v_k)) / H(v_k), where z_a and z_b are the two
/// code dimensions with the most information about v_k; codes discretized into 20 bins
/// (disentanglement_lib `mig.py`, default `num_train` = 10,000 points chosen by the caller).
/// `codes[i]` and `factors[i]` describe point i; factors are discrete values 0, 1, …
pub fn mig(codes: &[Vec<f64>], factors: &[Vec<usize>]) -> Result<Mig, String> {
    let (n, dims, k) = (codes.len(), codes.first().map_or(0, Vec::len), factors.first().map_or(0, Vec::len));
    if n == 0 || n != factors.len() {
        return Err(format!("{n} codes for {} factor rows", factors.len()));
    }
    if dims < 2 || k == 0 {
        return Err(format!("MIG needs at least 2 code dimensions and 1 factor, got {dims} and {k}"));
    }
    let column = |d: usize| codes.iter().map(|c| c[d]).collect::<Vec<f64>>();
    let discrete: Vec<Vec<usize>> = (0..dims).map(|d| discretize(&column(d), 20)).collect();
    let factor_cols: Vec<Vec<usize>> = (0..k).map(|j| factors.iter().map(|f| f[j]).collect()).collect();
    let mi: Vec<Vec<f64>> = discrete.iter().map(|z| factor_cols.iter().map(|v| mutual_information(z, v)).collect()).collect();
    let factor_entropy: Vec<f64> = factor_cols.iter().map(|v| mutual_information(v, v)).collect();
    let mut total = 0.0;
    for (j, h) in factor_entropy.iter().enumerate() {
        let mut col: Vec<f64> = mi.iter().map(|row| row[j]).collect();
        col.sort_by(|a, b| b.total_cmp(a));
        total += (col[0] - col[1]) / h;
    }
    Ok(Mig { score: total / k as f64, mutual_information: mi, factor_entropy })
}

/// Factor vectors (one per point, values 0 ≤ v < size) → codes (one per point, in the same order): an
/// encoder applied to images rendered from the factors, or a synthetic code for tests. The scores pass
/// every point of a phase in one call (tens of thousands), so an encoder may batch them in parallel.
pub type Representation<'a> = dyn FnMut(&[Vec<usize>]) -> Vec<Vec<f64>> + 'a;

/// The FactorVAE score's settings (disentanglement_lib defaults).
#[derive(Clone, Copy, Debug)]
pub struct FactorVaeSettings {
    pub batch: usize,
    pub train_votes: usize,
    pub eval_votes: usize,
    /// Points for the global variance of each code dimension.
    pub variance_points: usize,
    /// Dimensions whose global standard deviation is below this are pruned (collapsed).
    pub prune_threshold: f64,
}

impl Default for FactorVaeSettings {
    fn default() -> Self {
        FactorVaeSettings { batch: 64, train_votes: 10_000, eval_votes: 5_000, variance_points: 10_000, prune_threshold: 0.05 }
    }
}

impl FactorVaeSettings {
    /// How many factor vectors [`factor_vae_score`] represents: the variance points, then one batch
    /// per vote (a progress bar's total). Fewer when no code dimension is active: the score then stops
    /// after the variance points.
    pub fn images(&self) -> usize {
        self.variance_points + (self.train_votes + self.eval_votes) * self.batch
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FactorVae {
    pub train_accuracy: f64,
    pub eval_accuracy: f64,
    /// How many code dimensions survived pruning.
    pub active_dims: usize,
}

/// Unbiased variance of each column.
fn variances(rows: &[Vec<f64>]) -> Vec<f64> {
    let (n, d) = (rows.len() as f64, rows[0].len());
    (0..d)
        .map(|j| {
            let mean = rows.iter().map(|r| r[j]).sum::<f64>() / n;
            rows.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / (n - 1.0)
        })
        .collect()
}

/// The FactorVAE score (Kim & Mnih 2018, as in disentanglement_lib `factor_vae.py`): codes are
/// divided by their global standard deviation; for each vote a factor k is fixed across a batch of
/// otherwise random factor vectors, and the active dimension with the least normalised variance
/// votes for k; a majority-vote classifier (dimension → factor) is fitted on training votes and its
/// accuracy reported on both vote sets. `represent` maps factor vectors (values 0 ≤ v < size) to codes;
/// all sampling uses `rng`.
pub fn factor_vae_score(
    factor_sizes: &[usize],
    represent: &mut Representation<'_>,
    rng: &mut vaelab_datasets::StreamRng,
    s: FactorVaeSettings,
) -> FactorVae {
    let sample = |rng: &mut vaelab_datasets::StreamRng, n: usize| -> Vec<Vec<usize>> {
        (0..n).map(|_| factor_sizes.iter().map(|&size| rng.below(size)).collect()).collect()
    };
    let global = variances(&represent(&sample(rng, s.variance_points)));
    let active: Vec<usize> = (0..global.len()).filter(|&j| global[j].sqrt() >= s.prune_threshold).collect();
    if active.is_empty() {
        return FactorVae { train_accuracy: 0.0, eval_accuracy: 0.0, active_dims: 0 };
    }
    let mut votes = |rng: &mut vaelab_datasets::StreamRng, count: usize| {
        // Every vote's batch is drawn first and all are represented in one call (row order kept),
        // so that an encoder can work through them in parallel.
        let draws: Vec<(usize, Vec<Vec<usize>>)> = (0..count)
            .map(|_| {
                let k = rng.below(factor_sizes.len());
                let mut factors = sample(rng, s.batch);
                let fixed = factors[0][k];
                factors.iter_mut().for_each(|f| f[k] = fixed);
                (k, factors)
            })
            .collect();
        let codes = represent(&draws.iter().flat_map(|(_, f)| f.iter().cloned()).collect::<Vec<_>>());
        let mut v = vec![vec![0usize; active.len()]; factor_sizes.len()];
        for ((k, _), batch) in draws.iter().zip(codes.chunks(s.batch)) {
            let local = variances(batch);
            let argmin = (0..active.len())
                .min_by(|&a, &b| (local[active[a]] / global[active[a]]).total_cmp(&(local[active[b]] / global[active[b]])))
                .expect("active dimensions exist");
            v[*k][argmin] += 1;
        }
        v
    };
    let (train, eval) = (votes(rng, s.train_votes), votes(rng, s.eval_votes));
    // For each active dimension, the factor it votes for most often (ties: the first).
    let classifier: Vec<usize> = (0..active.len())
        .map(|d| (0..factor_sizes.len()).fold(0, |best, k| if train[k][d] > train[best][d] { k } else { best }))
        .collect();
    let accuracy = |v: &[Vec<usize>]| {
        let right: usize = classifier.iter().enumerate().map(|(d, &k)| v[k][d]).sum();
        right as f64 / v.iter().flatten().sum::<usize>().max(1) as f64
    };
    FactorVae { train_accuracy: accuracy(&train), eval_accuracy: accuracy(&eval), active_dims: active.len() }
}

/// The BetaVAE score's settings (disentanglement_lib defaults).
#[derive(Clone, Copy, Debug)]
pub struct BetaVaeSettings {
    pub batch: usize,
    pub train_points: usize,
    pub eval_points: usize,
}

impl Default for BetaVaeSettings {
    fn default() -> Self {
        BetaVaeSettings { batch: 64, train_points: 10_000, eval_points: 5_000 }
    }
}

impl BetaVaeSettings {
    /// How many factor vectors [`beta_vae_score`] represents: two batches per point (a progress
    /// bar's total).
    pub fn images(&self) -> usize {
        (self.train_points + self.eval_points) * 2 * self.batch
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BetaVae {
    pub train_accuracy: f64,
    pub eval_accuracy: f64,
}

/// The BetaVAE score (Higgins et al. 2017, as in disentanglement_lib `beta_vae.py`): each point fixes
/// one random factor k across two batches of otherwise independent factor vectors; its feature is the
/// mean absolute difference of the two batches' codes; a multinomial logistic regression
/// (scikit-learn's defaults: L2 with C = 1, unpenalised intercept) predicts k from it. Reports the
/// classifier's accuracy on the training points and on fresh evaluation points.
pub fn beta_vae_score(
    factor_sizes: &[usize],
    represent: &mut Representation<'_>,
    rng: &mut vaelab_datasets::StreamRng,
    s: BetaVaeSettings,
) -> BetaVae {
    let mut points = |rng: &mut vaelab_datasets::StreamRng, count: usize| {
        // Every point's two batches are drawn first and all are represented in one call (row order
        // kept: a₀, b₀, a₁, b₁, …), so that an encoder can work through them in parallel.
        let mut y = Vec::with_capacity(count);
        let mut factors = Vec::with_capacity(2 * count * s.batch);
        for _ in 0..count {
            let k = rng.below(factor_sizes.len());
            let mut draw = || -> Vec<Vec<usize>> {
                (0..s.batch).map(|_| factor_sizes.iter().map(|&size| rng.below(size)).collect()).collect()
            };
            let a = draw();
            let mut b = draw();
            for (fa, fb) in a.iter().zip(b.iter_mut()) {
                fb[k] = fa[k];
            }
            factors.extend(a);
            factors.extend(b);
            y.push(k);
        }
        let codes = represent(&factors);
        let x: Vec<Vec<f64>> = codes
            .chunks(2 * s.batch)
            .map(|pair| {
                let (ra, rb) = pair.split_at(s.batch);
                let dims = ra[0].len();
                (0..dims).map(|d| ra.iter().zip(rb).map(|(p, q)| (p[d] - q[d]).abs()).sum::<f64>() / s.batch as f64).collect()
            })
            .collect();
        (x, y)
    };
    let (train_x, train_y) = points(rng, s.train_points);
    let (eval_x, eval_y) = points(rng, s.eval_points);
    let model = LogisticRegression::fit(&train_x, &train_y, factor_sizes.len(), 1.0);
    BetaVae { train_accuracy: model.accuracy(&train_x, &train_y), eval_accuracy: model.accuracy(&eval_x, &eval_y) }
}

/// Multinomial logistic regression minimising C·Σ cross-entropy + ½‖W‖² (intercepts unpenalised),
/// by gradient descent with backtracking line search.
struct LogisticRegression {
    /// classes × (features + 1); the last column is the intercept.
    w: Vec<Vec<f64>>,
}

impl LogisticRegression {
    fn scores(&self, x: &[f64]) -> Vec<f64> {
        self.w.iter().map(|row| row[..x.len()].iter().zip(x).map(|(a, b)| a * b).sum::<f64>() + row[x.len()]).collect()
    }

    fn probabilities(&self, x: &[f64]) -> Vec<f64> {
        let s = self.scores(x);
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|v| v / z).collect()
    }

    fn objective(&self, x: &[Vec<f64>], y: &[usize], c: f64) -> f64 {
        let nll: f64 = x.iter().zip(y).map(|(xi, &yi)| -self.probabilities(xi)[yi].max(1e-300).ln()).sum();
        let penalty: f64 = self.w.iter().map(|row| row[..row.len() - 1].iter().map(|v| v * v).sum::<f64>()).sum();
        c * nll + 0.5 * penalty
    }

    fn fit(x: &[Vec<f64>], y: &[usize], classes: usize, c: f64) -> LogisticRegression {
        let d = x.first().map_or(0, Vec::len);
        let mut model = LogisticRegression { w: vec![vec![0.0; d + 1]; classes] };
        let mut step = 1.0;
        let mut value = model.objective(x, y, c);
        for _ in 0..500 {
            let mut grad = vec![vec![0.0; d + 1]; classes];
            for (xi, &yi) in x.iter().zip(y) {
                let p = model.probabilities(xi);
                for (k, g) in grad.iter_mut().enumerate() {
                    let r = c * (p[k] - if k == yi { 1.0 } else { 0.0 });
                    for j in 0..d {
                        g[j] += r * xi[j];
                    }
                    g[d] += r;
                }
            }
            for (g, w) in grad.iter_mut().zip(&model.w) {
                for j in 0..d {
                    g[j] += w[j];
                }
            }
            let norm2: f64 = grad.iter().flatten().map(|v| v * v).sum();
            if norm2.sqrt() < 1e-6 * (1.0 + value.abs()) {
                break;
            }
            // Backtracking (Armijo) along the negative gradient.
            loop {
                let trial = LogisticRegression {
                    w: model.w.iter().zip(&grad).map(|(w, g)| w.iter().zip(g).map(|(a, b)| a - step * b).collect()).collect(),
                };
                let v = trial.objective(x, y, c);
                if v <= value - 0.5 * step * norm2 || step < 1e-12 {
                    model = trial;
                    value = v;
                    step *= 2.0;
                    break;
                }
                step *= 0.5;
            }
        }
        model
    }

    fn accuracy(&self, x: &[Vec<f64>], y: &[usize]) -> f64 {
        let right = x
            .iter()
            .zip(y)
            .filter(|(xi, &yi)| {
                let s = self.scores(xi);
                (0..s.len()).fold(0, |best, k| if s[k] > s[best] { k } else { best }) == yi
            })
            .count();
        right as f64 / x.len().max(1) as f64
    }
}

/// SAP and its score matrix.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Sap {
    pub score: f64,
    /// Test accuracy of predicting each factor (columns) from each code dimension alone (rows).
    pub matrix: Vec<Vec<f64>>,
}

/// The SAP score (Kumar et al. 2018, as in disentanglement_lib `sap_score.py` for discrete factors):
/// for each code dimension and factor, a one-dimensional linear SVM in scikit-learn's `LinearSVC(C=0.01,
/// class_weight="balanced")` formulation (squared hinge, L2 penalty including the intercept) is fitted
/// on the training points and scored on the test points. As liblinear trains it (`train()` in
/// `linear.cpp`): with more than two classes, one-vs-rest planes whose positives carry C·(class weight)
/// and negatives C; with two classes, **one** plane, each side carrying C·(its class weight), the
/// larger label on the positive side (scikit-learn's `decision_function > 0`); SAP is the mean over factors of the gap between the two best dimensions. The SVMs
/// are solved exactly (Newton's method on the piecewise-quadratic objective) where liblinear stops at
/// a tolerance, so single predictions at the decision boundary may differ from scikit-learn's.
pub fn sap(train: (&[Vec<f64>], &[Vec<usize>]), test: (&[Vec<f64>], &[Vec<usize>])) -> Sap {
    let (dims, k) = (train.0[0].len(), train.1[0].len());
    let mut matrix = vec![vec![0.0; k]; dims];
    for (i, row) in matrix.iter_mut().enumerate() {
        let x: Vec<f64> = train.0.iter().map(|c| c[i]).collect();
        let xt: Vec<f64> = test.0.iter().map(|c| c[i]).collect();
        for (j, cell) in row.iter_mut().enumerate() {
            let y: Vec<usize> = train.1.iter().map(|f| f[j]).collect();
            let yt: Vec<usize> = test.1.iter().map(|f| f[j]).collect();
            let svm = OneDimensionalSvm::fit(&x, &y, 0.01);
            *cell = xt.iter().zip(&yt).filter(|(v, c)| svm.predict(**v) == **c).count() as f64 / xt.len() as f64;
        }
    }
    let mut total = 0.0;
    for j in 0..k {
        let mut col: Vec<f64> = matrix.iter().map(|r| r[j]).collect();
        col.sort_by(|a, b| b.total_cmp(a));
        total += col[0] - col.get(1).copied().unwrap_or(0.0);
    }
    Sap { score: total / k as f64, matrix }
}

/// One-vs-rest linear SVMs on a single feature: (w, b) per class.
struct OneDimensionalSvm {
    classes: Vec<usize>,
    planes: Vec<(f64, f64)>,
}

impl OneDimensionalSvm {
    fn fit(x: &[f64], y: &[usize], c: f64) -> OneDimensionalSvm {
        let mut classes: Vec<usize> = y.to_vec();
        classes.sort_unstable();
        classes.dedup();
        let n = y.len() as f64;
        // "balanced": class weight n / (classes · count).
        let weight = |cls: usize| n / (classes.len() as f64 * y.iter().filter(|v| **v == cls).count() as f64);
        if classes.len() == 2 {
            // liblinear's binary case: one plane, t = +1 for the larger label.
            let sample: Vec<(f64, f64, f64)> =
                x.iter().zip(y).map(|(&xi, &yi)| (xi, if yi == classes[1] { 1.0 } else { -1.0 }, c * weight(yi))).collect();
            return OneDimensionalSvm { planes: vec![solve_squared_hinge(&sample)], classes };
        }
        let planes = classes
            .iter()
            .map(|&cls| {
                let count = y.iter().filter(|v| **v == cls).count() as f64;
                // "balanced": weight n / (classes · count) on the positive class; negatives keep C.
                let cp = c * n / (classes.len() as f64 * count);
                let sample: Vec<(f64, f64, f64)> =
                    x.iter().zip(y).map(|(&xi, &yi)| if yi == cls { (xi, 1.0, cp) } else { (xi, -1.0, c) }).collect();
                solve_squared_hinge(&sample)
            })
            .collect();
        OneDimensionalSvm { classes, planes }
    }

    fn predict(&self, x: f64) -> usize {
        if let [(w, b)] = self.planes[..] {
            return self.classes[usize::from(w * x + b > 0.0)];
        }
        let scores: Vec<f64> = self.planes.iter().map(|(w, b)| w * x + b).collect();
        let best = (0..scores.len()).fold(0, |best, k| if scores[k] > scores[best] { k } else { best });
        self.classes[best]
    }
}

/// argmin over (w, b) of ½(w² + b²) + Σ Cᵢ max(0, 1 − tᵢ(w xᵢ + b))², for samples (xᵢ, tᵢ = ±1, Cᵢ).
fn solve_squared_hinge(sample: &[(f64, f64, f64)]) -> (f64, f64) {
    let objective = |w: f64, b: f64| {
        0.5 * (w * w + b * b) + sample.iter().map(|&(x, t, c)| c * (1.0 - t * (w * x + b)).max(0.0).powi(2)).sum::<f64>()
    };
    let (mut w, mut b) = (0.0, 0.0);
    for _ in 0..100 {
        // Gradient and Hessian over the samples inside the margin.
        let (mut gw, mut gb, mut hww, mut hwb, mut hbb) = (w, b, 1.0, 0.0, 1.0);
        for &(x, t, c) in sample {
            let m = 1.0 - t * (w * x + b);
            if m > 0.0 {
                gw -= 2.0 * c * t * m * x;
                gb -= 2.0 * c * t * m;
                hww += 2.0 * c * x * x;
                hwb += 2.0 * c * x;
                hbb += 2.0 * c;
            }
        }
        let det = hww * hbb - hwb * hwb;
        let (dw, db) = ((hbb * gw - hwb * gb) / det, (hww * gb - hwb * gw) / det);
        let before = objective(w, b);
        let mut step = 1.0;
        while objective(w - step * dw, b - step * db) > before && step > 1e-12 {
            step *= 0.5;
        }
        (w, b) = (w - step * dw, b - step * db);
        if (step * dw).abs() < 1e-13 * (1.0 + w.abs()) && (step * db).abs() < 1e-13 * (1.0 + b.abs()) {
            break;
        }
    }
    (w, b)
}

/// DCI and its importance matrix.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Dci {
    pub disentanglement: f64,
    pub completeness: f64,
    /// Mean over factors of predicting the factor from the whole code on the held-out points: accuracy
    /// for [`dci`] (disentanglement_lib), R² for [`dci_linear`].
    pub informativeness: f64,
    /// Importance of each code dimension (rows) for each factor (columns).
    pub importance: Vec<Vec<f64>>,
}

/// D and C of an importance matrix (Eastwood & Williams 2018, as disentanglement_lib `dci.py`
/// computes them): per code, 1 − entropy of its normalised importances over factors (base = number of
/// factors), weighted by the code's share of all importance; per factor, 1 − entropy over codes
/// (base = number of codes), weighted by the factor's share.
pub fn dci_scores(importance: &[Vec<f64>]) -> (f64, f64) {
    let (codes, factors) = (importance.len(), importance[0].len());
    let entropy = |p: &[f64], base: usize| {
        // scipy.stats.entropy normalises its input; 1e-11 is disentanglement_lib's offset.
        let p: Vec<f64> = p.iter().map(|v| v + 1e-11).collect();
        let total: f64 = p.iter().sum();
        -p.iter().map(|v| v / total).map(|q| q * q.ln()).sum::<f64>() / (base as f64).ln()
    };
    let total: f64 = importance.iter().flatten().sum();
    let weight = |v: f64, n: usize| if total == 0.0 { 1.0 / n as f64 } else { v / total };
    let d: f64 = importance.iter().map(|row| (1.0 - entropy(row, factors)) * weight(row.iter().sum(), codes)).sum();
    let c: f64 = (0..factors)
        .map(|j| {
            let col: Vec<f64> = importance.iter().map(|r| r[j]).collect();
            (1.0 - entropy(&col, codes)) * weight(col.iter().sum(), factors)
        })
        .sum();
    (d, c)
}

/// DCI as disentanglement_lib computes it (`dci.py`, `compute_importance_gbt`): for each factor, a
/// gradient-boosted classifier ([`super::gbt`], scikit-learn's `GradientBoostingClassifier()`) of the
/// factor's class from the whole code; a code dimension's importance for the factor is its feature
/// importance; informativeness is the mean held-out accuracy. D and C from [`dci_scores`].
pub fn dci(train: (&[Vec<f64>], &[Vec<usize>]), test: (&[Vec<f64>], &[Vec<usize>])) -> Dci {
    let (dims, factors) = (train.0[0].len(), train.1[0].len());
    let mut importance = vec![vec![0.0; factors]; dims];
    // The factors' classifiers are independent: fitted in parallel, then summed in factor order, so
    // the result does not depend on the thread count.
    let fitted: Vec<(Vec<f64>, f64)> = (0..factors)
        .into_par_iter()
        .map(|j| {
            let y: Vec<usize> = train.1.iter().map(|f| f[j]).collect();
            let yt: Vec<usize> = test.1.iter().map(|f| f[j]).collect();
            let model = super::gbt::GradientBoosting::fit(train.0, &y);
            (model.importances().to_vec(), model.accuracy(test.0, &yt))
        })
        .collect();
    let mut accuracy = 0.0;
    for (j, (importances, factor_accuracy)) in fitted.into_iter().enumerate() {
        for (row, v) in importance.iter_mut().zip(&importances) {
            row[j] = v.abs();
        }
        accuracy += factor_accuracy;
    }
    let (disentanglement, completeness) = dci_scores(&importance);
    Dci { disentanglement, completeness, informativeness: accuracy / factors as f64, importance }
}

/// DCI with a linear importance estimator (vaelab's earlier DCI, kept under its own name; the
/// literature's is [`dci`]): for each factor, least squares of the factor's value (as a number) on the
/// standardised code (plus an intercept); the importance of a code dimension is its coefficient's
/// magnitude, and informativeness is the regression's R² on the test points.
pub fn dci_linear(train: (&[Vec<f64>], &[Vec<usize>]), test: (&[Vec<f64>], &[Vec<usize>])) -> Dci {
    use nalgebra::{DMatrix, DVector};
    let (n, dims, factors) = (train.0.len(), train.0[0].len(), train.1[0].len());
    let stats: Vec<(f64, f64)> = (0..dims)
        .map(|d| {
            let mean = train.0.iter().map(|c| c[d]).sum::<f64>() / n as f64;
            let sd = (train.0.iter().map(|c| (c[d] - mean).powi(2)).sum::<f64>() / n as f64).sqrt().max(1e-12);
            (mean, sd)
        })
        .collect();
    let design = |codes: &[Vec<f64>]| {
        DMatrix::from_fn(codes.len(), dims + 1, |i, d| if d == dims { 1.0 } else { (codes[i][d] - stats[d].0) / stats[d].1 })
    };
    let (x, xt) = (design(train.0), design(test.0));
    let gram = x.transpose() * &x;
    let mut importance = vec![vec![0.0; factors]; dims];
    let mut r2 = 0.0;
    for j in 0..factors {
        let y = DVector::from_iterator(n, train.1.iter().map(|f| f[j] as f64));
        let beta = gram.clone().lu().solve(&(x.transpose() * &y)).unwrap_or_else(|| DVector::zeros(dims + 1));
        for (d, row) in importance.iter_mut().enumerate() {
            row[j] = beta[d].abs();
        }
        let yt = DVector::from_iterator(test.0.len(), test.1.iter().map(|f| f[j] as f64));
        let residual = &yt - &xt * &beta;
        let mean = yt.mean();
        let total: f64 = yt.iter().map(|v| (v - mean).powi(2)).sum();
        r2 += if total > 0.0 { 1.0 - residual.norm_squared() / total } else { 0.0 };
    }
    let (disentanglement, completeness) = dci_scores(&importance);
    Dci { disentanglement, completeness, informativeness: r2 / factors as f64, importance }
}
