//! A labelled table of scores in [0, 1] as a PNG: one row per name, one column per label, each cell
//! shaded from white (0) to dark blue (1) and printed with its value. Used for "which latent
//! element predicts which attribute", where a reader wants to see at a glance whether position and
//! scale sit in different elements.

use super::plot::text;
use image::{Rgb, RgbImage};

const CELL_W: u32 = 44;
const CELL_H: u32 = 22;
const PAD: u32 = 6;
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([40, 40, 40]);
const FULL: [f64; 3] = [24.0, 82.0, 170.0];

/// The table: `shade[r][c]` in [0, 1] (clamped; NaN shows as 0) colours cell (r, c) and `shown[r][c]`
/// is printed in it.
pub fn heatmap(title: &str, rows: &[String], cols: &[String], shade: &[Vec<f64>], shown: &[Vec<String>]) -> RgbImage {
    let label_w = 8 * rows.iter().map(|r| r.chars().count()).max().unwrap_or(0) as u32 + 2 * PAD;
    let cell_w = CELL_W.max(8 * cols.iter().map(|c| c.chars().count()).max().unwrap_or(0) as u32 + PAD);
    let top = 2 * CELL_H;
    let width = (label_w + cell_w * cols.len() as u32 + PAD).max(8 * title.chars().count() as u32 + 2 * PAD);
    let height = top + CELL_H * rows.len() as u32 + PAD;
    let mut img = RgbImage::from_pixel(width, height, BACKGROUND);
    text(&mut img, PAD, PAD, title, INK);
    for (c, label) in cols.iter().enumerate() {
        text(&mut img, label_w + cell_w * c as u32 + PAD / 2, CELL_H + PAD, label, INK);
    }
    for (r, label) in rows.iter().enumerate() {
        let y = top + CELL_H * r as u32;
        text(&mut img, PAD, y + (CELL_H - 8) / 2, label, INK);
        for c in 0..cols.len() {
            let v = shade.get(r).and_then(|row| row.get(c)).copied().unwrap_or(0.0);
            let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
            let fill = Rgb(std::array::from_fn(|k| (255.0 + (FULL[k] - 255.0) * v).round() as u8));
            let x = label_w + cell_w * c as u32;
            for yy in y + 1..y + CELL_H {
                for xx in x + 1..x + cell_w {
                    img.put_pixel(xx, yy, fill);
                }
            }
            let ink = if v > 0.5 { BACKGROUND } else { INK };
            if let Some(s) = shown.get(r).and_then(|row| row.get(c)) {
                text(&mut img, x + (cell_w - 8 * s.chars().count() as u32) / 2, y + (CELL_H - 8) / 2, s, ink);
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_scores_are_dark_and_low_ones_light() {
        let rows = vec!["x".to_string(), "scale".to_string()];
        let cols = vec!["z0".to_string(), "z1".to_string()];
        let shade = vec![vec![1.0, 0.0], vec![f64::NAN, 2.0]];
        let shown = vec![vec!["1.00".into(), "0.00".into()], vec!["nan".into(), "2.00".into()]];
        let img = heatmap("probe", &rows, &cols, &shade, &shown);
        let label_w = 8 * 5 + 2 * PAD;
        let centre = |r: u32, c: u32| *img.get_pixel(label_w + CELL_W * c + 3, 2 * CELL_H + CELL_H * r + 3);
        assert_eq!(centre(0, 0), Rgb([24, 82, 170]), "a score of 1 is full blue");
        assert_eq!(centre(0, 1), BACKGROUND, "a score of 0 is white");
        assert_eq!(centre(1, 0), BACKGROUND, "NaN shows as 0");
        assert_eq!(centre(1, 1), Rgb([24, 82, 170]), "scores clamp to 1");
        assert_eq!(img.dimensions(), (label_w + 2 * CELL_W + PAD, 2 * CELL_H + 2 * CELL_H + PAD));
    }
}
