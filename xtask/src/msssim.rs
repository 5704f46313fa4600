//! `cargo xtask bench msssim`: vaelab's MS-SSIM beside pytorch-msssim (PyPI) on the same 256 pairs of
//! 256×256 grey images, 2 threads each, alternating rounds; medians, their ratio, and how far the
//! two mean values are apart (the acceptance bound is 1e-5).

use crate::{alternate, flag, median, number_after, root, run, Side};
use std::path::Path;
use std::process::Command;

pub fn bench_msssim(args: &[String], python: &str) -> Result<(), String> {
    let rounds: usize = flag(args, "--rounds").map_or(Ok(5), |s| s.parse()).map_err(|_| "--rounds takes a number")?;
    let threads = flag(args, "--threads").unwrap_or_else(|| "2".into());
    let pairs = "256";
    run(Command::new("cargo").args(["build", "--release", "-p", "vaelab-cli"]))?;
    let vaelab = root().join("target/release/vaelab");
    let script = root().join("xtask/bench/torch_msssim.py");
    let torch_ok = Path::new(python).exists();
    if !torch_ok {
        eprintln!("note: pytorch-msssim reference not run: need {python} with torch and pytorch-msssim");
    }
    let ours = || {
        let mut c = Command::new(&vaelab);
        c.args(["bench-ms-ssim", "--pairs", pairs, "--size", "256", "--threads", &threads]);
        c
    };
    let theirs = || {
        let mut c = Command::new(python);
        c.arg(&script).args([pairs, "256", &threads]);
        c
    };
    let mut sides = vec![Side { name: "vaelab", command: &ours }];
    if torch_ok {
        sides.push(Side { name: "pytorch-msssim", command: &theirs });
    }
    let mut results = alternate(rounds, "", "pairs/s", &sides)?;
    // How far the two implementations' mean MS-SSIM values are apart, at worst over the rounds.
    let mean = |o: &String| number_after(o, "(mean ").unwrap_or(f64::NAN);
    let gap = match &results[..] {
        [ours, theirs] => ours.outputs.iter().zip(&theirs.outputs).map(|(a, b)| (mean(a) - mean(b)).abs()).fold(0.0, f64::max),
        _ => 0.0,
    };
    let m_ours = median(&mut results[0].rates);
    println!("MS-SSIM: {pairs} grey 256² pairs, 5 scales, {threads} threads, {rounds} rounds (medians)");
    println!("  vaelab        : {m_ours:>8.1} pairs/s");
    if torch_ok {
        let m_theirs = median(&mut results[1].rates);
        println!("  pytorch-msssim: {m_theirs:>8.1} pairs/s");
        println!("  ratio vaelab / pytorch-msssim: {:.2}×; largest difference of the mean values: {gap:.1e}", m_ours / m_theirs);
    }
    Ok(())
}
