//! `cargo xtask cuda-build` and `cargo xtask device-check`: vaelab with `--features cuda`, built and
//! linked on a machine with no GPU and no CUDA toolkit, bundled for a machine that has both.
//!
//! `xtask/cuda/toolkit.sh` assembles the toolkit from NVIDIA's PyPI wheels plus vaelab's NVRTC front
//! end for `nvcc`, an `nvidia-smi` stand-in and a stub `libcuda.so.1`. dfdx's build script then
//! compiles every kernel to PTX (embedded in the binary) and cudarc links the wheels' libraries.

use super::{capture, root, run};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the device tool may carry in one call.
const BUNDLE_LIMIT: u64 = 64 << 20;

pub struct BuildOptions {
    /// The compute capability the kernels are compiled for, as nvidia-smi prints it ("9.0").
    pub arch: String,
    /// `release` for the device, `dev` for CI's compile-and-link check.
    pub profile: String,
}

impl BuildOptions {
    pub fn from_args(args: &[String]) -> Result<Self, String> {
        let mut opts = BuildOptions { arch: "9.0".into(), profile: "release".into() };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--arch" => opts.arch = it.next().ok_or("--arch takes a compute capability, e.g. 9.0")?.clone(),
                "--dev" => opts.profile = "dev".into(),
                "--dry-run" => {}
                _ => return Err(format!("unknown argument `{a}`\n{USAGE}")),
            }
        }
        Ok(opts)
    }
}

pub const USAGE: &str = "cargo xtask cuda-build [--arch 9.0] [--dev] | device-check [--dry-run] [--arch 9.0] [--dev]";

fn toolkit() -> PathBuf {
    root().join("target/cuda-toolkit")
}

pub fn bundle_dir() -> PathBuf {
    root().join("target/cuda-bundle")
}

/// Builds the CUDA binary and writes the bundle; returns its size in bytes.
///
/// The build shares `target/` with the CPU builds: the `cuda` feature changes only dfdx, cudarc and
/// the vaelab crates, so every other dependency is the one `cargo test` or `cargo build` already
/// compiled. (A target folder of its own compiled all of them again: several minutes of CI.)
pub fn cuda_build(opts: &BuildOptions) -> Result<u64, String> {
    let tk = toolkit();
    run(Command::new("bash").arg("xtask/cuda/toolkit.sh").arg(&tk))?;
    let path = format!("{}:{}", tk.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let profile_dir = root().join("target").join(if opts.profile == "dev" { "debug" } else { opts.profile.as_str() });
    // Cargo puts the CUDA `vaelab` where the CPU one of the same profile lives, and the CUDA one
    // cannot even start without libcuda.so.1: the CPU binary is set aside and put back afterwards.
    let _cpu_binary = SetAside::new(profile_dir.join("vaelab"))?;
    let mut build = Command::new("cargo");
    build
        .args(["build", "-p", "vaelab-cli", "--bin", "vaelab", "--features", "cuda", "--profile", &opts.profile])
        .arg("--message-format=json-render-diagnostics")
        .env("PATH", path)
        .env("CUDA_ROOT", &tk)
        .env("VAELAB_CUDA_ARCH", &opts.arch)
        .env("CUDA_COMPUTE_CAP", opts.arch.replace('.', ""));
    eprintln!("$ {build:?}");
    // The JSON messages are read; progress and diagnostics stream to the terminal as usual.
    let messages = capture(build.stderr(std::process::Stdio::inherit()))?;
    let built = BuildOutputs::from_messages(&messages)?;
    check_ptx(&built.dfdx_out, &opts.arch)?;
    assemble(&built.binary, &built.dfdx_out, &opts.arch)
}

/// What the CUDA build made, from cargo's JSON messages: the binary, and dfdx's build-script output
/// folder (PTX and the `.cuh` headers its run-time kernels include). The messages name the folder of
/// this very build, where `target/` may also hold other dfdx builds (CPU, or `ci-check`'s empty PTX).
struct BuildOutputs {
    binary: PathBuf,
    dfdx_out: PathBuf,
}

impl BuildOutputs {
    fn from_messages(stdout: &str) -> Result<Self, String> {
        let (mut binary, mut dfdx_out) = (None, None);
        for line in stdout.lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let package = msg["package_id"].as_str().unwrap_or_default();
            let is_dfdx = xtask::cargo_messages::package_is(package, "dfdx");
            match msg["reason"].as_str() {
                Some("build-script-executed") if is_dfdx => dfdx_out = msg["out_dir"].as_str().map(PathBuf::from),
                Some("compiler-artifact") if msg["target"]["name"] == "vaelab" && msg["executable"].is_string() => {
                    binary = msg["executable"].as_str().map(PathBuf::from)
                }
                _ => {}
            }
        }
        let binary = binary.ok_or("cargo reported no `vaelab` executable for the CUDA build")?;
        let dfdx_out = dfdx_out.ok_or("cargo reported no dfdx build script output for the CUDA build")?;
        if !dfdx_out.join("cuda_utils.cuh").exists() {
            return Err(format!("{}: dfdx's build wrote no CUDA headers", dfdx_out.display()));
        }
        Ok(BuildOutputs { binary, dfdx_out })
    }
}

/// A file moved aside (if there is one) and moved back when this is dropped, even on an error: the
/// CPU binary while the CUDA build takes its place. What the CUDA build leaves there is removed.
struct SetAside {
    path: PathBuf,
    aside: Option<PathBuf>,
}

impl SetAside {
    fn new(path: PathBuf) -> Result<Self, String> {
        let aside = path.with_extension("cpu-set-aside");
        if !path.exists() {
            return Ok(SetAside { path, aside: None });
        }
        std::fs::rename(&path, &aside).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(SetAside { path, aside: Some(aside) })
    }
}

impl Drop for SetAside {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(aside) = &self.aside {
            if let Err(e) = std::fs::rename(aside, &self.path) {
                eprintln!("xtask: could not put {} back ({e}); `cargo build` makes it again", self.path.display());
            }
        }
    }
}

/// Every `.ptx` dfdx's build wrote is non-empty and targets `sm_<arch>` (the front end checks each
/// file too; this sees that the build used it, not an empty `ci-check` build).
fn check_ptx(out: &Path, arch: &str) -> Result<(), String> {
    let want = format!(".target sm_{}", arch.replace('.', ""));
    let mut count = 0;
    for entry in std::fs::read_dir(out).map_err(|e| format!("{}: {e}", out.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "ptx") {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if !text.lines().any(|l| l.trim() == want) {
                return Err(format!("{}: no `{want}` line: the kernels were not compiled for the device", path.display()));
            }
            count += 1;
        }
    }
    if count == 0 {
        return Err(format!("{}: no PTX files", out.display()));
    }
    eprintln!("xtask: {count} PTX files, each targeting sm_{}", arch.replace('.', ""));
    Ok(())
}

fn copy_dir(from: &Path, to: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest, keep)?;
        } else if keep(&path) {
            std::fs::copy(&path, &dest).map_err(|e| format!("{} → {}: {e}", path.display(), dest.display()))?;
        }
    }
    Ok(())
}

fn assemble(binary: &Path, dfdx_out: &Path, arch: &str) -> Result<u64, String> {
    let dir = bundle_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("stub")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tk = toolkit();
    let copy =
        |from: PathBuf, to: &str| std::fs::copy(&from, dir.join(to)).map(|_| ()).map_err(|e| format!("{}: {e}", from.display()));
    copy(binary.to_path_buf(), "vaelab")?;
    // Debug info is most of the binary; the device needs none of it.
    run(Command::new("strip").arg(dir.join("vaelab")))?;
    copy(root().join("xtask/cuda/run.sh"), "run.sh")?;
    copy(root().join("xtask/bench/torch_betavae_step.py"), "torch_betavae_step.py")?;
    copy(tk.join("lib/stub/libcuda.so.1"), "stub/libcuda.so.1")?;
    copy_dir(&root().join("specs"), &dir.join("specs"), &|p| p.extension().is_some_and(|e| e == "ron"))?;
    // The headers dfdx's run-time kernels include, at the paths the build fixed (paths.env; run.sh
    // puts them there on the device): cuda_fp16.h and what it includes, and dfdx's own .cuh files.
    copy_dir(&tk.join("include"), &dir.join("include/cuda"), &|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("cuda_fp16") || n.to_string_lossy().starts_with("cuda_bf16"))
    })?;
    copy_dir(dfdx_out, &dir.join("include/dfdx"), &|p| p.extension().is_some_and(|e| e == "cuh"))?;
    let paths = format!(
        "CUDA_INCLUDE_DIR='{}'\nDFDX_OUT_DIR='{}'\n",
        std::fs::canonicalize(tk.join("include")).map_err(|e| e.to_string())?.display(),
        dfdx_out.display()
    );
    std::fs::write(dir.join("paths.env"), paths).map_err(|e| e.to_string())?;
    let commit = Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(root()).output();
    let commit = commit.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    std::fs::write(
        dir.join("BUILD.txt"),
        format!(
            "vaelab {commit}, kernels for sm_{}, CUDA 13.0 wheels (NVRTC 13.0.88, cuBLAS 13.0.2, cuRAND 10.4.0)\n",
            arch.replace('.', "")
        ),
    )
    .map_err(|e| e.to_string())?;
    let size = dir_size(&dir);
    if size > BUNDLE_LIMIT {
        return Err(format!("the bundle is {} MiB, over the device tool's 64 MiB", size >> 20));
    }
    eprintln!("xtask: CUDA bundle in {} ({:.1} MiB)", dir.display(), size as f64 / (1 << 20) as f64);
    Ok(size)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_size(&p)
            } else {
                std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

/// `cargo xtask device-check`: builds the bundle, then either prints the device call that runs the
/// check on a GPU or (`--dry-run`) runs it here: the CPU side of the parity fixtures, the CPU bench,
/// and the no-driver refusal.
pub fn device_check(args: &[String]) -> Result<(), String> {
    let opts = BuildOptions::from_args(args)?;
    cuda_build(&opts)?;
    let dir = bundle_dir();
    if !args.iter().any(|a| a == "--dry-run") {
        println!(
            "The bundle is ready. On a machine the device tool lends, run (one call, about 5 minutes):\n\n  \
             run(command: \"bash target/cuda-bundle/run.sh check\", carry: [\"target/cuda-bundle\"], timeout_s: 540)\n\n\
             Its report comes back as report.md (with device-check.md, device-check.json, check.log and bench.log)."
        );
        return Ok(());
    }
    let libs = toolkit().join("lib");
    let out = root().join("target/cuda-dry-run");
    let _ = std::fs::remove_dir_all(&out);
    run(Command::new("bash")
        .arg(dir.join("run.sh"))
        .arg("check")
        .arg("--dry-run")
        .env("OUT", &out)
        .env("VAELAB_CUDA_LIBS", &libs))?;
    let report = std::fs::read_to_string(out.join("report.md")).map_err(|e| e.to_string())?;
    if !report.contains("Dry run: the CPU side of") {
        return Err(format!("the dry run's report lacks the parity table:\n{report}"));
    }
    // The CUDA binary on a machine without a driver. (A binary built without CUDA is refused the same
    // way: core/cli/tests/cli.rs, device_cuda_in_a_build_without_cuda_says_how_to_build_it.)
    let spec = root().join("specs/shapes/beta-vae.ron");
    let scratch = out.join("no-driver-run");
    let no_driver = Command::new("bash")
        .arg(dir.join("run.sh"))
        .args(["train", &spec.to_string_lossy(), "--device", "cuda:0", "--steps", "1", "--no-eval", "--out"])
        .arg(&scratch)
        .env("VAELAB_CUDA_LIBS", &libs)
        .output()
        .map_err(|e| e.to_string())?;
    expect_refusal(&no_driver, "no CUDA driver (libcuda.so.1) found; this machine cannot run --device cuda", "the CUDA binary")?;
    eprintln!("xtask: dry run passed; report in {}", out.join("report.md").display());
    Ok(())
}

/// A refusal: non-zero exit, `message` on stderr, no panic.
fn expect_refusal(out: &std::process::Output, message: &str, which: &str) -> Result<(), String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !stderr.contains(message) || stderr.contains("panicked") || out.status.code().is_none() {
        return Err(format!(
            "{which} with --device cuda on a machine without a driver: exit {:?}, stderr:\n{stderr}",
            out.status.code()
        ));
    }
    eprintln!("xtask: {which} refuses --device cuda here: {}", stderr.lines().last().unwrap_or(""));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The build's own dfdx output folder and binary come from cargo's messages, whatever else the
    /// stream holds (other packages' build scripts and artifacts, non-JSON lines); a stream without
    /// them, or a dfdx folder without CUDA headers (a CPU build's), is an error naming what is missing.
    #[test]
    fn build_outputs_are_read_from_cargo_messages() {
        let dir = std::env::temp_dir().join(format!("vaelab-xtask-messages-{}", std::process::id()));
        let (with_headers, without) = (dir.join("dfdx-cuda/out"), dir.join("dfdx-cpu/out"));
        std::fs::create_dir_all(&with_headers).unwrap();
        std::fs::create_dir_all(&without).unwrap();
        std::fs::write(with_headers.join("cuda_utils.cuh"), "").unwrap();
        let script = |package: &str, out: &Path| {
            serde_json::json!({"reason": "build-script-executed", "package_id": package, "out_dir": out}).to_string()
        };
        let artifact = |name: &str, executable: Option<&str>| {
            serde_json::json!({"reason": "compiler-artifact", "package_id": "path+file:///w/core/cli#vaelab-cli@0.1.0",
                "target": {"name": name}, "executable": executable})
            .to_string()
        };
        let registry = "registry+https://github.com/rust-lang/crates.io-index#dfdx@0.13.0";
        let stream = [
            script(registry, &with_headers),
            script("registry+https://github.com/rust-lang/crates.io-index#cudarc@0.9.15", &without),
            "not json".to_string(),
            artifact("vaelab", Some("/w/target/debug/vaelab")),
            artifact("vaelab_cli", None),
        ]
        .join("\n");
        let built = BuildOutputs::from_messages(&stream).unwrap();
        assert_eq!(built.dfdx_out, with_headers);
        assert_eq!(built.binary, PathBuf::from("/w/target/debug/vaelab"));

        let no_binary = script(registry, &with_headers);
        assert!(BuildOutputs::from_messages(&no_binary).err().unwrap().contains("no `vaelab` executable"));
        let no_dfdx = artifact("vaelab", Some("/w/target/debug/vaelab"));
        assert!(BuildOutputs::from_messages(&no_dfdx).err().unwrap().contains("no dfdx build script output"));
        let cpu_dfdx = [script(registry, &without), artifact("vaelab", Some("/x"))].join("\n");
        assert!(BuildOutputs::from_messages(&cpu_dfdx).err().unwrap().contains("wrote no CUDA headers"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file set aside comes back when the guard drops, and what took its place meanwhile is removed;
    /// with nothing to set aside, what appeared is removed all the same.
    #[test]
    fn a_binary_set_aside_comes_back() {
        let dir = std::env::temp_dir().join(format!("vaelab-xtask-aside-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vaelab");
        std::fs::write(&path, "cpu").unwrap();
        {
            let _aside = SetAside::new(path.clone()).unwrap();
            assert!(!path.exists());
            std::fs::write(&path, "cuda").unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "cpu");
        std::fs::remove_file(&path).unwrap();
        {
            let _aside = SetAside::new(path.clone()).unwrap();
            std::fs::write(&path, "cuda").unwrap();
        }
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
