//! vaelab's integration tests: one binary, a module per area.

mod gradients;
