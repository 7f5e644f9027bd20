//! `cargo fuzz run request_validation`: see `token_fuzz::request_validation` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|request: token_fuzz::Request| {
    token_fuzz::request_validation(request)
});
