//! Folders of ordinary image files (PNG 8/16-bit, JPEG, TIFF; grey or RGB), read with the `image`
//! crate. Two layouts:
//!
//! * **class folders**: `root/train/<class>/*.png`, `root/test/<class>/*.png` and optionally
//!   `root/val/<class>/*.png` (the Knee Osteoarthritis Severity Grading layout, classes `0`…`4`).
//!   Class folder names become labels: their number when every name is a number, else their index
//!   in sorted order. Each split is shuffled with the seed, stratified by class, before the
//!   `train_size`/`test_size` limits apply, so a limited split keeps every class in proportion.
//! * **flat**: image files directly in `root`, no labels; a seeded shuffle puts `test_size` of
//!   them in the test split and `val_size` in the validation split.
//!
//! Every file is decoded once when the dataset is opened (in parallel), so a corrupt file stops a
//! run before training, never in the middle of it; decoded images are kept in memory when they fit
//! the cache limit, as 16-bit levels in one buffer per split (exact for 8- and 16-bit files, since
//! 65535 = 257·255; resized values are rounded to 1/65535).

use crate::error::DataError;
use crate::resample;
use crate::rng::{tag, StreamRng};
use crate::{Dataset, Sample, Split, SplitSizes};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "tif", "tiff", "bmp"];

/// How images whose size differs from `data.size` are brought to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fit {
    /// Sizes must already match; the first file that does not is an error.
    #[default]
    Exact,
    /// Resize to size×size (bilinear), ignoring the aspect ratio.
    Resize,
    /// Crop the central square, then resize it to size×size.
    CenterCrop,
}

/// What to do with a file that cannot be decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnBadFile {
    /// Stop with an error naming the file.
    #[default]
    Error,
    /// Leave it out, with a warning; the count is reported by [`FolderDataset::skipped`].
    Skip,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channels {
    #[default]
    Grey,
    Rgb,
}

/// Options of a folder dataset, as written in a spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FolderConfig {
    pub root: PathBuf,
    pub size: usize,
    pub channels: Channels,
    pub fit: Fit,
    pub on_bad_file: OnBadFile,
    /// Images per split at most.
    pub limits: SplitSizes,
    pub seed: u64,
    /// Keep decoded images in memory when all of them fit in this many MiB.
    pub cache_mib: usize,
}

struct Item {
    path: PathBuf,
    label: Option<u32>,
}

/// Decoded images of one split, in item order: `image_len` 16-bit levels each.
type Levels = Vec<u16>;
/// A file's bit depth, or the file and why it could not be used.
type Decode = Result<u8, (PathBuf, String)>;

pub struct FolderDataset {
    cfg: FolderConfig,
    /// Items of each split: train, val, test.
    splits: [Vec<Item>; 3],
    /// Decoded pixels of each split, when they fit the cache.
    cache: Option<[Levels; 3]>,
    bit_depth: u8,
    skipped: Vec<(PathBuf, String)>,
    classes: Vec<String>,
}

/// Whether a path has an image extension this module reads.
pub fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(DataError::io(dir))?
        .map(|e| e.map(|e| e.path()).map_err(DataError::io(dir)))
        .collect::<Result<_, _>>()?;
    out.sort();
    Ok(out)
}

/// The image files directly in `dir`, sorted by name.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    Ok(list_dir(dir)?.into_iter().filter(|p| p.is_file() && is_image(p)).collect())
}

/// `root/<split>/<class>/*` → items with labels, plus the class names.
fn class_items(split_dir: &Path, classes: &[String], numeric: bool) -> Result<Vec<Item>, DataError> {
    let mut items = Vec::new();
    for (i, class) in classes.iter().enumerate() {
        let dir = split_dir.join(class);
        if !dir.is_dir() {
            continue;
        }
        let label = if numeric { class.parse().unwrap() } else { i as u32 };
        items.extend(image_files(&dir)?.into_iter().map(|path| Item { path, label: Some(label) }));
    }
    Ok(items)
}

impl FolderDataset {
    pub fn open(cfg: FolderConfig) -> Result<FolderDataset, DataError> {
        let root = &cfg.root;
        if !root.is_dir() {
            return Err(DataError::Mismatch { path: root.clone(), message: "no such folder".into() });
        }
        let (mut splits, classes): ([Vec<Item>; 3], Vec<String>) = if root.join("train").is_dir() {
            let test_dir = root.join("test");
            if !test_dir.is_dir() {
                return Err(DataError::Mismatch {
                    path: test_dir,
                    message: "a class-folder dataset needs a `test` folder beside `train`".into(),
                });
            }
            let split_dirs = [root.join("train"), root.join("val"), test_dir];
            // Classes are the union of every split's class folders, so labels agree between them.
            let mut classes: Vec<String> = Vec::new();
            for dir in split_dirs.iter().filter(|d| d.is_dir()) {
                for p in list_dir(dir)?.into_iter().filter(|p| p.is_dir()) {
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    if !classes.contains(&name) {
                        classes.push(name);
                    }
                }
            }
            classes.sort();
            let numeric = !classes.is_empty() && classes.iter().all(|c| c.parse::<u32>().is_ok());
            if numeric {
                classes.sort_by_key(|c| c.parse::<u32>().unwrap());
            }
            let mut splits: [Vec<Item>; 3] = Default::default();
            for (items, dir) in splits.iter_mut().zip(&split_dirs) {
                if dir.is_dir() {
                    *items = class_items(dir, &classes, numeric)?;
                }
            }
            (splits, classes)
        } else {
            let files: Vec<Item> = image_files(root)?.into_iter().map(|path| Item { path, label: None }).collect();
            (split_flat(files, cfg.seed, cfg.limits), Vec::new())
        };
        // Class folders list their files class by class: shuffle each split, stratified by class,
        // so that a `train_size`/`test_size` limit keeps every class in proportion.
        for (items, split) in splits.iter_mut().zip(SPLITS) {
            if items.iter().any(|it| it.label.is_some()) {
                let labels: Vec<Option<u32>> = items.iter().map(|it| it.label).collect();
                let order = crate::stratified_order(&labels, cfg.seed, &format!("folder-order-{}", split.name()));
                let mut slots: Vec<Option<Item>> = std::mem::take(items).into_iter().map(Some).collect();
                *items = order.into_iter().map(|i| slots[i].take().expect("a permutation")).collect();
            }
            items.truncate(cfg.limits.get(split));
        }
        for (items, split) in splits.iter().zip(SPLITS) {
            if items.is_empty() && split != Split::Val {
                return Err(DataError::Mismatch {
                    path: root.clone(),
                    message: format!("no image files for the {} split (looked for {})", split.name(), EXTENSIONS.join(", ")),
                });
            }
        }

        // Decode everything once, in parallel: sizes and bad files are found before training. When
        // the cache fits, each image lands directly in its slot of one buffer per split.
        let mut skipped = Vec::new();
        let mut bit_depth = 8;
        let len = cfg.size * cfg.size * if cfg.channels == Channels::Rgb { 3 } else { 1 };
        let caching = splits.iter().map(Vec::len).sum::<usize>() * len * 2 <= cfg.cache_mib << 20;
        let mut levels: [Levels; 3] = Default::default();
        for (k, items) in splits.iter_mut().enumerate() {
            let check = |it: &Item, slot: Option<&mut [u16]>| -> Decode {
                let (pixels, depth) = decode(&it.path, cfg.size, cfg.channels, cfg.fit).map_err(|m| (it.path.clone(), m))?;
                if let Some(slot) = slot {
                    for (l, v) in slot.iter_mut().zip(&pixels) {
                        *l = (v.clamp(0.0, 1.0) * 65535.0).round() as u16;
                    }
                }
                Ok(depth)
            };
            let results: Vec<Decode> = if caching {
                levels[k] = vec![0; items.len() * len];
                items.par_iter().zip(levels[k].par_chunks_mut(len)).map(|(it, slot)| check(it, Some(slot))).collect()
            } else {
                items.par_iter().map(|it| check(it, None)).collect()
            };
            let mut kept = Vec::new();
            let mut kept_slots = Vec::new();
            let count = results.len();
            for (i, (item, r)) in std::mem::take(items).into_iter().zip(results).enumerate() {
                match r {
                    Ok(depth) => {
                        bit_depth = bit_depth.max(depth);
                        kept.push(item);
                        kept_slots.push(i);
                    }
                    Err((path, message)) if cfg.on_bad_file == OnBadFile::Skip && !message.starts_with("size:") => {
                        eprintln!("warning: skipping {}: {message}", path.display());
                        skipped.push((path, message));
                    }
                    Err((path, message)) => {
                        let message = message.trim_start_matches("size: ").to_string();
                        return Err(DataError::Mismatch { path, message });
                    }
                }
            }
            if caching && kept.len() < count {
                // Some files were skipped: close the gaps.
                levels[k] = kept_slots.iter().flat_map(|&i| levels[k][i * len..(i + 1) * len].to_vec()).collect();
            }
            *items = kept;
        }
        let cache = caching.then_some(levels);
        Ok(FolderDataset { cfg, splits, cache, bit_depth, skipped, classes })
    }

    /// Files left out under `on_bad_file: Skip`, with the reason.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    /// Class folder names, in label order (empty for a flat folder).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    pub fn is_cached(&self) -> bool {
        self.cache.is_some()
    }

    fn items(&self, split: Split) -> &[Item] {
        &self.splits[split_index(split)]
    }
}

/// An image file decoded at its own size.
pub struct DecodedImage {
    /// C×H×W values in [0, 1] (planar for RGB).
    pub pixels: Vec<f32>,
    pub width: usize,
    pub height: usize,
    pub bit_depth: u8,
}

/// Decodes one image file at its own size.
pub fn read_image(path: &Path, channels: Channels) -> Result<DecodedImage, String> {
    let img = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| format!("cannot decode: {e}"))?;
    let depth = (img.color().bits_per_pixel() / img.color().channel_count() as u16) as u8;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let pixels = match channels {
        Channels::Grey => img.to_luma32f().into_raw(),
        Channels::Rgb => {
            let rgb = img.to_rgb32f().into_raw();
            let n = rgb.len() / 3;
            (0..3).flat_map(|c| (0..n).map(move |i| (c, i))).map(|(c, i)| rgb[i * 3 + c]).collect()
        }
    };
    Ok(DecodedImage { pixels, width, height, bit_depth: depth })
}

/// The splits in storage order.
pub(crate) const SPLITS: [Split; 3] = [Split::Train, Split::Val, Split::Test];

pub(crate) fn split_index(split: Split) -> usize {
    SPLITS.iter().position(|s| *s == split).expect("every split is listed")
}

/// A seeded Fisher–Yates shuffle of `items` into [train, val, test]: the first `limits.test` (at most
/// half) are the test split, the next `limits.val` (at most half the rest) the validation split.
pub(crate) fn split_flat<T>(mut items: Vec<T>, seed: u64, limits: SplitSizes) -> [Vec<T>; 3] {
    let mut rng = StreamRng::new(seed, &[tag("folder-split")]);
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
    let n_test = limits.test.min(items.len() / 2);
    let mut rest = items.split_off(n_test);
    let n_val = limits.val.min(rest.len() / 2);
    let train = rest.split_off(n_val);
    [train, rest, items]
}

/// A grey image (`w`×`h`, values in [0, 1]) brought to `size`×`size` by `fit`.
pub(crate) fn fit_grey(pixels: Vec<f32>, w: usize, h: usize, size: usize, fit: Fit) -> Result<Vec<f32>, String> {
    if (w, h) == (size, size) {
        return Ok(pixels);
    }
    Ok(match fit {
        Fit::Exact => return Err(size_error(w, h, size)),
        Fit::Resize => resample::resize(&pixels, w, h, size, size),
        Fit::CenterCrop => {
            let side = w.min(h);
            let (x0, y0) = ((w - side) / 2, (h - side) / 2);
            let square: Vec<f32> = (y0..y0 + side).flat_map(|y| pixels[y * w + x0..y * w + x0 + side].iter().copied()).collect();
            resample::resize(&square, side, side, size, size)
        }
    })
}

fn size_error(w: usize, h: usize, size: usize) -> String {
    format!("image is {w}×{h} but `size` is {size}×{size}; set `fit: Resize` or `fit: CenterCrop` to adapt images")
}

/// The fast path for grey 8- and 16-bit PNG (the Knee-OA files): decoded with the `png` crate into
/// f32 directly, then fitted. `None` for any other PNG, which takes the general path.
fn decode_grey_png(path: &Path, size: usize, fit: Fit) -> Option<Result<(Vec<f32>, u8), String>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return Some(Err(e.to_string())),
    };
    let mut decoder = png::Decoder::new(std::io::Cursor::new(&bytes[..]));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = match decoder.read_info() {
        Ok(r) => r,
        Err(e) => return Some(Err(format!("cannot decode: {e}"))),
    };
    let info = reader.info();
    let depth = match (info.color_type, info.bit_depth) {
        (png::ColorType::Grayscale, png::BitDepth::Eight) => 8u8,
        (png::ColorType::Grayscale, png::BitDepth::Sixteen) => 16,
        _ => return None,
    };
    let (w, h) = (info.width as usize, info.height as usize);
    let mut raw = vec![0u8; reader.output_buffer_size()?];
    if let Err(e) = reader.next_frame(&mut raw) {
        return Some(Err(format!("cannot decode: {e}")));
    }
    let pixels: Vec<f32> = if depth == 8 {
        raw[..w * h].iter().map(|v| *v as f32 / 255.0).collect()
    } else {
        raw[..2 * w * h].chunks_exact(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as f32 / 65535.0).collect()
    };
    Some(match fit_grey(pixels, w, h, size, fit) {
        Ok(p) => Ok((p, depth)),
        Err(size) => Err(format!("size: {size}")),
    })
}

/// Decodes one file to C×size×size values in [0, 1] and its bit depth. Size problems start with
/// "size:" so that they are never skipped (they are a spec problem, not a bad file).
pub(crate) fn decode(path: &Path, size: usize, channels: Channels, fit: Fit) -> Result<(Vec<f32>, u8), String> {
    let is_png = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png && channels == Channels::Grey {
        if let Some(result) = decode_grey_png(path, size, fit) {
            return result;
        }
    }
    let DecodedImage { pixels, width: w, height: h, bit_depth: depth } = read_image(path, channels)?;
    // Each plane (grey, or R, G, B) is fitted on its own.
    let mut out = Vec::with_capacity(pixels.len() / (w * h).max(1) * size * size);
    for plane in pixels.chunks(w * h) {
        out.extend(fit_grey(plane.to_vec(), w, h, size, fit).map_err(|e| format!("size: {e}"))?);
    }
    Ok((out, depth))
}

impl Dataset for FolderDataset {
    fn name(&self) -> &str {
        "folder"
    }
    fn image_shape(&self) -> (usize, usize, usize) {
        let c = match self.cfg.channels {
            Channels::Grey => 1,
            Channels::Rgb => 3,
        };
        (c, self.cfg.size, self.cfg.size)
    }
    fn len(&self, split: Split) -> usize {
        self.items(split).len()
    }
    fn bit_depth(&self) -> u8 {
        self.bit_depth
    }
    fn factor_names(&self) -> Vec<String> {
        if self.classes.is_empty() {
            vec![]
        } else {
            vec!["label".into()]
        }
    }
    fn skipped(&self) -> Vec<(PathBuf, String)> {
        self.skipped.clone()
    }
    fn labels(&self, split: Split) -> Vec<Option<u32>> {
        self.items(split).iter().map(|it| it.label).collect()
    }
    fn sample(&self, split: Split, index: usize) -> Sample {
        let item = &self.items(split)[index];
        let factors = item.label.map(|l| vec![l as f32]).unwrap_or_default();
        let pixels = match &self.cache {
            Some(cache) => {
                let levels = &cache[split_index(split)];
                let len = levels.len() / self.items(split).len().max(1);
                levels[index * len..(index + 1) * len].iter().map(|l| *l as f32 / 65535.0).collect()
            }
            // Decoded successfully when the dataset was opened; a file changed since then is
            // reported and replaced by a black image rather than stopping a long run.
            None => decode(&item.path, self.cfg.size, self.cfg.channels, self.cfg.fit).map(|d| d.0).unwrap_or_else(|e| {
                eprintln!("warning: {} changed since the dataset was opened: {e}", item.path.display());
                let (c, h, w) = self.image_shape();
                vec![0.0; c * h * w]
            }),
        };
        Sample { pixels, factors }
    }
}
