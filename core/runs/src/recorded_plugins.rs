//! The plugin libraries a run was trained with, as `run.json` records them (path, size, CRC-32),
//! and what a later `eval`, `--resume` or apply command does when one is missing or has changed:
//! a missing library is an error that says how to replace it (`--plugin PATH`); a changed one is
//! used with a note, since a rebuild from the same source changes the bytes too.

use crate::RunError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use vaelab_plugin_host::PluginSet;

/// One library as recorded when the run started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub path: PathBuf,
    pub size: u64,
    /// CRC-32 (IEEE) of the file's bytes: enough to notice a different build, not a security check.
    pub crc32: u32,
}

impl Fingerprint {
    /// The fingerprint of the file at `path`, if it can be read.
    pub fn of(path: &Path) -> Option<Fingerprint> {
        let bytes = std::fs::read(path).ok()?;
        Some(Fingerprint { path: path.to_path_buf(), size: bytes.len() as u64, crc32: crc32fast::hash(&bytes) })
    }
}

/// Fingerprints of every library of a loaded set, for `run.json`.
pub fn fingerprints(set: &PluginSet) -> Vec<Fingerprint> {
    set.libraries.iter().filter_map(|l| Fingerprint::of(&l.path)).collect()
}

/// The run's recorded fingerprints (none for runs from before they were recorded).
pub fn read(run_dir: &Path) -> Vec<Fingerprint> {
    let Ok(text) = std::fs::read_to_string(super::paths::run_json(run_dir)) else { return vec![] };
    let Ok(info) = serde_json::from_str::<serde_json::Value>(&text) else { return vec![] };
    serde_json::from_value(info["plugins"].clone()).unwrap_or_default()
}

/// Makes a run's plugin list usable: `spec_plugins` (the run's recorded entries) plus `extra`
/// (`--plugin`). A recorded entry that no longer exists is dropped when `extra` gives replacements,
/// else it is an error naming it; a library whose bytes changed since training gets a note. Returns
/// the notes for the user.
pub fn reconcile(run_dir: &Path, spec_plugins: &mut Vec<PathBuf>, extra: &[PathBuf]) -> Result<Vec<String>, RunError> {
    let mut notes = Vec::new();
    let mut kept = Vec::new();
    for entry in spec_plugins.drain(..) {
        if entry.exists() || vaelab_plugin_host::expand_entry(&entry).is_ok_and(|f| f.iter().all(|p| p.exists()) && !f.is_empty())
        {
            kept.push(entry);
            continue;
        }
        if extra.is_empty() {
            return Err(RunError::Plugins(format!(
                "plugin {} that this run was trained with is missing; pass --plugin PATH with a library built from the \
                 same source (its metrics and blocks must keep their names)",
                entry.display()
            )));
        }
        let with: Vec<String> = extra.iter().map(|p| p.display().to_string()).collect();
        notes.push(format!(
            "plugin {} that this run was trained with is missing; using {} instead",
            entry.display(),
            with.join(", ")
        ));
    }
    for recorded in read(run_dir) {
        if let Some(now) = Fingerprint::of(&recorded.path) {
            if now != recorded {
                notes.push(format!(
                    "plugin {} has changed since this run was trained ({} bytes, CRC-32 {:08x}; then {} bytes, {:08x}); \
                     results may differ from the run's own",
                    recorded.path.display(),
                    now.size,
                    now.crc32,
                    recorded.size,
                    recorded.crc32
                ));
            }
        }
    }
    kept.extend(extra.iter().cloned());
    *spec_plugins = kept;
    Ok(notes)
}
