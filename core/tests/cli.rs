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
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn check_rejects_every_bad_spec_with_exit_code_2_and_no_panic() {
    let dir = workspace().join("tests/specs/bad");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert!(names.len() >= 9);
    for name in names {
        let rel = Path::new("tests/specs/bad").join(&name);
        let out = vaelab().arg("check").arg(&rel).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", rel.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.starts_with("invalid spec ("), "{stderr}");
        // The first error names a file with line and column.
        assert!(stderr.contains(".ron:"), "{stderr}");
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
    let run = std::env::temp_dir().join(format!("vaelab-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
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
    // Resuming a finished run with a larger budget continues it.
    let more = vaelab().args(["train", "--steps", "35", "--no-eval", "--resume"]).arg(&run).output().unwrap();
    assert!(more.status.success(), "{}", String::from_utf8_lossy(&more.stderr));
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    assert!(log.lines().last().unwrap().contains("\"step\":35"));
    // Eval on a directory that is not a run is a clear error.
    let bad = vaelab().args(["eval", "specs"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a vaelab run directory"));
}
