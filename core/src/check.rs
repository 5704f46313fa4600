//! `vaelab check`: a spec fully validated (syntax, values, shapes) before any work starts, its
//! resolved form, and a model summary table.

use crate::data::{build_dataset, data_shape};
use crate::model::Model;
use crate::nn::SummaryRow;
use crate::spec::{load_spec, Experiment, LoadedSpec, SpecErrors};
use std::fmt::Write;
use std::path::Path;

/// Loads `path` and checks every layer's shapes against the data.
pub fn check_file(path: &Path) -> Result<(LoadedSpec, Vec<SummaryRow>), SpecErrors> {
    let loaded = load_spec(path)?;
    let rows = check_shapes(&loaded)?;
    Ok((loaded, rows))
}

pub fn check_shapes(loaded: &LoadedSpec) -> Result<Vec<SummaryRow>, SpecErrors> {
    let e = &loaded.experiment;
    let shape = data_shape(build_dataset(e).as_ref());
    Model::summary(&e.model, shape).map_err(|(p, m)| SpecErrors::from(loaded.error_at(&p, m)))
}

/// The resolved spec as RON, every default written out.
pub fn format_resolved(e: &Experiment) -> String {
    let config = ron::ser::PrettyConfig::default().struct_names(true).depth_limit(3);
    ron::ser::to_string_pretty(e, config).expect("specs serialize")
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
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
pub fn report(loaded: &LoadedSpec, rows: &[SummaryRow]) -> String {
    let e = &loaded.experiment;
    let shape = data_shape(build_dataset(e).as_ref());
    format!("# Resolved spec\n{}\n\n# Model summary\n{}", format_resolved(e), format_summary(&shape.to_string(), rows))
}
