//! Times the pieces (im2col, gemms, col2im) of the two slowest convolution backward passes.
//!     cargo run --release -p vaelab-nn --example kernel_parts
use std::time::Instant;
use vaelab_nn::kernels::*;
use vaelab_nn::ConvGeom;

fn time(name: &str, mut f: impl FnMut()) {
    let mut t = Vec::new();
    for _ in 0..9 {
        let t0 = Instant::now();
        f();
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    println!("  {name:<40} {:7.2} ms", t[4]);
}

// The same allocator as the `vaelab` binary, so timings match what users get.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    rayon::ThreadPoolBuilder::new().num_threads(1).build_global().unwrap();
    let b = 64;
    for (label, g, other) in [
        ("enc conv 32→32 @32 (other = Cout)", ConvGeom::conv(32, 32, 32, 4, 2, 1).unwrap(), 32),
        ("dec convT 32→1 @32 (other = Cin)", ConvGeom::conv_t(1, 32, 32, 4, 2, 1).unwrap(), 32),
    ] {
        println!("{label}: tiles {}", tiles(&g, b).len());
        let k = g.col_rows();
        let n = g.positions() * b;
        let img = vec![0.5f32; g.c * g.h * g.w * b];
        let mut col = vec![0.0f32; k * n];
        let small = vec![0.1f32; other * n];
        let w = vec![0.01f32; other * k];
        time("im2col (whole)", || im2col(&img, &g, b, &mut col));
        let mut out_img = vec![0.0f32; img.len()];
        time("col2im (whole)", || col2im_add(&col, &g, b, &mut out_img));
        let mut dw = vec![0.0f32; other * k];
        time("gemm other×k ← (other×n)·(k×n)ᵀ", || {
            gemm(other, k, n, &mut dw, false, View::rows(&small, n), View::transposed(&col, n))
        });
        let mut dwt = vec![0.0f32; k * other];
        time("gemm k×other ← (k×n)·(other×n)ᵀ", || {
            gemm(k, other, n, &mut dwt, false, View::rows(&col, n), View::transposed(&small, n))
        });
        // Split the reduction into 1024-column chunks, accumulating.
        time("  same, k split in 1024-chunks", || {
            for (ci, c0) in (0..n).step_by(1024).enumerate() {
                let len = 1024.min(n - c0);
                gemm(
                    k,
                    other,
                    len,
                    &mut dwt,
                    ci > 0,
                    View { data: &col[c0..], rs: n, cs: 1 },
                    View { data: &small[c0..], rs: 1, cs: n },
                );
            }
        });
        time("  other×k split in 1024-chunks", || {
            for (ci, c0) in (0..n).step_by(1024).enumerate() {
                let len = 1024.min(n - c0);
                gemm(
                    other,
                    k,
                    len,
                    &mut dw,
                    ci > 0,
                    View { data: &small[c0..], rs: n, cs: 1 },
                    View { data: &col[c0..], rs: 1, cs: n },
                );
            }
        });
        let mut dcol = vec![0.0f32; k * n];
        time("gemm k×n ← (other×k)ᵀ·(other×n)", || {
            gemm(k, n, other, &mut dcol, false, View::transposed(&w, k), View::rows(&small, n))
        });
        let mut dst = vec![0.0f32; other * n];
        time("gemm other×n ← (other×k)·(k×n)", || {
            gemm(other, n, k, &mut dst, false, View::rows(&w, k), View::rows(&col, n))
        });
    }
}
