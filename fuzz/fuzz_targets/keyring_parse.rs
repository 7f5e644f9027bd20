//! `cargo fuzz run keyring_parse`: see `token_fuzz::keyring_parse` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| token_fuzz::keyring_parse(data));
