//! `metrics.png`: one panel per metric, a bar per entry (its mean over seeds) with a whisker of ± one
//! standard deviation, labelled with the 8×8 font of vaelab's own plots; and picture sheets
//! (`samples.png`, `reconstructions.png`) that put every entry's evaluation grid under its name, so a
//! suite's images can be compared by eye in one file.

use super::results::{fmt, mean_std, EntryResult};
use image::{Rgb, RgbImage};
use vaelab::report::plot::text;

const PANEL_W: u32 = 440;
const BAR_H: u32 = 18;
const LABEL_W: u32 = 190;
const INK: Rgb<u8> = Rgb([40, 40, 40]);
const BAR: Rgb<u8> = Rgb([110, 150, 210]);
const WHISKER: Rgb<u8> = Rgb([24, 60, 130]);

/// Panels stacked vertically, one per metric in `columns` that at least one entry has.
pub fn metric_bars(entries: &[EntryResult], columns: &[String]) -> RgbImage {
    let panel_h = 34 + BAR_H * entries.len() as u32 + 10;
    let shown: Vec<&String> = columns.iter().filter(|c| entries.iter().any(|e| e.values(c).is_some())).collect();
    let mut img = RgbImage::from_pixel(PANEL_W, panel_h * shown.len().max(1) as u32, Rgb([255, 255, 255]));
    for (i, metric) in shown.iter().enumerate() {
        let top = i as u32 * panel_h;
        text(&mut img, 8, top + 8, metric, INK);
        let stats: Vec<Option<(f64, f64)>> = entries.iter().map(|e| e.values(metric).map(|v| mean_std(&v))).collect();
        let max = stats.iter().flatten().map(|(m, s)| (m + s).abs().max(m.abs())).fold(0.0f64, f64::max).max(f64::MIN_POSITIVE);
        let width = (PANEL_W - LABEL_W - 70) as f64;
        for (j, (e, st)) in entries.iter().zip(&stats).enumerate() {
            let y = top + 30 + j as u32 * BAR_H;
            let label: String = e.entry.chars().take(23).collect();
            text(&mut img, 8, y + 4, &label, INK);
            let Some((m, s)) = st else {
                text(&mut img, LABEL_W, y + 4, "-", INK);
                continue;
            };
            let len = (m.max(0.0) / max * width) as u32;
            for yy in y + 2..y + BAR_H - 3 {
                for xx in LABEL_W..LABEL_W + len {
                    img.put_pixel(xx, yy, BAR);
                }
            }
            let (lo, hi) = (((m - s).max(0.0) / max * width) as u32, ((m + s) / max * width).min(width) as u32);
            for xx in LABEL_W + lo..=LABEL_W + hi {
                img.put_pixel(xx, y + BAR_H / 2 - 1, WHISKER);
            }
            text(&mut img, LABEL_W + len.max(hi) + 6, y + 4, &fmt(*m), INK);
        }
    }
    img
}

/// Gap around and between the sheet's strips.
const SHEET_PAD: u32 = 6;

/// Every entry's `eval/<file>` of its first seed, its top `max_height` pixels, stacked under the
/// entry's name; entries without the picture (a GAN has no reconstructions) are left out. `None`
/// when no entry has it.
pub fn sheet(entries: &[EntryResult], file: &str, max_height: u32) -> Option<RgbImage> {
    let strips: Vec<(&str, RgbImage)> = entries
        .iter()
        .filter_map(|e| {
            let img = image::open(vaelab::runs::paths::eval_dir(&e.runs[0].dir).join(file)).ok()?.to_rgb8();
            let h = img.height().min(max_height);
            Some((e.entry.as_str(), image::imageops::crop_imm(&img, 0, 0, img.width(), h).to_image()))
        })
        .collect();
    if strips.is_empty() {
        return None;
    }
    let label_h = 8 + 2 * SHEET_PAD;
    let width = strips.iter().map(|(name, s)| s.width().max(8 * name.chars().count() as u32)).max().unwrap_or(0) + 2 * SHEET_PAD;
    let height = strips.iter().map(|(_, s)| label_h + s.height()).sum::<u32>() + SHEET_PAD;
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut y = 0;
    for (name, strip) in &strips {
        text(&mut sheet, SHEET_PAD, y + SHEET_PAD, name, INK);
        y += label_h;
        image::imageops::replace(&mut sheet, strip, SHEET_PAD as i64, y as i64);
        y += strip.height();
    }
    Some(sheet)
}
