//! Suite files (RON, `specs/suites/<name>.ron`): which specs run with which seeds and step budgets,
//! which metrics are collected, and what the results must show. A suite expands into tasks, one per
//! (entry, seed); an entry is a spec, or one combination of a grid over spec fields.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    pub name: String,
    /// What the suite is for, printed at the top of its results.
    #[serde(default)]
    pub about: String,
    /// Metrics every run evaluates (replacing the specs' own `eval.metrics`).
    pub metrics: Vec<String>,
    /// Test images each evaluation scores [default: each spec's own].
    #[serde(default)]
    pub test_images: Option<usize>,
    /// A run trained before the entries, whose encoder gives every entry's `domain_fd` features, so
    /// that the distances compare across entries.
    #[serde(default)]
    pub reference: Option<Reference>,
    #[serde(default)]
    pub runs: Vec<RunEntry>,
    #[serde(default)]
    pub grids: Vec<Grid>,
    #[serde(default)]
    pub expect: Vec<Expect>,
}

/// The reference run of a suite: one spec, one seed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub spec: PathBuf,
    pub steps: usize,
    #[serde(default = "first_seed")]
    pub seed: u64,
}

fn first_seed() -> u64 {
    1
}

/// One spec, trained once per seed for `steps`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename = "Run")]
pub struct RunEntry {
    /// The spec file, relative to the suite file.
    pub spec: PathBuf,
    pub seeds: Vec<u64>,
    pub steps: usize,
    /// The entry's name in the results [default: the spec's experiment name].
    #[serde(default)]
    pub label: Option<String>,
    /// Metrics for this entry instead of the suite's (a GAN without an encoder has no MSE).
    #[serde(default)]
    pub metrics: Option<Vec<String>>,
    /// RON fields laid over the spec, as in a spec that `extends` it, e.g.
    /// `"model: (prior: PixelCnn(steps: 30))"`.
    #[serde(default)]
    pub overrides: Option<String>,
}

/// Every combination of the values of each `vary`, applied to one spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub spec: PathBuf,
    pub seeds: Vec<u64>,
    pub steps: usize,
    /// The grid's name; each combination is `<label>+<value label>+…`.
    pub label: String,
    pub vary: Vec<Vary>,
}

/// One spec field (a dotted path such as `model.latent` or `losses`) and its values, each with a
/// short label for the entry's name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vary {
    pub field: String,
    pub values: Vec<(String, String)>,
}

/// What the results must show.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Expect {
    /// Every entry's `term`, averaged over its last logs, is below its average over the first logs
    /// [default: the reconstruction term `rec` where the first and last logs have it, else the total
    /// training loss], but for the entries in `except` (a GAN's losses need not fall; check its
    /// discriminator with `LossFalls`).
    LearnsAtAll {
        #[serde(default)]
        term: Option<String>,
        #[serde(default)]
        except: Vec<String>,
    },
    /// Every entry with a test MSE reconstructs better than predicting the mean training image.
    BeatsMeanImage,
    /// Every entry with a domain FD draws prior samples closer to the test images than two generators
    /// that learned nothing: one drawing the mean training image, one drawing uniform noise (both
    /// scored by the same encoder on the same test images), but for the entries in `except`.
    SamplesBeatBaselines {
        #[serde(default)]
        except: Vec<String>,
    },
    /// `entry`'s `term` falls from its first logs to its last, each end averaged (e.g. a GAN's
    /// discriminator).
    LossFalls { entry: String, term: String },
    /// `entry`'s mean of `metric` over seeds lies within `mean ± tolerance`.
    Band { entry: String, metric: String, mean: f64, tolerance: f64 },
}

/// One training run: an entry at one seed.
#[derive(Debug, Clone)]
pub struct Task {
    /// The entry's name (shared by its seeds).
    pub entry: String,
    pub seed: u64,
    /// The spec this task extends, absolute.
    pub base: PathBuf,
    pub steps: usize,
    /// RON fields over the base (the suite's metrics, the grid's values, the entry's overrides).
    pub fields: Vec<String>,
}

impl Task {
    /// The spec file text: `extends` the base with the task's seed, steps and fields.
    pub fn spec_text(&self) -> String {
        let mut fields = vec![
            format!("extends: {:?}", self.base.display().to_string()),
            format!("seed: {}", self.seed),
            format!("train: (steps: {})", self.steps),
        ];
        fields.extend(self.fields.iter().cloned());
        format!(
            "// Written by `cargo xtask repro`: {} at seed {}.\nExperiment(\n    {},\n)\n",
            self.entry,
            self.seed,
            fields.join(",\n    ")
        )
    }

    /// The task's file-system name.
    pub fn slug(&self) -> String {
        let clean: String =
            self.entry.chars().map(|c| if c.is_ascii_alphanumeric() || "-_+.".contains(c) { c } else { '_' }).collect();
        format!("{clean}-s{}", self.seed)
    }
}

pub fn load(path: &Path) -> Result<Suite, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    ron::from_str(&text).map_err(|e| format!("{}:{}:{}: {}", path.display(), e.position.line, e.position.col, e.code))
}

/// `a.b.c` and a value → `a: (b: (c: value))`.
fn nested(field: &str, value: &str) -> String {
    let parts: Vec<&str> = field.split('.').collect();
    let mut text = value.to_string();
    for (i, p) in parts.iter().enumerate().rev() {
        text = if i == parts.len() - 1 { format!("{p}: {text}") } else { format!("{p}: ({text})") };
    }
    text
}

impl Suite {
    /// The reference run as a task (entry `reference`), scored by MSE alone.
    pub fn reference_task(&self, suite_file: &Path) -> Result<Option<Task>, String> {
        let Some(r) = &self.reference else { return Ok(None) };
        let dir = suite_file.parent().unwrap_or(Path::new("."));
        let base = dir.join(&r.spec).canonicalize().map_err(|e| format!("{}: reference spec: {e}", suite_file.display()))?;
        let fields = vec!["eval: (metrics: [\"mse\"])".to_string()];
        Ok(Some(Task { entry: "reference".into(), seed: r.seed, base, steps: r.steps, fields }))
    }

    /// Every task, in file order: runs, then grids (each grid's combinations in order).
    /// `domain` is the reference run's directory, for every entry's `eval.domain_encoder`.
    pub fn tasks(
        &self,
        suite_file: &Path,
        name_of: impl Fn(&Path) -> Result<String, String>,
        domain: Option<&Path>,
    ) -> Result<Vec<Task>, String> {
        let dir = suite_file.parent().unwrap_or(Path::new("."));
        let absolute = |p: &Path| {
            dir.join(p).canonicalize().map_err(|e| format!("{}: spec {}: {e}", suite_file.display(), dir.join(p).display()))
        };
        let eval_field = |metrics: &[String]| {
            format!(
                "eval: (metrics: {metrics:?}{}{})",
                self.test_images.map(|n| format!(", test_images: {n}")).unwrap_or_default(),
                domain.map(|d| format!(", domain_encoder: Some({:?})", d.display().to_string())).unwrap_or_default()
            )
        };
        let common = vec![eval_field(&self.metrics)];
        let mut tasks = Vec::new();
        for run in &self.runs {
            let base = absolute(&run.spec)?;
            let entry = match &run.label {
                Some(l) => l.clone(),
                None => name_of(&base)?,
            };
            let mut fields = vec![eval_field(run.metrics.as_deref().unwrap_or(&self.metrics))];
            fields.extend(run.overrides.iter().cloned());
            for &seed in &run.seeds {
                tasks.push(Task { entry: entry.clone(), seed, base: base.clone(), steps: run.steps, fields: fields.clone() });
            }
        }
        for grid in &self.grids {
            let base = absolute(&grid.spec)?;
            let mut combos: Vec<(String, Vec<String>)> = vec![(grid.label.clone(), vec![])];
            for vary in &grid.vary {
                combos = combos
                    .into_iter()
                    .flat_map(|(name, fields)| {
                        vary.values.iter().map(move |(label, value)| {
                            let mut f = fields.clone();
                            f.push(nested(&vary.field, value));
                            (format!("{name}+{label}"), f)
                        })
                    })
                    .collect();
            }
            for (entry, fields) in combos {
                let mut all = common.clone();
                all.extend(fields);
                for &seed in &grid.seeds {
                    tasks.push(Task { entry: entry.clone(), seed, base: base.clone(), steps: grid.steps, fields: all.clone() });
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &tasks {
            if !seen.insert((t.entry.clone(), t.seed)) {
                return Err(format!(
                    "{}: `{}` at seed {} appears twice; give one a `label`",
                    suite_file.display(),
                    t.entry,
                    t.seed
                ));
            }
        }
        Ok(tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::nested;

    #[test]
    fn nested_fields() {
        assert_eq!(nested("losses", "[Kl()]"), "losses: [Kl()]");
        assert_eq!(nested("model.latent", "Gaussian(dim: 4)"), "model: (latent: Gaussian(dim: 4))");
    }
}
