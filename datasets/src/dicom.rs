//! DICOM radiographs, read with dicom-rs (`dicom-object` + `dicom-pixeldata`): uncompressed 8–16-bit
//! data and the compressed transfer syntaxes dicom-rs decodes in pure Rust (JPEG baseline/extended/
//! lossless, RLE lossless, deflate).
//!
//! Stored values become display values in [0, 1] in the order of DICOM PS3.3:
//! 1. the stored bits (`Bits Stored`, sign-extended when `Pixel Representation` is 1);
//! 2. the Modality LUT as rescale: `slope · v + intercept` (C.11.1.1.2);
//! 3. the VOI LUT as a window: the spec's `window` or the file's first Window Center/Width, with the
//!    file's VOI LUT Function LINEAR (default), LINEAR_EXACT or SIGMOID (C.11.2.1.2–3), output [0, 1];
//!    without any window, the image's own minimum and maximum map to 0 and 1;
//! 4. MONOCHROME1 inverted (`1 − y`), so bone is bright in every image.
//!
//! Two layouts: every file of a folder (or one file) as one image, fitted to `size`; or each
//! radiograph cut into square patches (size, stride, minimum foreground fraction).

use crate::error::DataError;
use crate::folder::{fit_grey, split_flat, split_index, Fit, OnBadFile, SPLITS};
use crate::{Dataset, Sample, Split, SplitSizes};
use dicom_pixeldata::{PhotometricInterpretation, PixelDecoder, PixelRepresentation, VoiLutFunction};
use dicom_transfer_syntax_registry::TransferSyntaxIndex;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A VOI window: values in `center ± width/2` span black to white.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub center: f64,
    pub width: f64,
}

/// Cut each radiograph into `size`×`size` patches every `stride` pixels, keeping those in which at least
/// `min_foreground` of the pixels are foreground (see [`is_foreground`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patches {
    pub size: usize,
    pub stride: usize,
    #[serde(default)]
    pub min_foreground: f32,
}

/// Anatomy, as opposed to air (black after windowing) and collimator shadow or saturation (white):
/// a display value strictly between 0.05 and 0.95.
pub fn is_foreground(v: f32) -> bool {
    v > 0.05 && v < 0.95
}

#[derive(Clone, Debug, PartialEq)]
pub struct DicomConfig {
    /// A DICOM file or a folder of them (files with extension `.dcm`/`.dicom`, or none).
    pub root: PathBuf,
    pub size: usize,
    pub fit: Fit,
    pub window: Option<Window>,
    pub patches: Option<Patches>,
    pub on_bad_file: OnBadFile,
    /// Images (or patches) per split at most.
    pub limits: SplitSizes,
    pub seed: u64,
}

/// A decoded radiograph: display values in [0, 1], row-major.
#[derive(Clone, Debug)]
pub struct Radiograph {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
    pub bits_stored: u8,
    pub monochrome1: bool,
    /// The window applied (center, width), if any.
    pub window: Option<Window>,
}

fn voi(x: f64, w: Window, function: VoiLutFunction) -> f64 {
    let (c, width) = (w.center, w.width);
    match function {
        // C.11.2.1.2.1: centre and width are offset by ½ and 1 for integer-valued inputs.
        VoiLutFunction::Linear => {
            let (c, width) = (c - 0.5, (width - 1.0).max(f64::MIN_POSITIVE));
            ((x - c) / width + 0.5).clamp(0.0, 1.0)
        }
        // C.11.2.1.3.2
        VoiLutFunction::LinearExact => ((x - c) / width + 0.5).clamp(0.0, 1.0),
        // C.11.2.1.3.1
        VoiLutFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (x - c) / width).exp()),
    }
}

/// Reads one DICOM file into display values (see the module docs for the steps).
pub fn read_radiograph(path: &Path, window: Option<Window>) -> Result<Radiograph, String> {
    let obj = dicom_object::open_file(path).map_err(|e| format!("not a readable DICOM file: {e}"))?;
    let uid = obj.meta().transfer_syntax().trim_end_matches('\0').to_string();
    let ts_name = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(&uid)
        .map(|ts| ts.name().to_string())
        .unwrap_or_else(|| "an unknown transfer syntax".into());
    let decoded =
        obj.decode_pixel_data().map_err(|e| format!("cannot decode its pixel data in transfer syntax {ts_name} ({uid}): {e}"))?;
    let photometric = decoded.photometric_interpretation();
    let monochrome1 = match photometric {
        PhotometricInterpretation::Monochrome1 => true,
        PhotometricInterpretation::Monochrome2 => false,
        other => return Err(format!("photometric interpretation {other:?} is not supported; radiographs are MONOCHROME1/2")),
    };
    if decoded.samples_per_pixel() != 1 {
        return Err(format!("{} samples per pixel; radiographs have 1", decoded.samples_per_pixel()));
    }
    let (width, height) = (decoded.columns() as usize, decoded.rows() as usize);
    let (allocated, stored) = (decoded.bits_allocated(), decoded.bits_stored());
    if !(1..=16).contains(&stored) || stored > allocated {
        return Err(format!("bits stored {stored} with bits allocated {allocated} is not supported (8–16 bits)"));
    }
    let signed = decoded.pixel_representation() == PixelRepresentation::Signed;
    let frame = decoded.frame_data(0).map_err(|e| format!("cannot read the first frame: {e}"))?;
    let n = width * height;
    let raw: Vec<u32> = match allocated {
        8 if frame.len() >= n => frame[..n].iter().map(|b| *b as u32).collect(),
        16 if frame.len() >= 2 * n => frame.chunks_exact(2).take(n).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32).collect(),
        8 | 16 => return Err(format!("pixel data holds {} bytes, {width}×{height} needs more", frame.len())),
        other => return Err(format!("bits allocated {other} is not supported (8 or 16)")),
    };
    let rescale = decoded.rescale().map_err(|e| e.to_string())?.first().copied();
    let (slope, intercept) = rescale.map_or((1.0, 0.0), |r| (r.slope, r.intercept));
    let mask = (1u32 << stored) - 1;
    let values: Vec<f64> = raw
        .iter()
        .map(|&r| {
            let v = r & mask;
            let v = if signed && v & (1 << (stored - 1)) != 0 { v as i64 - (1i64 << stored) } else { v as i64 };
            v as f64 * slope + intercept
        })
        .collect();
    let window = match window {
        Some(w) => Some(w),
        None => decoded
            .window()
            .map_err(|e| e.to_string())?
            .and_then(|w| w.first())
            .map(|w| Window { center: w.center, width: w.width }),
    };
    let function = decoded.voi_lut_function().map_err(|e| e.to_string())?.and_then(|f| f.first().copied()).unwrap_or_default();
    let display: Vec<f64> = match window {
        Some(w) if w.width > 0.0 => values.iter().map(|&x| voi(x, w, function)).collect(),
        Some(w) => return Err(format!("window width must be > 0, got {}", w.width)),
        None => {
            let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            values.iter().map(|&x| if hi > lo { (x - lo) / (hi - lo) } else { 0.0 }).collect()
        }
    };
    let pixels = display.iter().map(|&y| if monochrome1 { 1.0 - y } else { y } as f32).collect();
    Ok(Radiograph { width, height, pixels, bits_stored: stored as u8, monochrome1, window })
}

/// One training example: a file, or a patch of one.
#[derive(Clone, Debug)]
struct Item {
    file: usize,
    /// Top-left corner of a patch.
    at: Option<(usize, usize)>,
}

pub struct DicomDataset {
    cfg: DicomConfig,
    files: Vec<PathBuf>,
    /// Fitted pixels of every item of each split (train, val, test).
    pixels: [Vec<Vec<f32>>; 3],
    bit_depth: u8,
    skipped: Vec<(PathBuf, String)>,
}

pub(crate) fn is_dicom_name(p: &Path) -> bool {
    match p.extension().and_then(|e| e.to_str()) {
        None => true,
        Some(e) => ["dcm", "dicom", "dc3"].contains(&e.to_ascii_lowercase().as_str()),
    }
}

impl DicomDataset {
    pub fn open(cfg: DicomConfig) -> Result<DicomDataset, DataError> {
        let root = &cfg.root;
        let mut files: Vec<PathBuf> = if root.is_file() {
            vec![root.clone()]
        } else if root.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(root)
                .map_err(DataError::io(root))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_dicom_name(p))
                .collect();
            v.sort();
            v
        } else {
            return Err(DataError::Mismatch { path: root.clone(), message: "no such file or folder".into() });
        };
        if files.is_empty() {
            return Err(DataError::Mismatch {
                path: root.clone(),
                message: "no DICOM files (.dcm, .dicom or no extension)".into(),
            });
        }
        // Decode every file once, in parallel, so a bad file stops the run before training.
        let decoded: Vec<Result<Radiograph, String>> = files.par_iter().map(|f| read_radiograph(f, cfg.window)).collect();
        let (mut images, mut kept, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for (file, r) in files.drain(..).zip(decoded) {
            match r {
                Ok(img) => {
                    images.push(img);
                    kept.push(file);
                }
                Err(message) if cfg.on_bad_file == OnBadFile::Skip => {
                    eprintln!("warning: skipping {}: {message}", file.display());
                    skipped.push((file, message));
                }
                Err(message) => return Err(DataError::Mismatch { path: file, message }),
            }
        }
        let files = kept;
        // Without resizing, the first file (in name order) of another size is the error.
        if cfg.fit == Fit::Exact {
            let side = |img: &Radiograph| cfg.patches.map_or((img.width, img.height), |p| (p.size, p.size));
            if let Some((file, img)) = files.iter().zip(&images).find(|(_, img)| side(img) != (cfg.size, cfg.size)) {
                let (w, h) = side(img);
                let what = if cfg.patches.is_some() { "patches are" } else { "image is" };
                return Err(DataError::Mismatch {
                    path: file.clone(),
                    message: format!(
                        "{what} {w}×{h} but `size` is {0}×{0}; set `fit: Resize` or `fit: CenterCrop` to adapt them",
                        cfg.size
                    ),
                });
            }
        }
        let bit_depth = images.iter().map(|i| i.bits_stored).max().unwrap_or(8);
        let items: Vec<Item> = match cfg.patches {
            None => (0..images.len()).map(|file| Item { file, at: None }).collect(),
            Some(p) => patch_items(&images, &files, p)?,
        };
        let mut splits = if cfg.patches.is_none() && items.len() == 1 {
            // One radiograph: it is both the training and the test image.
            [items.clone(), vec![], items]
        } else {
            split_flat(items, cfg.seed, cfg.limits)
        };
        for (items, split) in splits.iter_mut().zip(SPLITS) {
            items.truncate(cfg.limits.get(split));
        }
        if splits[0].is_empty() || splits[2].is_empty() {
            let n: usize = splits.iter().map(Vec::len).sum();
            return Err(DataError::Mismatch {
                path: root.clone(),
                message: format!("{n} images/patches are too few for a train and a test split"),
            });
        }
        let fit = |it: &Item| -> Result<Vec<f32>, DataError> {
            let img = &images[it.file];
            let (pixels, side_w, side_h) = match (it.at, cfg.patches) {
                (Some((x, y)), Some(p)) => (crop(img, x, y, p.size), p.size, p.size),
                _ => (img.pixels.clone(), img.width, img.height),
            };
            fit_grey(pixels, side_w, side_h, cfg.size, cfg.fit)
                .map_err(|message| DataError::Mismatch { path: files[it.file].clone(), message })
        };
        let mut pixels: [Vec<Vec<f32>>; 3] = Default::default();
        for (out, items) in pixels.iter_mut().zip(&splits) {
            *out = items.par_iter().map(fit).collect::<Result<Vec<_>, _>>()?;
        }
        Ok(DicomDataset { cfg, files, pixels, bit_depth, skipped })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

pub(crate) fn crop(img: &Radiograph, x0: usize, y0: usize, side: usize) -> Vec<f32> {
    (y0..y0 + side).flat_map(|y| img.pixels[y * img.width + x0..y * img.width + x0 + side].iter().copied()).collect()
}

fn patch_items(images: &[Radiograph], files: &[PathBuf], p: Patches) -> Result<Vec<Item>, DataError> {
    let mut items = Vec::new();
    for (file, img) in images.iter().enumerate() {
        let corners = patch_corners(img, p).map_err(|message| DataError::Mismatch { path: files[file].clone(), message })?;
        items.extend(corners.into_iter().map(|at| Item { file, at: Some(at) }));
    }
    Ok(items)
}

/// The top-left corners (x, y) of the patches `p` keeps from one radiograph, in raster order.
pub(crate) fn patch_corners(img: &Radiograph, p: Patches) -> Result<Vec<(usize, usize)>, String> {
    if p.size == 0 || p.stride == 0 || !(0.0..=1.0).contains(&p.min_foreground) {
        return Err(format!("patches need size ≥ 1, stride ≥ 1 and min_foreground in [0, 1], got {p:?}"));
    }
    if img.width < p.size || img.height < p.size {
        return Err(format!("the image is {}×{}, smaller than a {}-pixel patch", img.width, img.height, p.size));
    }
    let mut corners = Vec::new();
    for y in (0..=img.height - p.size).step_by(p.stride) {
        for x in (0..=img.width - p.size).step_by(p.stride) {
            let fg = crop(img, x, y, p.size).iter().filter(|v| is_foreground(**v)).count();
            if fg as f32 >= p.min_foreground * (p.size * p.size) as f32 {
                corners.push((x, y));
            }
        }
    }
    Ok(corners)
}

impl Dataset for DicomDataset {
    fn name(&self) -> &str {
        "dicom"
    }
    fn image_shape(&self) -> (usize, usize, usize) {
        (1, self.cfg.size, self.cfg.size)
    }
    fn len(&self, split: Split) -> usize {
        self.pixels[split_index(split)].len()
    }
    fn bit_depth(&self) -> u8 {
        self.bit_depth
    }
    fn skipped(&self) -> Vec<(PathBuf, String)> {
        self.skipped.clone()
    }
    fn sample(&self, split: Split, index: usize) -> Sample {
        Sample { pixels: self.pixels[split_index(split)][index].clone(), factors: vec![] }
    }
}
