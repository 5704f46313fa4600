//! Files read one at a time with a trained run's preprocessing, for applying the run to images it
//! never saw (`vaelab reconstruct`, `encode`, `eval --data`). Decoding, DICOM windowing, patches and
//! fitting are the very functions the folder and DICOM datasets train with, so an image read here
//! is, pixel for pixel, what the run's own dataset would have made of the same file.

use crate::dicom::{crop, is_dicom_name, patch_corners, read_radiograph, Patches, Window};
use crate::error::DataError;
use crate::folder::{decode, fit_grey, is_image, Channels, Fit};
use std::path::{Path, PathBuf};

/// How a run turns a file into model input: its `data.size`, and the options of its dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub size: usize,
    pub channels: Channels,
    pub fit: Fit,
    /// The VOI window of a DICOM-trained run (`None`: each file's own, as in training).
    pub window: Option<Window>,
    /// A DICOM run trained on patches: each radiograph gives every patch training would keep.
    pub patches: Option<Patches>,
}

/// One input file: where it is and how the outputs name it.
#[derive(Clone, Debug, PartialEq)]
pub struct InputFile {
    pub path: PathBuf,
    /// The path relative to the input folder (the file name for a single file).
    pub rel: PathBuf,
    /// The class of a file in a numbered class folder (`…/3/x.png` → 3), as in training's layout.
    pub label: Option<u32>,
}

/// One model input made from a file: the file itself, or one patch of it.
#[derive(Clone, Debug)]
pub struct InputImage {
    /// The file's relative path; for a patch, `<stem>/y<Y>-x<X>` under the file's folder.
    pub rel: PathBuf,
    /// C×size×size values in [0, 1].
    pub pixels: Vec<f32>,
    pub bit_depth: u8,
    pub label: Option<u32>,
}

/// Whether a file is DICOM: a DICOM extension, or no extension and the `DICM` magic at byte 128
/// (PS3.10 §7.1), so that a stray README in a folder is not taken for one.
pub fn is_dicom_file(path: &Path) -> bool {
    match path.extension() {
        Some(_) => is_dicom_name(path),
        None => {
            use std::io::{Read, Seek, SeekFrom};
            let mut magic = [0u8; 4];
            std::fs::File::open(path)
                .and_then(|mut f| f.seek(SeekFrom::Start(128)).and_then(|_| f.read_exact(&mut magic)))
                .is_ok_and(|_| &magic == b"DICM")
        }
    }
}

/// The image and DICOM files of `input` (a file, or a folder searched recursively), sorted by
/// relative path. Other files in a folder are ignored; a single file of another kind is an error.
pub fn list_inputs(input: &Path) -> Result<Vec<InputFile>, DataError> {
    if input.is_file() {
        if !is_image(input) && !is_dicom_file(input) {
            return Err(DataError::Mismatch {
                path: input.to_path_buf(),
                message: "neither an image file (png, jpg, jpeg, tif, tiff, bmp) nor DICOM".into(),
            });
        }
        let rel = PathBuf::from(input.file_name().unwrap_or(input.as_os_str()));
        return Ok(vec![InputFile { path: input.to_path_buf(), rel, label: None }]);
    }
    if !input.is_dir() {
        return Err(DataError::Mismatch { path: input.to_path_buf(), message: "no such file or folder".into() });
    }
    let mut files = Vec::new();
    let mut pending = vec![input.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(DataError::io(&dir))? {
            let path = entry.map_err(DataError::io(&dir))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if is_image(&path) || is_dicom_file(&path) {
                let rel = path.strip_prefix(input).expect("found under the input").to_path_buf();
                let label = rel.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).and_then(|n| n.parse().ok());
                files.push(InputFile { path, rel, label });
            }
        }
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    if files.is_empty() {
        return Err(DataError::Mismatch {
            path: input.to_path_buf(),
            message: "no image files (png, jpg, jpeg, tif, tiff, bmp) or DICOM files in this folder or below".into(),
        });
    }
    Ok(files)
}

/// Reads one file as the run's dataset would: its model inputs (one, or one per patch), or why not.
pub fn read_input(file: &InputFile, pre: &Preprocess) -> Result<Vec<InputImage>, String> {
    let image = |rel: PathBuf, pixels: Vec<f32>, bit_depth: u8| InputImage { rel, pixels, bit_depth, label: file.label };
    if !is_dicom_file(&file.path) {
        let (pixels, depth) =
            decode(&file.path, pre.size, pre.channels, pre.fit).map_err(|m| m.trim_start_matches("size: ").to_string())?;
        return Ok(vec![image(file.rel.clone(), pixels, depth)]);
    }
    if pre.channels == Channels::Rgb {
        return Err("a DICOM radiograph is grey, but this run was trained on RGB images".into());
    }
    let r = read_radiograph(&file.path, pre.window)?;
    let Some(p) = pre.patches else {
        let pixels = fit_grey(r.pixels.clone(), r.width, r.height, pre.size, pre.fit)?;
        return Ok(vec![image(file.rel.clone(), pixels, r.bits_stored)]);
    };
    let stem = file.rel.with_extension("");
    let corners = patch_corners(&r, p)?;
    if corners.is_empty() {
        return Err(format!("no {0}×{0} patch has {1} foreground, as training required", p.size, p.min_foreground));
    }
    corners
        .into_iter()
        .map(|(x, y)| {
            let pixels = fit_grey(crop(&r, x, y, p.size), p.size, p.size, pre.size, pre.fit)?;
            Ok(image(stem.join(format!("y{y}-x{x}")), pixels, r.bits_stored))
        })
        .collect()
}
