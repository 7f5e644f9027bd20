//! `cargo fuzz run token_parse`: see `token_fuzz::token_parse` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| token_fuzz::token_parse(data));
