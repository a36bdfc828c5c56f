#![no_main]
//! See `frontsync_fuzz::checks::config_text` for the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| frontsync_fuzz::checks::config_text(data));
