//! Support for the fuzz targets: the properties live in `checks.rs`, which
//! `tests/regressions.rs` also includes so committed inputs replay in `cargo test`.

pub mod checks;
