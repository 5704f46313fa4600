//! Shared test support for every crate of the workspace: the integration tests of `tests/all/` (one
//! binary, a module per area) and the CLI's tests in `core/cli/tests/` use it as a library.
//!
//! * [`scratch`]: a directory per test, removed when the test ends.
//! * [`plugin_build`]: the workspace's plugin libraries, built once per test process.

pub mod plugin_build;
pub mod scratch;
