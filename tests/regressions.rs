//! Replays the committed fuzz inputs (`fuzz/regressions/<target>/*`: seeds, crashes the
//! fuzzers found, and inputs they found interesting) through the same property checks the
//! fuzz targets run (`fuzz/src/checks.rs`, included here), so `cargo test` guards every past
//! finding without cargo-fuzz or a nightly toolchain.
//!
//! To add a regression: copy the input (`fuzz/artifacts/<target>/crash-...`) into
//! `fuzz/regressions/<target>/` with a name saying what it found.

#[path = "../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    files
}

/// Runs `check` on every input of `target`, naming the file that fails.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let files = inputs(target);
    for file in &files {
        let data = std::fs::read(file).unwrap();
        let result = std::panic::catch_unwind(|| check(&data));
        if let Err(panic) = result {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{} fails: {message}", file.display());
        }
    }
    files.len()
}

#[test]
fn webhook_body_regressions() {
    replay("webhook_body", checks::webhook_body);
}

#[test]
fn config_parse_regressions() {
    replay("config_parse", checks::config_text);
}

#[test]
fn signature_regressions() {
    replay("signature", checks::signature);
}

/// The shipped example config is the first thing users copy: it must parse cleanly.
#[test]
fn example_config_passes_the_config_checks() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml"))
            .unwrap();
    checks::config_str(&text);
}
