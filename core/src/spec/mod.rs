//! The experiment spec: RON files → a validated, fully resolved [`Experiment`].
//!
//! * [`types`]: the plain-data spec (what a researcher writes), with defaults.
//! * [`load`]: reading files, `extends` chains and field-by-field overrides.
//! * [`locate`]: mapping field paths (`model.decoder[3]`) back to `file:line:column`.
//! * [`validate`]: value checks that need no model (lr > 0, batch > 0, ...).
//!
//! Shape checks need the layer definitions and live in `crate::nn::shape`.

mod error;
pub mod load;
pub mod locate;
mod patch;
pub mod types;
pub mod validate;

pub use error::{SpecError, SpecErrors};
pub use load::{load_spec, parse_spec_str, LoadedSpec};
pub use types::*;
