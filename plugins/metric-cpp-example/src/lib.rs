//! The C++ example plugin (`src/metric_cpp_example.cpp`) as built by `build.rs`.

/// Path of the shared library that `build.rs` compiled.
pub const LIBRARY: &str = env!("VAELAB_METRIC_CPP_EXAMPLE");
