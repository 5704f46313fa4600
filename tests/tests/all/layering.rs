//! The crate graph of `docs/architecture.md`, enforced: `cargo metadata` gives the edges, and a forbidden
//! one fails here with the rule it breaks. The source checks below cover what manifests cannot say
//! (which crate spells a run directory's file names; which crates touch the file system).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Every package's normal (not dev-, not build-) dependencies by name, from `cargo metadata`.
fn dependency_graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(workspace())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let name_of: BTreeMap<&str, &str> =
        meta["packages"].as_array().unwrap().iter().map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap())).collect();
    let mut graph = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let normal = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null() && k["target"].is_null()));
        let deps = normal.map(|d| name_of[d["pkg"].as_str().unwrap()].to_string()).collect();
        graph.insert(name_of[node["id"].as_str().unwrap()].to_string(), deps);
    }
    graph
}

/// Everything `krate` depends on, directly or through others.
fn closure(graph: &BTreeMap<String, BTreeSet<String>>, krate: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![krate.to_string()];
    while let Some(k) = todo.pop() {
        for d in graph.get(&k).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

/// The crates of the table in `docs/architecture.md` and the vaelab crates each may name directly.
const ALLOWED: [(&str, &[&str]); 13] = [
    ("vaelab-plugin-abi", &[]),
    ("vaelab-datasets", &[]),
    ("vaelab-spec", &["vaelab-datasets"]),
    ("vaelab-nn", &["vaelab-spec", "vaelab-datasets"]),
    ("vaelab-models", &["vaelab-nn", "vaelab-spec", "vaelab-datasets"]),
    ("vaelab-metrics", &["vaelab-nn", "vaelab-datasets"]),
    ("vaelab-plugin-host", &["vaelab-plugin-abi", "vaelab-nn", "vaelab-metrics", "vaelab-spec", "vaelab-datasets"]),
    ("vaelab-runs", &["vaelab-models", "vaelab-plugin-host", "vaelab-nn", "vaelab-spec", "vaelab-datasets"]),
    (
        "vaelab-train",
        &["vaelab-runs", "vaelab-models", "vaelab-metrics", "vaelab-plugin-host", "vaelab-nn", "vaelab-spec", "vaelab-datasets"],
    ),
    (
        "vaelab-eval",
        &["vaelab-runs", "vaelab-metrics", "vaelab-models", "vaelab-plugin-host", "vaelab-nn", "vaelab-spec", "vaelab-datasets"],
    ),
    ("vaelab-analysis", &["vaelab-runs", "vaelab-eval", "vaelab-models", "vaelab-nn", "vaelab-datasets"]),
    ("vaelab-cli", &["vaelab"]),
    ("xtask", &["vaelab"]),
];

/// (crate, what it must never reach, directly or through others, and why).
const NEVER: [(&str, &[&str], &str); 10] = [
    ("vaelab-plugin-abi", &["vaelab-spec", "vaelab-nn", "dfdx", "serde"], "the plugin ABI depends on nothing"),
    ("vaelab-spec", &["dfdx", "gemm", "vaelab-nn"], "the spec is plain data: nothing with tensors"),
    ("vaelab-nn", &["vaelab-models", "vaelab-runs", "libloading"], "nn knows no models, runs or libraries"),
    (
        "vaelab-models",
        &["vaelab-runs", "vaelab-train", "vaelab-eval", "libloading"],
        "models know no runs, training or evaluation",
    ),
    ("vaelab-metrics", &["vaelab-models", "vaelab-runs"], "metrics see images and feature rows only"),
    ("vaelab-plugin-host", &["vaelab-models", "vaelab-runs"], "the plugin host sits below the models"),
    ("vaelab-runs", &["vaelab-train", "vaelab-eval"], "the run directory knows nothing of who writes it"),
    ("vaelab-train", &["vaelab-eval", "vaelab-analysis"], "train and eval never depend on each other"),
    ("vaelab-eval", &["vaelab-train"], "train and eval never depend on each other"),
    ("vaelab-analysis", &["vaelab-train"], "analysis reads finished runs"),
];

#[test]
fn the_crate_graph_has_only_the_allowed_edges() {
    let graph = dependency_graph();
    let ours = |d: &String| d.starts_with("vaelab") || d == "xtask";
    let mut problems = Vec::new();
    for (krate, allowed) in ALLOWED {
        let deps = graph.get(krate).unwrap_or_else(|| panic!("{krate} is not in the workspace"));
        for d in deps.iter().filter(|d| ours(d)) {
            if !allowed.contains(&d.as_str()) {
                problems.push(format!("{krate} → {d} is not in the crate table"));
            }
        }
    }
    for (krate, never, why) in NEVER {
        let reach = closure(&graph, krate);
        for n in never {
            if reach.contains(*n) {
                problems.push(format!("{krate} reaches {n}: {why}"));
            }
        }
    }
    // Every layer crate is in the table, so a new crate needs a row (and a thought about its place).
    for krate in graph.keys().filter(|k| k.starts_with("vaelab-") && !k.starts_with("vaelab-metric-")) {
        let exempt = ["vaelab-tests", "vaelab-block-se", "vaelab-test-faulty"];
        if !exempt.contains(&krate.as_str()) && !ALLOWED.iter().any(|(k, _)| k == krate) {
            problems.push(format!("{krate} has no row in the crate table"));
        }
    }
    assert!(problems.is_empty(), "forbidden dependencies:\n{}", problems.join("\n"));
}

/// Rust files under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Code lines (comments dropped) of every library and binary source file of the named folders.
fn code_lines(dirs: &[&str]) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    for dir in dirs {
        for file in rust_files(&workspace().join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if !code.trim().is_empty() {
                    out.push((file.strip_prefix(workspace()).unwrap().display().to_string(), i + 1, code.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn only_the_runs_crate_spells_run_directory_file_names() {
    let names = [
        "spec.ron",
        "run.json",
        "log.jsonl",
        "prior.safetensors",
        "metrics.json",
        "report.html",
        "reconstructions.png",
        "samples.png",
        "traversal.png",
        "loss-curves.png",
        "repro.json",
        "repro-partial.json",
        "\"checkpoints",
        "checkpoints/",
    ];
    let others = [
        "core/src",
        "core/spec/src",
        "core/nn/src",
        "core/models/src",
        "core/metrics/src",
        "core/plugin-host/src",
        "core/train/src",
        "core/eval/src",
        "core/analysis/src",
        "core/cli/src",
        "xtask/src",
    ];
    let hits: Vec<String> = code_lines(&others)
        .into_iter()
        .filter(|(_, _, code)| names.iter().any(|n| code.contains(n)))
        .map(|(file, line, code)| format!("{file}:{line}: {}", code.trim()))
        .collect();
    assert!(hits.is_empty(), "run-directory file names outside vaelab-runs (use vaelab_runs::paths):\n{}", hits.join("\n"));
}

#[test]
fn nn_and_models_do_no_file_io() {
    let hits: Vec<String> = code_lines(&["core/nn/src", "core/models/src"])
        .into_iter()
        .filter(|(_, _, code)| ["std::fs", "File::", "fs::read", "fs::write"].iter().any(|n| code.contains(n)))
        .map(|(file, line, code)| format!("{file}:{line}: {}", code.trim()))
        .collect();
    assert!(hits.is_empty(), "file I/O in a layer that must have none:\n{}", hits.join("\n"));
}
