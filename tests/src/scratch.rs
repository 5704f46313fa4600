//! A directory for one test that is removed when the test ends, passed or failed.
//!
//! Tests used to leave their run directories in the temp dir; a few hundred runs filled the disk (one
//! FID comparison alone writes 160 MB). Set `VAELAB_KEEP_SCRATCH=1` to keep them for a post-mortem.

use std::ops::Deref;
use std::path::{Path, PathBuf};

pub struct Scratch(PathBuf);

impl Scratch {
    /// `<temp>/vaelab-<area>-<pid>-<name>`, emptied first (a previous run may have left it behind).
    pub fn new(area: &str, name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("vaelab-{area}-{}-{name}", std::process::id()));
        remove(&dir);
        Scratch(dir)
    }

    /// As [`Scratch::new`], with the directory created.
    pub fn created(area: &str, name: &str) -> Scratch {
        let dir = Scratch::new(area, name);
        std::fs::create_dir_all(&dir.0).unwrap();
        dir
    }
}

/// Removes the path whether a test made it a folder or a file (a test of "the run directory is a
/// file" writes one).
fn remove(path: &Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

impl Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("VAELAB_KEEP_SCRATCH").is_none() {
            remove(&self.0);
        }
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}
