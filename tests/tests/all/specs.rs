//! Spec snapshots: every spec under `specs/` resolves and builds (its resolved form and model
//! summary are snapshotted), and every class of bad spec gives a located, readable error.

use std::path::{Path, PathBuf};
use vaelab::check;

/// Paths relative to the tests crate, which is where cargo runs this binary.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn spec_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            spec_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "ron") {
            out.push(p);
        }
    }
}

/// `specs/base/` holds fragments that other specs extend, `specs/suites/` the suites of
/// `cargo xtask repro`; everything else is a complete experiment.
#[test]
fn every_spec_resolves_and_builds() {
    let root = workspace();
    let mut files = Vec::new();
    spec_files(&root.join("specs"), &mut files);
    assert!(files.len() >= 3, "specs found: {files:?}");
    let not_experiments = [root.join("specs/base"), root.join("specs/suites")];
    // The Knee OA specs read data that cannot ship; they are checked on a stand-in folder in its layout
    // (grade folders under train/, val/, test/), given as `vaelab check --data-root` would give it.
    let knee_oa = crate::training::scratch("knee-oa-layout");
    super::datasets::folders::knee_oa_layout(&knee_oa, 224);
    let knee_oa_root = check::DataRoot { path: knee_oa.to_path_buf(), source: "--data-root" };
    for file in files.iter().filter(|f| !not_experiments.iter().any(|d| f.starts_with(d))) {
        // cargo runs this binary in tests/, so `../specs/…` keeps paths in messages short and stable.
        let rel = Path::new("..").join(file.strip_prefix(&root).unwrap());
        // Specs naming plugins point at release builds; check them with the test-built libraries.
        let uses_plugins = vaelab::spec::load_spec(&rel).is_ok_and(|l| !l.experiment.plugins.is_empty());
        let plugin_spec = uses_plugins.then(|| super::plugins::with_test_plugins(&rel));
        let checked_path = plugin_spec.as_ref().map_or_else(|| rel.clone(), |dir| dir.join("spec.ron"));
        let data_root = file.starts_with(root.join("specs/knee-oa")).then_some(&knee_oa_root);
        let checked = match check::check_file_with(&checked_path, &[], data_root) {
            Ok(c) => c,
            // Specs on installed data (e.g. Fashion-MNIST from Debian) are checked where the data is.
            Err(e) if e.to_string().contains("cannot open the dataset") && std::env::var_os("VAELAB_REQUIRE_DATA").is_none() => {
                eprintln!("skipping {}: {e}", rel.display());
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        let experiment = &checked.loaded.experiment;
        let reparsed: vaelab::spec::Experiment = ron::from_str(&vaelab::spec::format_resolved(experiment)).unwrap();
        assert_eq!(&reparsed, experiment, "the resolved form of {} must parse back to the same experiment", rel.display());
        let name = file.strip_prefix(&root).unwrap().to_string_lossy().replace(['/', '.'], "_");
        insta::assert_snapshot!(name, super::plugins::redact(&check::describe(&checked), &[&knee_oa]));
    }
}

#[test]
fn bad_specs_give_located_errors() {
    let dir = Path::new("specs/bad");
    let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    let mut report = String::new();
    for name in &names {
        let path = dir.join(name);
        let errors = check::check_file(&path, &[]).err().unwrap_or_else(|| panic!("{} should be rejected", path.display()));
        for e in &errors.0 {
            assert!(e.line > 0 && e.col > 0, "{e} has no position");
            assert!(!e.message.contains("Patch"), "internal type name leaked: {e}");
        }
        report.push_str(&format!("## {}\n{errors}\n", path.display()));
    }
    insta::assert_snapshot!(report);
}

#[test]
fn extends_overrides_field_by_field() {
    let base = vaelab::spec::load_spec(Path::new("../specs/shapes/beta-vae.ron")).unwrap().experiment;
    let bench = vaelab::spec::load_spec(Path::new("../specs/bench/betavae64.ron")).unwrap().experiment;
    // Written in the bench file:
    assert_eq!(bench.train.optimizer.lr(), 1e-4);
    assert_eq!(bench.train.grad_clip, vaelab::spec::GradClip::Off);
    // Inherited through two levels (base file → beta-vae → bench):
    assert_eq!(bench.train.steps, base.train.steps);
    assert_eq!(bench.data, base.data);
    assert_eq!(bench.model, base.model);
    assert_ne!(bench.losses, base.losses);
}

#[test]
fn specs_written_in_memory_report_every_problem_at_once() {
    let text = "Experiment(name: \"x\", data: (batch: 0, size: 0), train: (steps: 0, optimizer: Sgd(lr: -1.0)))";
    let err = vaelab::spec::parse_spec_str(Path::new("mem.ron"), text).unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
    for p in ["data.size", "data.batch", "train.steps", "train.optimizer.lr", "losses"] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
}
