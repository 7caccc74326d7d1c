#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| tetrad_fuzz::checks::jsonrpc_body(bytes));
