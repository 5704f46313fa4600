//! `cargo xtask bench prior`: drawing 1,000 code grids of 16×16 positions and 128 codes from a PixelCNN
//! of `specs/shapes/vqvae.ron`'s shape, with the cached sampler, beside the cost of the plain one
//! (h·w full passes, from one timed pass). The target is under 30 s on 2 cores. There is no PyTorch
//! side: the source study's code has no PixelCNN sampler to compare with.

use crate::{flag, root, run};
use std::process::Command;

pub fn bench_prior(args: &[String]) -> Result<(), String> {
    let threads = flag(args, "--threads").unwrap_or_else(|| "2".into());
    run(Command::new("cargo").args(["build", "--release", "-p", "vaelab-cli"]))?;
    let vaelab = root().join("target/release/vaelab");
    let out = Command::new(&vaelab)
        .args(["bench-prior", "--samples", "1000", "--grid", "16", "--codes", "128", "--threads", &threads])
        .output()
        .map_err(|e| format!("{}: {e}", vaelab.display()))?;
    if !out.status.success() {
        return Err(format!("bench-prior failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}
