//! Fuzz target `h1_response`: the body is `revgate_fuzz::h1_response` (fuzz/targets.rs),
//! shared with the corpus replay test (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| revgate_fuzz::h1_response(data));
