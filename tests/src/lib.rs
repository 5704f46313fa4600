//! Integration tests live in `tests/all/`: one binary, a module per area.
