//! The Fréchet distance against pytorch-fid's formula (scipy `sqrtm`) on fixed feature sets.

use vaelab::metrics::frechet::{frechet_distance, Gaussian};

/// The closed-form features of `xtask/fixtures/frechet_reference.py`.
fn features(which: usize, n: usize, d: usize) -> Vec<Vec<f64>> {
    let s = which as f64;
    (0..n)
        .map(|i| {
            let i = i as f64;
            (0..d)
                .map(|j| {
                    let j = j as f64;
                    (0.7 * i + 1.3 * j + s).sin() + 0.5 * (0.11 * i * j + 0.3 * s).cos() + 0.01 * s * j + 0.2 * s * (i * j).sin()
                })
                .collect()
        })
        .collect()
}

#[test]
fn frechet_distance_matches_scipy_sqrtm_to_1e6_relative() {
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(crate::specs::workspace().join("tests/fixtures/frechet_reference.json")).unwrap(),
    )
    .unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let (a, b) = (case["sets"][0].as_u64().unwrap() as usize, case["sets"][1].as_u64().unwrap() as usize);
        let (n1, n2) = (case["rows"][0].as_u64().unwrap() as usize, case["rows"][1].as_u64().unwrap() as usize);
        let d = case["dim"].as_u64().unwrap() as usize;
        let want = case["frechet"].as_f64().unwrap();
        let got =
            frechet_distance(&Gaussian::fit(&features(a, n1, d), d).unwrap(), &Gaussian::fit(&features(b, n2, d), d).unwrap());
        let tolerance = if want.abs() < 1e-9 { 1e-9 } else { 1e-6 * want.abs() };
        assert!((got - want).abs() <= tolerance, "sets {a},{b} d={d}: {got} vs scipy {want}");
    }
}

#[test]
fn frechet_distance_of_known_gaussians() {
    // Two 1-D sets: N-like samples with means 0 and 3 and equal spread: d² = 9 + (σ₁ − σ₂)² = 9.
    let x: Vec<Vec<f64>> = [-1.0, 0.0, 1.0].iter().map(|v| vec![*v]).collect();
    let y: Vec<Vec<f64>> = [2.0, 3.0, 4.0].iter().map(|v| vec![*v]).collect();
    let d = frechet_distance(&Gaussian::fit(&x, 1).unwrap(), &Gaussian::fit(&y, 1).unwrap());
    assert!((d - 9.0).abs() < 1e-12, "{d}");
    // Spreads 1 and 2 (variances 1 and 4) with equal means: (1 − 2)² = 1.
    let z: Vec<Vec<f64>> = [-2.0, 0.0, 2.0].iter().map(|v| vec![*v]).collect();
    let d = frechet_distance(&Gaussian::fit(&x, 1).unwrap(), &Gaussian::fit(&z, 1).unwrap());
    assert!((d - 1.0).abs() < 1e-12, "{d}");
    assert!(Gaussian::fit(&x[..1], 1).unwrap_err().contains("at least 2"));
}
