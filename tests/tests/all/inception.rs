//! The FID network against pytorch-fid's InceptionV3 on the same deterministic weights and images
//! (`xtask/fixtures/inception_reference.py`), and its weight loading.

use vaelab::metrics::{fid, inception};
use vaelab_datasets::ImageBatch;

/// The closed-form images of the fixture script.
fn image(index: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(c * h * w);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let (i, y, x, ch) = (index as f64, y as f64, x as f64, ch as f64);
                let p = 0.5 + 0.45 * (0.13 * x * (i + 1.0) + 0.07 * y + ch).sin() * (0.05 * y * (i + 2.0) - 0.3 * ch).cos();
                v.push(p.clamp(0.0, 1.0) as f32);
            }
        }
    }
    v
}

fn synthetic_network() -> inception::Inception {
    let mut params: std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> =
        inception::synthetic_parameters().into_iter().map(|(n, s, v)| (n, (s, v))).collect();
    inception::Inception::from_tensors(|name| params.remove(name)).unwrap()
}

#[test]
fn inception_features_match_pytorch_fid_to_1e4() {
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(crate::specs::workspace().join("tests/fixtures/inception_reference.json")).unwrap(),
    )
    .unwrap();
    let net = synthetic_network();
    for case in fixture["cases"].as_array().unwrap() {
        let dim = |k: &str| case[k].as_u64().unwrap() as usize;
        let (n, c, h, w) = (dim("n"), dim("c"), dim("h"), dim("w"));
        let pixels = (0..n).flat_map(|i| image(i, c, h, w)).collect();
        let batch = ImageBatch { n, c, h, w, pixels, factors: vec![], bit_depth: 8 };
        let got = fid::features(&net, &batch, None);
        let want = case["features"].as_array().unwrap();
        for (g, wnt) in got.iter().zip(want) {
            let wnt: Vec<f64> = wnt.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(g.len(), 2048);
            let scale = wnt.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let worst = g.iter().zip(&wnt).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(worst <= 1e-4 * scale, "{}: max |Δ| {worst:.3e} against max |feature| {scale:.3}", case["label"]);
        }
    }
}

/// Folder `dir` with `n` grey `side`×`side` PNGs of a pattern that depends on `kind`.
fn image_folder(dir: &std::path::Path, n: u32, side: u32, kind: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::GrayImage::from_fn(side, side, |x, y| {
            let v = ((x * (3 + kind) + y * (5 + i) + i * 17) % 64) * 4 * ((x / (4 + kind) + y / 6) % 2);
            image::Luma([v as u8])
        });
        img.save(dir.join(format!("{i:02}.png"))).unwrap();
    }
}

/// `vaelab metrics A B --metrics fid` through the weight file: zero for a set against itself,
/// symmetric, positive between different sets, and sets may differ in count and size. Missing or
/// wrong weights are errors that say what to do.
#[test]
fn fid_between_folders_loads_weights_from_safetensors() {
    use vaelab::eval::compare::{compare, CompareOptions};
    use vaelab::eval::MetricRegistry;
    let dir = crate::training::scratch("fid-compare");
    std::fs::create_dir_all(&dir).unwrap();
    let weights = dir.join("inception-fid.safetensors");
    fid::write_synthetic_weights(&weights).unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    image_folder(&a, 6, 40, 0);
    image_folder(&b, 4, 48, 3);
    let registry = MetricRegistry::builtin();
    let opts = |names: &'static [&'static str], weights: Option<std::path::PathBuf>| {
        (names.iter().map(|s| s.to_string()).collect::<Vec<_>>(), weights)
    };
    let run = |x: &std::path::Path, y: &std::path::Path, (names, w): (Vec<String>, Option<std::path::PathBuf>)| {
        let o = CompareOptions {
            channels: vaelab_datasets::Channels::Grey,
            names: &names,
            registry: &registry,
            fid_weights: w,
            domain_encoder: None,
        };
        compare(x, y, &o)
    };
    let same = run(&a, &a, opts(&["fid"], Some(weights.clone()))).unwrap().metrics["fid"].value;
    assert!(same.abs() < 1e-3, "FID of a set with itself: {same}");
    let ab = run(&a, &b, opts(&["fid"], Some(weights.clone()))).unwrap();
    let ba = run(&b, &a, opts(&["fid"], Some(weights.clone()))).unwrap();
    let (v_ab, v_ba) = (ab.metrics["fid"].value, ba.metrics["fid"].value);
    assert!(v_ab > 1.0, "different sets: {v_ab}");
    assert!((v_ab - v_ba).abs() < 1e-6 * v_ab, "{v_ab} vs {v_ba}");
    assert_eq!((ab.real.images, ab.fake.images, ab.fake.width), (6, 4, 48));
    assert!(ab.metrics["fid"].note.as_deref().unwrap().contains("biased upwards"));

    let mut report = String::new();
    let mut case = |title: &str, err: String| {
        report += &format!("## {title}\n{}\n", err.replace(&dir.display().to_string(), "[DIR]"));
    };
    assert!(std::env::var_os(fid::WEIGHTS_VAR).is_none(), "unset {} to run this test", fid::WEIGHTS_VAR);
    case("no weight file", run(&a, &b, opts(&["fid"], None)).unwrap_err().to_string());
    case(
        "pairwise and fid, different counts",
        run(&a, &b, opts(&["mse", "fid"], Some(weights.clone()))).unwrap_err().to_string(),
    );
    let not_weights = dir.join("a/00.png");
    case("not a safetensors file", run(&a, &b, opts(&["fid"], Some(not_weights))).unwrap_err().to_string());
    let partial = dir.join("partial.safetensors");
    let data = std::fs::read(&weights).unwrap();
    let st = safetensors::SafeTensors::deserialize(&data).unwrap();
    let kept: Vec<_> = st.tensors().into_iter().filter(|(n, _)| !n.starts_with("Mixed_6c")).collect();
    std::fs::write(&partial, safetensors::serialize(kept, &None).unwrap()).unwrap();
    case("a tensor missing", run(&a, &b, opts(&["fid"], Some(partial))).unwrap_err().to_string());
    case("domain_fd without an encoder", run(&a, &b, opts(&["domain_fd"], None)).unwrap_err().to_string());
    insta::assert_snapshot!(report);
}
