//! The experiment spec: RON files → a validated, fully resolved [`Experiment`].
//!
//! * [`types`]: the plain-data spec (what a researcher writes), with defaults.
//! * [`load`]: reading files, `extends` chains and field-by-field overrides.
//! * [`locate`]: mapping field paths (`model.decoder[3]`) back to `file:line:column`.
//! * [`validate`]: value checks that need no model (lr > 0, batch > 0, ...).
//!
//! Shape checks need the layer definitions and live in `vaelab_nn::infer` (run by `vaelab::check`).

mod error;
pub mod load;
pub mod locate;
mod patch;
pub mod types;
pub mod validate;

pub use error::{SpecError, SpecErrors};
pub use load::{load_spec, parse_spec_str, LoadedSpec};
pub use types::*;

/// The resolved spec as RON, every default written out (what `vaelab check` prints and a run
/// directory's `spec.ron` holds).
pub fn format_resolved(e: &Experiment) -> String {
    let config = ron::ser::PrettyConfig::default().struct_names(true).depth_limit(3);
    ron::ser::to_string_pretty(e, config).expect("specs serialize")
}

/// The image shape a spec's data have, read from the spec alone (no dataset opened).
pub fn image_shape(spec: &Experiment) -> (usize, usize, usize) {
    let c = match &spec.data.dataset {
        Dataset::Folder { channels: vaelab_datasets::Channels::Rgb, .. } => 3,
        _ => 1,
    };
    (c, spec.data.size, spec.data.size)
}
