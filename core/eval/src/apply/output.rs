//! Output folders and image files of the apply commands.

use super::ApplyError;
use std::path::{Path, PathBuf};

/// How images are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// 8-bit PNG (grey or RGB).
    Png8,
    /// 16-bit PNG: keeps the precision of 12–16-bit radiographs.
    Png16,
    /// One NumPy array `(N, C, H, W)` of float32 values in [0, 1] (`samples.npy`).
    Npy,
}

impl std::str::FromStr for ImageFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<ImageFormat, String> {
        match s {
            "png8" => Ok(ImageFormat::Png8),
            "png16" => Ok(ImageFormat::Png16),
            "npy" => Ok(ImageFormat::Npy),
            other => Err(format!("unknown image format `{other}`: expected png8, png16 or npy")),
        }
    }
}

/// An output folder or file made ready for a command. Dropped without [`Output::keep`] (the command
/// failed), it removes what the command created (a folder that was missing or empty, a file — with
/// its NPY side file — that did not exist), so that the corrected command can be run again as it was;
/// what was there before is left as it is.
pub struct Output {
    path: PathBuf,
    folder: bool,
    /// Created (or found empty) by this command.
    fresh: bool,
    keep: bool,
}

impl Output {
    /// Creates `dir` if missing; a folder that already holds files is refused unless `force` (then
    /// files of the same names are replaced and the others left as they are).
    pub fn folder(dir: &Path, force: bool) -> Result<Output, ApplyError> {
        if dir.is_file() {
            return Err(ApplyError::Input(format!("{} is a file; --out names a folder", dir.display())));
        }
        let count = if dir.is_dir() { std::fs::read_dir(dir).map_err(ApplyError::write(dir))?.count() } else { 0 };
        if count > 0 && !force {
            return Err(ApplyError::Input(format!(
                "{} already holds {count} entries; choose an empty or new folder, or pass --force to write over files of the same names",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(ApplyError::write(dir))?;
        Ok(Output { path: dir.to_path_buf(), folder: true, fresh: count == 0, keep: false })
    }

    /// Refuses to replace an existing file unless `force`; creates the parent folder.
    pub fn file(path: &Path, force: bool) -> Result<Output, ApplyError> {
        if path.is_dir() {
            return Err(ApplyError::Input(format!("{} is a folder; --out names a file", path.display())));
        }
        let exists = path.exists();
        if exists && !force {
            return Err(ApplyError::Input(format!("{} already exists; pass --force to replace it", path.display())));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(ApplyError::write(parent))?;
        }
        Ok(Output { path: path.to_path_buf(), folder: false, fresh: !exists, keep: false })
    }

    /// The command succeeded: leave its outputs.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if self.keep || !self.fresh {
            return;
        }
        if self.folder {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_file(super::codes::npy_sidecar(&self.path));
        }
    }
}

/// Writes one C×H×W image in [0, 1] as an 8- or 16-bit PNG (levels rounded to nearest).
pub fn write_png(path: &Path, pixels: &[f32], (c, h, w): (usize, usize, usize), sixteen: bool) -> Result<(), ApplyError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(ApplyError::write(parent))?;
    }
    let plane = h * w;
    // Planar C×H×W → interleaved H×W×C.
    let at = |i: usize, ch: usize| pixels[ch * plane + i].clamp(0.0, 1.0);
    let (w32, h32) = (w as u32, h as u32);
    let saved = match (c, sixteen) {
        (1, false) => {
            image::GrayImage::from_fn(w32, h32, |x, y| image::Luma([(at(y as usize * w + x as usize, 0) * 255.0).round() as u8]))
                .save(path)
        }
        (1, true) => image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(w32, h32, |x, y| {
            image::Luma([(at(y as usize * w + x as usize, 0) * 65535.0).round() as u16])
        })
        .save(path),
        (_, false) => image::RgbImage::from_fn(w32, h32, |x, y| {
            let i = y as usize * w + x as usize;
            image::Rgb([0, 1, 2].map(|ch| (at(i, ch) * 255.0).round() as u8))
        })
        .save(path),
        (_, true) => image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(w32, h32, |x, y| {
            let i = y as usize * w + x as usize;
            image::Rgb([0, 1, 2].map(|ch| (at(i, ch) * 65535.0).round() as u16))
        })
        .save(path),
    };
    saved.map_err(|e| ApplyError::Write(path.to_path_buf(), e.to_string()))
}

/// `rel` with a `.png` extension, under `dir`.
pub fn png_path(dir: &Path, rel: &Path) -> PathBuf {
    dir.join(rel).with_extension("png")
}

/// A relative path as text with `/` separators (CSV and JSON cells).
pub fn rel_text(rel: &Path) -> String {
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}
