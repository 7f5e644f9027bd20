//! `cargo fuzz run gateway_form`: see `token_fuzz::gateway_form` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| token_fuzz::gateway_form(data));
