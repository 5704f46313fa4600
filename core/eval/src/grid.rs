//! Image grids as PNG files.

use std::path::Path;

/// Tiles `images` (each C×H×W in [0, 1], C = 1 or 3) into `cols` columns with a 2 px gutter.
/// Small images are enlarged by an integer factor (nearest neighbour) so cells are ≥ 64 px.
pub fn grid(images: &[Vec<f32>], (c, h, w): (usize, usize, usize), cols: usize) -> image::RgbImage {
    let scale = (64 / h.max(w)).max(1) as u32;
    let (ch, cw) = (h as u32 * scale, w as u32 * scale);
    let gap = 2u32;
    let cols = cols.max(1) as u32;
    let rows = (images.len() as u32).div_ceil(cols).max(1);
    let mut out = image::RgbImage::from_pixel(cols * (cw + gap) + gap, rows * (ch + gap) + gap, image::Rgb([96, 96, 96]));
    for (i, img) in images.iter().enumerate() {
        let (gx, gy) = (i as u32 % cols, i as u32 / cols);
        for y in 0..ch {
            for x in 0..cw {
                let (sy, sx) = ((y / scale) as usize, (x / scale) as usize);
                let px = |ci: usize| (img[(ci * h + sy) * w + sx].clamp(0.0, 1.0) * 255.0).round() as u8;
                let rgb = if c >= 3 { [px(0), px(1), px(2)] } else { [px(0); 3] };
                out.put_pixel(gap + gx * (cw + gap) + x, gap + gy * (ch + gap) + y, image::Rgb(rgb));
            }
        }
    }
    out
}

pub fn save_png(img: &image::RgbImage, path: &Path) -> Result<(), String> {
    img.save(path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
