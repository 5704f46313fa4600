//! Expectations derived from a recorded run: a `Band` around each entry's mean of each metric,
//! written as `bands.ron` beside the results so a suite's committed expectations come from a real
//! run (paste them into the suite's `expect` list).
//!
//! The width of a band: three standard deviations over the seeds, but never less than a fraction of
//! the metric's scale, because a run's numbers also move with the CPU's gemm kernels and with the
//! chaos of long training, which the seeds of one machine do not show. The scale is the mean itself
//! for errors and distances (MSE, Fréchet distances) and the distance to a perfect 1 for
//! similarities (SSIM, MS-SSIM), so a band of 0.997 does not swallow every value in [0, 1].

use super::results::{fmt, mean_std, EntryResult, Failure};
use std::fmt::Write as _;

/// The least band half-width as a fraction of the metric's scale, with one seed (no spread known)
/// and with several.
pub const ONE_SEED_FRACTION: f64 = 0.3;
pub const SEEDS_FRACTION: f64 = 0.15;

/// The scale a band's least width is a fraction of.
fn scale(metric: &str, mean: f64) -> f64 {
    if metric.contains("ssim") {
        (1.0 - mean).abs().max(1e-4)
    } else {
        mean.abs().max(1e-12)
    }
}

/// (mean, tolerance) of a band around `values`.
pub fn band(metric: &str, values: &[f64]) -> (f64, f64) {
    let (mean, std) = mean_std(values);
    let fraction = if values.len() > 1 { SEEDS_FRACTION } else { ONE_SEED_FRACTION };
    (mean, (3.0 * std).max(fraction * scale(metric, mean)))
}

/// RON `Band(...)` lines for every entry and every metric it reported, with a header saying where
/// they come from. An entry that failed one of the suite's absolute expectations (`failures`, from
/// [`super::results::check_absolute`]) gets no bands, with a comment saying why: a band around a
/// broken family's numbers would certify the breakage.
pub fn derive(suite: &str, entries: &[EntryResult], failures: &[Failure], machine: &str) -> String {
    let mut out = format!(
        "// Bands derived from the recorded run of suite `{suite}` ({machine})\n\
         // Half-width: max(3 std over seeds, {ONE_SEED_FRACTION} × scale with one seed, {SEEDS_FRACTION} × scale with more);\n\
         // scale = the mean for errors and distances, 1 − mean for SSIM-like similarities.\n"
    );
    for e in entries {
        if let Some(f) = failures.iter().find(|f| f.entry == e.entry) {
            let _ = writeln!(out, "// {}: no bands, it failed an expectation ({})", e.entry, f.what);
            continue;
        }
        for metric in e.metric_keys() {
            let Some(values) = e.values(&metric) else { continue };
            let (mean, tolerance) = band(&metric, &values);
            if !(mean.is_finite() && tolerance.is_finite()) {
                continue;
            }
            let _ = writeln!(
                out,
                "Band(entry: {:?}, metric: {:?}, mean: {}, tolerance: {}),",
                e.entry,
                metric,
                ron_float(mean),
                ron_float(tolerance)
            );
        }
    }
    out
}

/// Four significant digits that RON reads back as a float.
fn ron_float(v: f64) -> String {
    let s = fmt(v);
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gets_a_fraction_of_the_scale() {
        let (m, t) = band("mse", &[0.004]);
        assert_eq!(m, 0.004);
        assert!((t - 0.3 * 0.004).abs() < 1e-15);
        // A similarity near 1 gets a band on its distance to 1.
        let (m, t) = band("ms_ssim", &[0.99]);
        assert_eq!(m, 0.99);
        assert!((t - 0.3 * 0.01).abs() < 1e-12);
    }

    #[test]
    fn spread_over_seeds_widens_the_band() {
        let (m, t) = band("domain_fd", &[100.0, 140.0]);
        assert_eq!(m, 120.0);
        let std = (2.0f64 * 400.0).sqrt();
        assert!((t - 3.0 * std).abs() < 1e-9, "{t}");
        // Close seeds fall back to the least width.
        let (_, t) = band("domain_fd", &[100.0, 100.1]);
        assert!((t - 0.15 * 100.05).abs() < 1e-9, "{t}");
    }

    /// One run of an entry with a domain FD of `fd` against baselines of 40 (mean image) and 100 (noise).
    fn entry(name: &str, fd: f64) -> EntryResult {
        let report = serde_json::json!({
            "run": name, "checkpoint_step": 10, "test_images": 8, "bit_depth": 8,
            "metrics": {"domain_fd": {"value": fd, "higher_is_better": false, "definition": ""}},
            "mean_image_mse": 0.05, "kl_per_dim": [], "traversal_order": [],
            "domain_fd_baselines": {"mean_image": 40.0, "noise": 100.0},
        });
        let run = super::super::results::RunResult {
            seed: 1,
            report: serde_json::from_value(report).unwrap(),
            log: vec![],
            record: serde_json::from_value(serde_json::json!({"hash": "", "threads": 1, "train_s": 0.0, "eval_s": 0.0})).unwrap(),
            batch: 4,
            steps: 10,
            dir: Default::default(),
        };
        EntryResult { entry: name.into(), runs: vec![run] }
    }

    /// A family whose samples are no closer to the test images than the mean image (a GAN drawing
    /// black frames) fails `SamplesBeatBaselines`, and gets no band, so a recorded failure never
    /// becomes the expectation; a working family gets its bands.
    #[test]
    fn samples_must_beat_the_baselines_and_a_failing_entry_gets_no_band() {
        let suite: crate::repro::suite::Suite = ron::from_str(
            "Suite(name: \"t\", metrics: [\"domain_fd\"], expect: [SamplesBeatBaselines(), Band(entry: \"black\", metric: \"domain_fd\", mean: 50.0, tolerance: 20.0)])",
        )
        .unwrap();
        let entries = [entry("good", 10.0), entry("black", 50.0)];
        let all = super::super::results::check(&suite, &entries, false);
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].entry, "black");
        assert_eq!(all[0].what, "seed 1: samples' domain FD 50.00 does not beat the mean image's 40.00");
        let absolute = super::super::results::check_absolute(&suite, &entries, false);
        assert_eq!(absolute, all, "the band itself holds; the absolute expectation does not");
        let bands = derive("t", &entries, &absolute, "machine");
        assert!(bands.contains("Band(entry: \"good\", metric: \"domain_fd\", mean: 10.00"), "{bands}");
        assert!(!bands.contains("Band(entry: \"black\""), "{bands}");
        assert!(bands.contains("// black: no bands, it failed an expectation (seed 1: samples' domain FD"), "{bands}");
    }

    #[test]
    fn floats_read_back_as_floats() {
        assert_eq!(ron_float(120.0), "120.0");
        assert_eq!(ron_float(0.0036512), "0.003651");
        assert_eq!(ron_float(2.5e-6), "2.500e-6");
    }
}
