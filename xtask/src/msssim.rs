//! `cargo xtask bench msssim`: vaelab's MS-SSIM beside pytorch-msssim (PyPI) on the same 256 pairs of
//! 256×256 grey images, 2 threads each, alternating rounds; medians, their ratio, and how far the
//! two mean values are apart (the acceptance bound is 1e-5).

use crate::{capture, flag, median, number_after, root, run};
use std::path::Path;
use std::process::Command;

pub fn bench_msssim(args: &[String], python: &str) -> Result<(), String> {
    let rounds: usize = flag(args, "--rounds").map_or(Ok(5), |s| s.parse()).map_err(|_| "--rounds takes a number")?;
    let threads = flag(args, "--threads").unwrap_or_else(|| "2".into());
    let pairs = "256";
    run(Command::new("cargo").args(["build", "--release", "-p", "vaelab-core"]))?;
    let vaelab = root().join("target/release/vaelab");
    let script = root().join("xtask/bench/torch_msssim.py");
    let torch_ok = Path::new(python).exists();
    if !torch_ok {
        eprintln!("note: pytorch-msssim reference not run: need {python} with torch and pytorch-msssim");
    }
    let (mut ours, mut theirs, mut gap) = (Vec::new(), Vec::new(), 0.0f64);
    for round in 1..=rounds {
        let out =
            capture(Command::new(&vaelab).args(["bench-ms-ssim", "--pairs", pairs, "--size", "256", "--threads", &threads]))?;
        let ips = number_after(&out, "=> ").ok_or(format!("unexpected vaelab output: {out}"))?;
        let our_mean = number_after(&out, "(mean ").unwrap_or(f64::NAN);
        ours.push(ips);
        let mut line = format!("round {round}/{rounds}: vaelab {ips:.1} pairs/s");
        if torch_ok {
            let out = capture(Command::new(python).arg(&script).args([pairs, "256", &threads]))?;
            let tps = number_after(&out, "=> ").ok_or(format!("unexpected pytorch-msssim output: {out}"))?;
            let their_mean = number_after(&out, "(mean ").unwrap_or(f64::NAN);
            gap = gap.max((our_mean - their_mean).abs());
            theirs.push(tps);
            line += &format!(", pytorch-msssim {tps:.1} pairs/s");
        }
        eprintln!("{line}");
    }
    let m_ours = median(&mut ours);
    println!("MS-SSIM: {pairs} grey 256² pairs, 5 scales, {threads} threads, {rounds} rounds (medians)");
    println!("  vaelab        : {m_ours:>8.1} pairs/s");
    if torch_ok {
        let m_theirs = median(&mut theirs);
        println!("  pytorch-msssim: {m_theirs:>8.1} pairs/s");
        println!("  ratio vaelab / pytorch-msssim: {:.2}×; largest difference of the mean values: {gap:.1e}", m_ours / m_theirs);
    }
    Ok(())
}
