//! `cargo fuzz run family_record`: see `token_fuzz::family_record` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| token_fuzz::family_record(data));
