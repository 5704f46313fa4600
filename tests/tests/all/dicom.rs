//! DICOM: real radiographs from `pydicom-data` against pydicom's display values at fixed pixels,
//! compressed transfer syntaxes against their uncompressed twins, patches, and DICOM files written
//! here with known stored values (rescale, window, MONOCHROME1, 8/16 bits, signed) so the formulas
//! are checked on every machine.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::path::{Path, PathBuf};
use vaelab_datasets::dicom::{is_foreground, read_radiograph};
use vaelab_datasets::{Dataset, DicomConfig, DicomDataset, Fit, OnBadFile, Patches, Split, SplitSizes, Window};

/// `datasets/downloads/pydicom-data` (filled by `datasets/fetch/pydicom-data.sh`) or `VAELAB_DICOM_DIR`.
/// Absent data skip these tests unless `VAELAB_REQUIRE_DATA` is set (CI), where they must run.
pub fn real_data() -> Option<PathBuf> {
    let dir = std::env::var_os("VAELAB_DICOM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::specs::workspace().join("datasets/downloads/pydicom-data"));
    if dir.join("RG3_UNCR.dcm").exists() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("VAELAB_REQUIRE_DATA").is_none(),
        "{} lacks the pydicom-data radiographs; run datasets/fetch/pydicom-data.sh",
        dir.display()
    );
    eprintln!("skipping: no pydicom-data radiographs in {} (run datasets/fetch/pydicom-data.sh)", dir.display());
    None
}

#[test]
fn real_radiographs_match_pydicom_at_fixed_pixels() {
    let Some(dir) = real_data() else { return };
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(super::specs::workspace().join("tests/fixtures/dicom_reference.json")).unwrap(),
    )
    .unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let window = case["window"].as_array().map(|w| Window { center: w[0].as_f64().unwrap(), width: w[1].as_f64().unwrap() });
        let r = read_radiograph(&dir.join(file), window).unwrap();
        assert_eq!((r.width as u64, r.height as u64), (case["width"].as_u64().unwrap(), case["height"].as_u64().unwrap()));
        assert_eq!(r.bits_stored as u64, case["bits_stored"].as_u64().unwrap());
        assert_eq!(r.monochrome1, case["photometric"] == "MONOCHROME1");
        for p in case["points"].as_array().unwrap() {
            let (row, col, want) = (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as usize, p[2].as_f64().unwrap());
            let got = r.pixels[row * r.width + col] as f64;
            assert!((got - want).abs() < 1e-6, "{file} {window:?} ({row}, {col}): {got} vs pydicom {want}");
        }
        let mean = r.pixels.iter().map(|v| *v as f64).sum::<f64>() / r.pixels.len() as f64;
        assert!((mean - case["mean"].as_f64().unwrap()).abs() < 1e-6, "{file}: mean {mean}");
    }
}

#[test]
fn compressed_transfer_syntaxes_decode_to_their_uncompressed_twins() {
    let Some(dir) = real_data() else { return };
    for (compressed, plain) in
        [("RG1_J2KR.dcm", "RG1_UNCR.dcm"), ("RG3_J2KR.dcm", "RG3_UNCR.dcm"), ("emri_small_RLE.dcm", "emri_small.dcm")]
    {
        let (a, b) = (read_radiograph(&dir.join(compressed), None).unwrap(), read_radiograph(&dir.join(plain), None).unwrap());
        assert_eq!((a.width, a.height, a.bits_stored), (b.width, b.height, b.bits_stored), "{compressed}");
        assert!(a.pixels == b.pixels, "{compressed} (lossless) differs from {plain}");
    }
    // JPEG lossless, 16- and 8-bit: decoded, not constant, in range.
    for (file, bits) in [("JPEG-LL.dcm", 16), ("JPGLosslessP14SV1_1s_1f_8b.dcm", 8)] {
        let r = read_radiograph(&dir.join(file), None).unwrap();
        assert_eq!(r.bits_stored, bits, "{file}");
        let (lo, hi) = r.pixels.iter().fold((1f32, 0f32), |(a, b), v| (a.min(*v), b.max(*v)));
        assert!(lo >= 0.0 && hi <= 1.0 && hi - lo > 0.5, "{file}: range {lo}..{hi}");
    }
}

#[test]
fn a_radiograph_cut_into_patches() {
    let Some(dir) = real_data() else { return };
    let file = dir.join("RG3_UNCR.dcm");
    let patches = Patches { size: 256, stride: 192, min_foreground: 0.5 };
    let cfg = DicomConfig {
        root: file.clone(),
        size: 256,
        fit: Fit::Exact,
        window: None,
        patches: Some(patches),
        on_bad_file: OnBadFile::Error,
        limits: SplitSizes { train: usize::MAX, val: 0, test: 5 },
        seed: 1,
    };
    let ds = DicomDataset::open(cfg.clone()).unwrap();
    // Count the qualifying patches independently from the full image.
    let full = read_radiograph(&file, None).unwrap();
    let mut expected = Vec::new();
    for y in (0..=full.height - 256).step_by(192) {
        for x in (0..=full.width - 256).step_by(192) {
            let patch: Vec<f32> =
                (y..y + 256).flat_map(|r| full.pixels[r * full.width + x..r * full.width + x + 256].to_vec()).collect();
            if patch.iter().filter(|v| is_foreground(**v)).count() * 2 >= 256 * 256 {
                expected.push(patch);
            }
        }
    }
    assert!(expected.len() > 5 && expected.len() < 81, "{} of 81 patches qualify", expected.len());
    assert_eq!((ds.len(Split::Train) + ds.len(Split::Test), ds.len(Split::Test)), (expected.len(), 5));
    for split in [Split::Train, Split::Test] {
        for i in 0..ds.len(split) {
            let s = ds.sample(split, i);
            assert!(expected.contains(&s.pixels), "{split:?} {i} is not one of the qualifying patches");
        }
    }
    assert_eq!(ds.bit_depth(), 10);
    // The same spec resized to 64 px gives 64×64 patches.
    let small = DicomDataset::open(DicomConfig { size: 64, fit: Fit::Resize, ..cfg }).unwrap();
    assert_eq!((small.image_shape(), small.sample(Split::Test, 0).pixels.len()), ((1, 64, 64), 64 * 64));
}

/// Writes a DICOM file (explicit VR little endian) with the given stored values.
#[allow(clippy::too_many_arguments)]
fn write_dicom(
    path: &Path,
    (rows, cols): (u16, u16),
    (allocated, stored, signed): (u16, u16, bool),
    values: &[i32],
    photometric: &str,
    rescale: Option<(f64, f64)>,
    window: Option<(f64, f64)>,
) {
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, v: PrimitiveValue| {
        obj.put(DataElement::new(tag, vr, v));
    };
    put(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.7"));
    put(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4.5"));
    put(tags::ROWS, VR::US, PrimitiveValue::from(rows));
    put(tags::COLUMNS, VR::US, PrimitiveValue::from(cols));
    put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
    put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from(photometric));
    put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(allocated));
    put(tags::BITS_STORED, VR::US, PrimitiveValue::from(stored));
    put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(stored - 1));
    put(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(signed as u16));
    if let Some((slope, intercept)) = rescale {
        put(tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from(slope.to_string()));
        put(tags::RESCALE_INTERCEPT, VR::DS, PrimitiveValue::from(intercept.to_string()));
    }
    if let Some((c, w)) = window {
        put(tags::WINDOW_CENTER, VR::DS, PrimitiveValue::from(c.to_string()));
        put(tags::WINDOW_WIDTH, VR::DS, PrimitiveValue::from(w.to_string()));
    }
    let mask = (1i64 << stored) - 1;
    let pixel_data = if allocated == 8 {
        PrimitiveValue::from(values.iter().map(|v| (*v as i64 & mask) as u8).collect::<Vec<u8>>())
    } else {
        PrimitiveValue::U16(values.iter().map(|v| (*v as i64 & mask) as u16).collect())
    };
    put(tags::PIXEL_DATA, if allocated == 8 { VR::OB } else { VR::OW }, pixel_data);
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax("1.2.840.10008.1.2.1")
        .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
        .media_storage_sop_instance_uid("1.2.3.4.5");
    obj.with_meta(meta).unwrap().write_to_file(path).unwrap();
}

fn scratch(name: &str) -> vaelab_tests::scratch::Scratch {
    vaelab_tests::scratch::Scratch::created("dicom", name)
}

#[test]
fn rescale_window_sign_and_monochrome1_follow_the_standard() {
    let dir = scratch("formulas");
    // 16-bit allocated, 12 stored, signed; rescale 2·v − 100; window centre 0, width 401 (LINEAR):
    // x ≤ c − ½ − (w−1)/2 = −200.5 → 0, x > c − ½ + (w−1)/2 = 199.5 → 1, else (x − (c − ½))/(w − 1) + ½.
    let stored = [-2048, -1, 0, 50, 100, 150, 2047, 149];
    write_dicom(&dir.join("a.dcm"), (2, 4), (16, 12, true), &stored, "MONOCHROME1", Some((2.0, -100.0)), Some((0.0, 401.0)));
    let r = read_radiograph(&dir.join("a.dcm"), None).unwrap();
    let expected: Vec<f64> = stored
        .iter()
        .map(|&v| {
            let x = 2.0 * v as f64 - 100.0;
            let y = if x <= -200.5 {
                0.0
            } else if x > 199.5 {
                1.0
            } else {
                (x + 0.5) / 400.0 + 0.5
            };
            1.0 - y // MONOCHROME1
        })
        .collect();
    for (got, want) in r.pixels.iter().zip(&expected) {
        assert!((*got as f64 - want).abs() < 1e-6, "{:?} vs {expected:?}", r.pixels);
    }
    assert_eq!((r.width, r.height, r.bits_stored, r.monochrome1), (4, 2, 12, true));
    // A spec window overrides the file's.
    let wide = read_radiograph(&dir.join("a.dcm"), Some(Window { center: 0.0, width: 100_000.0 })).unwrap();
    assert!(wide.pixels.iter().all(|v| (0.4..0.6).contains(v)), "{:?}", wide.pixels);

    // 8-bit MONOCHROME2 without rescale or window: the image's range maps to [0, 1].
    write_dicom(&dir.join("b.dcm"), (1, 4), (8, 8, false), &[10, 20, 30, 50], "MONOCHROME2", None, None);
    let r = read_radiograph(&dir.join("b.dcm"), None).unwrap();
    assert_eq!(r.pixels, vec![0.0, 0.25, 0.5, 1.0]);
    assert_eq!(r.bits_stored, 8);
}

#[test]
fn a_folder_of_dicom_files_with_fit_and_bad_files() {
    let dir = scratch("folder");
    for i in 0..6 {
        let values: Vec<i32> = (0..64).map(|p| (p * (i + 1)) % 4096).collect();
        write_dicom(
            &dir.join(format!("img{i}.dcm")),
            (8, 8),
            (16, 12, false),
            &values,
            "MONOCHROME2",
            None,
            Some((2048.0, 4096.0)),
        );
    }
    let cfg = DicomConfig {
        root: dir.to_path_buf(),
        size: 4,
        fit: Fit::Resize,
        window: None,
        patches: None,
        on_bad_file: OnBadFile::Error,
        limits: SplitSizes { train: 100, val: 0, test: 2 },
        seed: 3,
    };
    let ds = DicomDataset::open(cfg.clone()).unwrap();
    assert_eq!((ds.len(Split::Train), ds.len(Split::Test), ds.image_shape(), ds.bit_depth()), (4, 2, (1, 4, 4), 12));
    std::fs::write(dir.join("broken.dcm"), b"DICM? no: a truncated file").unwrap();
    let err = DicomDataset::open(cfg.clone()).err().unwrap().to_string();
    assert!(err.contains("broken.dcm") && err.contains("not a readable DICOM file"), "{err}");
    let skipping = DicomDataset::open(DicomConfig { on_bad_file: OnBadFile::Skip, ..cfg.clone() }).unwrap();
    assert_eq!(skipping.skipped().len(), 1);
    let exact =
        DicomDataset::open(DicomConfig { fit: Fit::Exact, on_bad_file: OnBadFile::Skip, ..cfg }).err().unwrap().to_string();
    assert!(exact.contains("image is 8×8 but `size` is 4×4") && exact.contains("img0.dcm"), "{exact}");
}

/// Every DICOM input problem names the file (snapshotted; the real-data cases need pydicom-data).
#[test]
fn bad_dicom_inputs_give_clear_errors() {
    let dir = scratch("bad");
    let open = |root: PathBuf| {
        let cfg = DicomConfig {
            root,
            size: 64,
            fit: Fit::Resize,
            window: None,
            patches: None,
            on_bad_file: OnBadFile::Error,
            limits: SplitSizes { train: 10, val: 0, test: 10 },
            seed: 0,
        };
        DicomDataset::open(cfg).err().expect("should fail").to_string()
    };
    let mut report = String::new();
    let mut case = |title: &str, msg: String, root: &Path| {
        report += &format!("## {title}\n{}\n", msg.replace(&root.display().to_string(), "[DIR]"));
    };
    case("missing folder", open(dir.join("nowhere")), &dir);
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    case("folder without DICOM files", open(dir.join("empty")), &dir);
    std::fs::write(dir.join("notes.dcm"), "not a DICOM file\n").unwrap();
    case("not a DICOM file", open(dir.join("notes.dcm")), &dir);
    if let Some(data) = real_data() {
        let bytes = std::fs::read(data.join("RG3_UNCR.dcm")).unwrap();
        std::fs::write(dir.join("truncated.dcm"), &bytes[..bytes.len() / 3]).unwrap();
        case("truncated file", open(dir.join("truncated.dcm")), &dir);
        case("unsupported transfer syntax (JPEG-LS)", open(data.join("emri_small_jpeg_ls_lossless.dcm")), &data);
        case("colour image", open(data.join("SC_rgb.dcm")), &data);
        insta::assert_snapshot!(report);
    }
}
