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
        let ds = IdxDataset::open(&config(&dir), vaelab_datasets::SplitSizes::unlimited()).unwrap();
        assert_eq!(ds.image_shape(), (1, 2, 3));
        assert_eq!((ds.len(Split::Train), ds.len(Split::Test)), (3, 2));
        let s = ds.sample(Split::Train, 1);
        assert_eq!(s.pixels, (6..12).map(|v| (v * 15) as f32 / 255.0).collect::<Vec<_>>());
        assert_eq!(s.factors, vec![1.0]);
        assert_eq!(ds.label(Split::Test, 1), 9);
        // Size caps take the first images of each file.
        assert_eq!(
            IdxDataset::open(&config(&dir), vaelab_datasets::SplitSizes { train: 2, val: 0, test: 1 }).unwrap().len(Split::Train),
            2
        );
        // Validation images are the last of the training file and leave the training split.
        let with_val = IdxDataset::open(&config(&dir), vaelab_datasets::SplitSizes { train: 9, val: 1, test: 1 }).unwrap();
        let n = ds.len(Split::Train);
        assert_eq!((with_val.len(Split::Train), with_val.len(Split::Val)), (n - 1, 1));
        assert_eq!(with_val.sample(Split::Val, 0).pixels, ds.sample(Split::Train, n - 1).pixels);
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
    let truncated = IdxDataset::open(&config(&dir), vaelab_datasets::SplitSizes::unlimited()).err().unwrap().to_string();
    // Label count that does not match the images.
    tiny_idx(&dir, false);
    write_idx(&dir.join("t10k-labels-idx1-ubyte"), &[3], &[1, 2, 3]).unwrap();
    let labels = IdxDataset::open(&config(&dir), vaelab_datasets::SplitSizes::unlimited()).err().unwrap().to_string();
    let missing = IdxDataset::open(&config(&dir.join("nowhere")), vaelab_datasets::SplitSizes { train: 1, val: 0, test: 1 })
        .err()
        .unwrap()
        .to_string();
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
    let ds = IdxDataset::open(&config(Path::new(FASHION)), vaelab_datasets::SplitSizes::unlimited()).unwrap();
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
    let mut spec = vaelab::spec::load_spec(Path::new("../specs/fashion-mnist/vae.ron")).unwrap().experiment;
    spec.train.steps = 5;
    spec.eval.test_images = 64;
    let dir = scratch("fashion");
    vaelab::train::train(&spec, &crate::training::options(&dir)).unwrap();
    let report = vaelab::eval::evaluate(&dir, &Default::default()).unwrap();
    assert!(report.metrics["mse"].value.is_finite());
    assert_eq!(report.test_images, 64);
}

pub mod folders {
    use crate::training::scratch;
    use image::{ImageBuffer, Luma, Rgb};
    use std::path::Path;
    use vaelab_datasets::{Channels, Dataset, Fit, FolderConfig, FolderDataset, OnBadFile, Split};

    fn cfg(root: &Path, size: usize) -> FolderConfig {
        FolderConfig {
            root: root.to_path_buf(),
            size,
            channels: Channels::Grey,
            fit: Fit::Exact,
            on_bad_file: OnBadFile::Error,
            limits: vaelab_datasets::SplitSizes { train: usize::MAX, val: 0, test: 2 },
            seed: 1,
            cache_mib: 64,
        }
    }

    fn grey8(path: &Path, w: u32, h: u32, v: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        ImageBuffer::from_pixel(w, h, Luma([v])).save(path).unwrap();
    }

    fn message(r: Result<FolderDataset, vaelab_datasets::DataError>, dir: &Path) -> String {
        r.err().expect("should fail").to_string().replace(&dir.display().to_string(), "DIR")
    }

    /// The Knee OA layout: class folders `0`…`4` under train/ and test/ give numeric labels.
    #[test]
    fn class_folders_give_labels_and_8_and_16_bit_pngs_decode() {
        let root = scratch("folder-classes");
        grey8(&root.join("train/0/a.png"), 8, 8, 51); // 51/255 = 0.2
        grey8(&root.join("train/4/b.png"), 8, 8, 255);
        std::fs::create_dir_all(root.join("train/2")).unwrap();
        ImageBuffer::from_pixel(8, 8, Luma([16384u16])).save(root.join("train/2/c.png")).unwrap(); // 0.25, 16-bit
        grey8(&root.join("test/1/d.png"), 8, 8, 0);
        let ds = FolderDataset::open(cfg(&root, 8)).unwrap();
        assert_eq!(ds.classes(), ["0", "1", "2", "4"], "classes of both splits, in numeric order");
        assert_eq!(ds.sample(Split::Test, 0).factors, vec![1.0]);
        assert_eq!((ds.len(Split::Train), ds.len(Split::Test)), (3, 1));
        assert_eq!(ds.bit_depth(), 16, "the deepest file sets the recorded bit depth");
        let by_label: Vec<(f32, f32)> = (0..3).map(|i| ds.sample(Split::Train, i)).map(|s| (s.factors[0], s.pixels[0])).collect();
        assert_eq!(by_label.len(), 3);
        for (label, value) in by_label {
            let want = match label as u32 {
                0 => 0.2,
                2 => 0.25,
                4 => 1.0,
                other => panic!("label {other}"),
            };
            assert!((value - want).abs() < 1e-4, "label {label}: {value}");
        }
        assert!(ds.is_cached());
    }

    /// The grey levels of [`three_constant_classes`]' classes 0, 1 and 2.
    pub const CLASS_LEVELS: [u8; 3] = [40, 128, 220];

    /// `root/{train,test}/{0,1,2}/00…09.png`: ten `size`×`size` images per class and split, each of
    /// its class's constant grey level, so an image's class can be read from any pixel.
    pub fn three_constant_classes(root: &Path, size: u32) {
        for (class, level) in CLASS_LEVELS.iter().enumerate() {
            for i in 0..10 {
                for split in ["train", "test"] {
                    grey8(&root.join(format!("{split}/{class}/{i:02}.png")), size, size, *level);
                }
            }
        }
    }

    /// The Knee OA grading data's layout in small: `root/{train,val,test}/{0…4}/00…01.png`, `size`×`size`
    /// grey images, each grade's of its own constant level.
    pub fn knee_oa_layout(root: &Path, size: u32) {
        for grade in 0..5u8 {
            for split in ["train", "val", "test"] {
                for i in 0..2 {
                    grey8(&root.join(format!("{split}/{grade}/{i:02}.png")), size, size, 30 + 45 * grade);
                }
            }
        }
    }

    /// Three classes of constant intensity, listed class by class as in the Knee-OA layout. Under a
    /// `test_size` limit the split keeps every class in proportion (the first 15 files in listing
    /// order would be ten of class 0 and five of class 1), and each image's label is its intensity's.
    #[test]
    fn a_limited_class_folder_split_holds_every_class_in_proportion() {
        let root = scratch("folder-stratified");
        let levels = CLASS_LEVELS;
        three_constant_classes(&root, 4);
        let limits = vaelab_datasets::SplitSizes { train: 6, val: 0, test: 15 };
        let ds = FolderDataset::open(FolderConfig { limits, ..cfg(&root, 4) }).unwrap();
        for (split, n) in [(Split::Train, 6), (Split::Test, 15)] {
            assert_eq!(ds.len(split), n);
            let mut by_intensity = [0; 3];
            for i in 0..n {
                let s = ds.sample(split, i);
                let class = levels.iter().position(|l| (*l as f32 / 255.0 - s.pixels[0]).abs() < 1e-4).expect("a class level");
                assert_eq!(s.factors, [class as f32], "{split:?} image {i}: label and intensity disagree");
                by_intensity[class] += 1;
            }
            assert_eq!(by_intensity, [n / 3; 3], "{split:?}");
            let labels: Vec<Option<u32>> = (0..n).map(|i| Some(ds.sample(split, i).factors[0] as u32)).collect();
            assert_eq!(ds.labels(split), labels);
        }
        // Same seed, same subset.
        let again = FolderDataset::open(FolderConfig { limits, ..cfg(&root, 4) }).unwrap();
        assert_eq!(again.labels(Split::Test), ds.labels(Split::Test));
    }

    /// The Knee-OA validation folder becomes the val split; a flat folder holds `val` images out of
    /// training; the splits are disjoint and the same for the same seed.
    #[test]
    fn validation_splits_from_a_val_folder_or_held_out() {
        let root = scratch("folder-val");
        for (split, n) in [("train", 4), ("val", 2), ("test", 1)] {
            for i in 0..n {
                grey8(&root.join(format!("{split}/{}/{split}{i}.png", i % 2)), 4, 4, (i * 10) as u8);
            }
        }
        let limits = vaelab_datasets::SplitSizes { train: usize::MAX, val: usize::MAX, test: usize::MAX };
        let ds = FolderDataset::open(FolderConfig { limits, ..cfg(&root, 4) }).unwrap();
        assert_eq!([Split::Train, Split::Val, Split::Test].map(|s| ds.len(s)), [4, 2, 1]);

        let flat = scratch("folder-flat-val");
        for i in 0..20 {
            grey8(&flat.join(format!("{i:02}.png")), 4, 4, (i * 10) as u8);
        }
        let limits = vaelab_datasets::SplitSizes { train: usize::MAX, val: 3, test: 5 };
        let open = || FolderDataset::open(FolderConfig { limits, ..cfg(&flat, 4) }).unwrap();
        let ds = open();
        assert_eq!([Split::Train, Split::Val, Split::Test].map(|s| ds.len(s)), [12, 3, 5]);
        let values = |ds: &FolderDataset, s: Split| (0..ds.len(s)).map(|i| ds.sample(s, i).pixels[0]).collect::<Vec<f32>>();
        let mut all: Vec<f32> = [Split::Train, Split::Val, Split::Test].iter().flat_map(|s| values(&ds, *s)).collect();
        all.sort_by(f32::total_cmp);
        all.dedup();
        assert_eq!(all.len(), 20, "every image in exactly one split");
        assert_eq!(values(&open(), Split::Val), values(&ds, Split::Val));
    }

    #[test]
    fn rgb_jpeg_tiff_and_fitting_to_size() {
        let root = scratch("folder-formats");
        std::fs::create_dir_all(&root).unwrap();
        ImageBuffer::from_pixel(20, 10, Rgb([255u8, 0, 0])).save(root.join("red.jpg")).unwrap();
        ImageBuffer::from_pixel(20, 10, Rgb([0u8, 0, 255])).save(root.join("blue.tiff")).unwrap();
        // A wide grey image whose central square is white and sides black: CenterCrop keeps white.
        let mut img = ImageBuffer::from_pixel(30, 10, Luma([0u8]));
        for y in 0..10 {
            for x in 10..20 {
                img.put_pixel(x, y, Luma([255]));
            }
        }
        img.save(root.join("wide.png")).unwrap();
        let mut c = cfg(&root, 8);
        c.limits = vaelab_datasets::SplitSizes { train: usize::MAX, val: 0, test: 1 };
        c.channels = Channels::Rgb;
        c.fit = Fit::Resize;
        let ds = FolderDataset::open(c.clone()).unwrap();
        assert_eq!(ds.image_shape(), (3, 8, 8));
        assert_eq!(ds.len(Split::Train) + ds.len(Split::Test), 3);
        let all: Vec<Vec<f32>> = (0..ds.len(Split::Train))
            .map(|i| ds.sample(Split::Train, i).pixels)
            .chain([ds.sample(Split::Test, 0).pixels])
            .collect();
        // Planar C×H×W: some image is red (R plane ≈ 1, B plane ≈ 0), some blue.
        assert!(all.iter().any(|p| p[0] > 0.95 && p[128] < 0.05), "a red image");
        assert!(all.iter().any(|p| p[0] < 0.05 && p[128] > 0.95), "a blue image");
        c.channels = Channels::Grey;
        c.fit = Fit::CenterCrop;
        let ds = FolderDataset::open(c).unwrap();
        let whites = (0..ds.len(Split::Train))
            .map(|i| ds.sample(Split::Train, i))
            .chain([ds.sample(Split::Test, 0)])
            .filter(|s| s.pixels.iter().all(|v| *v > 0.99))
            .count();
        assert_eq!(whites, 1, "the centre crop of wide.png is all white");
    }

    #[test]
    fn bad_folders_and_files_name_the_path() {
        let root = scratch("folder-bad");
        let mut report = Vec::new();
        report.push(message(FolderDataset::open(cfg(&root.join("missing"), 8)), &root));
        std::fs::create_dir_all(root.join("empty")).unwrap();
        report.push(message(FolderDataset::open(cfg(&root.join("empty"), 8)), &root));
        // Mixed sizes without a fit option: the message names the odd file and its size.
        let mixed = root.join("mixed");
        for name in ["a", "b", "c"] {
            grey8(&mixed.join(format!("{name}.png")), 8, 8, 9);
        }
        grey8(&mixed.join("odd.png"), 12, 9, 9);
        report.push(message(FolderDataset::open(cfg(&mixed, 8)), &root));
        // A truncated PNG: an error naming it, or with Skip, left out and counted.
        let corrupt = root.join("corrupt");
        for name in ["a", "b", "c", "d"] {
            grey8(&corrupt.join(format!("{name}.png")), 8, 8, 9);
        }
        let bytes = std::fs::read(corrupt.join("c.png")).unwrap();
        std::fs::write(corrupt.join("c.png"), &bytes[..bytes.len() / 2]).unwrap();
        report.push(message(FolderDataset::open(cfg(&corrupt, 8)), &root));
        let mut skip = cfg(&corrupt, 8);
        skip.on_bad_file = OnBadFile::Skip;
        let ds = FolderDataset::open(skip).unwrap();
        assert_eq!(ds.skipped().len(), 1);
        assert_eq!(ds.skipped()[0].0, corrupt.join("c.png"));
        assert_eq!(ds.len(Split::Train) + ds.len(Split::Test), 3);
        // Class layout without a test folder.
        grey8(&root.join("classes/train/0/a.png"), 8, 8, 9);
        report.push(message(FolderDataset::open(cfg(&root.join("classes"), 8)), &root));
        insta::assert_snapshot!(report.join("\n"));
    }
}
