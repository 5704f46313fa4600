//! `metrics.png`: one panel per metric, a bar per entry (its mean over seeds) with a whisker of ± one
//! standard deviation, labelled with the 8×8 font of vaelab's own plots.

use super::results::{fmt, mean_std, EntryResult};
use image::{Rgb, RgbImage};
use vaelab_core::report::plot::text;

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
