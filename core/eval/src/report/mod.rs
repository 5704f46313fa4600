//! The evaluation report: `report.html`, one self-contained file (its PNGs are embedded as data
//! URIs, so it can be mailed or attached as it is) with the metric table, the reconstruction,
//! sample, traversal and factor grids, and the training-loss curves, which are also written as
//! `loss-curves.png`.

pub mod heatmap;
pub mod plot;

use base64::Engine;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use vaelab_runs::LogLine;
use vaelab_runs::{evaluations, paths, EvalRecord};

/// The loss curves of a run's log: the total loss, then each term and diagnostic by name.
pub fn loss_series(lines: &[LogLine]) -> Vec<plot::Series> {
    let mut by_name: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for l in lines {
        let step = l.step as f64;
        for (k, v) in l.terms.iter().chain(&l.stats) {
            by_name.entry(k.clone()).or_default().push((step, *v as f64));
        }
    }
    let total = plot::Series {
        name: "loss (weighted total)".into(),
        points: lines.iter().map(|l| (l.step as f64, l.loss as f64)).collect(),
    };
    if lines.is_empty() {
        return vec![];
    }
    std::iter::once(total).chain(by_name.into_iter().map(|(name, points)| plot::Series { name, points })).collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn data_uri(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png))
}

/// A value with the digits a reader compares: 6 significant digits.
fn value(v: f64) -> String {
    if v == 0.0 || (1e-3..1e6).contains(&v.abs()) {
        let digits = if v == 0.0 { 5 } else { (5 - v.abs().log10().floor() as i32).max(0) as usize };
        format!("{v:.digits$}")
    } else {
        format!("{v:.5e}")
    }
}

/// Writes `out_dir/loss-curves.png` (when the run has a log) and `out_dir/report.html`, embedding
/// the PNG grids that evaluation wrote into `out_dir`.
pub fn write(run_dir: &Path, out_dir: &Path, report: &EvalRecord) -> Result<(), String> {
    let series = loss_series(&vaelab_runs::read_log(run_dir));
    if !series.is_empty() {
        crate::grid::save_png(&plot::plot(&series), &paths::loss_curves_file(out_dir))?;
    }
    rewrite_html(out_dir, report, &evaluations(run_dir))
}

/// Renders `out_dir/report.html` again (its pictures are already there), listing `all` the run's
/// evaluations.
pub fn rewrite_html(out_dir: &Path, report: &EvalRecord, all: &[(String, EvalRecord)]) -> Result<(), String> {
    let html = render(out_dir, report, all);
    let path = paths::report_file(out_dir);
    vaelab_runs::checkpoint::write_atomic(&path, html.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn render(out_dir: &Path, r: &EvalRecord, all: &[(String, EvalRecord)]) -> String {
    let mut h = String::new();
    let title = format!("vaelab report: {}", r.run);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{}</style></head><body>\n",
        escape(&title),
        STYLE
    );
    let _ = writeln!(h, "<h1>{}</h1>", escape(&r.run));
    let _ = writeln!(
        h,
        "<p class=\"meta\">checkpoint step {} · {} split, {} images · {}-bit source data · mean-image MSE baseline {}</p>",
        r.checkpoint_step,
        r.split.name(),
        r.test_images,
        r.bit_depth,
        value(r.mean_image_mse)
    );
    h += "<h2>Metrics</h2>\n<table><thead><tr><th>metric</th><th>value</th><th></th><th>definition</th></tr></thead><tbody>\n";
    for (name, m) in &r.metrics {
        let better = if m.higher_is_better { "↑ higher is better" } else { "↓ lower is better" };
        let note = m.note.as_deref().map(|n| format!("<div class=\"note\">{}</div>", escape(n))).unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr><td class=\"name\">{}</td><td class=\"num\">{}</td><td class=\"dir\">{better}</td><td>{}{note}</td></tr>",
            escape(name),
            value(m.value),
            escape(&m.definition)
        );
    }
    h += "</tbody></table>\n";
    if !r.failed.is_empty() {
        h += "<h2>Failed metrics</h2>\n<ul class=\"failed\">\n";
        for (name, msg) in &r.failed {
            let _ = writeln!(h, "<li><b>{}</b>: {}</li>", escape(name), escape(msg));
        }
        h += "</ul>\n";
    }
    let mut figures: Vec<(String, String)> = vec![
        (paths::RECONSTRUCTIONS_PNG.into(), "Reconstructions: each test image beside its reconstruction from the posterior mean".into()),
        (paths::SAMPLES_PNG.into(), format!("Samples decoded from the prior: {}", if r.prior.is_empty() { "N(0, I)" } else { &r.prior })),
        (
            paths::TRAVERSAL_PNG.into(),
            format!(
                "Latent traversal from the first test image's code, −3 … +3 per row; rows are dimensions {:?}, most informative first",
                r.traversal_order
            ),
        ),
    ];
    for f in &r.factor_grids {
        let factor = f.trim_start_matches("factor-").trim_end_matches(".png");
        figures
            .push((f.clone(), format!("Factor `{factor}`: one row per value, the row's mean code decoded in the last column")));
    }
    figures.push((paths::LOSS_CURVES_PNG.into(), "Training loss: raw values (light) and their moving average (dark)".into()));
    h += "<h2>Pictures</h2>\n";
    for (file, caption) in figures {
        let path = out_dir.join(&file);
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let _ = writeln!(
            h,
            "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
            data_uri(&bytes),
            escape(&file),
            escape(&caption)
        );
    }
    if !r.kl_per_dim.is_empty() {
        h += "<h2>KL per latent dimension</h2>\n<p class=\"kl\">";
        let total: f64 = r.kl_per_dim.iter().sum();
        for (d, kl) in r.kl_per_dim.iter().enumerate() {
            let _ = write!(h, "<span title=\"{:.4} nats\">z{d}: {:.3}</span> ", kl, kl);
        }
        let _ = writeln!(h, "</p><p class=\"meta\">total {} nats per image</p>", value(total));
    }
    evaluations_table(&mut h, out_dir, all);
    let _ = writeln!(h, "<p class=\"meta\">written by vaelab {}</p>\n</body></html>", env!("CARGO_PKG_VERSION"));
    h
}

/// Every evaluation of the run (each folder with a metrics.json), linked, this one marked.
fn evaluations_table(h: &mut String, out_dir: &Path, all: &[(String, EvalRecord)]) {
    let this = out_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if all.iter().all(|(name, _)| *name == this) {
        return;
    }
    *h += "<h2>Every evaluation of this run</h2>\n<table><thead><tr><th>folder</th><th>step</th><th>split</th><th>data</th><th>images</th><th>metrics</th></tr></thead><tbody>\n";
    for (name, r) in all {
        let folder = if *name == this {
            format!("{} (this report)", escape(name))
        } else {
            format!("<a href=\"../{0}/{1}\">{0}</a>", escape(name), paths::REPORT_HTML)
        };
        let _ = writeln!(
            h,
            "<tr><td>{folder}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            r.checkpoint_step,
            r.split.name(),
            escape(r.data.as_deref().unwrap_or("the run's own")),
            r.test_images,
            escape(&r.metrics.keys().cloned().collect::<Vec<_>>().join(", "))
        );
    }
    *h += "</tbody></table>\n";
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}\
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}\
.meta{color:#666;font-size:.9em}table{border-collapse:collapse;width:100%;font-size:.92em}\
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eee;vertical-align:top}th{background:#f6f6f6}\
td.num{font-family:ui-monospace,monospace;text-align:right;white-space:nowrap}td.name{font-weight:600;white-space:nowrap}\
td.dir{color:#777;white-space:nowrap;font-size:.85em}.note{color:#946200;font-size:.85em;margin-top:2px}\
figure{margin:12px 0 20px}figure img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}\
figcaption{color:#555;font-size:.88em;margin-top:4px}.failed{color:#a00}.kl span{display:inline-block;margin-right:10px;font-family:ui-monospace,monospace}";
