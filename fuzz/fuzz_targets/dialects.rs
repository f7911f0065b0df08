//! Fuzz target `dialects`: the body is `revgate_fuzz::dialects` (fuzz/targets.rs),
//! shared with the corpus replay test (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| revgate_fuzz::dialects(data));
