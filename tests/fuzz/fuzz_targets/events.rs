#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| celeriac_fuzz::events(data));
