//! `vaelab latent RUN_DIR traverse`: one row per latent dimension (most informative first), each
//! decoded across −span·σ … +span·σ around a test image's code or the prior mean.
//!
//! - Flat codes (Gaussian, autoencoder): σ is 1 for a Gaussian latent (the prior's) and the
//!   dimension's spread over the test codes for an autoencoder, which has no prior.
//! - Spatial codes: a row per channel, shifting every position of the channel (or only those in
//!   `region`) together.
//! - Quantized codes: a row per chosen position, whose code vector is swapped for each of the most
//!   used codebook entries in turn.

use super::{code_std, ranked_elements, write_outputs, AnalysisError, Codes, GridStats};
use serde::Serialize;
use vaelab_models::latent::LatentModel;
use vaelab_runs::LoadedRun;

/// Where a traversal starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Start {
    /// The code of this test image.
    Image(usize),
    /// The prior mean (zero), or the mean test code for an autoencoder or a quantized code.
    PriorMean,
}

#[derive(Clone, Debug)]
pub struct TraverseOptions {
    pub start: Start,
    /// Rows at most (dimensions, channels or positions).
    pub rows: usize,
    /// Columns (values along each row).
    pub steps: usize,
    /// Half-width of each row in σ units.
    pub span: f32,
    /// Spatial codes: only this region (y0, x0, y1, x1 in code-grid cells, end exclusive).
    pub region: Option<(usize, usize, usize, usize)>,
    /// Quantized codes: these positions (row-major on the code grid) instead of the most varied ones.
    pub positions: Option<Vec<usize>>,
}

impl Default for TraverseOptions {
    fn default() -> Self {
        TraverseOptions { start: Start::Image(0), rows: 10, steps: 9, span: 3.0, region: None, positions: None }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraverseSummary {
    pub run: String,
    pub checkpoint_step: usize,
    pub latent: &'static str,
    pub start: String,
    /// What each row varies: `z3`, `channel 2`, `position 17`.
    pub row_labels: Vec<String>,
    /// The score that ranked the rows (KL in nats or variance), per row.
    pub row_scores: Vec<f64>,
    /// The values along each row: offsets in σ units, or codebook indices.
    pub column_values: Vec<f32>,
    pub stats: GridStats,
}

/// Decodes the traversal; returns the images (row-major) and the summary.
pub fn traverse(
    run: &LoadedRun,
    codes: &Codes,
    opts: &TraverseOptions,
) -> Result<(Vec<Vec<f32>>, TraverseSummary), AnalysisError> {
    if opts.steps < 2 || opts.rows == 0 {
        return Err(AnalysisError::Input("a traversal needs at least 1 row and 2 steps".into()));
    }
    let base: Vec<f32> = match opts.start {
        Start::Image(i) => codes
            .mu
            .get(i)
            .cloned()
            .ok_or_else(|| AnalysisError::Input(format!("test image {i} does not exist ({} encoded)", codes.mu.len())))?,
        Start::PriorMean => match run.model.latent {
            LatentModel::Gaussian(_) | LatentModel::Spatial(_) => vec![0.0; run.code_len()],
            _ => mean_code(codes),
        },
    };
    let ranked = ranked_elements(run, codes);
    let offsets: Vec<f32> = (0..opts.steps).map(|s| -opts.span + 2.0 * opts.span * s as f32 / (opts.steps - 1) as f32).collect();
    let (mut labels, mut scores, mut rows): (Vec<String>, Vec<f64>, Vec<Vec<Vec<f32>>>) = (vec![], vec![], vec![]);
    let mut column_values = offsets.clone();
    match &run.model.latent {
        LatentModel::Gaussian(_) | LatentModel::Identity(vaelab_nn::FeatShape::Flat(_)) => {
            let sigma: Vec<f32> = match run.model.latent {
                LatentModel::Gaussian(_) => vec![1.0; run.code_len()],
                _ => code_std(codes),
            };
            for &(d, score) in ranked.iter().take(opts.rows) {
                labels.push(format!("z{d}"));
                scores.push(score);
                rows.push(offsets.iter().map(|t| with(&base, &[d], |v| v + t * sigma[d])).collect());
            }
        }
        LatentModel::Spatial(_) | LatentModel::Identity(_) => {
            let (channels, positions) = run.code_grid();
            let grid_w = match run.model.latent.code_shape() {
                vaelab_nn::FeatShape::Image(_, _, w) => w,
                _ => 1,
            };
            let inside = |p: usize| {
                opts.region.is_none_or(|(y0, x0, y1, x1)| (y0..y1).contains(&(p / grid_w)) && (x0..x1).contains(&(p % grid_w)))
            };
            let cells: Vec<usize> = (0..positions).filter(|&p| inside(p)).collect();
            if cells.is_empty() {
                return Err(AnalysisError::Input(format!("the region {:?} holds no cell of the code grid", opts.region)));
            }
            let sigma = match run.model.latent {
                LatentModel::Spatial(_) => vec![1.0; run.code_len()],
                _ => code_std(codes),
            };
            // Rank channels by the summed score of their elements.
            let mut channel_score = vec![0.0f64; channels];
            for &(e, s) in &ranked {
                channel_score[e / positions] += s;
            }
            let mut order: Vec<usize> = (0..channels).collect();
            order.sort_by(|a, b| channel_score[*b].total_cmp(&channel_score[*a]).then(a.cmp(b)));
            for &c in order.iter().take(opts.rows) {
                let elems: Vec<usize> = cells.iter().map(|p| c * positions + p).collect();
                labels.push(format!("channel {c}"));
                scores.push(channel_score[c]);
                rows.push(
                    offsets
                        .iter()
                        .map(|t| {
                            let mut z = base.clone();
                            for &e in &elems {
                                z[e] += t * sigma[e];
                            }
                            z
                        })
                        .collect(),
                );
            }
        }
        LatentModel::Quantized(q) => {
            let book = q.codebook_vectors(&run.store);
            let usage = q.code_frequencies(&run.store);
            let mut by_use: Vec<usize> = (0..q.codes).collect();
            by_use.sort_by(|a, b| usage[*b].total_cmp(&usage[*a]).then(a.cmp(b)));
            let chosen: Vec<usize> = by_use.into_iter().take(opts.steps).collect();
            column_values = chosen.iter().map(|&k| k as f32).collect();
            let (dim, positions) = run.code_grid();
            // How much each position's code varies over the test images.
            let mut pos_score = vec![0.0f64; positions];
            for &(e, s) in &ranked {
                pos_score[e % positions] += s;
            }
            let positions_to_swap = match &opts.positions {
                Some(p) => {
                    if let Some(bad) = p.iter().find(|&&p| p >= positions) {
                        return Err(AnalysisError::Input(format!("position {bad} is outside the {positions}-cell code grid")));
                    }
                    p.clone()
                }
                None => {
                    // The positions whose codes vary most over the test images.
                    let mut order: Vec<usize> = (0..positions).collect();
                    order.sort_by(|a, b| pos_score[*b].total_cmp(&pos_score[*a]).then(a.cmp(b)));
                    order.into_iter().take(opts.rows).collect()
                }
            };
            for p in positions_to_swap.into_iter().take(opts.rows) {
                labels.push(format!("position {p}"));
                scores.push(pos_score[p]);
                rows.push(
                    chosen
                        .iter()
                        .map(|&k| {
                            let mut z = base.clone();
                            for d in 0..dim {
                                z[d * positions + p] = book[k][d];
                            }
                            z
                        })
                        .collect(),
                );
            }
        }
    }
    let codes_flat: Vec<Vec<f32>> = rows.into_iter().flatten().collect();
    let images = run.decode(&codes_flat);
    let columns = column_values.len();
    let summary = TraverseSummary {
        run: run.spec.name.clone(),
        checkpoint_step: run.step,
        latent: run.latent_kind(),
        start: match opts.start {
            Start::Image(i) => format!("test image {i}"),
            Start::PriorMean => "prior mean".into(),
        },
        row_labels: labels,
        row_scores: scores,
        column_values,
        stats: GridStats::of(&images, columns, run.image_shape()),
    };
    Ok((images, summary))
}

/// Runs [`traverse`] and writes `latent/traverse.png` and `latent/traverse.json`.
pub fn run(run: &LoadedRun, codes: &Codes, opts: &TraverseOptions) -> Result<TraverseSummary, AnalysisError> {
    let (images, summary) = traverse(run, codes, opts)?;
    write_outputs(&run.out_dir()?, "traverse", &images, run.image_shape(), summary.stats.columns, &summary)?;
    Ok(summary)
}

fn with(base: &[f32], elems: &[usize], f: impl Fn(f32) -> f32) -> Vec<f32> {
    let mut z = base.to_vec();
    for &e in elems {
        z[e] = f(z[e]);
    }
    z
}

pub(crate) fn mean_code(codes: &Codes) -> Vec<f32> {
    let n = codes.mu.len().max(1) as f32;
    let len = codes.mu.first().map_or(0, Vec::len);
    (0..len).map(|d| codes.mu.iter().map(|c| c[d]).sum::<f32>() / n).collect()
}
