//! Builds the workspace's Rust plugin crates (cdylibs) once per test process and finds the libraries
//! in cargo's JSON messages. A separate target directory keeps this nested cargo from waiting on the
//! outer one's lock. Shared by the `vaelab-tests` suite and the CLI tests (`core/cli/tests/cli.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const PLUGIN_PACKAGES: [&str; 3] = ["vaelab-metric-psnr", "vaelab-block-se", "vaelab-test-faulty"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("crates sit one level below the workspace root").to_path_buf()
}

/// The folder the plugin libraries are built into.
pub fn plugin_target_dir() -> PathBuf {
    workspace_root().join("target/plugin-tests")
}

/// The shared library of `package` (e.g. `vaelab-block-se`), built on first use.
pub fn plugin_library(package: &str) -> PathBuf {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root()).args(["build", "--message-format=json", "--target-dir"]).arg(plugin_target_dir());
        for p in PLUGIN_PACKAGES {
            cmd.args(["-p", p]);
        }
        let out = cmd.output().expect("cannot run cargo to build the plugins");
        assert!(out.status.success(), "building the plugins failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let mut libs = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let is_cdylib = msg["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "cdylib"));
            if msg["reason"] == "compiler-artifact" && is_cdylib {
                let name = msg["package_id"].as_str().unwrap_or_default();
                let package = PLUGIN_PACKAGES.iter().find(|p| xtask::cargo_messages::package_is(name, p));
                let file = msg["filenames"].as_array().and_then(|f| f.first()).and_then(|f| f.as_str());
                if let (Some(p), Some(f)) = (package, file) {
                    libs.insert(p.to_string(), PathBuf::from(f));
                }
            }
        }
        libs
    });
    built.get(package).unwrap_or_else(|| panic!("cargo reported no library for {package}: {built:?}")).clone()
}
