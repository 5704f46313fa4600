//! The parts of `cargo xtask` that tests exercise: reproducibility suites ([`repro`]).

pub mod repro;
