//! Writes a grid of knee phantoms, one row per KL-like grade (0 at the top), and times rendering.
//!     cargo run --release -p vaelab-datasets --example knee_grid -- OUT.png [SIZE]
use std::time::Instant;
use vaelab_datasets::{KneeFactors, StreamRng};

fn main() {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "knee-grades.png".into());
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(128);
    let per_row = 6;
    let gap = 2;
    let side = per_row * (size + gap) + gap;
    let mut img = image::GrayImage::from_pixel(side as u32, (5 * (size + gap) + gap) as u32, image::Luma([90]));
    let mut rng = StreamRng::new(3, &[]);
    let mut rows = [0usize; 5];
    let mut times = Vec::new();
    while rows.iter().any(|&r| r < per_row) {
        let f = KneeFactors::sample(&mut rng);
        let g = f.grade as usize;
        if rows[g] == per_row {
            continue;
        }
        let t0 = Instant::now();
        let pixels = f.render(size, true);
        times.push(t0.elapsed().as_secs_f64());
        let (ox, oy) = (gap + rows[g] * (size + gap), gap + g * (size + gap));
        for y in 0..size {
            for x in 0..size {
                img.put_pixel((ox + x) as u32, (oy + y) as u32, image::Luma([(pixels[y * size + x] * 255.0).round() as u8]));
            }
        }
        rows[g] += 1;
    }
    img.save(&out).expect("write the grid");
    times.sort_by(f64::total_cmp);
    println!("wrote {out}; median render of one {size} px image: {:.1} ms (one core)", times[times.len() / 2] * 1e3);
}
