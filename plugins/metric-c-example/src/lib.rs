//! The C example plugin (`src/metric_c_example.c`) as built by `build.rs`.

/// Path of the shared library that `build.rs` compiled.
pub const LIBRARY: &str = env!("VAELAB_METRIC_C_EXAMPLE");
