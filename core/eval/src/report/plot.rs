//! Line plots as PNG: one panel per series (a loss term, the total loss), raw values in a light
//! colour and an exponential moving average on top, labelled with an 8×8 bitmap font. Small on
//! purpose: what a researcher needs from a loss curve is its shape, its range and where it ends.

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

/// One curve: `(step, value)` points in step order.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const PANEL_W: u32 = 440;
const PANEL_H: u32 = 230;
const COLUMNS: u32 = 2;
/// Plot-area margins inside a panel: left (tick labels), right, top (title), bottom (step labels).
const MARGIN: (u32, u32, u32, u32) = (76, 14, 26, 30);
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([40, 40, 40]);
const GRID: Rgb<u8> = Rgb([228, 228, 228]);
const RAW: Rgb<u8> = Rgb([170, 196, 230]);
const SMOOTH: Rgb<u8> = Rgb([24, 82, 170]);

/// Panels for every series, two per row. Series with no finite point are drawn empty with a note.
pub fn plot(series: &[Series]) -> RgbImage {
    let rows = (series.len() as u32).div_ceil(COLUMNS).max(1);
    let mut img = RgbImage::from_pixel(PANEL_W * COLUMNS, PANEL_H * rows, BACKGROUND);
    for (i, s) in series.iter().enumerate() {
        let (px, py) = ((i as u32 % COLUMNS) * PANEL_W, (i as u32 / COLUMNS) * PANEL_H);
        panel(&mut img, px, py, s);
    }
    img
}

/// How values map to the vertical axis: log10 when the series is positive and spans more than a
/// factor of 20 (losses that fall by orders of magnitude), linear otherwise.
#[derive(Clone, Copy)]
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
}

impl Axis {
    fn fit(values: &[f64]) -> Axis {
        let (min, max) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
        let log = min > 0.0 && max / min > 20.0;
        let (lo, hi) = if log { (min.log10(), max.log10()) } else { (min, max) };
        let pad = if hi > lo { 0.05 * (hi - lo) } else { lo.abs().max(1.0) * 0.05 };
        Axis { log, lo: lo - pad, hi: hi + pad }
    }
    fn unit(&self, v: f64) -> f64 {
        let v = if self.log { v.log10() } else { v };
        (v - self.lo) / (self.hi - self.lo)
    }
    fn value_at(&self, unit: f64) -> f64 {
        let v = self.lo + unit * (self.hi - self.lo);
        if self.log {
            10f64.powf(v)
        } else {
            v
        }
    }
}

fn panel(img: &mut RgbImage, px: u32, py: u32, s: &Series) {
    let (ml, mr, mt, mb) = MARGIN;
    let (x0, y0, x1, y1) = (px + ml, py + mt, px + PANEL_W - mr, py + PANEL_H - mb);
    let points: Vec<(f64, f64)> = s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    if points.is_empty() {
        text(img, px + ml, py + 8, &format!("{}: no finite values", s.name), INK);
        return;
    }
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    let axis = Axis::fit(&values);
    let (first, last) = (points[0].0, points[points.len() - 1].0);
    let span = (last - first).max(1.0);
    let title = format!("{}{}  last {}", s.name, if axis.log { " (log scale)" } else { "" }, number(values[values.len() - 1]));
    text(img, px + ml, py + 8, &title, INK);
    // Grid lines and tick labels: five horizontal, three vertical.
    for t in 0..5 {
        let u = t as f64 / 4.0;
        let y = y1 - (u * (y1 - y0) as f64).round() as u32;
        hline(img, x0, x1, y, GRID);
        let label = number(axis.value_at(u));
        text(img, (x0 - 6).saturating_sub(8 * label.len() as u32), y.saturating_sub(4), &label, INK);
    }
    for t in 0..3 {
        let u = t as f64 / 2.0;
        let x = x0 + (u * (x1 - x0) as f64).round() as u32;
        vline(img, x, y0, y1, GRID);
        let label = format!("{}", (first + u * span).round() as i64);
        let w = 8 * label.len() as u32;
        text(img, (x.saturating_sub(w / 2)).clamp(px, px + PANEL_W - w), y1 + 8, &label, INK);
    }
    hline(img, x0, x1, y1, INK);
    vline(img, x0, y0, y1, INK);
    let to_px = |(x, v): (f64, f64)| {
        let fx = x0 as f64 + (x - first) / span * (x1 - x0) as f64;
        let fy = y1 as f64 - axis.unit(v).clamp(0.0, 1.0) * (y1 - y0) as f64;
        (fx, fy)
    };
    polyline(img, points.iter().map(|p| to_px(*p)), RAW);
    // An EMA whose time constant is a 20th of the run keeps the trend readable over noisy steps.
    let alpha = (20.0 / points.len() as f64).min(1.0);
    let mut ema = values[0];
    let smooth: Vec<(f64, f64)> = points
        .iter()
        .map(|&(x, v)| {
            ema = if axis.log {
                10f64.powf(alpha * v.log10() + (1.0 - alpha) * ema.log10())
            } else {
                alpha * v + (1.0 - alpha) * ema
            };
            to_px((x, ema))
        })
        .collect();
    polyline(img, smooth.into_iter(), SMOOTH);
}

/// A compact number: 4 significant digits, exponent form outside [1e-3, 1e5).
fn number(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else {
        let digits = if a >= 1000.0 {
            0
        } else if a >= 100.0 {
            1
        } else if a >= 10.0 {
            2
        } else {
            3
        };
        format!("{v:.digits$}")
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn hline(img: &mut RgbImage, x0: u32, x1: u32, y: u32, c: Rgb<u8>) {
    (x0..=x1).for_each(|x| put(img, x as i64, y as i64, c));
}

fn vline(img: &mut RgbImage, x: u32, y0: u32, y1: u32, c: Rgb<u8>) {
    (y0..=y1).for_each(|y| put(img, x as i64, y as i64, c));
}

/// Straight segments between consecutive points, two pixels thick.
fn polyline(img: &mut RgbImage, points: impl Iterator<Item = (f64, f64)>, c: Rgb<u8>) {
    let mut prev: Option<(f64, f64)> = None;
    for p in points {
        let a = prev.unwrap_or(p);
        let steps = ((p.0 - a.0).abs().max((p.1 - a.1).abs()).ceil() as usize).max(1);
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let (x, y) = ((a.0 + t * (p.0 - a.0)).round() as i64, (a.1 + t * (p.1 - a.1)).round() as i64);
            put(img, x, y, c);
            put(img, x, y + 1, c);
        }
        prev = Some(p);
    }
}

/// ASCII text with its top-left corner at (x, y); characters without a glyph print as '?'.
pub fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, c: Rgb<u8>) {
    for (i, ch) in s.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')).expect("'?' has a glyph");
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    put(img, (x + 8 * i as u32 + col) as i64, (y + row as u32) as i64, c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_short() {
        assert_eq!(number(1234.5678), "1235");
        assert_eq!(number(0.012345), "0.012");
        assert_eq!(number(3.0e-6), "3.00e-6");
        assert_eq!(number(-42.0), "-42.00");
    }

    #[test]
    fn a_falling_curve_is_drawn_from_top_left_to_bottom_right() {
        let s = Series { name: "rec".into(), points: (0..100).map(|i| (i as f64, 100.0 - i as f64)).collect() };
        let img = plot(&[s]);
        let (ml, mr, mt, mb) = MARGIN;
        let dark = |x: u32, y0: u32, y1: u32| (y0..y1).find(|&y| img.get_pixel(x, y) == &SMOOTH);
        // Near the left edge the smoothed line is high in the panel; near the right edge it is low.
        let left = dark(ml + 3, mt, PANEL_H - mb).expect("line at the left");
        let right = dark(PANEL_W - mr - 3, mt, PANEL_H - mb).expect("line at the right");
        assert!(left < mt + 40 && right > left + 80, "left y {left}, right y {right}");
    }

    #[test]
    fn log_axis_for_losses_spanning_orders_of_magnitude() {
        assert!(Axis::fit(&[1000.0, 10.0, 1.0]).log);
        assert!(!Axis::fit(&[3.0, 2.0, 1.0]).log);
        assert!(!Axis::fit(&[-1.0, 100.0]).log);
    }
}
