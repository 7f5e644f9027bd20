//! `cargo fuzz run gateway_basic`: see `token_fuzz::gateway_basic` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| token_fuzz::gateway_basic(data));
