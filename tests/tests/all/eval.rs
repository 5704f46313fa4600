//! Evaluation: metric formulas on fixed inputs, and `vaelab eval` on a trained run.

use crate::training::{options, scratch, tiny};
use vaelab_core::eval::metric::{Metric, MetricRegistry, Mse, Psnr};
use vaelab_datasets::ImageBatch;

fn batch(pixels: Vec<f32>, n: usize) -> ImageBatch {
    let len = pixels.len() / n;
    ImageBatch { n, c: 1, h: 1, w: len, pixels, factors: vec![], bit_depth: 8 }
}

#[test]
fn mse_and_psnr_follow_their_formulas() {
    // Image 0: errors (0.1, 0.3) → MSE 0.05, PSNR 10·log10(1/0.05) = 13.0103 dB.
    // Image 1: errors (0.5, 0.5) → MSE 0.25, PSNR 6.0206 dB. PSNR is averaged per image.
    let real = batch(vec![0.0, 0.0, 1.0, 0.0], 2);
    let fake = batch(vec![0.1, 0.3, 0.5, 0.5], 2);
    assert!((Mse.compute(&real, &fake).unwrap() - 0.15).abs() < 1e-7);
    let psnr = Psnr.compute(&real, &fake).unwrap();
    assert!((psnr - (13.010_299_956_639_812 + 6.020_599_913_279_624) / 2.0).abs() < 1e-5, "{psnr}");
    // Identical images hit the documented cap instead of +∞.
    assert_eq!(Psnr.compute(&real, &real).unwrap(), vaelab_core::eval::metric::PSNR_CAP_DB);
    let odd = batch(vec![0.0; 6], 2);
    insta::assert_snapshot!(Mse.compute(&real, &odd).unwrap_err().to_string(), @"metric `mse`: batches differ: 2×1×1×2 vs 2×1×1×3");
}

#[test]
fn plugin_style_registration_refuses_duplicate_names() {
    let mut r = MetricRegistry::builtin();
    assert_eq!(r.names(), ["mse", "psnr"]);
    assert!(r.register(Box::new(Mse)).is_err());
}

#[test]
fn eval_writes_metrics_and_grids_and_is_deterministic() {
    let dir = scratch("eval");
    let mut spec = tiny();
    spec.train.steps = 300;
    vaelab_core::train::train(&spec, &options(&dir)).unwrap();
    let report = vaelab_core::eval::evaluate(&dir, None, None).unwrap();
    for name in ["mse", "psnr", "elbo", "rec_nll", "kl"] {
        assert!(report.metrics.contains_key(name), "{name} missing");
    }
    for png in ["reconstructions.png", "samples.png", "traversal.png"] {
        let img = image::open(dir.join("eval").join(png)).unwrap();
        assert!(img.width() > 64 && img.height() > 64, "{png} is {}×{}", img.width(), img.height());
    }
    // The traversal has one row per latent dimension.
    let traversal = image::open(dir.join("eval/traversal.png")).unwrap();
    let cell = 64 + 2;
    assert_eq!((traversal.height() - 2) / cell, 4);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("eval/metrics.json")).unwrap()).unwrap();
    assert_eq!(json["checkpoint_step"], 300);
    assert_eq!(json["test_images"], 64);
    // Same run directory, same numbers.
    assert_eq!(vaelab_core::eval::evaluate(&dir, None, None).unwrap(), report);
    // 300 steps of the tiny model already beat predicting the mean image by a wide margin.
    assert!(report.metrics["mse"].value < 0.5 * report.mean_image_mse, "{report:?}");
}

#[test]
fn unknown_metric_names_list_the_available_ones() {
    let dir = scratch("eval-unknown");
    let mut spec = tiny();
    spec.train.steps = 1;
    spec.eval.metrics = vec!["mse".into(), "fid".into()];
    vaelab_core::train::train(&spec, &options(&dir)).unwrap();
    let err = vaelab_core::eval::evaluate(&dir, None, None).unwrap_err();
    insta::assert_snapshot!(err.to_string(), @"unknown metric `fid`; available: mse, psnr, elbo");
}

#[test]
fn eval_of_a_directory_that_is_not_a_run_says_so() {
    let dir = scratch("not-a-run");
    std::fs::create_dir_all(&dir).unwrap();
    let message = vaelab_core::eval::evaluate(&dir, None, None).unwrap_err().to_string();
    assert!(message.contains("is not a vaelab run directory"), "{message}");
}
