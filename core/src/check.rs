//! `vaelab check`: a spec fully validated (syntax, values, shapes) before any work starts, its
//! resolved form, and a model summary table.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use vaelab_metrics::registry::MetricRegistry;
use vaelab_models::model::Model;
use vaelab_nn::{FeatShape, SummaryRow};
use vaelab_plugin_host::PluginSet;
use vaelab_runs::data::{build_dataset, data_shape, size_mismatch};
use vaelab_spec::{load_spec, LoadedSpec, SpecError, SpecErrors};

/// A spec that passed every check, with the data's shape and the model summary.
pub struct Checked {
    pub loaded: LoadedSpec,
    pub input: FeatShape,
    pub rows: Vec<SummaryRow>,
    pub plugins: PluginSet,
}

/// Loads `path` and its plugins (the spec's, then `extra_plugins`, which are recorded in the
/// resolved spec), opens its dataset and checks every layer's shapes against the data.
pub fn check_file(path: &Path, extra_plugins: &[PathBuf]) -> Result<Checked, SpecErrors> {
    check_file_with(path, extra_plugins, None)
}

/// A data folder given outside the spec (`--data-root`, or the `VAELAB_DATA_ROOT` environment
/// variable), for data that cannot ship with the spec.
#[derive(Clone, Debug)]
pub struct DataRoot {
    pub path: PathBuf,
    /// Where it came from, for messages: `--data-root` or `VAELAB_DATA_ROOT`.
    pub source: &'static str,
}

impl DataRoot {
    /// `--data-root` if given, else a non-empty `VAELAB_DATA_ROOT`; relative paths are taken from the
    /// working directory and made absolute, since the run records them in its spec.
    pub fn from_flag_or_env(flag: Option<&Path>) -> Option<DataRoot> {
        let (path, source) = match flag {
            Some(f) => (f.to_path_buf(), "--data-root"),
            None => (PathBuf::from(std::env::var_os("VAELAB_DATA_ROOT").filter(|v| !v.is_empty())?), "VAELAB_DATA_ROOT"),
        };
        Some(DataRoot { path: std::path::absolute(&path).unwrap_or(path), source })
    }
}

/// [`check_file`] reading the dataset from `data_root` instead of the spec's `data.dataset` folder.
/// The environment's root is ignored for generated datasets (it may stay set); `--data-root` on one
/// is an error.
pub fn check_file_with(path: &Path, extra_plugins: &[PathBuf], data_root: Option<&DataRoot>) -> Result<Checked, SpecErrors> {
    let mut loaded = load_spec(path)?;
    if let Some(given) = data_root {
        match loaded.experiment.data.dataset.root_mut() {
            Some(root) => *root = given.path.clone(),
            None if given.source == "VAELAB_DATA_ROOT" => {}
            None => {
                return Err(loaded
                    .error_at(
                        "data.dataset",
                        format!("{} given, but this dataset is generated: it reads no folder", given.source),
                    )
                    .into())
            }
        }
    }
    let written = loaded.experiment.plugins.len();
    loaded.experiment.plugins.extend(extra_plugins.iter().cloned());
    let plugins = load_plugins(&loaded, written)?;
    let (input, rows) = check_shapes(&loaded, &plugins)?;
    check_metric_names(&loaded, &plugins)?;
    Ok(Checked { loaded, input, rows, plugins })
}

/// The spec's plugins; errors point at the spec's `plugins[i]`, or name `--plugin`/`VAELAB_PLUGIN_PATH`
/// for entries that came from the command line or the environment (index ≥ `written`).
pub fn load_plugins(loaded: &LoadedSpec, written: usize) -> Result<PluginSet, SpecErrors> {
    PluginSet::load(&loaded.experiment.plugins).map_err(|(i, e)| {
        SpecErrors::from(if i < written {
            loaded.error_at(&format!("plugins[{i}]"), e.to_string())
        } else {
            let file = loaded.sources.first().map(|s| s.path.clone()).unwrap_or_default();
            SpecError {
                file,
                line: 0,
                col: 0,
                path: "plugins (from --plugin or VAELAB_PLUGIN_PATH)".into(),
                message: e.to_string(),
            }
        })
    })
}

/// Every name in `eval.metrics` is a built-in or plugin metric.
fn check_metric_names(loaded: &LoadedSpec, plugins: &PluginSet) -> Result<(), SpecErrors> {
    let builtin = MetricRegistry::builtin();
    let mut known: Vec<&str> = builtin.names();
    known.extend(vaelab_eval::MODEL_METRICS);
    known.extend(plugins.libraries.iter().flat_map(|l| l.metrics.iter().map(|m| m.name.as_str())));
    let errors: Vec<SpecError> = loaded
        .experiment
        .eval
        .metrics
        .iter()
        .enumerate()
        .filter(|(_, m)| !known.contains(&m.as_str()))
        .map(|(i, m)| {
            loaded.error_at(&format!("eval.metrics[{i}]"), format!("unknown metric `{m}`; available: {}", known.join(", ")))
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SpecErrors(errors))
    }
}

pub fn check_shapes(loaded: &LoadedSpec, plugins: &PluginSet) -> Result<(FeatShape, Vec<SummaryRow>), SpecErrors> {
    let e = &loaded.experiment;
    let ds = build_dataset(e)
        .map_err(|err| SpecErrors::from(loaded.error_at("data.dataset", format!("cannot open the dataset: {err}"))))?;
    if let Some(message) = size_mismatch(e, ds.as_ref()) {
        return Err(loaded.error_at("data.size", message).into());
    }
    let input = data_shape(ds.as_ref());
    let mut rows =
        Model::summary(&e.model, input, plugins).map_err(|e| SpecErrors::from(loaded.error_at(&e.spec_path, e.message)))?;
    if let vaelab_spec::Adversarial::Gan { discriminator, .. } = &e.adversarial {
        let d_rows = vaelab_models::adversarial::Gan::summary(discriminator, input, plugins)
            .map_err(|e| SpecErrors::from(loaded.error_at(&e.spec_path, e.message)))?;
        rows.extend(d_rows);
    }
    Ok((input, rows))
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A torchinfo-style table: layer, kind, output shape, parameters, and the total.
pub fn format_summary(input: &str, rows: &[SummaryRow]) -> String {
    let mut s = String::new();
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(5).max(5);
    let line = "-".repeat(name_w + 44);
    writeln!(s, "{:<name_w$}  {:<10}  {:<16}  {:>12}", "Layer", "Kind", "Output", "Params").unwrap();
    writeln!(s, "{line}").unwrap();
    writeln!(s, "{:<name_w$}  {:<10}  {:<16}  {:>12}", "input", "", input, "").unwrap();
    for r in rows {
        let params = r.param_count();
        let p = if params == 0 { "-".to_string() } else { thousands(params) };
        writeln!(s, "{:<name_w$}  {:<10}  {:<16}  {:>12}", r.name, r.kind, r.output.to_string(), p).unwrap();
    }
    writeln!(s, "{line}").unwrap();
    let total: usize = rows.iter().map(SummaryRow::param_count).sum();
    writeln!(s, "Trainable parameters: {} ({:.2} MB as f32)", thousands(total), total as f64 * 4.0 / 1e6).unwrap();
    s
}

/// The full `vaelab check` report for a valid spec.
pub fn describe(c: &Checked) -> String {
    format!(
        "# Resolved spec\n{}\n\n# Model summary\n{}",
        vaelab_spec::format_resolved(&c.loaded.experiment),
        format_summary(&c.input.to_string(), &c.rows)
    )
}
