//! `cargo xtask bench loader`: vaelab's image-folder loader beside torchvision's `ImageFolder` +
//! `DataLoader(num_workers=2)` on the same folder of 5,000 16-bit 256×256 PNGs (knee phantoms,
//! written once under `target/bench-data/`), both decoding, resizing to 128 and batching by 64.

use crate::{alternate, flag, median, root, run, Side};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use vaelab::datasets::{Dataset, KneeConfig, KneePhantom, Split, SplitSizes};

const IMAGES: usize = 5_000;
const SIDE: usize = 256;

/// The benchmark folder in the Knee-OA layout `train/<grade>/*.png` (plus one test image, which
/// vaelab's class-folder layout requires and ImageFolder never sees).
fn ensure_folder() -> Result<PathBuf, String> {
    let dir = root().join(format!("target/bench-data/knee-png16-{SIDE}-{IMAGES}"));
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(dir);
    }
    eprintln!("writing {IMAGES} 16-bit {SIDE}×{SIDE} PNGs to {}", dir.display());
    let knee = KneePhantom::new(KneeConfig {
        size: SIDE,
        splits: SplitSizes { train: IMAGES, val: 0, test: 1 },
        seed: 11,
        patella: true,
    });
    let grade = knee.factor_names().iter().position(|n| n == "grade").ok_or("the knee phantom has no grade factor")?;
    let write = |split: Split, i: usize, folder: &Path| -> Result<(), String> {
        let s = knee.sample(split, i);
        let class = folder.join(format!("{}", s.factors[grade] as u32));
        std::fs::create_dir_all(&class).map_err(|e| e.to_string())?;
        let px: Vec<u16> = s.pixels.iter().map(|v| (v.clamp(0.0, 1.0) * 65535.0).round() as u16).collect();
        let img = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(SIDE as u32, SIDE as u32, px).ok_or("buffer size")?;
        img.save(class.join(format!("{i:05}.png"))).map_err(|e| e.to_string())
    };
    (0..IMAGES).into_par_iter().try_for_each(|i| write(Split::Train, i, &dir.join("train")))?;
    write(Split::Test, 0, &dir.join("test"))?;
    std::fs::write(&done, "").map_err(|e| e.to_string())?;
    Ok(dir)
}

pub fn bench_loader(args: &[String], python: &str) -> Result<(), String> {
    let rounds: usize = flag(args, "--rounds").map_or(Ok(5), |s| s.parse()).map_err(|_| "--rounds takes a number")?;
    let threads = flag(args, "--threads").unwrap_or_else(|| "2".into());
    let dir = ensure_folder()?;
    run(Command::new("cargo").args(["build", "--release", "-p", "vaelab-cli"]))?;
    let vaelab = root().join("target/release/vaelab");
    let script = root().join("xtask/bench/torch_loader.py");
    let torch_ok = Path::new(python).exists();
    if !torch_ok {
        eprintln!("note: torchvision reference not run: need {python} with torch and torchvision");
    }
    let ours = || {
        let mut c = Command::new(&vaelab);
        c.arg("bench-loader").arg(&dir).args(["--size", "128", "--threads", &threads]);
        c
    };
    let theirs = || {
        let mut c = Command::new(python);
        c.arg(&script).arg(dir.join("train")).args(["128", "64", &threads]);
        c
    };
    let mut sides = vec![Side { name: "vaelab", command: &ours }];
    if torch_ok {
        sides.push(Side { name: "torchvision", command: &theirs });
    }
    let mut results = alternate(rounds, "", "img/s", &sides)?;
    let m_ours = median(&mut results[0].rates);
    println!("loader: {IMAGES} 16-bit {SIDE}² PNGs → 128², batch 64, {threads} threads/workers, {rounds} rounds (medians)");
    println!("  vaelab     : {m_ours:>7.0} img/s");
    if torch_ok {
        let m_theirs = median(&mut results[1].rates);
        println!("  torchvision: {m_theirs:>7.0} img/s");
        println!("  ratio vaelab / torchvision: {:.2}×", m_ours / m_theirs);
    }
    Ok(())
}
