//! The parts of `cargo xtask` that tests exercise: reproducibility suites ([`repro`]), and reading
//! cargo's JSON messages ([`cargo_messages`]; the plugin builds of the tests read them too).

pub mod cargo_messages;
pub mod repro;
