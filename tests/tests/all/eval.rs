//! Evaluation: metric formulas on fixed inputs, and `vaelab eval` on a trained run.

use crate::training::{options, scratch, tiny};
use vaelab::eval::MetricRegistry;
use vaelab::metrics::metric::{Metric, Mse, Psnr};
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
    assert_eq!(Psnr.compute(&real, &real).unwrap(), vaelab::metrics::metric::PSNR_CAP_DB);
    let odd = batch(vec![0.0; 6], 2);
    insta::assert_snapshot!(Mse.compute(&real, &odd).unwrap_err().to_string(), @"metric `mse`: batches differ: 2×1×1×2 vs 2×1×1×3");
}

#[test]
fn plugin_style_registration_refuses_duplicate_names() {
    let mut r = MetricRegistry::builtin();
    assert_eq!(r.names(), ["mse", "psnr", "ssim", "ms_ssim"]);
    assert!(r.register(Box::new(Mse)).is_err());
}

#[test]
fn eval_writes_metrics_and_grids_and_is_deterministic() {
    let dir = scratch("eval");
    let mut spec = tiny();
    spec.train.steps = 300;
    vaelab::train::train(&spec, &options(&dir)).unwrap();
    let report = vaelab::eval::evaluate(&dir, &Default::default()).unwrap();
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
    assert_eq!(vaelab::eval::evaluate(&dir, &Default::default()).unwrap(), report);
    // 300 steps of the tiny model already beat predicting the mean image by a wide margin.
    assert!(report.metrics["mse"].value < 0.5 * report.mean_image_mse, "{report:?}");
    // The shapes' discrete factors get one grid each: a row per value, grid_images + 1 columns.
    assert_eq!(report.factor_grids, ["factor-shape.png", "factor-scale.png"]);
    let shapes = image::open(dir.join("eval/factor-shape.png")).unwrap();
    assert_eq!(((shapes.width() - 2) / cell, (shapes.height() - 2) / cell), (5, 3));
    // No validation split was held out: asking for one says how to get it.
    let opts = vaelab::eval::EvalOptions { split: vaelab_datasets::Split::Val, ..Default::default() };
    let err = vaelab::eval::evaluate(&dir, &opts).unwrap_err().to_string();
    assert!(err.contains("the val split is empty") && err.contains("data.val_size"), "{err}");
}

/// Evaluation scores a seeded, label-stratified subset of the test split, not its first images in
/// storage order (class folders list the lowest grade first), and records the subset's class counts.
#[test]
fn the_evaluated_subset_holds_every_class_in_proportion() {
    let data = scratch("eval-classes-data");
    crate::datasets::folders::three_constant_classes(&data, 32);
    let dir = scratch("eval-classes");
    let mut spec = tiny();
    spec.data.dataset = vaelab::spec::Dataset::Folder {
        root: data.to_path_buf(),
        channels: Default::default(),
        fit: Default::default(),
        on_bad_file: Default::default(),
        cache_mib: 64,
    };
    spec.train.steps = 2;
    spec.eval.test_images = 9;
    vaelab::train::train(&spec, &options(&dir)).unwrap();
    let report = vaelab::eval::evaluate(&dir, &Default::default()).unwrap();
    assert_eq!(report.label_counts, [(0, 3), (1, 3), (2, 3)].into_iter().collect());
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("eval/metrics.json")).unwrap()).unwrap();
    assert_eq!(json["label_counts"], serde_json::json!({"0": 3, "1": 3, "2": 3}));
    // The label grid is drawn from the evaluated images themselves: a row per label among them.
    assert_eq!(report.factor_grids, ["factor-label.png"]);
    let grid = image::open(dir.join("eval/factor-label.png")).unwrap();
    assert_eq!((grid.height() - 2) / (64 + 2), 3, "one row per class");
}

#[test]
fn the_validation_split_is_scored_into_its_own_folder() {
    let dir = scratch("eval-val");
    let mut spec = tiny();
    spec.train.steps = 5;
    spec.data.val_size = 32;
    vaelab::train::train(&spec, &options(&dir)).unwrap();
    let opts = vaelab::eval::EvalOptions { split: vaelab_datasets::Split::Val, ..Default::default() };
    let val = vaelab::eval::evaluate(&dir, &opts).unwrap();
    let test = vaelab::eval::evaluate(&dir, &Default::default()).unwrap();
    assert_eq!((val.split, val.test_images, test.test_images), (vaelab_datasets::Split::Val, 32, 64));
    assert_ne!(val.metrics["mse"].value, test.metrics["mse"].value, "different images");
    assert!(dir.join("eval-5-val/metrics.json").exists() && dir.join("eval/metrics.json").exists());
}

#[test]
fn unknown_metric_names_list_the_available_ones() {
    let dir = scratch("eval-unknown");
    let mut spec = tiny();
    spec.train.steps = 1;
    spec.eval.metrics = vec!["mse".into(), "lpips".into()];
    vaelab::train::train(&spec, &options(&dir)).unwrap();
    let err = vaelab::eval::evaluate(&dir, &Default::default()).unwrap_err();
    insta::assert_snapshot!(err.to_string(), @"unknown metric `lpips`; available: mse, psnr, ssim, ms_ssim, elbo, domain_fd, fid, sharpness, mig, sap, dci, dci_linear, factor_vae, beta_vae");
    // FID without a weight file fails before any image is scored, saying where weights come from.
    assert!(std::env::var_os(vaelab::metrics::fid::WEIGHTS_VAR).is_none());
    let opts = vaelab::eval::EvalOptions { metrics: Some(vec!["fid".into()]), ..Default::default() };
    let err = vaelab::eval::evaluate(&dir, &opts).unwrap_err().to_string();
    assert!(
        err.starts_with("FID needs pytorch-fid's Inception weights") && err.contains("fid_weights_to_safetensors.py"),
        "{err}"
    );
}

#[test]
fn eval_of_a_directory_that_is_not_a_run_says_so() {
    let dir = scratch("not-a-run");
    std::fs::create_dir_all(&dir).unwrap();
    let message = vaelab::eval::evaluate(&dir, &Default::default()).unwrap_err().to_string();
    assert!(message.contains("is not a vaelab run directory"), "{message}");
}

/// The closed-form image pairs of `xtask/fixtures/ssim_reference.py`.
fn reference_pair(n: usize, c: usize, h: usize, w: usize) -> (ImageBatch, ImageBatch) {
    let (mut real, mut fake) = (Vec::new(), Vec::new());
    for i in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let (xf, yf, i_f) = (x as f64, y as f64, i as f64);
                    let r = 0.5
                        + 0.35
                            * (0.21 * xf + 0.13 * yf + i_f).sin()
                            * (0.17 * yf - 0.05 * xf * (ch + 1) as f64 + 0.3 * i_f).cos();
                    let f = r + 0.15 * (1.7 * xf + 2.3 * yf + 0.5 * i_f).sin() + 0.05 * (0.9 * xf * yf / h as f64).cos();
                    real.push(r as f32);
                    fake.push(f.clamp(0.0, 1.0) as f32);
                }
            }
        }
    }
    let batch = ImageBatch { n, c, h, w, pixels: real, factors: vec![], bit_depth: 8 };
    let other = batch.with_pixels(fake);
    (batch, other)
}

/// SSIM and MS-SSIM against pytorch-msssim on fixed inputs: single and multi-channel, 5 scales with
/// odd sizes (zero-padded pooling), and the reduced-scale rule below 161 px. To 1e-9 against its
/// per-scale code with an exact (float64) Gaussian window, and to 1e-5 against the package as
/// shipped, whose float32 window moves results by ~2e-6.
#[test]
fn ssim_and_ms_ssim_match_pytorch_msssim() {
    use vaelab::metrics::ssim::{scales_for, MsSsim, Ssim};
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("fixtures/ssim_reference.json").unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let dim = |k: &str| case[k].as_u64().unwrap() as usize;
        let (real, fake) = reference_pair(dim("n"), dim("c"), dim("h"), dim("w"));
        assert_eq!(scales_for(real.h, real.w), dim("scales"));
        for (metric, key) in [(&Ssim as &dyn Metric, "ssim"), (&MsSsim, "ms_ssim")] {
            let ours = metric.compute(&real, &fake).unwrap();
            for (suffix, tol) in [("_exact_window", 1e-9), ("", 1e-5)] {
                let theirs = case[format!("{key}{suffix}")].as_f64().unwrap();
                assert!(
                    (ours - theirs).abs() <= tol * theirs.abs(),
                    "{key}{suffix} {}×{}: ours {ours}, reference {theirs}",
                    real.h,
                    real.w
                );
            }
        }
        // Identical images score exactly 1.
        assert!((MsSsim.compute(&real, &real).unwrap() - 1.0).abs() < 1e-12);
    }
    let (small, _) = reference_pair(1, 1, 64, 64);
    insta::assert_snapshot!(MsSsim.note(&small).unwrap(), @"3 scales: images of 64×64 px are too small for 5");
}

/// `vaelab metrics REAL FAKE`: folders paired by sorted name, scored like the evaluator scores runs;
/// mismatched inputs are clear errors.
#[test]
fn comparing_two_folders_of_images() {
    use vaelab::eval::compare::{compare as compare_with, CompareOptions};
    let compare =
        |a: &std::path::Path, b: &std::path::Path, _: vaelab_datasets::Channels, names: &[String], registry: &MetricRegistry| {
            let opts = CompareOptions {
                channels: vaelab_datasets::Channels::Grey,
                names,
                registry,
                fid_weights: None,
                domain_encoder: None,
            };
            compare_with(a, b, &opts)
        };
    let dir = scratch("compare");
    let (a, b) = (dir.join("real"), dir.join("fake"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mut real_px = Vec::new();
    let mut fake_px = Vec::new();
    for i in 0..4u32 {
        let img = image::GrayImage::from_fn(32, 32, |x, y| image::Luma([((x * 7 + y * 3 + i * 11) % 256) as u8]));
        let noisy =
            image::GrayImage::from_fn(32, 32, |x, y| image::Luma([img.get_pixel(x, y)[0].saturating_add(((x + y) % 9) as u8)]));
        img.save(a.join(format!("{i}.png"))).unwrap();
        noisy.save(b.join(format!("{i}.png"))).unwrap();
        real_px.extend(img.pixels().map(|p| p[0] as f32 / 255.0));
        fake_px.extend(noisy.pixels().map(|p| p[0] as f32 / 255.0));
    }
    let registry = MetricRegistry::builtin();
    let names: Vec<String> = ["mse", "psnr", "ssim"].map(String::from).to_vec();
    let c = compare(&a, &b, vaelab_datasets::Channels::Grey, &names, &registry).unwrap();
    assert_eq!((c.real.images, c.real.width, c.real.height, c.channels, c.bit_depth), (4, 32, 32, 1, 8));
    assert_eq!(c.real, c.fake);
    let real = ImageBatch { n: 4, c: 1, h: 32, w: 32, pixels: real_px, factors: vec![], bit_depth: 8 };
    let fake = real.with_pixels(fake_px);
    assert!((c.metrics["mse"].value - Mse.compute(&real, &fake).unwrap()).abs() < 1e-12);
    assert!((c.metrics["psnr"].value - Psnr.compute(&real, &fake).unwrap()).abs() < 1e-9);
    assert!(c.metrics["ssim"].value < 1.0 && c.metrics["ssim"].value > 0.5);

    std::fs::remove_file(b.join("3.png")).unwrap();
    let mut report = String::new();
    let mut case =
        |title: &str, err: String| report += &format!("## {title}\n{}\n", err.replace(&dir.display().to_string(), "[DIR]"));
    case("different counts", compare(&a, &b, vaelab_datasets::Channels::Grey, &names, &registry).unwrap_err().to_string());
    image::GrayImage::new(16, 16).save(b.join("3.png")).unwrap();
    case("different sizes", compare(&a, &b, vaelab_datasets::Channels::Grey, &names, &registry).unwrap_err().to_string());
    let unknown = vec!["lpips".to_string()];
    case("unknown metric", compare(&a, &b, vaelab_datasets::Channels::Grey, &unknown, &registry).unwrap_err().to_string());
    case(
        "missing folder",
        compare(&dir.join("nowhere"), &b, vaelab_datasets::Channels::Grey, &names, &registry).unwrap_err().to_string(),
    );
    insta::assert_snapshot!(report);
}

/// The domain Fréchet distance: finite, deterministic, and the same whether the run's own encoder
/// is used implicitly or named as the reference encoder; a different run's encoder gives another value.
#[test]
fn domain_frechet_distance_from_the_runs_own_or_a_reference_encoder() {
    let dir = scratch("domain-fd");
    let mut spec = tiny();
    spec.train.steps = 40;
    spec.eval.metrics = vec!["mse".into(), "domain_fd".into()];
    vaelab::train::train(&spec, &options(&dir)).unwrap();
    let own = vaelab::eval::evaluate(&dir, &Default::default()).unwrap().metrics["domain_fd"].clone();
    assert!(own.value.is_finite() && own.value >= 0.0 && own.definition.contains("not FID"), "{own:?}");

    // A second run of another seed serves as the reference encoder for the first.
    let other = scratch("domain-fd-reference");
    let mut reference = spec.clone();
    reference.seed = 99;
    vaelab::train::train(&reference, &options(&other)).unwrap();
    let text = std::fs::read_to_string(dir.join("spec.ron")).unwrap();
    let with_reference =
        text.replace("domain_encoder: None", &format!("domain_encoder: Some({:?})", other.display().to_string()));
    assert_ne!(text, with_reference, "the resolved spec writes domain_encoder");
    std::fs::write(dir.join("spec.ron"), &with_reference).unwrap();
    let referenced = vaelab::eval::evaluate(&dir, &Default::default()).unwrap().metrics["domain_fd"].clone();
    assert!(referenced.definition.contains("the encoder of run"), "{referenced:?}");
    assert_ne!(referenced.value, own.value);
    // Naming the run itself reproduces the implicit value.
    std::fs::write(
        dir.join("spec.ron"),
        text.replace("domain_encoder: None", &format!("domain_encoder: Some({:?})", dir.display().to_string())),
    )
    .unwrap();
    let itself = vaelab::eval::evaluate(&dir, &Default::default()).unwrap().metrics["domain_fd"].value;
    assert_eq!(itself, own.value);
}

/// MIG, SAP and DCI in `vaelab eval` on the shapes factors: present, in range, deterministic; a
/// dataset without factors reports them as failed with the reason.
#[test]
fn disentanglement_metrics_in_eval() {
    let dir = scratch("eval-factors");
    let mut spec = tiny();
    spec.train.steps = 30;
    spec.eval.metrics = vec!["mse".into(), "mig".into(), "sap".into(), "dci".into(), "dci_linear".into()];
    vaelab::train::train(&spec, &options(&dir)).unwrap();
    let report = vaelab::eval::evaluate(&dir, &Default::default()).unwrap();
    let dci_keys =
        ["dci", "dci_linear"].map(|m| ["disentanglement", "completeness", "informativeness"].map(|p| format!("{m}.{p}")));
    for key in ["mig", "sap"].iter().map(|k| k.to_string()).chain(dci_keys.into_iter().flatten()) {
        let key = key.as_str();
        let v = report.metrics.get(key).unwrap_or_else(|| panic!("{key} missing: {report:?}")).value;
        assert!((-0.05..=1.0).contains(&v), "{key} = {v}");
    }
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(vaelab::eval::evaluate(&dir, &Default::default()).unwrap(), report);
    // `vaelab eval --metrics` computes another list without touching the spec; the earlier
    // evaluation's other metrics are kept beside it.
    let opts = vaelab::eval::EvalOptions { metrics: Some(vec!["psnr".into(), "mig".into()]), ..Default::default() };
    let other = vaelab::eval::evaluate(&dir, &opts).unwrap();
    assert_eq!(other.metrics.len(), report.metrics.len() + 1, "psnr added, nothing dropped");
    assert!(other.metrics.contains_key("psnr"));
    assert_eq!(other.metrics["mig"], report.metrics["mig"]);
    assert_eq!(other.metrics["sap"], report.metrics["sap"]);
}
