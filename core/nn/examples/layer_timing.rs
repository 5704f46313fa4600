//! Per-layer timing of the fused convolutions of the benchmark β-VAE and the GAN's discriminator (batch 64, 64×64):
//! forward and backward separately, with the achieved GFLOP/s. For performance work:
//!     cargo run --release -p vaelab-nn --example layer_timing [threads]

use dfdx::prelude::*;
use std::time::Instant;
use vaelab_nn::{Backend, ConvGeom, GradNeeds};

// The same allocator as the `vaelab` binary, so timings match what users get.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let threads: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().unwrap();
    let dev = Cpu::default();
    let b = 64;
    // (name, transposed, in-channels, in-size, out-channels)
    let layers = [
        ("enc conv 1→32 @64", false, 1, 64, 32),
        ("enc conv 32→32 @32", false, 32, 32, 32),
        ("enc conv 32→64 @16", false, 32, 16, 64),
        ("enc conv 64→64 @8", false, 64, 8, 64),
        ("dec convT 64→64 @4", true, 64, 4, 64),
        ("dec convT 64→32 @8", true, 64, 8, 32),
        ("dec convT 32→32 @16", true, 32, 16, 32),
        ("dec convT 32→1 @32", true, 32, 32, 1),
        // The GAN's discriminator (`specs/shapes/gan.ron`) adds these two.
        ("disc conv 32→64 @32", false, 32, 32, 64),
        ("disc conv 64→64 @16", false, 64, 16, 64),
    ];
    let mut total = 0.0;
    for (name, t, cin, size, cout) in layers {
        let g = if t {
            ConvGeom::conv_t(cout, size, size, 4, 2, 1).unwrap()
        } else {
            ConvGeom::conv(cin, size, size, 4, 2, 1).unwrap()
        };
        let x = dev.tensor_from_vec(vec![0.5f32; cin * size * size * b], (cin * size * size, b));
        let w = dev.tensor_from_vec(vec![0.01f32; cin * cout * 16], (cin * cout * 16,));
        let bias = dev.tensor_from_vec(vec![0.0f32; cout], (cout,));
        let macs = (cin * cout * 16 * if t { size * size } else { g.positions() } * b) as f64;
        let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
        for _ in 0..12 {
            let t0 = Instant::now();
            let y = if t {
                Cpu::conv_t2d(x.retaped(), GradNeeds::ALL, w.retaped(), bias.retaped(), g, cin, None, None)
            } else {
                Cpu::conv2d(
                    x.retaped(),
                    GradNeeds { input: cin > 1, params: true },
                    w.retaped(),
                    bias.retaped(),
                    g,
                    cout,
                    None,
                    None,
                )
                .0
            };
            // The loss's own passes (a sum, and its gradient of ones) fall outside both timings.
            let t1 = Instant::now();
            let loss = y.sum::<(), _>();
            let t1b = Instant::now();
            let _ = loss.backward();
            let t2 = Instant::now();
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1b).as_secs_f64());
        }
        fwd.sort_by(f64::total_cmp);
        bwd.sort_by(f64::total_cmp);
        let (f, bw) = (fwd[6], bwd[6]);
        total += f + bw;
        println!(
            "{name:<22} fwd {:6.2} ms ({:5.1} GFLOP/s)  bwd {:6.2} ms ({:5.1} GFLOP/s)",
            f * 1e3,
            2.0 * macs / f / 1e9,
            bw * 1e3,
            4.0 * macs / bw / 1e9
        );
    }
    println!("all convolutions, forward + backward: {:.1} ms per step", total * 1e3);
}
