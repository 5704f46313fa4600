//! Dataset formats read from files: IDX written by the test itself, and the real Fashion-MNIST from
//! Debian's `dataset-fashion-mnist` package when installed (CI installs it and sets
//! `VAELAB_REQUIRE_DATA=1`, which turns a missing package into a failure instead of a skip).

use crate::training::scratch;
use std::path::Path;
use vaelab_datasets::idx::write_idx;
use vaelab_datasets::{Dataset, IdxConfig, IdxDataset, Split};

pub const FASHION: &str = "/usr/share/datasets/fashion-mnist";

/// Whether the real data is there; panics when CI requires it and it is not.
pub fn have_real_data(path: &str) -> bool {
    let there = Path::new(path).exists();
    if !there {
        assert!(std::env::var_os("VAELAB_REQUIRE_DATA").is_none(), "{path} is missing but VAELAB_REQUIRE_DATA is set");
        eprintln!("skipping: {path} not installed (apt-get install dataset-fashion-mnist)");
    }
    there
}

fn config(dir: &Path) -> IdxConfig {
    IdxConfig { dir: dir.to_path_buf(), train: "train".into(), test: "t10k".into() }
}

/// Writes a 3-image train split and a 2-image test split of 2×3 images, plain and gzipped.
fn tiny_idx(dir: &Path, gzip: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let write = |name: &str, dims: &[usize], data: &[u8]| {
        let path = dir.join(name);
        write_idx(&path, dims, data).unwrap();
        if gzip {
            use std::io::Write;
            let raw = std::fs::read(&path).unwrap();
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&raw).unwrap();
            std::fs::write(dir.join(format!("{name}.gz")), enc.finish().unwrap()).unwrap();
            std::fs::remove_file(&path).unwrap();
        }
    };
    write("train-images-idx3-ubyte", &[3, 2, 3], &(0..18).map(|v| v * 15).collect::<Vec<u8>>());
    write("train-labels-idx1-ubyte", &[3], &[7, 1, 4]);
    write("t10k-images-idx3-ubyte", &[2, 2, 3], &[255; 12]);
    write("t10k-labels-idx1-ubyte", &[2], &[0, 9]);
}

#[test]
fn idx_files_plain_and_gzipped_load_with_labels() {
    for gzip in [false, true] {
        let dir = scratch(&format!("idx-{gzip}"));
        tiny_idx(&dir, gzip);
        let ds = IdxDataset::open(&config(&dir), (usize::MAX, usize::MAX)).unwrap();
        assert_eq!(ds.image_shape(), (1, 2, 3));
        assert_eq!((ds.len(Split::Train), ds.len(Split::Test)), (3, 2));
        let s = ds.sample(Split::Train, 1);
        assert_eq!(s.pixels, (6..12).map(|v| (v * 15) as f32 / 255.0).collect::<Vec<_>>());
        assert_eq!(s.factors, vec![1.0]);
        assert_eq!(ds.label(Split::Test, 1), 9);
        // Size caps take the first images of each file.
        assert_eq!(IdxDataset::open(&config(&dir), (2, 1)).unwrap().len(Split::Train), 2);
    }
}

#[test]
fn bad_idx_input_names_the_file() {
    let dir = scratch("idx-bad");
    tiny_idx(&dir, false);
    // Truncate the train images.
    let images = dir.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() - 5]).unwrap();
    let truncated = IdxDataset::open(&config(&dir), (usize::MAX, usize::MAX)).err().unwrap().to_string();
    // Label count that does not match the images.
    tiny_idx(&dir, false);
    write_idx(&dir.join("t10k-labels-idx1-ubyte"), &[3], &[1, 2, 3]).unwrap();
    let labels = IdxDataset::open(&config(&dir), (usize::MAX, usize::MAX)).err().unwrap().to_string();
    let missing = IdxDataset::open(&config(&dir.join("nowhere")), (1, 1)).err().unwrap().to_string();
    let report = [truncated, labels, missing].join("\n").replace(&dir.display().to_string(), "DIR");
    insta::assert_snapshot!(report);
}

/// The real Fashion-MNIST: 60,000 + 10,000 images of 28×28 in 10 classes. Its mean training pixel,
/// 0.2860 (Xiao et al. 2017 report mean 72.94/255 for the training set), checks the decoding.
#[test]
fn real_fashion_mnist_loads() {
    if !have_real_data(FASHION) {
        return;
    }
    let ds = IdxDataset::open(&config(Path::new(FASHION)), (usize::MAX, usize::MAX)).unwrap();
    assert_eq!((ds.len(Split::Train), ds.len(Split::Test)), (60_000, 10_000));
    assert_eq!(ds.image_shape(), (1, 28, 28));
    let mut counts = [0usize; 10];
    let mut sum = 0.0f64;
    for i in 0..60_000 {
        counts[ds.label(Split::Train, i) as usize] += 1;
        sum += ds.sample(Split::Train, i).pixels.iter().map(|v| *v as f64).sum::<f64>();
    }
    assert_eq!(counts, [6_000; 10], "Fashion-MNIST is balanced");
    let mean = sum / (60_000.0 * 784.0);
    assert!((mean - 0.2860).abs() < 5e-4, "mean pixel {mean}");
}

/// `specs/fashion-mnist/vae.ron` trains and evaluates (a few steps here; the full run is by hand).
#[test]
fn fashion_mnist_spec_trains() {
    if !have_real_data(FASHION) {
        return;
    }
    let mut spec = vaelab_core::spec::load_spec(Path::new("../specs/fashion-mnist/vae.ron")).unwrap().experiment;
    spec.train.steps = 5;
    spec.eval.test_images = 64;
    let dir = scratch("fashion");
    vaelab_core::train::train(&spec, &crate::training::options(&dir)).unwrap();
    let report = vaelab_core::eval::evaluate(&dir, None, None).unwrap();
    assert!(report.metrics["mse"].value.is_finite());
    assert_eq!(report.test_images, 64);
}
