//! The `vaelab` binary as a user runs it: exit codes, messages on stderr, files on disk.
//! (Library-level behaviour is tested in the `vaelab-tests` crate; this file checks the wiring.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn vaelab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vaelab"));
    c.current_dir(workspace());
    c
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("core/cli sits two levels below the workspace root")
        .to_path_buf()
}

/// The messages `vaelab check` prints are exactly those snapshotted by the tests crate
/// (`bad_specs_give_located_errors`), which runs from `tests/` with paths `specs/bad/…`.
#[test]
fn check_prints_the_snapshotted_message_for_every_bad_spec_and_exits_2() {
    let snap =
        std::fs::read_to_string(workspace().join("tests/tests/all/snapshots/all__specs__bad_specs_give_located_errors.snap"))
            .unwrap();
    let body = snap.splitn(3, "---\n").nth(2).expect("snapshot body");
    let sections: Vec<&str> = body.split("## ").filter(|s| !s.trim().is_empty()).collect();
    assert!(sections.len() >= 10, "{} sections", sections.len());
    for section in sections {
        let (path, expected) = section.split_once('\n').unwrap();
        let out = vaelab().current_dir(workspace().join("tests")).arg("check").arg(path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(stderr.trim_end(), expected.trim_end(), "{path}");
    }
}

#[test]
fn check_prints_the_resolved_spec_and_summary() {
    let out = vaelab().args(["check", "specs/shapes/beta-vae.ron"]).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("# Resolved spec") && stdout.contains("Trainable parameters: 764,245"), "{stdout}");
}

#[test]
fn train_then_eval_writes_the_run_directory() {
    let run = Scratch::new("cli", "train-eval");
    let out =
        vaelab().args(["train", "tests/specs/tiny.ron", "--steps", "30", "--threads", "2", "--out"]).arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in [
        "spec.ron",
        "log.jsonl",
        "run.json",
        "checkpoints/latest",
        "eval/metrics.json",
        "eval/reconstructions.png",
        "eval/samples.png",
        "eval/traversal.png",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("mse") && stdout.contains("mean-image MSE baseline"), "{stdout}");
    // Training into a finished run again is refused, not overwritten.
    let again = vaelab().args(["train", "tests/specs/tiny.ron", "--out"]).arg(&run).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    // run.json names the gemm kernels the run was trained with; resuming where they differ (here:
    // pretended) says that the result will match an uninterrupted run only within tolerance.
    let info = std::fs::read_to_string(run.join("run.json")).unwrap();
    let kernels = ["\"cpu_kernels\":\"avx512\"", "\"cpu_kernels\":\"avx2\""].into_iter().find(|k| info.contains(k));
    std::fs::write(run.join("run.json"), info.replace(kernels.expect(&info), "\"cpu_kernels\":\"scalar\"")).unwrap();
    // Resuming a finished run with a larger budget continues it.
    let more = vaelab().args(["train", "--steps", "35", "--no-eval", "--threads", "2", "--resume"]).arg(&run).output().unwrap();
    let stderr = String::from_utf8_lossy(&more.stderr);
    assert!(more.status.success(), "{stderr}");
    assert!(
        stderr.contains("note: this run was trained with gemm's scalar kernels (now avx") && stderr.contains("not bit for bit"),
        "{stderr}"
    );
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    assert!(log.lines().last().unwrap().contains("\"step\":35"));
    // An evaluation never erases another: eval/ holds step 30's, so step 35's moves it aside; one
    // more metric for step 35 then merges, keeping the others. What the user reads, snapshotted
    // with digits redacted (the values follow the CPU kind's summation order).
    let mut printed = String::new();
    for metrics in ["mse,ssim", "psnr"] {
        let out = vaelab().args(["eval", "--threads", "2", "--metrics", metrics]).arg(&run).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        printed += &format!(
            "$ vaelab eval RUN --metrics {metrics}\n{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // The apply commands, wired: the run's own test split encoded, decoded, reconstructed, sampled.
    let work = Scratch::new("cli", "apply");
    let w = |name: &str| work.join(name).display().to_string();
    let commands: [Vec<String>; 4] = [
        vec!["encode".into(), "--split".into(), "test".into(), "--out".into(), w("codes.csv")],
        vec!["decode".into(), w("codes.csv"), "--out".into(), w("decoded")],
        vec!["reconstruct".into(), w("decoded"), "--out".into(), w("rec")],
        vec!["sample".into(), "--n".into(), "5".into(), "--out".into(), w("samples")],
    ];
    for args in commands {
        let out = vaelab().arg(&args[0]).arg(&run).args(&args[1..]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        printed += &format!(
            "$ vaelab {} RUN {}\n{}{}",
            args[0],
            args[1..].join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let redacted: String = printed
        .replace(&work.display().to_string(), "WORK")
        .replace(&run.display().to_string(), "RUN")
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    insta::assert_snapshot!(redacted);
    let step30: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval-30-test/metrics.json")).unwrap()).unwrap();
    assert_eq!(step30["checkpoint_step"], 30);
    assert!(step30["metrics"].as_object().unwrap().len() >= 4, "step 30's full evaluation was not kept");
    let step35: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval/metrics.json")).unwrap()).unwrap();
    assert_eq!(step35["metrics"].as_object().unwrap().keys().collect::<Vec<_>>(), ["mse", "psnr", "ssim"]);
    // Eval on a directory that is not a run is a clear error.
    let bad = vaelab().args(["eval", "specs"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a vaelab run directory"));
}

/// A real SIGINT during training: the step finishes, a checkpoint is written, the process exits 130
/// and says how to resume; resuming finishes the run.
#[test]
fn ctrl_c_checkpoints_and_resume_finishes_the_run() {
    let run = Scratch::new("cli", "sigint");
    let child = vaelab()
        .args(["train", "tests/specs/tiny.ron", "--steps", "100000", "--threads", "1", "--no-eval", "--out"])
        .arg(&run)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training is under way (the tiny spec logs every step).
    let started = std::time::Instant::now();
    while std::fs::read_to_string(run.join("log.jsonl")).map(|l| l.lines().count()).unwrap_or(0) < 3 {
        assert!(started.elapsed().as_secs() < 60, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("checkpoint") && stderr.contains("--resume"), "{stderr}");
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let step: usize = latest.trim().trim_start_matches("step-").trim_end_matches(".safetensors").parse().unwrap();
    assert!((3..100000).contains(&step), "{latest}");
    let more =
        vaelab().args(["train", "--no-eval", "--steps"]).arg((step + 2).to_string()).arg("--resume").arg(&run).output().unwrap();
    assert!(more.status.success(), "{}", String::from_utf8_lossy(&more.stderr));
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    assert!(log.lines().last().unwrap().contains(&format!("\"step\":{}", step + 2)));
}

use vaelab_tests::plugin_build;
use vaelab_tests::scratch::Scratch;

/// A spec that extends `base` (relative to the workspace) with `extra` RON fields, in a fresh folder.
fn extending_spec(name: &str, base: &str, extra: &str) -> Scratch {
    let dir = Scratch::created("cli", name);
    let base = workspace().join(base);
    std::fs::write(dir.join("spec.ron"), format!("Experiment(extends: {:?}, {extra})", base.display().to_string())).unwrap();
    dir
}

/// `specs/plugins/se-vae.ron` (a plugin block in the encoder, a plugin metric in eval) trains and
/// evaluates through the binary. Its own plugin list names release builds; here the test-built
/// libraries come through `--plugin` and `VAELAB_PLUGIN_PATH`, and are recorded in the run.
#[test]
fn a_spec_with_a_plugin_block_and_metric_trains_and_evaluates() {
    let se = plugin_build::plugin_library("vaelab-block-se");
    let psnr = plugin_build::plugin_library("vaelab-metric-psnr");
    let dir = extending_spec(
        "se-vae",
        "specs/plugins/se-vae.ron",
        "plugins: [], data: (train_size: 2000, test_size: 64, batch: 16), eval: (test_images: 64)",
    );
    let run = dir.join("run");
    let out = vaelab()
        .args(["train", "--steps", "20", "--threads", "2", "--plugin"])
        .arg(&se)
        .arg(dir.join("spec.ron"))
        .arg("--out")
        .arg(&run)
        .env("VAELAB_PLUGIN_PATH", &psnr)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval/metrics.json")).unwrap()).unwrap();
    let (plugin, builtin) =
        (metrics["metrics"]["psnr_rs"]["value"].as_f64().unwrap(), metrics["metrics"]["psnr"]["value"].as_f64().unwrap());
    assert!((plugin - builtin).abs() < 1e-9, "{plugin} vs {builtin}");
    // The run records where its plugins came from, so a later eval (without flags or variables) works.
    let recorded = std::fs::read_to_string(run.join("spec.ron")).unwrap();
    assert!(recorded.contains(&se.display().to_string()) && recorded.contains(&psnr.display().to_string()), "{recorded}");
    let again = vaelab().arg("eval").arg(&run).env_remove("VAELAB_PLUGIN_PATH").output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    // Another metric list at eval time, from the command line.
    let only = vaelab().args(["eval", "--metrics", "mse,psnr_rs"]).arg(&run).env_remove("VAELAB_PLUGIN_PATH").output().unwrap();
    assert!(only.status.success(), "{}", String::from_utf8_lossy(&only.stderr));
    // Merged into the full evaluation of the same checkpoint, which keeps its other metrics.
    assert!(String::from_utf8_lossy(&only.stderr).contains("note: kept 7 metric(s) of the earlier evaluation"));
    let listed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval/metrics.json")).unwrap()).unwrap();
    let keys: Vec<&String> = listed["metrics"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["domain_fd", "elbo", "kl", "ms_ssim", "mse", "psnr", "psnr_rs", "rec_nll", "ssim"]);
    let checkpoint =
        safetensors_names(&run.join("checkpoints").join(std::fs::read_to_string(run.join("checkpoints/latest")).unwrap().trim()));
    // Plugin parameters are checkpointed (with their Adam moments) like any other.
    // Plugin parameters are checkpointed, with their Adam moments, like any other.
    for key in ["encoder.4.fc1_weight", "optim.first.encoder.4.fc1_weight"] {
        assert!(checkpoint.iter().any(|n| n == key), "{key} not in {checkpoint:?}");
    }
}

fn safetensors_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    header.as_object().unwrap().keys().cloned().collect()
}

/// A plugin block that fails mid-training stops the run with the plugin's message, before that
/// step changes any parameter; `vaelab check` names unknown blocks and missing plugin files in place.
#[test]
fn plugin_failures_stop_cleanly_and_bad_plugin_entries_are_located() {
    let faulty = plugin_build::plugin_library("vaelab-test-faulty");
    let layers = r#"model: (encoder: [Conv(out: 8, k: 4, s: 2, p: 1), Plugin("wrong_output"), Relu, Conv(out: 16, k: 4, s: 2, p: 1), Relu, Flatten, Dense(out: 64), Relu])"#;
    let dir =
        extending_spec("faulty", "tests/specs/tiny.ron", &format!("plugins: [{:?}], {layers}", faulty.display().to_string()));
    // The pre-flight check before training finds it...
    let out =
        vaelab().args(["train", "--threads", "1"]).arg(dir.join("spec.ron")).arg("--out").arg(dir.join("run")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("plugin block pre-flight check failed in forward of block `wrong_output` (")
            && stderr.contains("before any training step: ")
            && stderr.contains("forward's output has 2048 values"),
        "{stderr}"
    );
    // ...and without it (--in-process), training stops at step 1 before any parameter changes.
    let out = vaelab()
        .args(["train", "--in-process", "--threads", "1"])
        .arg(dir.join("spec.ron"))
        .arg("--out")
        .arg(dir.join("run"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("step 1: block `wrong_output`") && stderr.contains("libvaelab_test_faulty"), "{stderr}");
    assert!(stderr.contains("before this step changed any parameter") && !stderr.contains("panicked"), "{stderr}");

    // A block that crashes (a segfault in forward) is caught by the pre-flight check in a child
    // process, named with its library, before any training step; nothing is trained.
    let crashing = layers.replace("wrong_output", "crashing_block");
    let dir =
        extending_spec("crashing", "tests/specs/tiny.ron", &format!("plugins: [{:?}], {crashing}", faulty.display().to_string()));
    let out =
        vaelab().args(["train", "--threads", "1"]).arg(dir.join("spec.ron")).arg("--out").arg(dir.join("run")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "plugin block crashed in the pre-flight check (signal 11 (segmentation fault)) in forward of block `crashing_block"
        ) && stderr.contains("libvaelab_test_faulty")
            && stderr.contains("before any training step")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(!dir.join("run/checkpoints").exists(), "training started");

    let dir = extending_spec("missing", "tests/specs/tiny.ron", r#"plugins: ["nowhere/libnothing.so"]"#);
    let out = vaelab().arg("check").arg(dir.join("spec.ron")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("spec.ron:1:") && stderr.contains("plugins[0]: plugin") && stderr.contains("no such file"),
        "{stderr}"
    );

    let dir = extending_spec("unknown-block", "tests/specs/tiny.ron", r#"model: (decoder: [Plugin("film", (channels: 2))])"#);
    let out = vaelab().arg("check").arg(dir.join("spec.ron")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("model.decoder[0]: unknown block `film`: no plugin is loaded"), "{stderr}");
}

/// Without the `cuda` feature, `--device cuda` is refused with how to get CUDA, before anything is
/// written; no panic. (The CUDA binary's own refusal on a machine without a driver is checked by
/// `cargo xtask device-check --dry-run`, which builds that binary.)
#[cfg(not(feature = "cuda"))]
#[test]
fn device_cuda_in_a_build_without_cuda_says_how_to_build_it() {
    let dir = std::env::temp_dir().join(format!("vaelab-no-cuda-{}", std::process::id()));
    for args in
        [vec!["train", "specs/shapes/beta-vae.ron", "--device", "cuda:0", "--steps", "1", "--out"], vec!["device-check", "--out"]]
    {
        let out = vaelab().args(&args).arg(&dir).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains("this vaelab was built without CUDA: build with `--features cuda`"), "{args:?}: {stderr}");
    }
    assert!(!dir.join("checkpoints").exists(), "a refused run wrote a checkpoint");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `vaelab device-check --dry-run` computes the CPU side of every comparison (layers, objectives,
/// trace) and writes the report.
#[test]
fn device_check_dry_run_reports_the_cpu_side_of_every_comparison() {
    let dir = std::env::temp_dir().join(format!("vaelab-device-check-{}", std::process::id()));
    let out = vaelab()
        .args(["device-check", "--dry-run", "--objective-steps", "1", "--trace-steps", "2", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = std::fs::read_to_string(dir.join("device-check.md")).unwrap();
    assert!(md.starts_with("Dry run: the CPU side of"), "{md}");
    for row in [
        "| layers | ConvT k4 s2 p1: d input |",
        "| objectives | introvae.ron (1 steps): loss |",
        "| trace | beta-vae.ron (2 steps): loss |",
    ] {
        assert!(md.contains(row), "no row `{row}` in\n{md}");
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("device-check.json")).unwrap()).unwrap();
    let rows = json.as_array().unwrap();
    assert!(rows.iter().all(|r| r["max_rel"].is_null() && r["cpu_abs_sum"].as_f64().unwrap().is_finite()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `train --resume` without `--threads` continues with the run's own thread count (only that count
/// continues bit for bit); overriding it is allowed and said.
#[test]
fn resume_keeps_the_runs_thread_count_unless_told() {
    let run = Scratch::new("cli", "resume-threads");
    let out = vaelab()
        .args(["train", "tests/specs/tiny.ron", "--steps", "4", "--threads", "1", "--no-eval", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let resumed = vaelab().args(["train", "--steps", "6", "--no-eval", "--resume"]).arg(&run).output().unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.contains("(6 steps, 1 threads)") && !stderr.contains("note:"), "{stderr}");
    let overridden =
        vaelab().args(["train", "--steps", "8", "--no-eval", "--threads", "2", "--resume"]).arg(&run).output().unwrap();
    let stderr = String::from_utf8_lossy(&overridden.stderr);
    assert!(overridden.status.success(), "{stderr}");
    assert!(stderr.contains("note: this run was trained with 1 thread(s) (now 2)"), "{stderr}");
}

/// A plugin named relative to its spec (as documented) is recorded in the run as an absolute path, so
/// `vaelab eval RUN` and `train --resume` find it from any working directory.
#[test]
fn a_relative_plugin_path_is_recorded_absolute() {
    let psnr = plugin_build::plugin_library("vaelab-metric-psnr");
    let dir = extending_spec(
        "relative-plugin",
        "tests/specs/tiny.ron",
        "plugins: [\"plugins/libpsnr.so\"], eval: (metrics: [\"mse\", \"psnr_rs\"])",
    );
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::copy(&psnr, dir.join("plugins/libpsnr.so")).unwrap();
    // Trained from the spec's own folder, with a relative spec path.
    let out = vaelab()
        .current_dir(&*dir)
        .args(["train", "spec.ron", "--steps", "3", "--threads", "1", "--no-eval", "--out", "run"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recorded = std::fs::read_to_string(dir.join("run/spec.ron")).unwrap();
    let absolute = dir.join("plugins/libpsnr.so").canonicalize().unwrap();
    assert!(recorded.contains(&format!("{:?}", absolute.display().to_string())), "{recorded}");
    // Evaluated and resumed from elsewhere (the workspace root).
    let eval = vaelab().arg("eval").arg(dir.join("run")).output().unwrap();
    assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
    let resumed = vaelab().args(["train", "--steps", "4", "--no-eval", "--resume"]).arg(dir.join("run")).output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
}

/// `vaelab metrics` with a plugin metric that fails: the failure is reported (stderr and the JSON's
/// `failed`), the other metrics are still printed, and the exit status is 1.
#[test]
fn metrics_reports_a_failing_plugin_metric_and_keeps_the_others() {
    let faulty = plugin_build::plugin_library("vaelab-test-faulty");
    let dir = Scratch::created("cli", "metrics-failing");
    for (set, level) in [("real", 40u8), ("fake", 60u8)] {
        std::fs::create_dir_all(dir.join(set)).unwrap();
        for i in 0..3u8 {
            image::GrayImage::from_fn(8, 8, |x, y| image::Luma([level + i + (x * y) as u8]))
                .save(dir.join(set).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let out = vaelab()
        .args(["metrics", "--metrics", "mse,always_fails,psnr", "--json", "--plugin"])
        .arg(&faulty)
        .arg(dir.join("real"))
        .arg(dir.join("fake"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("metric `always_fails` failed") && stderr.contains("licence server unreachable"), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(json["metrics"]["mse"]["value"].as_f64().unwrap() > 0.0 && json["metrics"]["psnr"]["value"].is_number(), "{json}");
    assert!(json["failed"]["always_fails"].as_str().unwrap().contains("licence server unreachable"), "{json}");
}

/// `vaelab plugins list` reports names that clash between libraries (as a run would refuse them),
/// naming both sources, and exits 1; each library is still described.
#[test]
fn plugins_list_reports_clashing_names() {
    let psnr = plugin_build::plugin_library("vaelab-metric-psnr");
    let dir = Scratch::created("cli", "plugins-clash");
    let copy = dir.join(psnr.file_name().unwrap());
    std::fs::copy(&psnr, &copy).unwrap();
    let out = vaelab().args(["plugins", "list"]).arg(&psnr).arg(&copy).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("metric `psnr_rs` is exported by two plugins")
            && stderr.contains(&psnr.display().to_string())
            && stderr.contains(&copy.display().to_string()),
        "{stderr}"
    );
    assert_eq!(stdout.matches("psnr_rs").count(), 2, "{stdout}");
    // One library alone lists cleanly.
    let alone = vaelab().args(["plugins", "list"]).arg(&psnr).output().unwrap();
    assert!(alone.status.success(), "{}", String::from_utf8_lossy(&alone.stderr));
}

/// Plugin metrics run in a child process: one that segfaults (on its second batch) and one that
/// aborts are reported by name, signal and batch, every other metric is written, the exit status is
/// 1 and nothing panics; in `vaelab metrics` and in `vaelab eval`.
#[test]
fn crashing_plugin_metrics_are_contained_and_reported() {
    let faulty = plugin_build::plugin_library("vaelab-test-faulty");
    let dir = Scratch::created("cli", "metrics-crash");
    for (set, level) in [("real", 40u8), ("fake", 60u8)] {
        std::fs::create_dir_all(dir.join(set)).unwrap();
        for i in 0..70u8 {
            image::GrayImage::from_fn(8, 8, |x, y| image::Luma([level + i + (x * y) as u8]))
                .save(dir.join(set).join(format!("{i:02}.png")))
                .unwrap();
        }
    }
    let out = vaelab()
        .args(["metrics", "--metrics", "mse,segfaults,aborts,psnr", "--json", "--plugin"])
        .arg(&faulty)
        .arg(dir.join("real"))
        .arg(dir.join("fake"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lib = faulty.canonicalize().unwrap().display().to_string();
    let segv =
        format!("metric `segfaults` failed: crashed: signal 11 (segmentation fault) while scoring batch 2 of 2 (plugin {lib})");
    let abrt = format!("metric `aborts` failed: crashed: signal 6 (aborted) while scoring batch 1 of 2 (plugin {lib})");
    assert!(stderr.contains(&segv) && stderr.contains(&abrt), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(json["metrics"]["mse"]["value"].is_number() && json["metrics"]["psnr"]["value"].is_number(), "{json}");
    assert_eq!(json["failed"].as_object().unwrap().len(), 2, "{json}");

    // The same in eval, after training: metrics.json keeps MSE and lists both crashes.
    let run = dir.join("run");
    let trained =
        vaelab().args(["train", "tests/specs/tiny.ron", "--steps", "2", "--no-eval", "--out"]).arg(&run).output().unwrap();
    assert!(trained.status.success(), "{}", String::from_utf8_lossy(&trained.stderr));
    let eval = vaelab().args(["eval", "--metrics", "mse,segfaults,aborts", "--plugin"]).arg(&faulty).arg(&run).output().unwrap();
    let stderr = String::from_utf8_lossy(&eval.stderr);
    assert_eq!(eval.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval/metrics.json")).unwrap()).unwrap();
    assert!(metrics["metrics"]["mse"]["value"].is_number(), "{metrics}");
    assert!(metrics["failed"]["segfaults"]
        .as_str()
        .unwrap()
        .contains("signal 11 (segmentation fault) while scoring batch 2 of 4"));
    assert!(metrics["failed"]["aborts"].as_str().unwrap().contains("signal 6 (aborted) while scoring batch 1 of 4"));
    // In process on request: the same values for a metric that does not crash.
    let direct = vaelab()
        .args(["metrics", "--in-process", "--metrics", "always_fails,psnr", "--json", "--plugin"])
        .arg(&faulty)
        .arg(dir.join("real"))
        .arg(dir.join("fake"))
        .output()
        .unwrap();
    let direct_json: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(&direct.stdout)).unwrap();
    assert_eq!(direct_json["metrics"]["psnr"], json["metrics"]["psnr"]);
    assert!(direct_json["failed"]["always_fails"].as_str().unwrap().contains("licence server unreachable"));
}

/// `run.json` records each plugin library's size and CRC-32. A library changed since training is
/// used with a note; a missing one stops `eval` (and `--resume`, and the apply commands) with a
/// message saying how to replace it, and `--plugin` replaces it.
#[test]
fn missing_or_changed_plugins_are_named_and_replaceable() {
    let psnr = plugin_build::plugin_library("vaelab-metric-psnr");
    let dir = Scratch::created("cli", "plugin-fingerprint");
    let copy = dir.join(psnr.file_name().unwrap());
    std::fs::copy(&psnr, &copy).unwrap();
    let run = dir.join("run");
    let out = vaelab()
        .args(["train", "tests/specs/tiny.ron", "--steps", "2", "--no-eval", "--plugin"])
        .arg(&copy)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    let recorded = &info["plugins"][0];
    assert_eq!(recorded["size"].as_u64().unwrap(), std::fs::metadata(&copy).unwrap().len());
    assert!(recorded["crc32"].is_u64(), "{info}");
    let eval = |extra: &[&Path]| {
        let mut cmd = vaelab();
        cmd.args(["eval", "--metrics", "mse,psnr_rs"]).arg(&run);
        for p in extra {
            cmd.arg("--plugin").arg(p);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // Changed (a rebuild, here: bytes appended): used, with a note.
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes.extend_from_slice(b"rebuilt");
    std::fs::write(&copy, &bytes).unwrap();
    let (code, stderr) = eval(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("has changed since this run was trained"), "{stderr}");
    // Missing: named, with the way out; then replaced by --plugin.
    std::fs::remove_file(&copy).unwrap();
    let (code, stderr) = eval(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("plugin {} that this run was trained with is missing; pass --plugin PATH", copy.display())),
        "{stderr}"
    );
    let (code, stderr) = eval(&[&psnr]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&format!("is missing; using {} instead", psnr.display())), "{stderr}");
    let resumed =
        vaelab().args(["train", "--steps", "3", "--no-eval", "--plugin"]).arg(&psnr).arg("--resume").arg(&run).output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let sampled =
        vaelab().args(["sample", "--n", "2", "--plugin"]).arg(&psnr).arg("--out").arg(dir.join("s")).arg(&run).output().unwrap();
    assert!(sampled.status.success(), "{}", String::from_utf8_lossy(&sampled.stderr));
}

/// Writes `root/{train,test}/{0,1}/0.png`: 32×32 grey images in the Knee OA layout.
fn two_grade_folder(root: &Path) {
    for split in ["train", "test"] {
        for grade in 0..2u8 {
            let dir = root.join(format!("{split}/{grade}"));
            std::fs::create_dir_all(&dir).unwrap();
            image::GrayImage::from_pixel(32, 32, image::Luma([60 + 100 * grade])).save(dir.join("0.png")).unwrap();
        }
    }
}

/// A spec whose data cannot ship (`specs/knee-oa/`) is checked and trained on a folder given by
/// `--data-root` or `VAELAB_DATA_ROOT`; the run records the folder, absolute. The flag on a generated
/// dataset, or on `--resume`, is an error; the variable is ignored there.
#[test]
fn data_root_replaces_the_specs_folder_and_is_recorded() {
    let dir = extending_spec(
        "data-root",
        "tests/specs/tiny.ron",
        "data: (dataset: Folder(root: \"not-shipped\"), size: 32, train_size: 4, test_size: 2, batch: 2)",
    );
    two_grade_folder(&dir.join("elsewhere"));
    let missing = vaelab().current_dir(&*dir).args(["check", "spec.ron"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not-shipped: no such folder"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let checked = vaelab().current_dir(&*dir).args(["check", "spec.ron", "--data-root", "elsewhere"]).output().unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    let trained = vaelab()
        .current_dir(&*dir)
        .env("VAELAB_DATA_ROOT", "elsewhere")
        .args(["train", "spec.ron", "--steps", "2", "--threads", "1", "--no-eval", "--out", "run"])
        .output()
        .unwrap();
    assert!(trained.status.success(), "{}", String::from_utf8_lossy(&trained.stderr));
    let recorded = std::fs::read_to_string(dir.join("run/spec.ron")).unwrap();
    let absolute = dir.join("elsewhere").display().to_string();
    assert!(recorded.contains(&format!("root: {absolute:?}")), "{recorded}");
    let resumed = vaelab()
        .args(["train", "--steps", "3", "--no-eval", "--data-root", "x", "--resume"])
        .arg(dir.join("run"))
        .output()
        .unwrap();
    assert_eq!(resumed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("a resumed run reads the data folder it recorded when it started"));
    let generated = vaelab().args(["check", "tests/specs/tiny.ron", "--data-root"]).arg(dir.join("elsewhere")).output().unwrap();
    assert_eq!(generated.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&generated.stderr).contains("data.dataset: --data-root given, but this dataset is generated"));
    let ignored =
        vaelab().env("VAELAB_DATA_ROOT", dir.join("elsewhere")).args(["check", "tests/specs/tiny.ron"]).output().unwrap();
    assert!(ignored.status.success(), "{}", String::from_utf8_lossy(&ignored.stderr));
}
