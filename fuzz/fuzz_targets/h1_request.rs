//! Fuzz target `h1_request`: the body is `revgate_fuzz::h1_request` (fuzz/targets.rs),
//! shared with the corpus replay test (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| revgate_fuzz::h1_request(data));
