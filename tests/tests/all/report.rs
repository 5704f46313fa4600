//! `report.html`: a self-contained page with the metric table, the grids and the loss curves,
//! checked as text and as Chromium renders it.

use crate::browser::{artifacts, chromium_or_skip, screenshot};
use crate::training::{options, scratch, tiny};

/// The lines a reader scans first: headings, metric names and figure captions.
fn outline(html: &str) -> String {
    let mut out = String::new();
    for (open, close, prefix) in
        [("<h2>", "</h2>", "## "), ("<td class=\"name\">", "</td>", "metric "), ("<figcaption>", "</figcaption>", "figure: ")]
    {
        for part in html.split(open).skip(1) {
            out += &format!("{prefix}{}\n", &part[..part.find(close).unwrap()]);
        }
    }
    out
}

#[test]
fn report_html_embeds_the_table_grids_and_loss_curves_and_renders_in_chromium() {
    let dir = scratch("report");
    let mut spec = tiny();
    spec.train.steps = 120;
    spec.eval.metrics = ["mse", "psnr", "ssim", "ms_ssim", "elbo", "fid", "mig"].map(String::from).to_vec();
    // FID runs Inception v3 at 299 px over the test images and as many samples: at tiny()'s 64 that
    // took this test to 50 s, at 16 to 15 s. The table needs the metric, not a precise value.
    spec.eval.test_images = 16;
    vaelab::train::train(&spec, &options(&dir)).unwrap();
    let weights = dir.join("inception-fid.safetensors");
    vaelab::metrics::fid::write_synthetic_weights(&weights).unwrap();
    let opts = vaelab::eval::EvalOptions { fid_weights: Some(weights), ..Default::default() };
    let report = vaelab::eval::evaluate(&dir, &opts).unwrap();
    assert!(report.metrics["fid"].value.is_finite() && report.metrics["fid"].value >= 0.0);

    let html = std::fs::read_to_string(dir.join("eval/report.html")).unwrap();
    for key in report.metrics.keys() {
        assert!(html.contains(&format!("<td class=\"name\">{key}</td>")), "{key} is not in the table");
    }
    // Every picture is embedded, none linked: the file stands alone.
    let pngs = 4 + report.factor_grids.len();
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), pngs);
    assert!(!html.contains("src=\"eval/") && !html.contains("src=\"/"));
    let curves = image::open(dir.join("eval/loss-curves.png")).unwrap();
    assert!(curves.width() >= 800 && curves.height() >= 200);
    insta::assert_snapshot!(outline(&html));

    let Some(browser) = chromium_or_skip("the report rendering") else { return };
    let shot = dir.join("report.png");
    let page = format!("file://{}", dir.join("eval/report.html").canonicalize().unwrap().display());
    screenshot(&browser, &page, &shot, (1100, 2600));
    let img = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1100, 2600));
    // The loss plot's blue lines and the table's header shading are both on the page.
    let blue = img.pixels().filter(|p| p[2] > 150 && p[0] < 60 && p[1] < 110).count();
    let header_grey = img.pixels().filter(|p| p.0 == [246, 246, 246]).count();
    assert!(blue > 200, "no plot lines in the rendering ({blue} blue pixels)");
    assert!(header_grey > 1000, "no table header in the rendering ({header_grey} pixels)");
    // The image grids: many distinct grey levels in the page (text is near-black on white).
    let mut greys = std::collections::BTreeSet::new();
    for p in img.pixels().filter(|p| p[0] == p[1] && p[1] == p[2]) {
        greys.insert(p[0]);
    }
    assert!(greys.len() > 100, "only {} grey levels: the grids did not render", greys.len());
    std::fs::copy(&shot, artifacts().join("report.png")).unwrap();
}
