//! Gradient-boosted trees as scikit-learn's `GradientBoostingClassifier()` computes them with its
//! defaults, for DCI's importance matrix (disentanglement_lib `dci.py` fits one per factor). No
//! maintained Rust crate reproduces scikit-learn's algorithm (the boosting crates are histogram-based,
//! as XGBoost and LightGBM); this is the algorithm of Friedman (2001, "Greedy function
//! approximation: a gradient boosting machine", Algorithm 6 for K classes) with scikit-learn's
//! choices, as documented in its user guide and `_gb.py` / `_tree.pyx`:
//!
//! - 100 stages, learning rate 0.1, log-loss; one regression tree per stage for two classes, one per
//!   class for more (fitted to the stage's negative gradient y_k − p_k);
//! - initial raw scores from the class priors (the log-odds for two classes; the log priors for more);
//! - trees of depth 3, best splits by Friedman's improvement (n_l·n_r/(n_l + n_r))·(ȳ_l − ȳ_r)²,
//!   thresholds halfway between consecutive distinct values (features in float32, as scikit-learn
//!   stores X for trees; values closer than 1e-7 count as equal);
//! - leaf values by one Newton step: Σ(y − p) / Σ p(1 − p), times (K − 1)/K for K > 2 classes;
//! - feature importances: each tree's weighted impurity (variance) decreases per feature over the
//!   root's sample count, averaged over the trees that split, normalised to sum 1.
//!
//! One deviation: scikit-learn visits features in a random order at each split and keeps the first
//! of equally good splits; here features are visited in order, so exact ties go to the lower index.

use rayon::prelude::*;

/// A fitted classifier.
pub struct GradientBoosting {
    classes: Vec<usize>,
    init: Vec<f64>,
    /// `stages[m][k]`: the tree of class k (or the single binary tree) at stage m.
    stages: Vec<Vec<Tree>>,
    importances: Vec<f64>,
}

const STAGES: usize = 100;
const LEARNING_RATE: f64 = 0.1;
const MAX_DEPTH: usize = 3;
/// scikit-learn's `FEATURE_THRESHOLD`: feature values closer than this are not split between.
const FEATURE_THRESHOLD: f64 = 1e-7;

enum Node {
    Split { feature: usize, threshold: f64, left: usize, right: usize },
    Leaf { value: f64 },
}

struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn leaf_of(&self, x: &[f32]) -> usize {
        let mut i = 0;
        loop {
            match self.nodes[i] {
                Node::Split { feature, threshold, left, right } => {
                    i = if (x[feature] as f64) <= threshold { left } else { right }
                }
                Node::Leaf { .. } => return i,
            }
        }
    }

    fn predict(&self, x: &[f32]) -> f64 {
        match self.nodes[self.leaf_of(x)] {
            Node::Leaf { value } => value,
            Node::Split { .. } => unreachable!("leaf_of ends at a leaf"),
        }
    }
}

/// The variance of the targets of `idx` (scikit-learn's MSE node impurity), as Σ²/n − (Σ/n)².
fn impurity(target: &[f64], idx: &[usize]) -> f64 {
    let n = idx.len() as f64;
    let (s, sq) = idx.iter().fold((0.0, 0.0), |(s, sq), &i| (s + target[i], sq + target[i] * target[i]));
    sq / n - (s / n) * (s / n)
}

/// Every sample, ordered for each feature `f` as a stable sort by feature 0, then 1, …, then `f`
/// leaves them: by `x_f`, ties by `x_{f−1}`, …, then by `x_0`, then by index. The order depends on
/// the codes alone, so one fit computes it once for all its trees. A node's samples in this order
/// are the node's own samples sorted the same way (the restriction of a total order to a subset),
/// which is what `best_split` needs; sorting them at every node instead was two thirds of DCI's time.
fn feature_orders(x: &[Vec<f32>], dims: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    (0..dims)
        .map(|f| {
            order.sort_by(|&a, &b| x[a][f].total_cmp(&x[b][f]));
            order.clone()
        })
        .collect()
}

/// A depth-3 regression tree on `target`, and its unnormalised feature importances: each feature's
/// weighted impurity decreases over the root's sample count (scikit-learn's
/// `compute_feature_importances(normalize=False)`). `orders` are [`feature_orders`] of `x`.
fn fit_tree(x: &[Vec<f32>], orders: &[Vec<usize>], target: &[f64], dims: usize) -> (Tree, Vec<f64>) {
    let mut nodes = Vec::new();
    let mut gains = vec![0.0; dims];
    build(x, target, (0..target.len()).collect(), orders, 0, &mut nodes, &mut gains);
    let n_total = target.len() as f64;
    (Tree { nodes }, gains.into_iter().map(|g| g / n_total).collect())
}

/// Builds the subtree of the samples `idx` (ascending) at `depth`, depth first as scikit-learn does;
/// `sorted[f]` holds the same samples in feature `f`'s order ([`feature_orders`]). Returns its node
/// index.
fn build(
    x: &[Vec<f32>],
    target: &[f64],
    idx: Vec<usize>,
    sorted: &[Vec<usize>],
    depth: usize,
    nodes: &mut Vec<Node>,
    gains: &mut [f64],
) -> usize {
    let node = nodes.len();
    let mean = idx.iter().map(|&i| target[i]).sum::<f64>() / idx.len() as f64;
    nodes.push(Node::Leaf { value: mean });
    let node_impurity = impurity(target, &idx);
    if depth >= MAX_DEPTH || idx.len() < 2 || node_impurity <= f64::EPSILON {
        return node;
    }
    let Some((feature, threshold)) = best_split(x, target, &idx, sorted) else { return node };
    let goes_left = |i: usize| (x[i][feature] as f64) <= threshold;
    let (left_idx, right_idx): (Vec<usize>, Vec<usize>) = idx.iter().partition(|&&i| goes_left(i));
    let (nl, nr, nn) = (left_idx.len() as f64, right_idx.len() as f64, idx.len() as f64);
    gains[feature] += nn * node_impurity - nl * impurity(target, &left_idx) - nr * impurity(target, &right_idx);
    // The children's orders: each feature's order split as the samples are (a partition keeps the
    // order). Children at the last depth are leaves and need none.
    let (left_sorted, right_sorted): (Vec<Vec<usize>>, Vec<Vec<usize>>) = if depth + 1 < MAX_DEPTH {
        sorted.iter().map(|order| order.iter().partition::<Vec<usize>, _>(|&&i| goes_left(i))).unzip()
    } else {
        (Vec::new(), Vec::new())
    };
    let left = build(x, target, left_idx, &left_sorted, depth + 1, nodes, gains);
    let right = build(x, target, right_idx, &right_sorted, depth + 1, nodes, gains);
    nodes[node] = Node::Split { feature, threshold, left, right };
    node
}

/// The split of `idx` with the largest Friedman improvement, as (feature, threshold); `sorted[f]`
/// are the samples of `idx` in feature `f`'s order.
fn best_split(x: &[Vec<f32>], target: &[f64], idx: &[usize], sorted: &[Vec<usize>]) -> Option<(usize, f64)> {
    scored_split(x, target, idx, sorted).map(|(_, f, t)| (f, t))
}

/// [`best_split`] with its improvement proxy, as (proxy, feature, threshold). The proxy's bits
/// depend on the order in which the targets were summed, which the tests check.
fn scored_split(x: &[Vec<f32>], target: &[f64], idx: &[usize], sorted: &[Vec<usize>]) -> Option<(f64, usize, f64)> {
    let n = idx.len();
    let total: f64 = idx.iter().map(|&i| target[i]).sum();
    let mut best: Option<(f64, usize, f64)> = None;
    for (f, order) in sorted.iter().enumerate() {
        debug_assert_eq!(order.len(), n);
        let value = |p: usize| x[order[p]][f] as f64;
        if value(n - 1) <= value(0) + FEATURE_THRESHOLD {
            continue; // constant in this node
        }
        let mut sum_left = 0.0;
        for p in 1..n {
            sum_left += target[order[p - 1]];
            if value(p) <= value(p - 1) + FEATURE_THRESHOLD {
                continue;
            }
            let (nl, nr) = (p as f64, (n - p) as f64);
            let diff = nr * sum_left - nl * (total - sum_left);
            // scikit-learn's proxy for Friedman's improvement (FriedmanMSE.proxy_impurity_improvement).
            let proxy = diff * diff / (nl * nr);
            if best.is_none_or(|(b, _, _)| proxy > b) {
                // Halfway, in float64 between float32 values; never equal to the upper value.
                let (lo, hi) = (value(p - 1), value(p));
                let mut threshold = lo / 2.0 + hi / 2.0;
                if threshold == hi || threshold.is_infinite() {
                    threshold = lo;
                }
                best = Some((proxy, f, threshold));
            }
        }
    }
    best
}

impl GradientBoosting {
    /// Fits on codes `x` (one row per sample; converted to float32 as scikit-learn does for trees) and
    /// labels `y`.
    #[allow(clippy::needless_range_loop)] // t is both the tree's class and its column of the raw scores
    pub fn fit(x: &[Vec<f64>], y: &[usize]) -> GradientBoosting {
        let x: Vec<Vec<f32>> = x.iter().map(|r| r.iter().map(|v| *v as f32).collect()).collect();
        let n = y.len();
        let mut classes = y.to_vec();
        classes.sort_unstable();
        classes.dedup();
        let k = classes.len();
        let label: Vec<usize> = y.iter().map(|v| classes.binary_search(v).unwrap()).collect();
        let dims = x.first().map_or(0, |r| r.len());
        // Class priors, clipped by float32's epsilon as scikit-learn's `_init_raw_predictions` does.
        let eps = f32::EPSILON as f64;
        let prior: Vec<f64> =
            (0..k).map(|c| (label.iter().filter(|&&l| l == c).count() as f64 / n as f64).clamp(eps, 1.0 - eps)).collect();
        let trees_per_stage = if k == 2 { 1 } else { k };
        let init: Vec<f64> =
            if k == 2 { vec![(prior[1] / (1.0 - prior[1])).ln()] } else { prior.iter().map(|p| p.ln()).collect() };
        if k < 2 {
            return GradientBoosting { classes, init, stages: vec![], importances: vec![0.0; dims] };
        }
        let orders = feature_orders(&x, dims);
        let mut raw: Vec<Vec<f64>> = vec![init.clone(); n];
        // Σ over the trees that split of their importances: scikit-learn averages them over those
        // trees and normalises to sum 1, so the count cancels.
        let mut importance = vec![0.0; dims];
        let scale = if k == 2 { 1.0 } else { (k - 1) as f64 / k as f64 };
        let mut stages = Vec::with_capacity(STAGES);
        for _ in 0..STAGES {
            // Probabilities at the stage's start: every tree of the stage fits the same gradient.
            let probs: Vec<Vec<f64>> = raw.iter().map(|r| probabilities(r, k)).collect();
            // The stage's trees are independent (each fits its class's gradient at the stage's start
            // and moves only its own column of the raw scores): fitted in parallel, then applied in
            // class order, so the sums do not depend on the thread count.
            let fitted: Vec<(Tree, Vec<f64>, Vec<usize>)> = (0..trees_per_stage)
                .into_par_iter()
                .map(|t| {
                    let class = if k == 2 { 1 } else { t };
                    let p: Vec<f64> = probs.iter().map(|pr| pr[class]).collect();
                    let residual: Vec<f64> = (0..n).map(|i| f64::from(u8::from(label[i] == class)) - p[i]).collect();
                    let (mut tree, tree_importance) = fit_tree(&x, &orders, &residual, dims);
                    // One Newton step per leaf (scikit-learn's `_update_terminal_regions`).
                    let leaves: Vec<usize> = x.iter().map(|xi| tree.leaf_of(xi)).collect();
                    let mut sums = vec![(0.0, 0.0); tree.nodes.len()];
                    for i in 0..n {
                        sums[leaves[i]].0 += residual[i];
                        sums[leaves[i]].1 += p[i] * (1.0 - p[i]);
                    }
                    for (node, (num, den)) in tree.nodes.iter_mut().zip(&sums) {
                        if let Node::Leaf { value } = node {
                            *value = if den.abs() < 1e-150 { 0.0 } else { scale * num / den };
                        }
                    }
                    (tree, tree_importance, leaves)
                })
                .collect();
            let mut stage = Vec::with_capacity(trees_per_stage);
            for (t, (tree, tree_importance, leaves)) in fitted.into_iter().enumerate() {
                for (a, b) in importance.iter_mut().zip(&tree_importance) {
                    *a += b; // all 0 for a tree that did not split
                }
                for i in 0..n {
                    if let Node::Leaf { value } = tree.nodes[leaves[i]] {
                        raw[i][t] += LEARNING_RATE * value;
                    }
                }
                stage.push(tree);
            }
            stages.push(stage);
        }
        let total: f64 = importance.iter().sum();
        let importances = importance.iter().map(|v| if total > 0.0 { v / total } else { 0.0 }).collect();
        GradientBoosting { classes, init, stages, importances }
    }

    /// scikit-learn's `feature_importances_`: non-negative, summing to 1 (0 everywhere when no tree
    /// split).
    pub fn importances(&self) -> &[f64] {
        &self.importances
    }

    pub fn predict(&self, x: &[f64]) -> usize {
        let x: Vec<f32> = x.iter().map(|v| *v as f32).collect();
        let mut raw = self.init.clone();
        for stage in &self.stages {
            for (t, tree) in stage.iter().enumerate() {
                raw[t] += LEARNING_RATE * tree.predict(&x);
            }
        }
        if self.classes.len() == 2 {
            return self.classes[usize::from(raw[0] > 0.0)];
        }
        let best = (0..raw.len()).fold(0, |b, c| if raw[c] > raw[b] { c } else { b });
        self.classes[best]
    }

    /// The fraction of `(x, y)` predicted right.
    pub fn accuracy(&self, x: &[Vec<f64>], y: &[usize]) -> f64 {
        x.iter().zip(y).filter(|(xi, yi)| self.predict(xi) == **yi).count() as f64 / y.len().max(1) as f64
    }
}

/// Class probabilities of raw scores: the logistic for one score (two classes), else the softmax.
fn probabilities(raw: &[f64], k: usize) -> Vec<f64> {
    if k == 2 {
        let p = 1.0 / (1.0 + (-raw[0]).exp());
        return vec![1.0 - p, p];
    }
    let max = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = raw.iter().map(|r| (r - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split search as it was before [`feature_orders`]: the node's samples sorted again for
    /// each feature, starting from the order the previous feature's sort left.
    fn best_split_by_sorting(x: &[Vec<f32>], target: &[f64], idx: &[usize]) -> Option<(f64, usize, f64)> {
        let mut order = idx.to_vec();
        let sorted: Vec<Vec<usize>> = (0..x[idx[0]].len())
            .map(|f| {
                order.sort_by(|&a, &b| x[a][f].total_cmp(&x[b][f]));
                order.clone()
            })
            .collect();
        scored_split(x, target, idx, &sorted)
    }

    /// A deterministic stream of numbers in [0, 1) (xorshift), so the test needs no RNG crate.
    fn uniform(state: &mut u64) -> f64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The shared orders give every node the split that sorting its samples gives, bit for bit, on
    /// codes full of exact ties (values on a grid of 4) and near-ties (closer than the threshold),
    /// where the order among equal values decides the order of the sums (checked through the
    /// proxy's bits) and so, at near-equal improvements, the split.
    #[test]
    fn shared_feature_orders_split_as_sorting_each_node_does() {
        let mut s = 0x9E37_79B9_7F4A_7C15;
        let (n, dims) = (300, 5);
        let x: Vec<Vec<f32>> = (0..n)
            .map(|_| {
                (0..dims)
                    .map(|f| match f {
                        0 | 1 => (uniform(&mut s) * 4.0).floor() as f32,
                        2 => 1.0 + (uniform(&mut s) * 3.0).floor() as f32 * 5e-8,
                        _ => uniform(&mut s) as f32,
                    })
                    .collect()
            })
            .collect();
        let orders = feature_orders(&x, dims);
        let mut checked = 0;
        for round in 0..200 {
            let target: Vec<f64> = (0..n).map(|_| uniform(&mut s) - 0.5).collect();
            // A node: an ascending subset, as partitions of the root leave them.
            let keep = 0.05 + 0.95 * (round as f64 / 200.0);
            let idx: Vec<usize> = (0..n).filter(|_| uniform(&mut s) < keep).collect();
            if idx.len() < 2 {
                continue;
            }
            let member: Vec<bool> = (0..n).map(|i| idx.binary_search(&i).is_ok()).collect();
            let sorted: Vec<Vec<usize>> = orders.iter().map(|o| o.iter().copied().filter(|&i| member[i]).collect()).collect();
            let bits = |s: Option<(f64, usize, f64)>| s.map(|(p, f, t)| (p.to_bits(), f, t.to_bits()));
            let (got, want) = (scored_split(&x, &target, &idx, &sorted), best_split_by_sorting(&x, &target, &idx));
            assert_eq!(bits(got), bits(want), "round {round}");
            checked += 1;
        }
        assert!(checked > 190);
    }
}
