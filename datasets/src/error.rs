use std::path::PathBuf;

/// Why a dataset could not be opened or read. Every variant names the file or folder.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid {format} file: {message}")]
    Format { path: PathBuf, format: &'static str, message: String },
    #[error("{path}: {message}")]
    Mismatch { path: PathBuf, message: String },
}

impl DataError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
        let path = path.into();
        move |source| DataError::Io { path, source }
    }
}
