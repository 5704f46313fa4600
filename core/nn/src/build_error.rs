//! Why a spec's layers cannot be built, located by the spec field that says so.

/// A layer list, latent or discriminator that cannot be built: `spec_path` is the field
/// (`model.decoder[3]`) that `spec::LoadedSpec::error_at` turns into file, line and column.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{spec_path}: {message}")]
pub struct BuildError {
    pub spec_path: String,
    pub message: String,
}

impl BuildError {
    pub fn new(spec_path: String, message: String) -> BuildError {
        BuildError { spec_path, message }
    }
}
